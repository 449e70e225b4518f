// SIMD helpers with a relaxed-SIMD form. The relaxed builds (asconfig targets relaxed,
// relaxed-mt) compile with ASC_FEATURE_RELAXED_SIMD true and take the first branch; the plain
// builds keep SIMD128 only. Which one runs is decided at load time (src/backend/wasm/module.ts).

/**
 * acc + a·b per lane. Relaxed: f32x4.relaxed_madd (one FMA where the machine fuses, else
 * mul + add — fixed per machine, so every thread of one run gets the same bits). Plain: the
 * product is rounded, then added.
 */
@inline export function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(acc, f32x4.mul(a, b));
}

/** Sum of the four lanes, paired (l0 + l1) + (l2 + l3): every f32x4 reduction of the kernels. */
@inline export function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** Largest of the four lanes, max(max(l0, l1), max(l2, l3)). */
@inline export function hmax(v: v128): f32 {
  return max(max(f32x4.extract_lane(v, 0), f32x4.extract_lane(v, 1)), max(f32x4.extract_lane(v, 2), f32x4.extract_lane(v, 3)));
}

/**
 * Σ x[c]² over one row of C: 8-element groups into two f32x4 (each square rounded, then added),
 * hsum of their sum, then the tail in order. RMSNorm's mean square (rms_norm.ts) and DoRA's row
 * norms (dora.ts row_sum_squares; q_row_sum_squares sums a dequantized row in exactly this order).
 */
@inline export function rowSumSq(x: usize, C: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let c: i32 = 0;
  for (; c + 8 <= C; c += 8) {
    const a = v128.load(x + (<usize>c << 2)), b = v128.load(x + (<usize>c << 2), 16);
    s0 = f32x4.add(s0, f32x4.mul(a, a));
    s1 = f32x4.add(s1, f32x4.mul(b, b));
  }
  let s = hsum(f32x4.add(s0, s1));
  for (; c < C; c++) {
    const v = load<f32>(x + (<usize>c << 2));
    s += v * v;
  }
  return s;
}

/**
 * Byte lookup t[s] for indices known to be in 0..15. relaxed_swizzle equals swizzle for those
 * (it differs only for indices ≥ 16) and is one pshufb on x86 without the range fix-up.
 */
@inline export function swizzle16(t: v128, s: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i8x16.relaxed_swizzle(t, s);
  return i8x16.swizzle(t, s);
}

// exp(x) four lanes at a time (Cody–Waite reduction, cephes expf polynomial):
// x = n·ln2 + r with n = round(x·log2 e), |r| ≤ ln2/2 (ln2 in two parts, n·LN2_HI exact), then
// exp(r) ≈ 1 + r + r²·P(r) and the exponent of 2ⁿ added in the integer domain.
// Within ~2 ulp of the true value (Mathf.exp: < 1 ulp); +inf above 88.72, 0 below −87.33 (where
// exp is below the smallest normal f32: results that would be subnormal are flushed to 0), NaN
// stays NaN. Scalar callers use exp1 (the same arithmetic in lane 0), so a value does not depend
// on whether it was computed in a vector or in a loop tail.
const EXP_HI: f32 = 88.72283;
const EXP_LO: f32 = -87.33654;

@inline export function expf4(x: v128): v128 {
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.44269504)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1));
  // ·2ⁿ, n in [−126, 128] for x in range (other lanes are replaced below): positive n as
  // 2ⁿ⁻¹ then ·2 (exact), so n = 128 (x up to 88.72) does not overflow the exponent field
  const pos = f32x4.gt(n, f32x4.splat(0));
  const m = f32x4.sub(n, v128.and(pos, f32x4.splat(1)));
  const scale = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(m), i32x4.splat(127)), 23);
  let y = f32x4.mul(f32x4.mul(p, scale), f32x4.add(f32x4.splat(1), v128.and(pos, f32x4.splat(1))));
  y = v128.bitselect(f32x4.splat(Infinity), y, f32x4.gt(x, f32x4.splat(EXP_HI)));
  return v128.andnot(y, f32x4.lt(x, f32x4.splat(EXP_LO)));
}

/** exp of one value with expf4's arithmetic. */
@inline export function exp1(x: f32): f32 {
  return f32x4.extract_lane(expf4(f32x4.splat(x)), 0);
}

// tanh(x) four lanes at a time (cephes tanhf): |x| < 0.625: x + x³·P(x²); otherwise
// sign(x)·(1 − 2/(e^{2|x|} + 1)) with expf4, |x| clamped to 10 first (tanh(10) is 1 in f32) so the
// exp never overflows and large arguments give ±1, never NaN. Within 2 ulp of the correctly
// rounded tanh (expf4's error is damped by 2/(E + 1) ≤ 0.45); NaN stays NaN (f32x4.min keeps
// it). Used by softcap, geglu and the soft-capped cross-entropy; wgsl/tanh.wgsl is the same
// arithmetic. Scalar callers use tanh1 (lane 0 of the same arithmetic).
const TANH_SMALL: f32 = 0.625;
const TANH_CLAMP: f32 = 10;

@inline export function tanhf4(x: v128): v128 {
  const one = f32x4.splat(1);
  const a = f32x4.min(f32x4.abs(x), f32x4.splat(TANH_CLAMP));
  const z = f32x4.mul(x, x);
  let p = f32x4.splat(-5.70498872745e-3);
  p = f32x4.add(f32x4.mul(p, z), f32x4.splat(2.06390887954e-2));
  p = f32x4.add(f32x4.mul(p, z), f32x4.splat(-5.37397155531e-2));
  p = f32x4.add(f32x4.mul(p, z), f32x4.splat(1.33314422036e-1));
  p = f32x4.add(f32x4.mul(p, z), f32x4.splat(-3.33332819422e-1));
  const small = f32x4.add(f32x4.mul(f32x4.mul(p, z), x), x);
  const big = f32x4.sub(one, f32x4.div(f32x4.splat(2), f32x4.add(expf4(f32x4.add(a, a)), one)));
  // the sign of x on the |x| branch
  const signed = v128.or(big, v128.and(x, i32x4.splat(0x80000000)));
  return v128.bitselect(small, signed, f32x4.lt(a, f32x4.splat(TANH_SMALL)));
}

/** tanh of one value with tanhf4's arithmetic. */
@inline export function tanh1(x: f32): f32 {
  return f32x4.extract_lane(tanhf4(f32x4.splat(x)), 0);
}
