// tanh in f32 without the built-in: WGSL's tanh of large arguments is NaN on some drivers (it is
// often lowered to (e^2x − 1)/(e^2x + 1), inf/inf). Same arithmetic as tanhf4 in
// assembly/simd.ts (cephes tanhf): |x| < 0.625: x + x³·P(x²); otherwise
// sign(x)·(1 − 2/(e^{2|x|} + 1)) with |x| clamped to 10 (tanh(10) is 1 in f32), so the exp never
// overflows and large arguments give ±1. The exp's error is damped by 2/(E + 1) ≤ 0.45: within
// 2 ulp of the correctly rounded tanh on lavapipe.
// Used by softcap, geglu and the soft-capped cross-entropy.

fn tanh_f32(x: f32) -> f32 {
  // a comparison, not min(): min with a NaN operand may return the other one (WGSL leaves it to
  // the implementation; lavapipe does), which would turn a NaN input into ±1
  let a = select(abs(x), 10.0, abs(x) > 10.0);
  if (a < 0.625) {
    let z = x * x;
    let p = (((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z + 1.33314422036e-1) * z - 3.33332819422e-1;
    return p * z * x + x;
  }
  let t = 1.0 - 2.0 / (exp(a + a) + 1.0);
  return select(t, -t, x < 0.0);
}
