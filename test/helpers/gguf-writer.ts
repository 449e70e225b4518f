// Test-only GGUF writer (ggml docs/gguf.md layout) and ggml reference quantizers, for building
// small files with known contents: every metadata type, F16/BF16/Q8_0/Q4_0 tensors, and the
// corrupt variants the loader must reject.
import { encodeTensor, quantizeQ4_0, quantizeQ8_0, rotateHalfToInterleaved } from '../../src/io/gguf-write.ts';
import { GgufType } from '../../src/io/gguf.ts';
import { expectedTensors, type ModelConfig } from '../../src/model/config.ts';
import { Rng } from './index.ts';

/** A typed metadata value; `type` is a GgufType number, arrays carry their element type. */
export type MetaValue =
  | { type: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 12; value: number }
  | { type: 10 | 11; value: bigint }
  | { type: 7; value: boolean }
  | { type: 8; value: string }
  | { type: 9; elem: number; value: MetaValue[] };

export const m = {
  u8: (v: number): MetaValue => ({ type: 0, value: v }),
  i8: (v: number): MetaValue => ({ type: 1, value: v }),
  u16: (v: number): MetaValue => ({ type: 2, value: v }),
  i16: (v: number): MetaValue => ({ type: 3, value: v }),
  u32: (v: number): MetaValue => ({ type: 4, value: v }),
  i32: (v: number): MetaValue => ({ type: 5, value: v }),
  f32: (v: number): MetaValue => ({ type: 6, value: v }),
  f64: (v: number): MetaValue => ({ type: 12, value: v }),
  u64: (v: bigint): MetaValue => ({ type: 10, value: v }),
  i64: (v: bigint): MetaValue => ({ type: 11, value: v }),
  bool: (v: boolean): MetaValue => ({ type: 7, value: v }),
  str: (v: string): MetaValue => ({ type: 8, value: v }),
  arr: (elem: number, value: MetaValue[]): MetaValue => ({ type: 9, elem, value }),
  strs: (v: string[]): MetaValue => ({ type: 9, elem: GgufType.STRING, value: v.map((s) => ({ type: 8, value: s })) }),
  f32s: (v: ArrayLike<number>): MetaValue => ({ type: 9, elem: GgufType.FLOAT32, value: Array.from(v, (x) => ({ type: 6, value: x })) }),
  i32s: (v: ArrayLike<number>): MetaValue => ({ type: 9, elem: GgufType.INT32, value: Array.from(v, (x) => ({ type: 5, value: x })) }),
};

export interface WriterTensor {
  name: string;
  /** Row-major shape; written as ggml ne (reversed). */
  shape: number[];
  /** ggml type number. */
  type: number;
  /** Raw stored bytes. */
  data: Uint8Array;
  /** Override the stored relative offset (corrupt files). */
  offset?: bigint;
}

export interface WriterOptions {
  version?: number;
  metadata?: Array<[string, MetaValue]>;
  tensors?: WriterTensor[];
  /** Alignment used for padding; write `general.alignment` in metadata yourself to change it in the file. */
  alignment?: number;
  magic?: string;
}

class Buf {
  private chunks: number[] = [];
  u8(v: number) { this.chunks.push(v & 0xff); }
  bytes(b: Uint8Array) { for (const x of b) this.chunks.push(x); }
  private dv(n: number, f: (dv: DataView) => void) { const a = new Uint8Array(n); f(new DataView(a.buffer)); this.bytes(a); }
  u16(v: number) { this.dv(2, (d) => d.setUint16(0, v, true)); }
  i16(v: number) { this.dv(2, (d) => d.setInt16(0, v, true)); }
  u32(v: number) { this.dv(4, (d) => d.setUint32(0, v >>> 0, true)); }
  i32(v: number) { this.dv(4, (d) => d.setInt32(0, v, true)); }
  f32(v: number) { this.dv(4, (d) => d.setFloat32(0, v, true)); }
  f64(v: number) { this.dv(8, (d) => d.setFloat64(0, v, true)); }
  u64(v: bigint) { this.dv(8, (d) => d.setBigUint64(0, BigInt.asUintN(64, v), true)); }
  i64(v: bigint) { this.dv(8, (d) => d.setBigInt64(0, v, true)); }
  str(s: string) { const b = new TextEncoder().encode(s); this.u64(BigInt(b.length)); this.bytes(b); }
  get length() { return this.chunks.length; }
  finish(): Uint8Array { return Uint8Array.from(this.chunks); }
}

