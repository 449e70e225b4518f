// Writing GGUF files (ggml docs/gguf.md, version 3): a streaming writer (header, then each
// tensor's bytes computed when its turn comes, padded to the alignment), ggml's reference
// quantizers for Q8_0 / Q4_0, and whole models in llama.cpp's layout for their architecture
// (gguf-arch.ts): tensor names, q/k row order, Gemma's 1 + w norms, Llama 3's rope_freqs.
import { WebqloraError } from '../errors.ts';
import { expectedTensors, type ModelConfig } from '../model/config.ts';
import { f32ToBf16, f32ToF16 } from '../num.ts';
import { GgufType } from './gguf.ts';
import { ggufArchOf, ggufModelMetadata, hfToGgufTensor, llama3RopeFactors, type GgufArch } from './gguf-arch.ts';
import type { ByteSink } from './source.ts';
import type { EmbeddedVocab, WeightSource } from './weights.ts';

/** A typed metadata value; `type` is a GgufType number, arrays carry their element type. */
export type MetaValue =
  | { type: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 12; value: number }
  | { type: 10 | 11; value: bigint }
  | { type: 7; value: boolean }
  | { type: 8; value: string }
  | { type: 9; elem: number; value: MetaValue[] }
  /** a homogeneous numeric array written straight from a typed array (vocab scores, token types) */
  | { type: 9; elem: 5 | 6; typed: Int32Array | Float32Array };

export const meta = {
  u32: (v: number): MetaValue => ({ type: 4, value: v }),
  i32: (v: number): MetaValue => ({ type: 5, value: v }),
  f32: (v: number): MetaValue => ({ type: 6, value: v }),
  bool: (v: boolean): MetaValue => ({ type: 7, value: v }),
  str: (v: string): MetaValue => ({ type: 8, value: v }),
  strs: (v: string[]): MetaValue => ({ type: 9, elem: GgufType.STRING, value: v.map((s) => ({ type: 8, value: s })) }),
  f32s: (v: Float32Array): MetaValue => ({ type: 9, elem: 6, typed: v }),
  i32s: (v: Int32Array): MetaValue => ({ type: 9, elem: 5, typed: v }),
};

/** ggml type numbers this writer produces. */
export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, BF16: 30 } as const;
export type GgufDtype = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
const DTYPE_TYPE: Record<GgufDtype, number> = { f32: GGML.F32, f16: GGML.F16, bf16: GGML.BF16, q8_0: GGML.Q8_0, q4_0: GGML.Q4_0 };

export interface GgufTensorOut {
  name: string;
  /** row-major shape (written as ggml ne, reversed) */
  shape: number[];
  type: number;
  /** stored byte count (known up front: the header holds every offset) */
  bytes: number;
  data: () => Promise<Uint8Array>;
}

const enc = new TextEncoder();

class HeaderBuf {
  private parts: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array) { this.parts.push(b); this.length += b.length; }
  private dv(n: number, f: (d: DataView) => void) { const a = new Uint8Array(n); f(new DataView(a.buffer)); this.push(a); }
  u32(v: number) { this.dv(4, (d) => d.setUint32(0, v >>> 0, true)); }
  u64(v: number | bigint) { this.dv(8, (d) => d.setBigUint64(0, BigInt(v), true)); }
  str(s: string) { const b = enc.encode(s); this.u64(b.length); this.push(b); }
  value(v: MetaValue) {
    switch (v.type) {
      case 0: case 1: this.push(Uint8Array.of(v.value & 0xff)); break;
      case 2: this.dv(2, (d) => d.setUint16(0, v.value, true)); break;
      case 3: this.dv(2, (d) => d.setInt16(0, v.value, true)); break;
      case 4: this.u32(v.value); break;
      case 5: this.dv(4, (d) => d.setInt32(0, v.value, true)); break;
      case 6: this.dv(4, (d) => d.setFloat32(0, v.value, true)); break;
      case 12: this.dv(8, (d) => d.setFloat64(0, v.value, true)); break;
      case 10: this.u64(v.value); break;
      case 11: this.dv(8, (d) => d.setBigInt64(0, v.value, true)); break;
      case 7: this.push(Uint8Array.of(v.value ? 1 : 0)); break;
      case 8: this.str(v.value); break;
      case 9:
        this.u32(v.elem);
        if ('typed' in v) {
          this.u64(v.typed.length);
          this.push(new Uint8Array(v.typed.buffer.slice(v.typed.byteOffset, v.typed.byteOffset + v.typed.byteLength)));
        } else {
          this.u64(v.value.length);
          for (const e of v.value) this.value(e);
        }
        break;
    }
  }
  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

/**
 * Writes a GGUF v3 file into `sink`: header and tensor infos first, then each tensor's data in
 * order (computed one at a time), each padded to `alignment`. Commits the sink at the end; on
 * any error the sink is aborted (no half-written file).
 */
