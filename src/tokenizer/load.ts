// Tokenizer construction from what a model comes with: a GGUF vocabulary, a tokenizer.json
// (+ tokenizer_config.json), or a SentencePiece tokenizer.model. Isomorphic: files arrive as
// ByteSource / DirSource.
import { WebqloraError } from '../errors.ts';
import { readGguf, readVocab } from '../io/gguf.ts';
import { closeSource, parseJson, readJson, type ByteSource, type DirSource } from '../io/source.ts';
import type { EmbeddedVocab } from '../io/weights.ts';
import { ggufBpeTokenizerJson } from './gguf-bpe.ts';
import { chatTemplateFromConfig, HfJsonTokenizer, type TokenizerConfig } from './hf.ts';
import { parseSentencePieceModel, spmFromVocab, SpmTokenizer } from './spm.ts';
import type { Tokenizer } from './tokenizer.ts';

export { chatTemplateFromConfig, type TokenizerConfig } from './hf.ts';

/**
 * The tokenizer of a GGUF model's embedded vocabulary: SentencePiece ("llama": Llama 1/2, Mistral,
 * Gemma) or byte-level BPE ("gpt2" with a supported tokenizer.ggml.pre: GPT-2, SmolLM, Qwen2,
 * Llama 3, run through @huggingface/tokenizers as the tokenizer.json it came from).
 */
export function tokenizerFromVocab(v: EmbeddedVocab, chatTemplate: string | null = v.chatTemplate ?? null, name = 'GGUF vocabulary'): Tokenizer {
  if (v.model === 'llama') return spmFromVocab(v, chatTemplate);
  if (v.model === 'gpt2') {
    const { json, config } = ggufBpeTokenizerJson(v, chatTemplate, name);
    return new HfJsonTokenizer(json, config, name);
  }
  throw new WebqloraError(`${name}: the vocabulary is of type "${v.model}"; only SentencePiece ("llama") and byte-level BPE ("gpt2") vocabularies are supported (load a tokenizer.json instead).`);
}

/**
 * The tokenizer of a GGUF file, read from its metadata alone (no tensor is read, and the file may
 * hold nothing but a vocabulary, like llama.cpp's ggml-vocab-*.gguf), with its
 * tokenizer.chat_template. The caller keeps ownership of `src`.
 */
export async function tokenizerFromGguf(src: ByteSource): Promise<Tokenizer> {
  const md = (await readGguf(src)).metadata;
  const vocab = readVocab(md, src.name);
  if (!vocab) throw new WebqloraError(`${src.name}: this GGUF file carries no vocabulary (no tokenizer.ggml.tokens).`);
  return tokenizerFromVocab(vocab, undefined, src.name);
}

/** A tokenizer.json (text or parsed) with an optional tokenizer_config.json (text or parsed). */
export function tokenizerFromJson(
  json: string | Record<string, unknown>,
  config?: string | TokenizerConfig | null,
  name = 'tokenizer.json',
): Tokenizer {
  const j = typeof json === 'string' ? jsonObject(parseJson(json, name), name) : json;
  const c = typeof config === 'string' ? (jsonObject(parseJson(config, 'tokenizer_config.json'), 'tokenizer_config.json') as TokenizerConfig) : config ?? null;
  return new HfJsonTokenizer(j, c, name);
}

/** A SentencePiece tokenizer.model with an optional tokenizer_config.json (chat template, BOS/EOS flags). */
export function tokenizerFromSentencePiece(bytes: Uint8Array, config: TokenizerConfig | null = null, name = 'tokenizer.model'): Tokenizer {
  const m = parseSentencePieceModel(bytes, name);
  if (config) {
    if (typeof config.add_bos_token === 'boolean') m.addBos = config.add_bos_token;
    if (typeof config.add_eos_token === 'boolean') m.addEos = config.add_eos_token;
    m.chatTemplate = chatTemplateFromConfig(config);
  }
  return new SpmTokenizer(m);
}

/**
 * llama2.c's tokenizer.bin (written by its tokenizer.py export): i32 max_token_length, then per
 * token f32 score, i32 byte length, UTF-8 bytes. The vocabulary size is not stored: the file is
 * read to its end. Pieces have '▁' written as ' '; ids 0/1/2 are <unk>, <s>, </s> (llama2.c).
 */
