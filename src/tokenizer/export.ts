// The HF tokenizer files of a GGUF (or llama2.c tokenizer.bin) vocabulary, for the HF directories
// `webqlora merge` and `webqlora quantize` write: tokenizer.json, tokenizer_config.json and
// special_tokens_map.json, such that transformers' AutoTokenizer.from_pretrained(dir) gives the
// ids webqlora's own tokenizer for that vocabulary gives (tokenizerFromVocab).
//
// "gpt2" vocabularies: the tokenizer.json gguf-bpe.ts rebuilds (and webqlora runs).
// "llama" (SentencePiece) vocabularies: the tokenizer.json transformers' LlamaConverter
// (convert_slow_tokenizer.py) writes for a Llama-2 tokenizer.model: a BPE model with byte_fallback
// and fuse_unk, the legacy normalizer (Prepend '▁' when the vocabulary has the dummy prefix, then
// Replace ' ' → '▁'), no pre-tokenizer, the decoder Replace '▁' → ' ', ByteFallback, Fuse,
// Strip(' ', 1, 0), and merges derived from the scores as its SentencePieceExtractor does
// (sentencePieceMerges). The same Llama-2 vocabulary gives the merges of TinyLlama's tokenizer.json.
//
// tokenizer_config.json names tokenizer_class "PreTrainedTokenizerFast", so transformers runs
// tokenizer.json as written (transformers 5.18: 0 differences from sentencepiece on 4560 texts).
// Named "LlamaTokenizer", transformers 5 would rebuild the pipeline from the vocabulary and
// merges with its own non-legacy Metaspace, which tokenizes text that starts with a space
// differently (93 of the same texts).
import { WebqloraError } from '../errors.ts';
import type { EmbeddedVocab } from '../io/weights.ts';
import { addedTokens, bosEosPostProcessor, ggufBpeTokenizerJson, vocabObject, vocabTokenizerConfig } from './gguf-bpe.ts';
import { spmTokenTypes } from './spm.ts';

export interface HfTokenizerFilesOptions {
  /** GGUF tokenizer.chat_template, written as tokenizer_config.json `chat_template`. */
  chatTemplate?: string | null;
  /** The vocabulary's file, for messages. */
  name?: string;
}

/**
 * tokenizer.json, tokenizer_config.json and special_tokens_map.json (file name → UTF-8 bytes,
 * written deterministically) for a GGUF "gpt2" or "llama" vocabulary. Throws a WebqloraError naming
 * the vocabulary when it cannot be expressed as a tokenizer.json webqlora runs the same way
 * (unsupported vocabulary type or pre-tokenizer, duplicate tokens, a SentencePiece vocabulary
 * without scores).
 */
export function hfTokenizerFiles(vocab: EmbeddedVocab, opts: HfTokenizerFilesOptions = {}): Map<string, Uint8Array> {
  const name = opts.name ?? 'GGUF vocabulary';
  const chatTemplate = opts.chatTemplate ?? null;
  let json: Record<string, unknown>;
  if (vocab.model === 'gpt2') json = ggufBpeTokenizerJson(vocab, chatTemplate, name).json;
  else if (vocab.model === 'llama') json = spmTokenizerJson(vocab, name);
  else throw new WebqloraError(`${name}: cannot write a tokenizer.json for a "${vocab.model}" vocabulary (only SentencePiece "llama" and byte-level BPE "gpt2" ones).`);

  const cfg = vocabTokenizerConfig(vocab, chatTemplate);
  const added = json.added_tokens as Array<Record<string, unknown>>;
  // What transformers' save_pretrained writes (sorted keys), less what a GGUF does not know
  // (model_max_length, padding side).
  const config: Record<string, unknown> = {
    add_bos_token: cfg.add_bos_token,
    add_eos_token: cfg.add_eos_token,
    added_tokens_decoder: Object.fromEntries(added.map((a) => [String(a.id), {
      content: a.content, lstrip: a.lstrip, normalized: a.normalized, rstrip: a.rstrip, single_word: a.single_word, special: a.special,
    }])),
    bos_token: cfg.bos_token,
    ...(chatTemplate !== null ? { chat_template: chatTemplate } : {}),
    clean_up_tokenization_spaces: cfg.clean_up_tokenization_spaces,
    eos_token: cfg.eos_token,
    pad_token: cfg.pad_token,
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: cfg.unk_token,
  };
  const specialMap: Record<string, unknown> = {};
  for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const) if (cfg[k] != null) specialMap[k] = cfg[k];

  // model.vocab in id order (a plain object would list integer-like tokens such as "12" first).
  const model = json.model as Record<string, unknown>;
  const ordered = { ...json, model: { ...model, vocab: new Map(vocab.tokens.map((t, i) => [t, i])) } };
  const enc = new TextEncoder();
  return new Map([
    ['tokenizer.json', enc.encode(toJson(ordered) + '\n')],
    ['tokenizer_config.json', enc.encode(toJson(config) + '\n')],
    ['special_tokens_map.json', enc.encode(toJson(specialMap) + '\n')],
  ]);
}

