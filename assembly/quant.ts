// Blockwise quantization with bitsandbytes' exact semantics (default/pure-torch backend, which is
// also what bnb runs on CPU; see shared/vectors/bnb/README.md §3):
//   absmax_b = max |x_i| over the block (float32)
//   full block:    s_i = clamp(f32(x_i * f32(1 / max(absmax_b, 1e-38))), -1, 1)
//   partial tail:  a = max(absmax_b, 1e-38) (stored);  s_i = clamp(f32(x_i / a), -1, 1)
//   code = #{ j : bounds[j] < s_i }   (ties go to the lower code; bucketize right=False)
// 4-bit codes are packed two per byte, the even element in the HIGH nibble.
// Pointers are byte offsets into the (imported) linear memory; the TS side owns allocation.
import { NF4_BOUNDS, FP4_BOUNDS, FP4_ORDER, INT4_BOUNDS, DYNAMIC_SIGNED_BOUNDS } from './tables';
import { lutPlane, decode16 } from './lut16';
import { hmax } from './simd';
import { dqAbsmaxRule } from './dq';

export const QTYPE_NF4: i32 = 0;
export const QTYPE_FP4: i32 = 1;
export const QTYPE_INT4: i32 = 2;

const TINY: f32 = 1e-38; // bnb clamps the divisor (backends/default/ops.py)

@inline function clampUnit(s: f32): f32 {
  return s < -1.0 ? -1.0 : s > 1.0 ? 1.0 : s;
}

/** Number of bounds strictly below s: the bucket of s. 15 or 255 bounds, ascending. */
@inline function bucket15(bounds: usize, s: f32): i32 {
  // Branch-free count; 15 compares are cheaper than a mispredicted binary search.
  let q: i32 = 0;
  for (let j: i32 = 0; j < 15; j++) q += i32(load<f32>(bounds + (<usize>j << 2)) < s);
  return q;
}

