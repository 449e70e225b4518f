// ggml block quantization types → float32, bit for bit as gguf-py dequantizes them
// (llama.cpp gguf-py/gguf/quants.py `dequantize_blocks`; the same values as ggml-quants.c
// `dequantize_row_*`). Block layouts are ggml-common.h's `block_*` structs, little-endian, f16
// fields as IEEE half.
//
// Rounding. gguf-py computes in numpy float32, one rounding per operation, in a fixed order:
//   K-quants with mins (Q2_K, Q4_K, Q5_K):  x = fl(fl(d·sc)·q) − fl(dmin·m)
//   K-quants without (Q3_K, Q6_K):          x = fl(d·sc)·q
//   Q4_1, Q5_1:                             x = fl(d·q) + m
//   Q4_0, Q5_0, Q8_0, IQ4_NL:               x = d·q
// A float64 +, − or × of two float32 values rounded to float32 equals the float32 operation
// (53 ≥ 2·24 + 2, so the double rounding is innocuous), so intermediates go through Math.fround and
// the last operation is rounded by the store into the Float32Array. In fact every intermediate
// product is exact (an f16 has 11 significant bits, scales 4–8, quants 2–8, and no product leaves
// float32's normal range), so only the last operation rounds: Q6_K's fl(d·sc)·q (up to 25 bits)
// and the subtraction or addition of a min; a fused multiply-add there (as a WGSL or C port
// might contract it) would change bits.
//
// Legend: S = elements per block (32, or QK_K = 256 for the K-quants), n = elements to decode (a
// multiple of S), src = n/S blocks back to back. Callers check src's length (gguf.ts, with the
// tensor's name); here a short src is a bug and throws a RangeError.

/** Decodes `n` elements from `src` into `out` (a new Float32Array(n) by default) and returns it. */
export type Dequantize = (src: Uint8Array, n: number, out?: Float32Array) => Float32Array;

const QK_K = 256;

// half → float through the float32 bit pattern: normal halves re-biased (127 − 15 = 112) and
// shifted into place; zeros, subnormals, inf and NaN (rare in scales) take the slow exact path.
const cvtU32 = new Uint32Array(1);
const cvtF32 = new Float32Array(cvtU32.buffer);
function half(src: Uint8Array, i: number): number {
  const h = src[i]! | (src[i + 1]! << 8);
  const e = h & 0x7c00;
  if (e === 0 || e === 0x7c00) return halfSlow(h);
  cvtU32[0] = ((h & 0x8000) << 16) | (((h & 0x7fff) + 0x1c000) << 13);
  return cvtF32[0]!;
}
function halfSlow(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const m = h & 0x3ff;
  if ((h & 0x7c00) === 0) return s * m * 2 ** -24;
  return m ? NaN : s * Infinity;
}

function check(name: string, src: Uint8Array, n: number, S: number, bytes: number, out: Float32Array): void {
  if (n % S !== 0 || src.length < (n / S) * bytes || out.length < n) {
    throw new RangeError(`${name}: ${n} elements need ${(n / S) * bytes} bytes and a ${n}-element output (S ${S}), got ${src.length} bytes and ${out.length}`);
  }
}

const fr = Math.fround;

/** Q4_0, S 32, 18 bytes: { f16 d; u8 qs[16] }; x[j] = d·((qs[j] & 15) − 8), x[j+16] = d·((qs[j] >> 4) − 8). */
export function dequantizeQ4_0(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q4_0', src, n, 32, 18, out);
  for (let b = 0, o = 0; o < n; b += 18, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j]!;
      out[o + j] = d * ((q & 15) - 8);
      out[o + j + 16] = d * ((q >> 4) - 8);
    }
  }
  return out;
}

/** Q4_1, S 32, 20 bytes: { f16 d; f16 m; u8 qs[16] }; nibbles as Q4_0 but unsigned, x = fl(d·q) + m. */
export function dequantizeQ4_1(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q4_1', src, n, 32, 20, out);
  for (let b = 0, o = 0; o < n; b += 20, o += 32) {
    const d = half(src, b), m = half(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 4 + j]!;
      out[o + j] = fr(d * (q & 15)) + m;
      out[o + j + 16] = fr(d * (q >> 4)) + m;
    }
  }
  return out;
}

/**
 * Q5_0, S 32, 22 bytes: { f16 d; u32 qh; u8 qs[16] }; element j's fifth bit is bit j of qh (little-
 * endian u32), its low four bits the nibble as in Q4_0; x = d·(q − 16).
 */
export function dequantizeQ5_0(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q5_0', src, n, 32, 22, out);
  for (let b = 0, o = 0; o < n; b += 22, o += 32) {
    const d = half(src, b);
    const qh = src[b + 2]! | (src[b + 3]! << 8) | (src[b + 4]! << 16) | (src[b + 5]! << 24);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 6 + j]!;
      out[o + j] = d * (((q & 15) | (((qh >>> j) & 1) << 4)) - 16);
      out[o + j + 16] = d * (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16);
    }
  }
  return out;
}

