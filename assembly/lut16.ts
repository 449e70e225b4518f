// 16-entry float32 table lookup, 16 codes at a time, with byte swizzles. Plane k holds byte k of
// every table entry, so swizzle(plane_k, codes) gives byte k of each looked-up float; shuffles
// then put the four bytes of each float back together. Used by 4-bit dequantization and by the
// fused 4-bit GEMMs (the table is always the quant_map stored with the tensor).
import { swizzle16 } from './simd';

/** Byte k (0..3) of each of the 16 little-endian float32 entries at `table`. */
@inline export function lutPlane(table: usize, k: usize): v128 {
  let lo: u64 = 0, hi: u64 = 0;
  for (let e: usize = 0; e < 8; e++) {
    lo |= (<u64>load<u8>(table + (e << 2) + k)) << (<u64>e << 3);
    hi |= (<u64>load<u8>(table + ((e + 8) << 2) + k)) << (<u64>e << 3);
  }
  return i64x2.replace_lane(i64x2.splat(<i64>lo), 1, <i64>hi);
}

/**
 * Unpacks 8 bytes at src (16 codes, element 2j in the high nibble of byte j), looks them up, and
 * stores table[code] * scale for the 16 elements at dst (f32 [16]).
 */
@inline export function decode16(src: usize, p0: v128, p1: v128, p2: v128, p3: v128, scale: v128, dst: usize): void {
  const raw = v128.load64_zero(src);
  const hi = i8x16.shr_u(raw, 4);
  const lo = v128.and(raw, i8x16.splat(15));
  const codes = i8x16.shuffle(hi, lo, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const b0 = swizzle16(p0, codes);
  const b1 = swizzle16(p1, codes);
  const b2 = swizzle16(p2, codes);
  const b3 = swizzle16(p3, codes);
  const lo01 = i8x16.shuffle(b0, b1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const hi01 = i8x16.shuffle(b0, b1, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const lo23 = i8x16.shuffle(b2, b3, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const hi23 = i8x16.shuffle(b2, b3, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  v128.store(dst, f32x4.mul(i8x16.shuffle(lo01, lo23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23), scale));
  v128.store(dst, f32x4.mul(i8x16.shuffle(lo01, lo23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31), scale), 16);
  v128.store(dst, f32x4.mul(i8x16.shuffle(hi01, hi23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23), scale), 32);
  v128.store(dst, f32x4.mul(i8x16.shuffle(hi01, hi23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31), scale), 48);
}