function writeValue(b: Buf, v: MetaValue): void {
  switch (v.type) {
    case 0: case 1: b.u8(v.value); break;
    case 2: b.u16(v.value); break;
    case 3: b.i16(v.value); break;
    case 4: b.u32(v.value); break;
    case 5: b.i32(v.value); break;
    case 6: b.f32(v.value); break;
    case 12: b.f64(v.value); break;
    case 10: b.u64(v.value); break;
    case 11: b.i64(v.value); break;
    case 7: b.u8(v.value ? 1 : 0); break;
    case 8: b.str(v.value); break;
    case 9:
      b.u32(v.elem);
      b.u64(BigInt(v.value.length));
      for (const e of v.value) writeValue(b, e);
      break;
  }
}

/** Serializes a GGUF file. Tensor data is laid out in order, each padded to the alignment. */
export function writeGguf(opts: WriterOptions): Uint8Array {
  const align = opts.alignment ?? 32;
  const tensors = opts.tensors ?? [];
  const md = opts.metadata ?? [];
  const b = new Buf();
  b.bytes(new TextEncoder().encode(opts.magic ?? 'GGUF'));
  b.u32(opts.version ?? 3);
  b.u64(BigInt(tensors.length));
  b.u64(BigInt(md.length));
  for (const [k, v] of md) { b.str(k); b.u32(v.type); writeValue(b, v); }
  const rel: bigint[] = [];
  let cur = 0;
  for (const t of tensors) {
    rel.push(t.offset ?? BigInt(cur));
    cur += Math.ceil(t.data.length / align) * align;
  }
  tensors.forEach((t, i) => {
    b.str(t.name);
    b.u32(t.shape.length);
    for (const d of t.shape.slice().reverse()) b.u64(BigInt(d));
    b.u32(t.type);
    b.u64(rel[i]!);
  });
  while (b.length % align) b.u8(0);
  for (const t of tensors) {
    b.bytes(t.data);
    while (b.length % align) b.u8(0);
  }
  return b.finish();
}

// ---------------------------------------------------------------------------------------------
// Encoders for tensor data: the production ones (src/io/gguf-write.ts)

export const f32Bytes = (v: Float32Array): Uint8Array => encodeTensor(v, 'f32');
export const f16Bytes = (v: Float32Array): Uint8Array => encodeTensor(v, 'f16');
export const bf16Bytes = (v: Float32Array): Uint8Array => encodeTensor(v, 'bf16');
export { quantizeQ8_0, quantizeQ4_0, rotateHalfToInterleaved };

// ---------------------------------------------------------------------------------------------
// A whole llama model

const HF_TO_GGUF: Array<[RegExp, string]> = [
  [/^model\.embed_tokens\.weight$/, 'token_embd.weight'], [/^model\.norm\.weight$/, 'output_norm.weight'], [/^lm_head\.weight$/, 'output.weight'],
  [/^model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$/, 'blk.$1.attn_q.$2'], [/^model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)$/, 'blk.$1.attn_k.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$/, 'blk.$1.attn_v.$2'], [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, 'blk.$1.attn_output.weight'],
  [/^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$/, 'blk.$1.ffn_gate.weight'], [/^model\.layers\.(\d+)\.mlp\.up_proj\.weight$/, 'blk.$1.ffn_up.weight'],
  [/^model\.layers\.(\d+)\.mlp\.down_proj\.weight$/, 'blk.$1.ffn_down.weight'], [/^model\.layers\.(\d+)\.input_layernorm\.weight$/, 'blk.$1.attn_norm.weight'],
  [/^model\.layers\.(\d+)\.post_attention_layernorm\.weight$/, 'blk.$1.ffn_norm.weight'],
];
function toGgufName(hf: string): string {
  for (const [re, rep] of HF_TO_GGUF) if (re.test(hf)) return hf.replace(re, rep);
  throw new Error(hf);
}