export async function writeGgufFile(sink: ByteSink, metadata: Array<[string, MetaValue]>, tensors: GgufTensorOut[], alignment = 32): Promise<void> {
  try {
    const h = new HeaderBuf();
    h.push(enc.encode('GGUF'));
    h.u32(3);
    h.u64(tensors.length);
    h.u64(metadata.length + (alignment !== 32 ? 1 : 0));
    for (const [k, v] of metadata) { h.str(k); h.u32(v.type); h.value(v); }
    if (alignment !== 32) { h.str('general.alignment'); h.u32(4); h.u32(alignment); }
    let off = 0;
    for (const t of tensors) {
      h.str(t.name);
      h.u32(t.shape.length);
      for (const d of [...t.shape].reverse()) h.u64(d);
      h.u32(t.type);
      h.u64(off);
      off += Math.ceil(t.bytes / alignment) * alignment;
    }
    const pad = (n: number) => (alignment - (n % alignment)) % alignment;
    await sink.write(h.finish());
    await sink.write(new Uint8Array(pad(h.length)));
    for (const t of tensors) {
      const d = await t.data();
      if (d.length !== t.bytes) throw new Error(`GGUF tensor ${t.name}: ${d.length} bytes, ${t.bytes} announced`);
      await sink.write(d);
      await sink.write(new Uint8Array(pad(d.length)));
    }
    await sink.commit();
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

// ---- tensor encoders (ggml's _ref quantizers: the format's definition) ------------------

export function f32Bytes(v: Float32Array): Uint8Array {
  return new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
}

function halfBytes(v: Float32Array, cvt: (x: number) => number): Uint8Array {
  const o = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) o[i] = cvt(v[i]!);
  return new Uint8Array(o.buffer);
}

/** ggml quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d), d stored as f16. */
export function quantizeQ8_0(v: Float32Array): Uint8Array {
  const out = new Uint8Array((v.length / 32) * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < v.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(v[b * 32 + j]!));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) dv.setInt8(b * 34 + 2 + j, roundf(Math.fround(v[b * 32 + j]! * id)));
  }
  return out;
}

/** C's roundf: halfway cases away from zero (Math.round sends −2.5 to −2). */
function roundf(x: number): number {
  return Math.sign(x) * Math.round(Math.abs(x));
}

/** ggml quantize_row_q4_0_ref: max = the value of largest magnitude, d = max / −8, q = min(15, trunc(x/d + 8.5)). */
export function quantizeQ4_0(v: Float32Array): Uint8Array {
  const out = new Uint8Array((v.length / 32) * 18);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < v.length / 32; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const x = v[b * 32 + j]!;
      if (Math.abs(x) > amax) { amax = Math.abs(x); max = x; }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 18, f32ToF16(d), true);
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x0 + 8.5f): the sum is a float, rounded before the cut
      const q0 = Math.min(15, Math.trunc(Math.fround(Math.fround(v[b * 32 + j]! * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(Math.fround(v[b * 32 + 16 + j]! * id) + 8.5)));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** Stored bytes of n elements of a dtype. */
export function ggufBytes(dtype: GgufDtype, n: number): number {
  return dtype === 'f32' ? 4 * n : dtype === 'f16' || dtype === 'bf16' ? 2 * n : dtype === 'q8_0' ? (n / 32) * 34 : (n / 32) * 18;
}

export function encodeTensor(v: Float32Array, dtype: GgufDtype): Uint8Array {
  switch (dtype) {
    case 'f32': return f32Bytes(v);
    case 'f16': return halfBytes(v, f32ToF16);
    case 'bf16': return halfBytes(v, f32ToBf16);
    case 'q8_0': return quantizeQ8_0(v);
    case 'q4_0': return quantizeQ4_0(v);
  }
}

/** HF rotate-half rows → GGUF's interleaved rows, per head of D rows (the converter's `permute`). */
export function rotateHalfToInterleaved(w: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const hf = (h * headDim + j * half + i) * cols, il = (h * headDim + 2 * i + j) * cols;
        out.set(w.subarray(hf, hf + cols), il);
      }
    }
  }
  return out;
}

// ---- whole models ------------------------------------------------------------------------