export function tokenizerFromLlama2cBin(bytes: Uint8Array, name = 'tokenizer.bin'): Tokenizer {
  return tokenizerFromVocab(vocabFromLlama2cBin(bytes, name), null, name);
}

/** The vocabulary of a llama2.c tokenizer.bin (see tokenizerFromLlama2cBin), as a GGUF would carry it. */
export function vocabFromLlama2cBin(bytes: Uint8Array, name = 'tokenizer.bin'): EmbeddedVocab {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) throw new WebqloraError(`${name}: too short for a llama2.c tokenizer.bin.`);
  const maxLen = dv.getInt32(0, true);
  if (!(maxLen > 0 && maxLen < 1 << 16)) throw new WebqloraError(`${name}: max_token_length ${maxLen} is not plausible (not a llama2.c tokenizer.bin?).`);
  const pieces: string[] = [], scores: number[] = [];
  const dec = new TextDecoder('utf-8', { fatal: false });
  let o = 4;
  while (o < bytes.length) {
    if (o + 8 > bytes.length) throw new WebqloraError(`${name}: truncated at token ${pieces.length}.`);
    const score = dv.getFloat32(o, true), len = dv.getInt32(o + 4, true);
    o += 8;
    if (len < 0 || len > maxLen || o + len > bytes.length) throw new WebqloraError(`${name}: token ${pieces.length} has length ${len} (max ${maxLen}, ${bytes.length - o} bytes left).`);
    pieces.push(dec.decode(bytes.subarray(o, o + len)).replace(/ /g, '\u2581'));
    scores.push(score);
    o += len;
  }
  if (pieces.length < 3) throw new WebqloraError(`${name}: only ${pieces.length} tokens.`);
  pieces[0] = '<unk>'; pieces[1] = '<s>'; pieces[2] = '</s>'; // stored as "\n<s>\n" etc.
  return {
    model: 'llama', pre: null, tokens: pieces, scores: Float32Array.from(scores), tokenTypes: null, merges: null,
    bosId: 1, eosId: 2, unkId: 0, padId: null, addBos: true, addEos: false, addSpacePrefix: true,
  };
}

/**
 * The tokenizer of a model directory: tokenizer.json preferred, else tokenizer.model; both with
 * tokenizer_config.json when present (and the chat template of chat_template.jinja when the config
 * has none). Null when the directory has neither.
 */
export async function loadTokenizerFromDir(dir: DirSource): Promise<Tokenizer | null> {
  const config = await readDirConfig(dir);
  const json = await dir.open('tokenizer.json');
  if (json) return tokenizerFromJson(await readObject(json), config, json.name);
  const model = await dir.open('tokenizer.model');
  if (model) return tokenizerFromSentencePiece(await readAll(model), config, model.name);
  return null;
}

/** Chat template of a model directory (tokenizer_config.json, else chat_template.jinja), or null. */
export async function loadChatTemplate(dir: DirSource): Promise<string | null> {
  return chatTemplateFromConfig(await readDirConfig(dir)) ?? await readChatTemplateJinja(dir);
}

/**
 * tokenizer_config.json of a directory (null if absent), its `chat_template` filled in from
 * chat_template.jinja when it has none: recent transformers versions save the template to that
 * file, and read it back the same way.
 */
async function readDirConfig(dir: DirSource): Promise<TokenizerConfig | null> {
  const cfgSrc = await dir.open('tokenizer_config.json');
  if (!cfgSrc) return null;
  const config = await readObject(cfgSrc) as TokenizerConfig;
  if (chatTemplateFromConfig(config) !== null) return config;
  const template = await readChatTemplateJinja(dir);
  return template === null ? config : { ...config, chat_template: template };
}

async function readChatTemplateJinja(dir: DirSource): Promise<string | null> {
  const src = await dir.open('chat_template.jinja');
  return src ? new TextDecoder().decode(await readAll(src)) : null;
}

// Each file is read whole, then closed at once (a Node file handle is not held until the directory closes).
async function readAll(src: ByteSource): Promise<Uint8Array> {
  try {
    return await src.read(0, src.size);
  } finally {
    await closeSource(src);
  }
}

async function readObject(src: ByteSource): Promise<Record<string, unknown>> {
  try {
    return jsonObject(await readJson(src), src.name);
  } finally {
    await closeSource(src);
  }
}

function jsonObject(v: unknown, name: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new WebqloraError(`${name}: expected a JSON object.`);
  return v as Record<string, unknown>;
}