export function llamaMeta(c: ModelConfig, extra: Array<[string, MetaValue]> = []): Array<[string, MetaValue]> {
  const tokens = Array.from({ length: c.vocabSize }, (_, i) => (i === 0 ? '<unk>' : i === 1 ? '<s>' : i === 2 ? '</s>' : `t${i}`));
  return [
    ['general.architecture', m.str('llama')],
    ['llama.embedding_length', m.u32(c.hiddenSize)],
    ['llama.feed_forward_length', m.u32(c.intermediateSize)],
    ['llama.block_count', m.u32(c.numLayers)],
    ['llama.attention.head_count', m.u32(c.numHeads)],
    ['llama.attention.head_count_kv', m.u32(c.numKVHeads)],
    ['llama.context_length', m.u32(c.maxPositionEmbeddings)],
    ['llama.attention.layer_norm_rms_epsilon', m.f32(c.rmsNormEps)],
    ['llama.rope.freq_base', m.f32(c.ropeTheta)],
    ['tokenizer.ggml.model', m.str('llama')],
    ['tokenizer.ggml.tokens', m.strs(tokens)],
    ['tokenizer.ggml.scores', m.f32s(tokens.map((_, i) => -i))],
    ['tokenizer.ggml.token_type', m.i32s(tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : 1)))],
    ['tokenizer.ggml.bos_token_id', m.u32(1)],
    ['tokenizer.ggml.eos_token_id', m.u32(2)],
    ...extra,
  ];
}

export interface Built {
  bytes: Uint8Array;
  /** HF-layout float values that were encoded, by HF name. */
  values: Map<string, Float32Array>;
  tensors: WriterTensor[];
}

/** A llama GGUF with HF-layout random values; 2-D weights stored as `type` (norms stay F32). */
export function buildLlama(c: ModelConfig, type: number, opts: { seed?: number; meta?: Array<[string, MetaValue]>; edit?: (t: WriterTensor[]) => void; version?: number } = {}): Built {
  const rng = new Rng(opts.seed ?? 1);
  const values = new Map<string, Float32Array>();
  const tensors: WriterTensor[] = [];
  for (const t of expectedTensors(c)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const v = t.shape.length === 1 ? rng.uniform(n, 0.5, 1.5) : rng.f32(n, 0.1);
    values.set(t.name, v);
    let stored = v;
    const cols = t.shape.length === 1 ? 1 : c.hiddenSize;
    if (/q_proj\.(weight|bias)$/.test(t.name)) stored = rotateHalfToInterleaved(v, c.numHeads, c.headDim, cols);
    if (/k_proj\.(weight|bias)$/.test(t.name)) stored = rotateHalfToInterleaved(v, c.numKVHeads, c.headDim, cols);
    const tt = t.shape.length === 1 ? 0 : type;
    const data = tt === 0 ? f32Bytes(stored) : tt === 1 ? f16Bytes(stored) : tt === 30 ? bf16Bytes(stored) : tt === 8 ? quantizeQ8_0(stored) : quantizeQ4_0(stored);
    tensors.push({ name: toGgufName(t.name), shape: t.shape, type: tt, data });
  }
  opts.edit?.(tensors);
  return { bytes: writeGguf({ version: opts.version ?? 3, metadata: llamaMeta(c, opts.meta), tensors }), values, tensors };
}

