// Blockwise 4-bit quantization (NF4 / FP4 / Int4) and double quantization, running the WASM
// kernels in assembly/quant.ts. Long tensors go through the kernel memory in chunks of whole
// blocks, so quantizing a 45M-element weight needs a few MiB of kernel memory, not 180 MiB.
import { WebqloraError } from '../errors.ts';
import { sharedKernels, type WasmKernels } from '../backend/wasm/module.ts';
import { NF4_CODE, FP4_CODE, INT4_CODE, DYNAMIC_SIGNED } from './tables.ts';
import { ALLOWED_BLOCKSIZES, NESTED_BLOCKSIZE, QTYPE_CODE, numBlocks, type DoubleQuant, type Quant4Tensor, type QuantType } from './types.ts';
import { numel } from '../num.ts';

const f32 = Math.fround;
const CHUNK_ELEMS = 1 << 20; // multiple of every allowed blocksize

export interface QuantizeOptions {
  quantType: QuantType;
  blocksize?: number;
  doubleQuant?: boolean;
  /** Shape to record (defaults to [n]). */
  shape?: number[];
  /** dtype the values came from (recorded for bnb's quant_state; values are already float32). */
  dtype?: 'F32' | 'F16' | 'BF16';
}

export function quantMapOf(type: QuantType): Float32Array {
  return (type === 'nf4' ? NF4_CODE : type === 'fp4' ? FP4_CODE : INT4_CODE).slice();
}

export function checkBlocksize(blocksize: number, what = 'blocksize'): void {
  if (!(ALLOWED_BLOCKSIZES as readonly number[]).includes(blocksize)) {
    throw new WebqloraError(`${what} ${blocksize} is not supported (expected one of ${ALLOWED_BLOCKSIZES.join(', ')}).`);
  }
}

/** Quantizes float32 values to a bnb-layout 4-bit tensor. */
export async function quantize4bit(x: Float32Array, opts: QuantizeOptions): Promise<Quant4Tensor> {
  const blocksize = opts.blocksize ?? 64;
  checkBlocksize(blocksize);
  const shape = opts.shape ?? [x.length];
  if (numel(shape) !== x.length) throw new Error(`quantize4bit: shape [${shape}] does not hold ${x.length} values`);
  const kern = await sharedKernels();
  const n = x.length;
  const packed = new Uint8Array(Math.ceil(n / 2));
  const absmax = new Float32Array(numBlocks(n, blocksize));
  const chunk = Math.min(CHUNK_ELEMS, Math.max(n, 1));
  const xp = kern.alloc(chunk * 4), pp = kern.alloc(chunk / 2 + 1), ap = kern.alloc(numBlocks(chunk, blocksize) * 4);
  try {
    for (let s = 0; s < n; s += chunk) {
      const len = Math.min(chunk, n - s);
      kern.f32(xp, len).set(x.subarray(s, s + len));
      kern.k.quantize_4bit(xp, len, blocksize, QTYPE_CODE[opts.quantType], pp, ap);
      packed.set(kern.u8(pp, Math.ceil(len / 2)), s / 2);
      absmax.set(kern.f32(ap, numBlocks(len, blocksize)), s / blocksize);
    }
  } finally {
    kern.release(xp); kern.release(pp); kern.release(ap);
  }
  const q: Quant4Tensor = {
    quantType: opts.quantType, blocksize, shape: [...shape], dtype: opts.dtype ?? 'F32',
    packed, quantMap: quantMapOf(opts.quantType), absmax, dq: null,
  };
  return opts.doubleQuant ? doubleQuantize(q, kern) : q;
}

/**
 * Double quantization (QLoRA §3): offset = mean(absmax); the centred absmax is quantized with the
 * signed dynamic 8-bit map in blocks of 256. The 4-bit codes do not change.
 */
export async function doubleQuantize(q: Quant4Tensor, kernels?: WasmKernels, offset?: number): Promise<Quant4Tensor> {
  if (!q.absmax) return q;
  const kern = kernels ?? (await sharedKernels());
  const absmax = q.absmax;
  const nb = absmax.length;
  // torch computes the mean as a float32 cascade sum; a float64 sum rounded once is within
  // 2 ulp of it (vectors README §4). Callers that must match a given file pass its offset.
  let mean = offset;
  if (mean === undefined) {
    let sum = 0;
    for (let i = 0; i < nb; i++) sum += absmax[i]!;
    mean = f32(sum / nb);
  }
  const centred = new Float32Array(nb);
  for (let i = 0; i < nb; i++) centred[i] = absmax[i]! - mean;
  const { q: codes, absmax: nested } = await quantizeBlockwise8(centred, NESTED_BLOCKSIZE, kern);
  const dq: DoubleQuant = { codes, nestedAbsmax: nested, nestedQuantMap: DYNAMIC_SIGNED.slice(), offset: mean, nestedBlocksize: NESTED_BLOCKSIZE };
  return { ...q, absmax: null, dq };
}

/** bnb quantize_blockwise with the signed dynamic map. */
export async function quantizeBlockwise8(x: Float32Array, blocksize: number, kernels?: WasmKernels): Promise<{ q: Uint8Array; absmax: Float32Array }> {
  const kern = kernels ?? (await sharedKernels());
  const n = x.length;
  const nb = numBlocks(n, blocksize);
  const xp = kern.alloc(n * 4), qp = kern.alloc(n), ap = kern.alloc(nb * 4);
  try {
    kern.f32(xp, n).set(x);
    kern.k.quantize_blockwise_8bit(xp, n, blocksize, 0, qp, ap);
    return { q: kern.u8(qp, n).slice(), absmax: kern.f32(ap, nb).slice() };
  } finally {
    kern.release(xp); kern.release(qp); kern.release(ap);
  }
}