/** tokenizer.ggml.* keys of a vocabulary (as llama.cpp's llama-vocab.cpp reads them). */
export function vocabMetadata(v: EmbeddedVocab): Array<[string, MetaValue]> {
  const out: Array<[string, MetaValue]> = [['tokenizer.ggml.model', meta.str(v.model)]];
  if (v.pre) out.push(['tokenizer.ggml.pre', meta.str(v.pre)]);
  out.push(['tokenizer.ggml.tokens', meta.strs(v.tokens)]);
  if (v.scores) out.push(['tokenizer.ggml.scores', meta.f32s(v.scores)]);
  if (v.tokenTypes) out.push(['tokenizer.ggml.token_type', meta.i32s(v.tokenTypes)]);
  if (v.merges) out.push(['tokenizer.ggml.merges', meta.strs(v.merges)]);
  const id = (k: string, x: number | null) => { if (x !== null) out.push([k, meta.u32(x)]); };
  id('tokenizer.ggml.bos_token_id', v.bosId);
  id('tokenizer.ggml.eos_token_id', v.eosId);
  id('tokenizer.ggml.unknown_token_id', v.unkId);
  id('tokenizer.ggml.padding_token_id', v.padId);
  out.push(['tokenizer.ggml.add_bos_token', meta.bool(v.addBos)], ['tokenizer.ggml.add_eos_token', meta.bool(v.addEos)]);
  if (v.model === 'llama' && !v.addSpacePrefix) out.push(['tokenizer.ggml.add_space_prefix', meta.bool(false)]);
  if (v.chatTemplate) out.push(['tokenizer.chat_template', meta.str(v.chatTemplate)]);
  return out;
}

export interface GgufModelOptions {
  /** storage of 2-D weights (norms, biases and rope_freqs stay F32, as llama.cpp's converter keeps them) */
  dtype: GgufDtype;
  vocab: EmbeddedVocab | null;
  /** extra metadata (chat template, file type, …) */
  metadata?: Array<[string, MetaValue]>;
  /** float values of a tensor in HF layout (default: the source's readFloat; merge passes merged weights) */
  values?: (hfName: string) => Promise<Float32Array>;
  onProgress?: (done: number, total: number, name: string) => void;
}

/**
 * A model as a GGUF file for llama.cpp: every tensor of the config in llama.cpp's name and
 * storage for the model's architecture, one tensor in memory at a time.
 */
export async function writeGgufModel(src: WeightSource, sink: ByteSink, o: GgufModelOptions): Promise<{ tensors: number }> {
  const c = src.config;
  let arch: GgufArch;
  try {
    arch = ggufArchOf(c, src.name);
  } catch (e) {
    await sink.abort();
    throw e;
  }
  if (c.ropeScaling?.ropeType === 'factors' && arch.name !== 'llama') {
    await sink.abort();
    throw new WebqloraError(`${src.name}: per-dimension RoPE factors can only be written for the llama architecture.`);
  }
  const values = o.values ?? ((n: string) => src.readFloat(n));
  const md: Array<[string, MetaValue]> = ggufModelMetadata(arch, c).map(([k, v, t]) => [k, t === 'u32' ? meta.u32(v as number) : t === 'f32' ? meta.f32(v as number) : meta.str(v as string)]);
  md.push(['general.file_type', meta.u32({ f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 }[o.dtype])]);
  if (o.vocab) md.push(...vocabMetadata(o.vocab));
  md.push(...(o.metadata ?? []));
  const list = expectedTensors(c);
  const out: GgufTensorOut[] = [];
  let done = 0;
  for (const t of list) {
    const name = hfToGgufTensor(arch, t.name)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    // ggml quantizes rows of 32: a 2-D weight whose rows do not divide stays f16
    const dtype: GgufDtype = t.shape.length === 1 ? 'f32' : (o.dtype === 'q8_0' || o.dtype === 'q4_0') && t.shape[1]! % 32 !== 0 ? 'f16' : o.dtype;
    out.push({
      name, shape: t.shape, type: DTYPE_TYPE[dtype], bytes: ggufBytes(dtype, n),
      data: async () => {
        let v = await values(t.name);
        if (arch.normShift && /norm\.weight$/.test(t.name)) v = Float32Array.from(v, (x) => Math.fround(1 + x));
        if (arch.permuteQK) {
          const m = /\.self_attn\.([qk])_proj\.(?:weight|bias)$/.exec(t.name);
          if (m) {
            const heads = m[1] === 'q' ? c.numHeads : c.numKVHeads;
            v = rotateHalfToInterleaved(v, heads, c.headDim, v.length / (heads * c.headDim));
          }
        }
        o.onProgress?.(++done, list.length, t.name);
        return encodeTensor(v, dtype);
      },
    });
  }
  // Llama 3 rope scaling as llama.cpp's per-dimension divisors
  const factors = c.ropeScaling?.ropeType === 'factors' ? Float32Array.from(c.ropeScaling.factors!) : llama3RopeFactors(c);
  if (factors) {
    if (arch.name !== 'llama') {
      await sink.abort();
      throw new WebqloraError(`${src.name}: Llama 3 rope scaling can only be written for the llama architecture.`);
    }
    out.push({ name: 'rope_freqs.weight', shape: [factors.length], type: GGML.F32, bytes: 4 * factors.length, data: async () => f32Bytes(factors) });
  }
  await writeGgufFile(sink, md, out);
  return { tensors: out.length };
}

export type { ModelConfig };
