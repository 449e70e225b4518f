// Plain-TS reference of blockwise quantization: the oracle the WASM and WGSL kernels are tested
// against, and a line-by-line statement of bitsandbytes' default-backend semantics
// (shared/vectors/bnb/README.md §3). Float32 rounding is made explicit with Math.fround.
import { NF4_BOUNDS, FP4_BOUNDS, FP4_ORDER, INT4_BOUNDS, DYNAMIC_SIGNED_BOUNDS } from '../../quant/tables.ts';
import type { QuantType } from '../../quant/types.ts';

const f32 = Math.fround;
const TINY = f32(1e-38);

function clampUnit(s: number): number {
  return s < -1 ? -1 : s > 1 ? 1 : s;
}
/** #{ j : bounds[j] < s }: bnb's torch.bucketize(right=False). */
export function bucketOf(bounds: Float32Array, s: number): number {
  let q = 0;
  for (let j = 0; j < bounds.length; j++) if (bounds[j]! < s) q++;
  return q;
}
function code4(type: QuantType, s: number): number {
  if (type === 'nf4') return bucketOf(NF4_BOUNDS, s);
  if (type === 'fp4') return FP4_ORDER[bucketOf(FP4_BOUNDS, s)]!;
  return bucketOf(INT4_BOUNDS, s);
}

/** Per-block scaled values in [-1, 1] and the stored absmax, per bnb's rules. */
function scaleBlocks(x: Float32Array, blocksize: number, each: (i: number, s: number) => void): Float32Array {
  const nb = Math.ceil(x.length / blocksize);
  const absmax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const start = b * blocksize;
    const end = Math.min(start + blocksize, x.length);
    let am = 0;
    for (let i = start; i < end; i++) am = Math.max(am, Math.abs(x[i]!));
    const a = Math.max(am, TINY);
    const full = end - start === blocksize;
    const r = f32(1 / a);
    absmax[b] = full ? am : a; // the tail stores the clamped value, full blocks the raw one
    for (let i = start; i < end; i++) each(i, clampUnit(full ? f32(x[i]! * r) : f32(x[i]! / a)));
  }
  return absmax;
}

export function quantize4bitRef(x: Float32Array, blocksize: number, type: QuantType): { packed: Uint8Array; absmax: Float32Array } {
  const n = x.length;
  const packed = new Uint8Array(Math.ceil(n / 2));
  const zeroCode = type === 'fp4' ? 0 : 7;
  if (n % 2) packed[packed.length - 1] = zeroCode; // low nibble of an odd tail: the code of 0.0
  const absmax = scaleBlocks(x, blocksize, (i, s) => {
    const c = code4(type, s);
    packed[i >> 1] = i % 2 === 0 ? (c << 4) | (packed[i >> 1]! & 15) : (packed[i >> 1]! & 0xf0) | c;
  });
  return { packed, absmax };
}

export function dequantize4bitRef(packed: Uint8Array, n: number, blocksize: number, quantMap: Float32Array, absmax: Float32Array): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const byte = packed[i >> 1]!;
    const c = i % 2 === 0 ? byte >> 4 : byte & 15;
    out[i] = f32(quantMap[c]! * absmax[Math.floor(i / blocksize)]!);
  }
  return out;
}

export function quantizeBlockwise8Ref(x: Float32Array, blocksize: number, bounds: Float32Array = DYNAMIC_SIGNED_BOUNDS): { q: Uint8Array; absmax: Float32Array } {
  const q = new Uint8Array(x.length);
  const absmax = scaleBlocks(x, blocksize, (i, s) => { q[i] = bucketOf(bounds, s); });
  return { q, absmax };
}

export function dequantizeBlockwise8Ref(q: Uint8Array, blocksize: number, code: Float32Array, absmax: Float32Array): Float32Array {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = f32(code[q[i]!]! * absmax[Math.floor(i / blocksize)]!);
  return out;
}

/** absmax_b = f32(f32(code[q_b] * nested_absmax[b / nbs]) + offset). */
export function dqRecoverAbsmaxRef(codes: Uint8Array, nestedBlocksize: number, code: Float32Array, nestedAbsmax: Float32Array, offset: number): Float32Array {
  const out = new Float32Array(codes.length);
  for (let b = 0; b < codes.length; b++) out[b] = f32(f32(code[codes[b]!]! * nestedAbsmax[Math.floor(b / nestedBlocksize)]!) + offset);
  return out;
}

/** Midpoints of a sorted 256-entry code, in float32 (what quantize_blockwise compares against). */
export function codeBounds(code: Float32Array): Float32Array {
  const b = new Float32Array(code.length - 1);
  for (let j = 0; j < b.length; j++) b[j] = f32(f32(code[j]! + code[j + 1]!) / 2);
  return b;
}