/** bnb dequantize_blockwise: f32(code[q] * absmax[i / blocksize]). */
export async function dequantizeBlockwise8(q: Uint8Array, blocksize: number, code: Float32Array, absmax: Float32Array): Promise<Float32Array> {
  const kern = await sharedKernels();
  const n = q.length;
  const qp = kern.alloc(n), cp = kern.alloc(1024), ap = kern.alloc(absmax.length * 4), op = kern.alloc(n * 4);
  try {
    kern.u8(qp, n).set(q);
    kern.f32(cp, 256).set(code);
    kern.f32(ap, absmax.length).set(absmax);
    kern.k.dequantize_blockwise_8bit(qp, n, blocksize, cp, ap, op);
    return kern.f32(op, n).slice();
  } finally {
    kern.release(qp); kern.release(cp); kern.release(ap); kern.release(op);
  }
}

/** The first-level absmax a 4-bit tensor dequantizes with (recovered from DQ if needed). */
export async function effectiveAbsmax(q: Quant4Tensor, kernels?: WasmKernels): Promise<Float32Array> {
  if (q.absmax) return q.absmax;
  const dq = q.dq!;
  const kern = kernels ?? (await sharedKernels());
  const nb = dq.codes.length;
  const qp = kern.alloc(nb), cp = kern.alloc(1024), np = kern.alloc(dq.nestedAbsmax.length * 4), op = kern.alloc(nb * 4);
  try {
    kern.u8(qp, nb).set(dq.codes);
    kern.f32(cp, 256).set(dq.nestedQuantMap);
    kern.f32(np, dq.nestedAbsmax.length).set(dq.nestedAbsmax);
    kern.k.dq_recover_absmax(qp, nb, dq.nestedBlocksize, cp, np, dq.offset, op);
    return kern.f32(op, nb).slice();
  } finally {
    kern.release(qp); kern.release(cp); kern.release(np); kern.release(op);
  }
}

/** Dequantizes to float32 values (round those to q.dtype to get bnb's dequantize_4bit output). */
export async function dequantize4bit(q: Quant4Tensor): Promise<Float32Array> {
  const kern = await sharedKernels();
  const n = numel(q.shape);
  const absmax = await effectiveAbsmax(q, kern);
  const out = new Float32Array(n);
  const chunk = Math.min(CHUNK_ELEMS, Math.max(n, 1));
  const pp = kern.alloc(chunk / 2 + 1), mp = kern.alloc(64), ap = kern.alloc(numBlocks(chunk, q.blocksize) * 4), op = kern.alloc(chunk * 4);
  try {
    kern.f32(mp, 16).set(q.quantMap);
    for (let s = 0; s < n; s += chunk) {
      const len = Math.min(chunk, n - s);
      const nbc = numBlocks(len, q.blocksize);
      kern.u8(pp, Math.ceil(len / 2)).set(q.packed.subarray(s / 2, s / 2 + Math.ceil(len / 2)));
      kern.f32(ap, nbc).set(absmax.subarray(s / q.blocksize, s / q.blocksize + nbc));
      kern.k.dequantize_4bit(pp, len, q.blocksize, mp, ap, op);
      out.set(kern.f32(op, len), s);
    }
  } finally {
    kern.release(pp); kern.release(mp); kern.release(ap); kern.release(op);
  }
  return out;
}

/**
 * Rows [row0, row0 + rows) of a quantized [N, K] weight as a weight of its own, with exactly the
 * values bitsandbytes dequantizes for those rows (Phi-3's fused qkv_proj / gate_up_proj are
 * quantized whole, as bnb does, and split here). The slice must start on a block boundary. Its
 * absmax stays double-quantized when it also starts on a nested-block boundary; otherwise the
 * slice's absmax is recovered once (bnb's rule, bit-exact) and kept as float32.
 */
export function sliceQuantRows(q: Quant4Tensor, row0: number, rows: number): Quant4Tensor {
  const K = q.shape[1]!, e0 = row0 * K, n = rows * K, bs = q.blocksize;
  if (e0 % bs !== 0 || e0 % 2 !== 0) throw new Error(`sliceQuantRows: row ${row0} × ${K} does not start a ${bs}-block`);
  const b0 = e0 / bs, nb = Math.ceil(n / bs);
  const packed = q.packed.slice(e0 / 2, e0 / 2 + Math.ceil(n / 2));
  const out: Quant4Tensor = { ...q, shape: [rows, K], packed, absmax: null, dq: null };
  if (q.absmax) {
    out.absmax = q.absmax.slice(b0, b0 + nb);
  } else if (q.dq) {
    const dq = q.dq, nbs = dq.nestedBlocksize;
    if (b0 % nbs === 0) {
      out.dq = { ...dq, codes: dq.codes.slice(b0, b0 + nb), nestedAbsmax: dq.nestedAbsmax.slice(b0 / nbs, Math.ceil((b0 + nb) / nbs)) };
    } else {
      const f = Math.fround, a = new Float32Array(nb);
      for (let b = 0; b < nb; b++) a[b] = f(f(dq.nestedQuantMap[dq.codes[b0 + b]!]! * dq.nestedAbsmax[Math.floor((b0 + b) / nbs)]!) + dq.offset);
      out.absmax = a;
    }
  }
  return out;
}