/** Q5_1, S 32, 24 bytes: { f16 d; f16 m; u32 qh; u8 qs[16] }; q as Q5_0 but unsigned, x = fl(d·q) + m. */
export function dequantizeQ5_1(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q5_1', src, n, 32, 24, out);
  for (let b = 0, o = 0; o < n; b += 24, o += 32) {
    const d = half(src, b), m = half(src, b + 2);
    const qh = src[b + 4]! | (src[b + 5]! << 8) | (src[b + 6]! << 16) | (src[b + 7]! << 24);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 8 + j]!;
      out[o + j] = fr(d * ((q & 15) | (((qh >>> j) & 1) << 4))) + m;
      out[o + j + 16] = fr(d * ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4))) + m;
    }
  }
  return out;
}

/** Q8_0, S 32, 34 bytes: { f16 d; i8 qs[32] }; x[j] = d·qs[j]. */
export function dequantizeQ8_0(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q8_0', src, n, 32, 34, out);
  for (let b = 0, o = 0; o < n; b += 34, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 32; j++) out[o + j] = d * ((src[b + 2 + j]! << 24) >> 24);
  }
  return out;
}

/**
 * Q2_K, S 256, 84 bytes: { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }. Sixteen sub-blocks of 16;
 * sub-block s has scale (scales[s] & 15) and min (scales[s] >> 4). Element 128h + 32j + l (h < 2,
 * j < 4, l < 32) is bits 2j..2j+1 of qs[32h + l]; x = fl(fl(d·sc)·q) − fl(dmin·m).
 */
export function dequantizeQ2_K(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q2_K', src, n, QK_K, 84, out);
  for (let b = 0, o = 0; o < n; b += 84, o += QK_K) {
    const d = half(src, b + 80), dmin = half(src, b + 82);
    for (let h = 0; h < 2; h++) {
      const qs = b + 16 + 32 * h;
      for (let j = 0; j < 4; j++) {
        const shift = 2 * j;
        for (let k = 0; k < 2; k++) { // two sub-blocks of 16 per 32 elements
          const sc = src[b + 8 * h + 2 * j + k]!;
          const dl = fr(d * (sc & 15)), ml = fr(dmin * (sc >> 4));
          const y = o + 128 * h + 32 * j + 16 * k, q = qs + 16 * k;
          for (let l = 0; l < 16; l++) out[y + l] = fr(dl * ((src[q + l]! >> shift) & 3)) - ml;
        }
      }
    }
  }
  return out;
}

/**
 * Q3_K, S 256, 110 bytes: { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }. Sixteen 6-bit signed
 * scales (offset 32): sub-block s takes its low 4 bits from scales[s mod 8] (low nibble for s < 8,
 * high for s ≥ 8) and its high 2 bits from scales[8 + s mod 4], bits 2⌊s/4⌋. Element 128h + 32j + l
 * has low bits 2j..2j+1 of qs[32h + l] and subtracts 4 unless bit 4h + j of hmask[l] is set;
 * x = fl(d·sc)·q.
 */
export function dequantizeQ3_K(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q3_K', src, n, QK_K, 110, out);
  const dl = new Float32Array(16);
  for (let b = 0, o = 0; o < n; b += 110, o += QK_K) {
    const d = half(src, b + 108), sc = b + 96;
    for (let s = 0; s < 16; s++) {
      const lo = (src[sc + (s & 7)]! >> (4 * (s >> 3))) & 15;
      const hi = (src[sc + 8 + (s & 3)]! >> (2 * (s >> 2))) & 3;
      dl[s] = d * ((lo | (hi << 4)) - 32);
    }
    for (let h = 0; h < 2; h++) {
      const qs = b + 32 + 32 * h;
      for (let j = 0; j < 4; j++) {
        const shift = 2 * j, bit = 4 * h + j, s = 8 * h + 2 * j, y = o + 128 * h + 32 * j;
        for (let l = 0; l < 32; l++) {
          const q = ((src[qs + l]! >> shift) & 3) - (((src[b + l]! >> bit) & 1) ^ 1) * 4;
          out[y + l] = dl[s + (l >> 4)]! * q;
        }
      }
    }
  }
  return out;
}

/**
 * The 12-byte scale/min block of Q4_K and Q5_K: eight 6-bit scales and eight 6-bit mins. For
 * i < 4: sc = s[i] & 63, m = s[i+4] & 63; for i ≥ 4: the low 4 bits come from s[i+4] (scale: low
 * nibble, min: high nibble) and the high 2 bits from the top bits of s[i−4] (scale) and s[i] (min).
 * Writes fl(d·sc[i]) into dl[i] and fl(dmin·m[i]) into ml[i].
 */
function kScales(src: Uint8Array, s: number, d: number, dmin: number, dl: Float32Array, ml: Float32Array): void {
  for (let i = 0; i < 4; i++) {
    dl[i] = d * (src[s + i]! & 63);
    ml[i] = dmin * (src[s + i + 4]! & 63);
    const x = src[s + i + 8]!;
    dl[i + 4] = d * ((x & 15) | ((src[s + i]! >> 6) << 4));
    ml[i + 4] = dmin * ((x >> 4) | ((src[s + i + 4]! >> 6) << 4));
  }
}

