// Optimizer kernels (QLORA_SPEC §6.3): Backend.sumSquares ↔ sum_squares, Backend.adamwStep ↔
// adamw_step, Backend.sgdStep ↔ sgd_step. Work range: elements [i0, i1) (chunks [c0, c1) for
// sum_squares); each element is independent except in the sums.

/** Σ x[i]² over [i0, i1) in f64: two f64x2 accumulators over the f32x4 squares, then a scalar tail. */
@inline function sumSquaresF64(x: usize, i0: i32, i1: i32): f64 {
  let s0 = f64x2.splat(0), s1 = f64x2.splat(0);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    const sq = f32x4.mul(v, v);
    s0 = f64x2.add(s0, f64x2.promote_low_f32x4(sq));
    s1 = f64x2.add(s1, f64x2.promote_low_f32x4(i32x4.shuffle(sq, sq, 2, 3, 0, 1)));
  }
  s0 = f64x2.add(s0, s1);
  let s = f64x2.extract_lane(s0, 0) + f64x2.extract_lane(s0, 1);
  for (; i < i1; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    s += <f64>(v * v);
  }
  return s;
}

/**
 * out[0] (=|+=) Σ x[i]² over [i0, i1), accumulated in f64 (two lanes of f64x2 per f32x4): the
 * global gradient norm feeds clipping, and an f32 sum of 10⁷ squares would lose ~3 digits.
 * The result is rounded to f32 once when stored. The one-range version of sum_squares, kept as
 * its oracle (test/kernels/wasm-specific.test.ts); wgsl/optim.wgsl's sum_squares computes this.
 */
export function sum_squares_v1(out: usize, x: usize, accumulate: i32, i0: i32, i1: i32): void {
  let s = sumSquaresF64(x, i0, i1);
  if (accumulate) s += <f64>load<f32>(out);
  store<f32>(out, <f32>s);
}

/**
 * Backend.sumSquares, in chunks any thread may take: partials f64 [ceil(n/chunk)], partials[c] =
 * Σ x[i]² over chunk c = [c·chunk, min(n, (c+1)·chunk)) for chunks [c0, c1) (the work range). The
 * host adds the partials in chunk order, so the sum does not depend on how chunks are spread over
 * threads; with one chunk it is exactly sum_squares_v1 before its f32 rounding.
 */
export function sum_squares(partials: usize, x: usize, n: i32, chunk: i32, c0: i32, c1: i32): void {
  for (let c = c0; c < c1; c++) {
    store<f64>(partials + (<usize>c << 3), sumSquaresF64(x, c * chunk, min(n, (c + 1) * chunk)));
  }
}

/**
 * AdamW (torch / bnb 32-bit semantics): g = grad·gradScale; m ← β1·m + (1−β1)·g;
 * v ← β2·v + (1−β2)·g²; p ← p·decay with decay = 1 − lr·wd; p ← p − lr·(m/bc1)/(sqrt(v/bc2) + eps).
 * The host passes omb1 = 1−β1, omb2 = 1−β2, decay, bc1 = 1−β1ᵗ, bc2 = 1−β2ᵗ (computed in f64,
 * rounded to f32 once). param, grad, m, v f32 [n].
 */
export function adamw_step(param: usize, grad: usize, m: usize, v: usize, lr: f32, beta1: f32, beta2: f32, omb1: f32, omb2: f32, eps: f32, decay: f32, bc1: f32, bc2: f32, gradScale: f32, i0: i32, i1: i32): void {
  const vlr = f32x4.splat(lr), vb1 = f32x4.splat(beta1), vb2 = f32x4.splat(beta2), vo1 = f32x4.splat(omb1), vo2 = f32x4.splat(omb2);
  const veps = f32x4.splat(eps), vdec = f32x4.splat(decay), vbc1 = f32x4.splat(bc1), vbc2 = f32x4.splat(bc2), vgs = f32x4.splat(gradScale);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const g = f32x4.mul(v128.load(grad + o), vgs);
    const mn = f32x4.add(f32x4.mul(vb1, v128.load(m + o)), f32x4.mul(vo1, g));
    const vn = f32x4.add(f32x4.mul(vb2, v128.load(v + o)), f32x4.mul(vo2, f32x4.mul(g, g)));
    v128.store(m + o, mn);
    v128.store(v + o, vn);
    const p = f32x4.mul(v128.load(param + o), vdec);
    const upd = f32x4.div(f32x4.div(mn, vbc1), f32x4.add(f32x4.sqrt(f32x4.div(vn, vbc2)), veps));
    v128.store(param + o, f32x4.sub(p, f32x4.mul(vlr, upd)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(grad + o) * gradScale;
    const mn = beta1 * load<f32>(m + o) + omb1 * g;
    const vn = beta2 * load<f32>(v + o) + omb2 * (g * g);
    store<f32>(m + o, mn);
    store<f32>(v + o, vn);
    const p = load<f32>(param + o) * decay;
    store<f32>(param + o, p - lr * ((mn / bc1) / (Mathf.sqrt(vn / bc2) + eps)));
  }
}

/** p ← p − lr·(grad·gradScale) for i in [i0, i1). */
export function sgd_step(param: usize, grad: usize, lr: f32, gradScale: f32, i0: i32, i1: i32): void {
  const vlr = f32x4.splat(lr), vgs = f32x4.splat(gradScale);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(param + o, f32x4.sub(v128.load(param + o), f32x4.mul(vlr, f32x4.mul(v128.load(grad + o), vgs))));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(param + o, load<f32>(param + o) - lr * (load<f32>(grad + o) * gradScale));
  }
}
