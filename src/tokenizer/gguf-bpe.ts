// Byte-level BPE vocabularies of GGUF files (tokenizer.ggml.model = "gpt2": GPT-2, SmolLM,
// Qwen2, Llama 3). The vocabulary is turned back into the tokenizer.json it was converted from
// and run by @huggingface/tokenizers (hf.ts), so ids equal those of the model's own tokenizer.json.
//
// What a GGUF keeps of a tokenizer.json (llama.cpp convert_hf_to_gguf.py get_vocab_base): every
// token string by id (byte-level form, 'Ġworld'; padding ids become "[PAD<i>]", type 5), the merges
// as "left right" strings, token types (3 control for special added tokens, 4 user defined for
// the other added tokens, stored as plain text), special ids and add_bos/add_eos flags. The rest
// of the pipeline (normalizer, split regex, digit handling) is only named, by
// tokenizer.ggml.pre, which convert_hf_to_gguf.py chooses by hashing the tokenizer's output.
// PRE_TOKENIZERS holds what each supported name stands for.
//
// The same tokenizer.json is what `webqlora merge` / `quantize` write next to HF weights from a
// GGUF source (export.ts), so the pieces both kinds of vocabulary share (added tokens, the BOS/EOS
// post-processor, tokenizer_config.json fields) live here too.
import { WebqloraError } from '../errors.ts';
import type { EmbeddedVocab } from '../io/weights.ts';
import type { TokenizerConfig } from './hf.ts';
import { PIECE_CONTROL, PIECE_NORMAL, PIECE_USER_DEFINED } from './spm.ts';

/**
 * The split regexes as their tokenizer.json files publish them (Oniguruma syntax, run by
 * @huggingface/tokenizers). llama.cpp llama-vocab.cpp quotes the same strings as "original regex
 * from tokenizer.json" above its rewrites of them (LLAMA_VOCAB_PRE_TYPE_LLAMA3 and _QWEN2).
 */
export const LLAMA3_SPLIT_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
export const QWEN2_SPLIT_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

interface PreTokenizerSpec {
  normalizer: Record<string, unknown> | null;
  pre_tokenizer: Record<string, unknown>;
  /** BPE ignore_merges: a pre-token that is itself in the vocabulary is emitted whole. */
  ignoreMerges: boolean;
}

const splitThenBytes = (regex: string, trimOffsets: boolean) => ({
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: trimOffsets, use_regex: false },
  ],
});

/**
 * tokenizer.ggml.pre → the tokenizer.json pipeline of the models llama.cpp gives that name.
 * Sources: llama-vocab.cpp (name → pre type → split regexes, ignore_merges), transformers
 * convert_slow_tokenizer.py (TikTokenConverter for Llama 3, Qwen2Converter), and the GPT-2 and
 * SmolLM2 tokenizer.json files themselves.
 */
export const PRE_TOKENIZERS: Readonly<Record<string, PreTokenizerSpec>> = {
  // GPT-2: ByteLevel's built-in regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  'gpt-2': {
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    ignoreMerges: false,
  },
  // SmolLM / SmolLM2: every digit on its own (llama.cpp: "\p{N}" before the GPT-2 regex), then GPT-2.
  'smollm': {
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    ignoreMerges: false,
  },
  // Qwen2 / Qwen2.5: NFC first, single digits (\p{N}).
  'qwen2': {
    normalizer: { type: 'NFC' },
    pre_tokenizer: splitThenBytes(QWEN2_SPLIT_REGEX, false),
    ignoreMerges: false,
  },
  // Llama 3 / 3.1 / 3.2: up to three digits together (\p{N}{1,3}); whole-word vocabulary hits skip merging.
  'llama-bpe': {
    normalizer: null,
    pre_tokenizer: splitThenBytes(LLAMA3_SPLIT_REGEX, true),
    ignoreMerges: true,
  },
};

/**
 * The tokenizer.json and tokenizer_config.json equivalent of a GGUF gpt2 vocabulary. Throws a
 * WebqloraError naming `name` when the pre-tokenizer is missing or not one of PRE_TOKENIZERS, or
 * when the vocabulary is inconsistent (duplicate tokens, malformed merges).
 */