/** The tokenizer.json transformers' LlamaConverter writes for a SentencePiece BPE vocabulary. */
export function spmTokenizerJson(v: EmbeddedVocab, name = 'GGUF vocabulary'): Record<string, unknown> {
  if (v.model !== 'llama') throw new WebqloraError(`${name}: expected a SentencePiece ("llama") vocabulary, got "${v.model}".`);
  // Without scores llama.cpp merges leftmost-first on ties; BPE merges ranked by score cannot say that.
  if (v.scores === null) throw new WebqloraError(`${name}: the SentencePiece vocabulary has no tokenizer.ggml.scores, so its merge order is unknown (re-convert the model with llama.cpp, or copy its tokenizer.model).`);
  const types = spmTokenTypes(v);
  const vocab = vocabObject(v.tokens, name);
  // LlamaConverter.vocab scores the first three pieces (<unk>, <s>, </s>) 0.0 whatever the model says.
  const scores = Float32Array.from(v.scores);
  scores.fill(0, 0, Math.min(3, scores.length));
  const SPACE = '\u2581';
  const normalizers: Array<Record<string, unknown>> = v.addSpacePrefix ? [{ type: 'Prepend', prepend: SPACE }] : [];
  normalizers.push({ type: 'Replace', pattern: { String: ' ' }, content: SPACE });
  const decoders: Array<Record<string, unknown>> = [
    { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
    { type: 'ByteFallback' },
    { type: 'Fuse' },
  ];
  if (v.addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens(v.tokens, types, v.unkId),
    normalizer: { type: 'Sequence', normalizers },
    pre_tokenizer: null,
    post_processor: bosEosPostProcessor(v),
    decoder: { type: 'Sequence', decoders },
    model: {
      type: 'BPE', dropout: null, unk_token: v.unkId === null ? null : v.tokens[v.unkId]!, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false,
      vocab, merges: sentencePieceMerges(v.tokens, scores, vocab),
    },
  };
}

/**
 * BPE merges of a SentencePiece vocabulary, as transformers' SentencePieceExtractor derived them
 * when the Llama-2 tokenizer.json files (TinyLlama's among them) were written: every split of
 * every piece into two pieces of the vocabulary is a merge carrying the piece's score; a piece's
 * splits are ordered by the ids of (left, right); then all merges by score, highest first, in a
 * stable sort. Split points count code points, as Python's str does.
 * Later transformers versions order the ties of a piece's splits differently (4.4x: longer left
 * part first; 5.x converting a tokenizer.model: by piece id, ignoring scores); the 4.4x order gives
 * the same ids as this one, the 5.x order does not always give sentencepiece's.
 */
export function sentencePieceMerges(tokens: readonly string[], scores: Float32Array, vocab: Record<string, number>): Array<[string, string]> {
  interface Merge { l: string; r: string; score: number; idL: number; idR: number }
  const all: Merge[] = [];
  const local: Merge[] = [];
  for (let id = 0; id < tokens.length; id++) {
    const piece = tokens[id]!;
    local.length = 0;
    let at = 0; // UTF-16 offset of the split, advanced one code point at a time
    for (const ch of piece) {
      at += ch.length;
      if (at === piece.length) break;
      const l = piece.slice(0, at), r = piece.slice(at);
      const idL = vocab[l], idR = vocab[r];
      if (idL !== undefined && idR !== undefined) local.push({ l, r, score: scores[id]!, idL, idR });
    }
    local.sort((a, b) => a.idL - b.idL || a.idR - b.idR);
    for (const m of local) all.push(m);
  }
  all.sort((a, b) => b.score - a.score); // Array.prototype.sort is stable, as Python's sorted
  return all.map((m) => [m.l, m.r]);
}

/**
 * Deterministic JSON, two-space indented like the files transformers writes, with arrays of
 * scalars or of scalar pairs (merges) one element per line, and Maps as objects in their order.
 */
function toJson(v: unknown, indent = ''): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  const inner = indent + '  ';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    const flat = v.every((e) => e === null || typeof e !== 'object' || (Array.isArray(e) && e.every((x) => x === null || typeof x !== 'object')));
    const items = v.map((e) => (flat ? JSON.stringify(e) : toJson(e, inner)));
    return `[\n${items.map((s) => inner + s).join(',\n')}\n${indent}]`;
  }
  const entries = v instanceof Map ? [...v.entries()] as Array<[string, unknown]> : Object.entries(v);
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${toJson(x, inner)}`).join(',\n')}\n${indent}}`;
}
