// A GGUF vocabulary (tokenizer.ggml.*) from an HF model directory's tokenizer files, for writing a
// standalone GGUF (merge --out F.gguf), as llama.cpp's convert_hf_to_gguf.py would: a byte-level
// BPE tokenizer.json becomes a `gpt2` vocabulary whose `tokenizer.ggml.pre` is the name of the
// pre-tokenizer pipeline it has (gguf-bpe.ts's table, compared structurally — an unrecognised
// pipeline is refused, never guessed); a SentencePiece tokenizer.model becomes a `llama`
// vocabulary (pieces, scores, piece types). Token types: 3 control (special added tokens),
// 4 user defined (other added tokens), 6 byte, 2 unknown, 1 normal.
import { WebqloraError } from '../errors.ts';
import { readJson, type DirSource } from '../io/source.ts';
import type { EmbeddedVocab } from '../io/weights.ts';
import { PRE_TOKENIZERS } from './gguf-bpe.ts';
import { chatTemplateFromConfig, type TokenizerConfig } from './hf.ts';
import { parseSentencePieceModel } from './spm.ts';

/** JSON values equal up to key order. */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

const content = (t: TokenizerConfig['bos_token']): string | null =>
  typeof t === 'string' ? t : t && typeof t === 'object' && typeof t.content === 'string' ? t.content : null;

export async function vocabFromHfDir(dir: DirSource): Promise<{ vocab: EmbeddedVocab; chatTemplate: string | null }> {
  const cfgSrc = await dir.open('tokenizer_config.json');
  const config = cfgSrc ? ((await readJson(cfgSrc)) as TokenizerConfig) : null;
  const chatTemplate = chatTemplateFromConfig(config);
  const jsonSrc = await dir.open('tokenizer.json');
  const tj = jsonSrc ? ((await readJson(jsonSrc)) as Record<string, unknown>) : null;
  const model = tj?.model as Record<string, unknown> | undefined;
  if (tj && model?.type === 'BPE' && !model.byte_fallback) {
    const where = jsonSrc!.name;
    const pre = Object.entries(PRE_TOKENIZERS).find(([, spec]) =>
      same(spec.pre_tokenizer, tj.pre_tokenizer) && same(spec.normalizer ?? null, tj.normalizer ?? null) && (model.ignore_merges === true) === spec.ignoreMerges)?.[0];
    if (!pre) throw new WebqloraError(`${where}: its pre-tokenizer is none that llama.cpp names (${Object.keys(PRE_TOKENIZERS).join(', ')}), so its GGUF vocabulary cannot be written.`);
    const vocabMap = model.vocab as Record<string, number>;
    const added = (tj.added_tokens as Array<{ id: number; content: string; special: boolean }> | undefined) ?? [];
    let n = 0;
    for (const id of Object.values(vocabMap)) n = Math.max(n, id + 1);
    for (const a of added) n = Math.max(n, a.id + 1);
    const tokens = new Array<string>(n).fill('');
    const types = new Int32Array(n).fill(1);
    const filled = new Uint8Array(n);
    for (const [t, id] of Object.entries(vocabMap)) { tokens[id] = t; filled[id] = 1; }
    for (const a of added) { tokens[a.id] = a.content; types[a.id] = a.special ? 3 : 4; filled[a.id] = 1; }
    // ids no token names (padding rows of the embedding): llama.cpp's converter writes [PAD<id>] unused tokens
    for (let i = 0; i < n; i++) if (!filled[i]) { tokens[i] = `[PAD${i}]`; types[i] = 5; }
    const merges = ((model.merges as Array<string | [string, string]> | undefined) ?? []).map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
    const idOf = (t: TokenizerConfig['bos_token']) => { const c = content(t); const id = c === null ? undefined : vocabMap[c] ?? added.find((a) => a.content === c)?.id; return id ?? null; };
    const bosId = idOf(config?.bos_token ?? null), eosId = idOf(config?.eos_token ?? null);
    return {
      vocab: {
        model: 'gpt2', pre, tokens, scores: null, tokenTypes: types, merges,
        bosId, eosId, unkId: idOf(config?.unk_token ?? null), padId: idOf(config?.pad_token ?? null),
        addBos: config?.add_bos_token ?? pre === 'llama-bpe', addEos: config?.add_eos_token ?? false, addSpacePrefix: false,
      },
      chatTemplate,
    };
  }
  const spmSrc = await dir.open('tokenizer.model');
  if (spmSrc) {
    const m = parseSentencePieceModel(await spmSrc.read(0, spmSrc.size), spmSrc.name);
    return {
      vocab: {
        model: 'llama', pre: null, tokens: m.pieces, scores: m.scores, tokenTypes: m.types, merges: null,
        bosId: m.bosId, eosId: m.eosId, unkId: m.unkId, padId: m.padId,
        addBos: config?.add_bos_token ?? m.addBos, addEos: config?.add_eos_token ?? m.addEos, addSpacePrefix: m.addDummyPrefix,
      },
      chatTemplate: chatTemplate ?? m.chatTemplate,
    };
  }
  throw new WebqloraError(`${dir.name}: no tokenizer.model and no byte-level BPE tokenizer.json, so the model's GGUF vocabulary cannot be written (SentencePiece models need tokenizer.model).`);
}