export function ggufBpeTokenizerJson(
  v: EmbeddedVocab,
  chatTemplate: string | null = null,
  name = 'GGUF vocabulary',
): { json: Record<string, unknown>; config: TokenizerConfig } {
  const bad = (msg: string) => new WebqloraError(`${name}: ${msg}`);
  if (v.model !== 'gpt2') throw bad(`expected a "gpt2" vocabulary, got "${v.model}".`);
  const supported = Object.keys(PRE_TOKENIZERS).join(', ');
  if (v.pre === null) {
    throw bad(`tokenizer.ggml.pre is missing, so how this BPE vocabulary splits text is unknown (supported: ${supported}; re-convert with a recent llama.cpp or load the model's tokenizer.json).`);
  }
  const spec = Object.hasOwn(PRE_TOKENIZERS, v.pre) ? PRE_TOKENIZERS[v.pre]! : null;
  if (spec === null) {
    const why = v.pre === 'default' ? ' ("default" is llama.cpp\'s fallback, not the pre-tokenizer of any model)' : '';
    throw bad(`the BPE pre-tokenizer "${v.pre}" (tokenizer.ggml.pre) is not supported${why} (supported: ${supported}; load the model's tokenizer.json instead).`);
  }
  if (v.merges === null) throw bad('tokenizer.ggml.merges is missing (a "gpt2" vocabulary needs its BPE merges).');

  let types = v.tokenTypes;
  if (!types) {
    // No token_type array: the special ids the file names are control tokens, the rest normal.
    types = new Int32Array(v.tokens.length).fill(PIECE_NORMAL);
    for (const id of [v.bosId, v.eosId, v.padId, v.unkId]) if (id !== null) types[id] = PIECE_CONTROL;
  }
  const vocab = vocabObject(v.tokens, name);
  const merges: Array<[string, string]> = new Array(v.merges.length);
  for (let i = 0; i < v.merges.length; i++) {
    const m = v.merges[i]!;
    // llama.cpp splits at the first space after the first character
    const sp = m.indexOf(' ', 1);
    if (sp < 0) throw bad(`tokenizer.ggml.merges[${i}] ${JSON.stringify(m)} is not two tokens separated by a space.`);
    const a = m.slice(0, sp), b = m.slice(sp + 1);
    const missing = [a, b, a + b].find((t) => !Object.hasOwn(vocab, t));
    if (missing !== undefined) throw bad(`tokenizer.ggml.merges[${i}] ${JSON.stringify(m)} uses ${JSON.stringify(missing)}, which is not a token.`);
    merges[i] = [a, b];
  }

  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens(v.tokens, types, null),
    normalizer: spec.normalizer,
    pre_tokenizer: spec.pre_tokenizer,
    // HfJsonTokenizer adds BOS/EOS itself from the config below; transformers' fast tokenizer
    // runs this (GPT2Converter writes ByteLevel(trim_offsets=False), a no-op, when there is neither).
    post_processor: bosEosPostProcessor(v) ?? { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: spec.ignoreMerges, vocab, merges,
    },
  };
  return { json, config: vocabTokenizerConfig(v, chatTemplate) };
}

// ---------------------------------------------------------------------------------------------
// Shared with the SentencePiece tokenizer.json of export.ts

/**
 * tokenizer.json model.vocab: token → id. Throws naming `name` on a duplicate token (a
 * tokenizer.json cannot hold two ids for one string; llama.cpp refuses such a vocabulary too).
 */
export function vocabObject(tokens: readonly string[], name: string): Record<string, number> {
  // Object.create(null): a token may be "__proto__" or "constructor".
  const vocab = Object.create(null) as Record<string, number>;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (Object.hasOwn(vocab, t)) throw new WebqloraError(`${name}: token ${i} ${JSON.stringify(t)} duplicates token ${vocab[t]} (llama.cpp refuses this vocabulary too).`);
    vocab[t] = i;
  }
  return vocab;
}

/**
 * tokenizer.json added_tokens: control (3) and user-defined (4) tokens, plus `unkId` (SentencePiece's
 * <unk> is type 2, which transformers adds as its unk_token), by id. Added tokens are matched in
 * the raw text before anything else, as tokenizer.json and llama.cpp (tokenizer_st_partition)
 * both do; only control ones (and unk) are special, i.e. skipped by decode. transformers'
 * SpmConverter writes them the same way: AddedToken(normalized=False, special=type == 3).
 */
export function addedTokens(tokens: readonly string[], types: Int32Array, unkId: number | null): Array<Record<string, unknown>> {
  const added: Array<Record<string, unknown>> = [];
  for (let i = 0; i < tokens.length; i++) {
    const type = types[i]!;
    if (type === PIECE_CONTROL || type === PIECE_USER_DEFINED || i === unkId) {
      added.push({ id: i, content: tokens[i]!, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type !== PIECE_USER_DEFINED });
    }
  }
  return added;
}

/**
 * The post_processor that adds BOS/EOS as the vocabulary says (add_bos_token / add_eos_token), in
 * the form transformers' LlamaTokenizerFast.update_post_processor builds ("<s>:0 $A:0" and the
 * pair "<s>:0 $A:0 <s>:1 $B:1"); null when neither is added or the token is missing.
 */
export function bosEosPostProcessor(v: EmbeddedVocab): Record<string, unknown> | null {
  const bos = v.addBos && v.bosId !== null ? v.bosId : null;
  const eos = v.addEos && v.eosId !== null ? v.eosId : null;
  if (bos === null && eos === null) return null;
  const special = (id: number | null, typeId: number) => (id === null ? [] : [{ SpecialToken: { id: v.tokens[id]!, type_id: typeId } }]);
  const seq = (id: 'A' | 'B', typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const single = [...special(bos, 0), seq('A', 0), ...special(eos, 0)];
  const pair = [...single, ...special(bos, 1), seq('B', 1), ...special(eos, 1)];
  const specialTokens: Record<string, unknown> = {};
  for (const id of [bos, eos]) if (id !== null) specialTokens[v.tokens[id]!] = { id: v.tokens[id]!, ids: [id], tokens: [v.tokens[id]!] };
  return { type: 'TemplateProcessing', single, pair, special_tokens: specialTokens };
}

/** The tokenizer_config.json fields of a vocabulary: special tokens, BOS/EOS flags, chat template. */
export function vocabTokenizerConfig(v: EmbeddedVocab, chatTemplate: string | null): TokenizerConfig {
  const tok = (id: number | null) => (id === null ? null : v.tokens[id]!);
  return {
    bos_token: tok(v.bosId),
    eos_token: tok(v.eosId),
    pad_token: tok(v.padId),
    unk_token: tok(v.unkId),
    add_bos_token: v.addBos,
    add_eos_token: v.addEos,
    // Decoding stays the exact inverse of encoding (llama.cpp's clean_spaces for "gpt-2" would
    // turn " ." into "." and break round trips; transformers' default is off too).
    clean_up_tokenization_spaces: false,
    chat_template: chatTemplate,
  };
}