@inline function bucket255(bounds: usize, s: f32): i32 {
  // Lower-bound binary search: smallest k with !(bounds[k] < s), i.e. the count of bounds < s.
  let lo: i32 = 0, hi: i32 = 255;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (load<f32>(bounds + (<usize>mid << 2)) < s) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

@inline function blockAbsmax(x: usize, len: i32): f32 {
  let m0 = f32x4.splat(0), m1 = f32x4.splat(0);
  let i: i32 = 0;
  for (; i + 8 <= len; i += 8) {
    m0 = f32x4.max(m0, f32x4.abs(v128.load(x + (<usize>i << 2))));
    m1 = f32x4.max(m1, f32x4.abs(v128.load(x + (<usize>i << 2), 16)));
  }
  let m = hmax(f32x4.max(m0, m1));
  for (; i < len; i++) m = max(m, abs(load<f32>(x + (<usize>i << 2))));
  return m;
}

/**
 * Stores the absmax of a block of len values at xb as bnb does (a full block: max |x|; the tail:
 * the divisor it is scaled by) and returns that divisor, max(max |x|, TINY).
 */
@inline function storeAbsmax(absmax: usize, b: i32, xb: usize, len: i32, full: bool): f32 {
  const am = blockAbsmax(xb, len);
  const a = max(am, TINY);
  store<f32>(absmax + (<usize>b << 2), full ? am : a);
  return a;
}

@inline function code4(qtype: i32, s: f32): i32 {
  if (qtype == QTYPE_NF4) return bucket15(NF4_BOUNDS, s);
  if (qtype == QTYPE_FP4) return <i32>load<u8>(FP4_ORDER + <usize>bucket15(FP4_BOUNDS, s));
  return bucket15(INT4_BOUNDS, s);
}

/**
 * 4-bit blockwise quantization of n float32 values.
 * x: f32 [n]; packed: u8 [ceil(n/2)] (out); absmax: f32 [ceil(n/blocksize)] (out).
 * An odd n pads the last low nibble with the code of 0.0 (NF4 7, FP4 0), as bnb does.
 * Blocks are independent, so callers may quantize a long tensor in chunks of whole blocks
 * (the chunk's first element must be even so bytes are not split).
 */
export function quantize_4bit(x: usize, n: i32, blocksize: i32, qtype: i32, packed: usize, absmax: usize): void {
  const nb = (n + blocksize - 1) / blocksize;
  const bounds = qtype == QTYPE_NF4 ? NF4_BOUNDS : qtype == QTYPE_FP4 ? FP4_BOUNDS : INT4_BOUNDS;
  for (let b: i32 = 0; b < nb; b++) {
    const start = b * blocksize, len = min(blocksize, n - start), xb = x + (<usize>start << 2);
    const full = len == blocksize;
    const a = storeAbsmax(absmax, b, xb, len, full);
    if (full) {
      // every allowed blocksize is a multiple of 16
      quantizeBlockSimd(xb, blocksize, <f32>1.0 / a, bounds, qtype == QTYPE_FP4, packed + <usize>(start >> 1));
      continue;
    }
    // the partial tail divides (bnb); blocksize is even, so a block starts on a byte boundary.
    for (let i: i32 = 0; i < len; i += 2) {
      const x0 = load<f32>(xb + (<usize>i << 2));
      const c0 = code4(qtype, clampUnit(x0 / a));
      let c1: i32;
      if (i + 1 < len) {
        const x1 = load<f32>(xb + (<usize>(i + 1) << 2));
        c1 = code4(qtype, clampUnit(x1 / a));
      } else {
        c1 = qtype == QTYPE_FP4 ? 0 : 7; // the code of 0.0
      }
      store<u8>(packed + <usize>((start + i) >> 1), <u8>((c0 << 4) | c1));
    }
  }
}

/**
 * One full block, 16 elements per step: s = clamp(x * r) in f32 lanes (the same IEEE products as
 * the scalar path), code = number of bounds below s (15 lane compares), FP4 codes mapped through
 * FP4_ORDER with a byte swizzle, then even elements to the high nibble.
 */
@inline function quantizeBlockSimd(xb: usize, len: i32, r: f32, bounds: usize, fp4: bool, out: usize): void {
  const rv = f32x4.splat(r);
  const one = f32x4.splat(1.0), neg = f32x4.splat(-1.0);
  const order = v128.load(FP4_ORDER);
  for (let i: i32 = 0; i < len; i += 16) {
    const p = xb + (<usize>i << 2);
    const s0 = f32x4.max(neg, f32x4.min(one, f32x4.mul(v128.load(p), rv)));
    const s1 = f32x4.max(neg, f32x4.min(one, f32x4.mul(v128.load(p, 16), rv)));
    const s2 = f32x4.max(neg, f32x4.min(one, f32x4.mul(v128.load(p, 32), rv)));
    const s3 = f32x4.max(neg, f32x4.min(one, f32x4.mul(v128.load(p, 48), rv)));
    let q0 = i32x4.splat(0), q1 = i32x4.splat(0), q2 = i32x4.splat(0), q3 = i32x4.splat(0);
    for (let j: i32 = 0; j < 15; j++) {
      const t = v128.load32_splat(bounds + (<usize>j << 2));
      // lt gives all-ones (-1) where bound < s: subtracting counts it
      q0 = i32x4.sub(q0, f32x4.lt(t, s0));
      q1 = i32x4.sub(q1, f32x4.lt(t, s1));
      q2 = i32x4.sub(q2, f32x4.lt(t, s2));
      q3 = i32x4.sub(q3, f32x4.lt(t, s3));
    }
    let codes = i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(q0, q1), i16x8.narrow_i32x4_u(q2, q3));
    if (fp4) codes = i8x16.swizzle(order, codes);
    const even = i8x16.shuffle(codes, codes, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
    const odd = i8x16.shuffle(codes, codes, 1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
    const bytes = v128.or(i8x16.shl(even, 4), odd);
    v128.store64_lane(out + <usize>(i >> 1), bytes, 0);
  }
}

/**
 * 4-bit dequantization: out_i = f32(quant_map[code_i] * absmax[i / blocksize]).
 * packed: u8 [ceil(n/2)]; quant_map: f32 [16] (always the map stored with the tensor);
 * absmax: f32 [ceil(n/blocksize)] (already recovered from double quantization); out: f32 [n].
 */
export function dequantize_4bit(packed: usize, n: i32, blocksize: i32, quant_map: usize, absmax: usize, out: usize): void {
  const nb = (n + blocksize - 1) / blocksize;
  const p0 = lutPlane(quant_map, 0), p1 = lutPlane(quant_map, 1), p2 = lutPlane(quant_map, 2), p3 = lutPlane(quant_map, 3);
  for (let b: i32 = 0; b < nb; b++) {
    const start = b * blocksize;
    const len = min(blocksize, n - start);
    const a = load<f32>(absmax + (<usize>b << 2));
    const ob = out + (<usize>start << 2);
    const pb = packed + <usize>(start >> 1);
    let i: i32 = 0;
    const av = f32x4.splat(a);
    for (; i + 16 <= len; i += 16) decode16(pb + <usize>(i >> 1), p0, p1, p2, p3, av, ob + (<usize>i << 2));
    for (; i + 1 < len; i += 2) {
      const byte = <u32>load<u8>(pb + <usize>(i >> 1));
      store<f32>(ob + (<usize>i << 2), load<f32>(quant_map + (<usize>(byte >> 4) << 2)) * a);
      store<f32>(ob + (<usize>(i + 1) << 2), load<f32>(quant_map + (<usize>(byte & 15) << 2)) * a);
    }
    if (i < len) {
      const byte = <u32>load<u8>(pb + <usize>(i >> 1));
      store<f32>(ob + (<usize>i << 2), load<f32>(quant_map + (<usize>(byte >> 4) << 2)) * a);
    }
  }
}

/**
 * 8-bit blockwise quantization against a sorted 256-entry code (bnb quantize_blockwise).
 * bounds: f32 [255] midpoints of the code (0 selects the built-in signed dynamic map);
 * x: f32 [n]; q: u8 [n] (out); absmax: f32 [ceil(n/blocksize)] (out).
 */
export function quantize_blockwise_8bit(x: usize, n: i32, blocksize: i32, bounds: usize, q: usize, absmax: usize): void {
  const bnd = bounds == 0 ? DYNAMIC_SIGNED_BOUNDS : bounds;
  const nb = (n + blocksize - 1) / blocksize;
  for (let b: i32 = 0; b < nb; b++) {
    const start = b * blocksize, len = min(blocksize, n - start), xb = x + (<usize>start << 2);
    const full = len == blocksize;
    const a = storeAbsmax(absmax, b, xb, len, full);
    const r: f32 = 1.0 / a;
    for (let i: i32 = 0; i < len; i++) {
      const xi = load<f32>(xb + (<usize>i << 2));
      store<u8>(q + <usize>(start + i), <u8>bucket255(bnd, clampUnit(full ? xi * r : xi / a)));
    }
  }
}

/**
 * 8-bit blockwise dequantization (bnb dequantize_blockwise): out_i = f32(code[q_i] * absmax[i / blocksize]).
 * q: u8 [n]; code: f32 [256]; absmax: f32 [ceil(n/blocksize)]; out: f32 [n].
 */
export function dequantize_blockwise_8bit(q: usize, n: i32, blocksize: i32, code: usize, absmax: usize, out: usize): void {
  for (let i: i32 = 0; i < n; i++) {
    const v = load<f32>(code + (<usize>load<u8>(q + <usize>i) << 2)) * load<f32>(absmax + (<usize>(i / blocksize) << 2));
    store<f32>(out + (<usize>i << 2), v);
  }
}

/**
 * Recovers the 4-bit absmax from double quantization (QLoRA §3, bnb dequantize_4bit with a
 * nested state): absmax_b = f32(f32(code[q_b] * nested_absmax[b / nested_blocksize]) + offset).
 */
export function dq_recover_absmax(q: usize, nb: i32, nested_blocksize: i32, code: usize, nested_absmax: usize, offset: f32, out: usize): void {
  for (let i: i32 = 0; i < nb; i++) {
    store<f32>(out + (<usize>i << 2), dqAbsmaxRule(code, <usize>load<u8>(q + <usize>i), nested_absmax, <usize>(i / nested_blocksize), offset));
  }
}

