// Tokenizer construction from what a model comes with: a GGUF vocabulary, a tokenizer.json
// (+ tokenizer_config.json), or a SentencePiece tokenizer.model. Isomorphic: files arrive as
// ByteSource / DirSource.
import { WebqloraError } from '../errors.ts';
import { readText, type ByteSource, type DirSource } from '../io/source.ts';
import type { EmbeddedVocab } from '../io/weights.ts';
import { chatTemplateFromConfig, HfJsonTokenizer, type TokenizerConfig } from './hf.ts';
import { parseSentencePieceModel, spmFromVocab, SpmTokenizer } from './spm.ts';
import type { Tokenizer } from './tokenizer.ts';

export { chatTemplateFromConfig, type TokenizerConfig } from './hf.ts';

/** The tokenizer of a GGUF model's embedded vocabulary (SentencePiece "llama" vocabularies). */
export function tokenizerFromVocab(v: EmbeddedVocab, chatTemplate: string | null = null): Tokenizer {
  return spmFromVocab(v, chatTemplate);
}

/** A tokenizer.json (text or parsed) with an optional tokenizer_config.json (text or parsed). */
export function tokenizerFromJson(
  json: string | Record<string, unknown>,
  config?: string | TokenizerConfig | null,
  name = 'tokenizer.json',
): Tokenizer {
  const j = typeof json === 'string' ? parseJson(json, name) : json;
  const c = typeof config === 'string' ? (parseJson(config, 'tokenizer_config.json') as TokenizerConfig) : config ?? null;
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
 * The tokenizer of a model directory: tokenizer.json preferred, else tokenizer.model; both with
 * tokenizer_config.json when present. Null when the directory has neither.
 */
export async function loadTokenizerFromDir(dir: DirSource): Promise<Tokenizer | null> {
  const cfgSrc = await dir.open('tokenizer_config.json');
  const config = cfgSrc ? (parseJson(await readText(cfgSrc), cfgSrc.name) as TokenizerConfig) : null;
  const json = await dir.open('tokenizer.json');
  if (json) return tokenizerFromJson(parseJson(await readText(json), json.name) as Record<string, unknown>, config, json.name);
  const model = await dir.open('tokenizer.model');
  if (model) return tokenizerFromSentencePiece(await readAll(model), config, model.name);
  return null;
}

/** Chat template of a model directory's tokenizer_config.json, or null. */
export async function loadChatTemplate(dir: DirSource): Promise<string | null> {
  const src = await dir.open('tokenizer_config.json');
  return src ? chatTemplateFromConfig(parseJson(await readText(src), src.name) as TokenizerConfig) : null;
}

function parseJson(text: string, name: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new WebqloraError(`${name}: not valid JSON (${(e as Error).message}).`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new WebqloraError(`${name}: expected a JSON object.`);
  return v as Record<string, unknown>;
}

async function readAll(src: ByteSource): Promise<Uint8Array> {
  return src.read(0, src.size);
}