/**
 * Q4_K, S 256, 144 bytes: { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] } (kScales). Eight sub-blocks
 * of 32: sub-blocks 2g and 2g+1 are the low and high nibbles of qs[32g .. 32g+31];
 * x = fl(fl(d·sc)·q) − fl(dmin·m).
 */
export function dequantizeQ4_K(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q4_K', src, n, QK_K, 144, out);
  const dl = new Float32Array(8), ml = new Float32Array(8);
  for (let b = 0, o = 0; o < n; b += 144, o += QK_K) {
    kScales(src, b + 4, half(src, b), half(src, b + 2), dl, ml);
    for (let g = 0; g < 4; g++) {
      const d1 = dl[2 * g]!, m1 = ml[2 * g]!, d2 = dl[2 * g + 1]!, m2 = ml[2 * g + 1]!;
      const qs = b + 16 + 32 * g, y = o + 64 * g;
      for (let l = 0; l < 32; l++) {
        const q = src[qs + l]!;
        out[y + l] = fr(d1 * (q & 15)) - m1;
        out[y + l + 32] = fr(d2 * (q >> 4)) - m2;
      }
    }
  }
  return out;
}

/**
 * Q5_K, S 256, 176 bytes: { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: Q4_K plus a
 * fifth bit, bit s of qh[l] for element 32s + l; x = fl(fl(d·sc)·q) − fl(dmin·m).
 */
export function dequantizeQ5_K(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q5_K', src, n, QK_K, 176, out);
  const dl = new Float32Array(8), ml = new Float32Array(8);
  for (let b = 0, o = 0; o < n; b += 176, o += QK_K) {
    kScales(src, b + 4, half(src, b), half(src, b + 2), dl, ml);
    const qh = b + 16;
    for (let g = 0; g < 4; g++) {
      const d1 = dl[2 * g]!, m1 = ml[2 * g]!, d2 = dl[2 * g + 1]!, m2 = ml[2 * g + 1]!;
      const qs = b + 48 + 32 * g, y = o + 64 * g, s1 = 2 * g, s2 = 2 * g + 1;
      for (let l = 0; l < 32; l++) {
        const q = src[qs + l]!, h = src[qh + l]!;
        out[y + l] = fr(d1 * ((q & 15) | (((h >> s1) & 1) << 4))) - m1;
        out[y + l + 32] = fr(d2 * ((q >> 4) | (((h >> s2) & 1) << 4))) - m2;
      }
    }
  }
  return out;
}

/**
 * Q6_K, S 256, 210 bytes: { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }. Element 128h + 32r + l
 * (h < 2, r < 4, l < 32): low 4 bits are the low (r < 2) or high (r ≥ 2) nibble of
 * ql[64h + 32(r mod 2) + l], high 2 bits are bits 2r..2r+1 of qh[32h + l]; q = that − 32, scale
 * scales[element / 16]; x = fl(d·sc)·q.
 */
export function dequantizeQ6_K(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('Q6_K', src, n, QK_K, 210, out);
  const dl = new Float32Array(16);
  for (let b = 0, o = 0; o < n; b += 210, o += QK_K) {
    const d = half(src, b + 208);
    for (let s = 0; s < 16; s++) dl[s] = d * ((src[b + 192 + s]! << 24) >> 24);
    for (let h = 0; h < 2; h++) {
      const ql = b + 64 * h, qh = b + 128 + 32 * h, y = o + 128 * h, s = 8 * h;
      for (let l = 0; l < 32; l++) {
        const k = l >> 4, lo1 = src[ql + l]!, lo2 = src[ql + 32 + l]!, hb = src[qh + l]!;
        out[y + l] = dl[s + k]! * (((lo1 & 15) | ((hb & 3) << 4)) - 32);
        out[y + l + 32] = dl[s + 2 + k]! * (((lo2 & 15) | (((hb >> 2) & 3) << 4)) - 32);
        out[y + l + 64] = dl[s + 4 + k]! * (((lo1 >> 4) | (((hb >> 4) & 3) << 4)) - 32);
        out[y + l + 96] = dl[s + 6 + k]! * (((lo2 >> 4) | ((hb >> 6) << 4)) - 32);
      }
    }
  }
  return out;
}

/** IQ4_NL's 16 non-linear levels (ggml-common.h kvalues_iq4nl). */
export const IQ4_NL_VALUES: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
const KVALUES = Int8Array.from(IQ4_NL_VALUES);

/** IQ4_NL, S 32, 18 bytes: Q4_0's layout with the nibble indexing IQ4_NL_VALUES; x = d·value. */
export function dequantizeIQ4_NL(src: Uint8Array, n: number, out = new Float32Array(n)): Float32Array {
  check('IQ4_NL', src, n, 32, 18, out);
  for (let b = 0, o = 0; o < n; b += 18, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j]!;
      out[o + j] = d * KVALUES[q & 15]!;
      out[o + j + 16] = d * KVALUES[q >> 4]!;
    }
  }
  return out;
}
