// Cross-entropy over rows of logits, with the gradient written in place (Backend.crossEntropy ↔
// cross_entropy, and cross_entropy_softcap when the call passes a soft-cap). Stable logsumexp:
// max first, then Σ exp(l − max) in four f32 lanes with the vector exp of simd.ts (< 1 ulp on the
// tested range; inputs ≤ 0 here), log with Mathf.log.
// Expected deviation from the reference: a few f32 ulps of lse (different summation order).
// The gradient's softmax is e·(1/s) with e = exp(l − max) kept in the row by the sum pass (one
// exponential per logit); soft-capped rows recompute exp(y − lse), as they need y itself too.
// Soft-capped rows use y = cap·tanh(z / cap) (simd.ts tanh, a few ulp) in place of the logits z.
// Both exports inline one body; cross_entropy passes cap 0, which folds the soft-cap away, so its
// arithmetic is exactly that of the kernel before soft-capping existed.
import { expf4, exp1, hsum, hmax, tanhf4, tanh1 } from './simd';

/**
 * losses f32 [R]: logsumexp(logits[r]) − logits[r, t] (0 where targets[r] < 0, e.g. −100).
 * logits f32 [R, V]; targets i32 [R]. With grad ≠ 0, logits[r] ← (softmax − onehot)·gradScale
 * (a zero row for an ignored target). Work range: rows [r0, r1).
 */
export function cross_entropy(losses: usize, logits: usize, targets: usize, V: i32, grad: i32, gradScale: f32, r0: i32, r1: i32): void {
  crossEntropyRows(losses, logits, targets, V, grad, gradScale, 0, r0, r1);
}

/**
 * cross_entropy of the soft-capped logits y = cap·tanh(z / cap) (Gemma 2's final soft-cap; cap > 0,
 * checked by the caller), logits holding the raw z. With grad ≠ 0 the row becomes d/dz:
 * (softmax(y) − onehot)·gradScale·(1 − (y/cap)²).
 */
export function cross_entropy_softcap(losses: usize, logits: usize, targets: usize, V: i32, grad: i32, gradScale: f32, cap: f32, r0: i32, r1: i32): void {
  crossEntropyRows(losses, logits, targets, V, grad, gradScale, cap, r0, r1);
}

/** y of four raw logits at p: cap·tanh(z / cap), or z itself when `capped` is false. */
@inline function y4(p: usize, capped: bool, cv: v128): v128 {
  const z = v128.load(p);
  return capped ? f32x4.mul(cv, tanhf4(f32x4.div(z, cv))) : z;
}
@inline function y1(p: usize, capped: bool, cap: f32): f32 {
  const z = load<f32>(p);
  return capped ? cap * tanh1(z / cap) : z;
}

@inline function crossEntropyRows(losses: usize, logits: usize, targets: usize, V: i32, grad: i32, gradScale: f32, cap: f32, r0: i32, r1: i32): void {
  const capped = cap > 0;
  // With a gradient the row is overwritten anyway: soft-cap it in place first (one tanh per
  // logit; the gradient pass reads y back for 1 − (y/cap)²). Without one the logits must stay
  // as they are, so y is recomputed on the fly in the max and sum passes.
  const lazy = capped && !grad;
  const cv = f32x4.splat(cap);
  for (let r = r0; r < r1; r++) {
    const row = logits + ((<usize>r * <usize>V) << 2);
    const t = load<i32>(targets + (<usize>r << 2));
    if (t < 0) {
      store<f32>(losses + (<usize>r << 2), 0);
      if (grad) memory.fill(row, 0, <usize>V << 2);
      continue;
    }
    let i: i32 = 0;
    if (capped && grad) {
      for (; i + 4 <= V; i += 4) v128.store(row + (<usize>i << 2), y4(row + (<usize>i << 2), true, cv));
      for (; i < V; i++) store<f32>(row + (<usize>i << 2), y1(row + (<usize>i << 2), true, cap));
    }
    let mv = f32x4.splat(-Infinity);
    for (i = 0; i + 4 <= V; i += 4) mv = f32x4.max(mv, y4(row + (<usize>i << 2), lazy, cv));
    let m = hmax(mv);
    for (; i < V; i++) m = max(m, y1(row + (<usize>i << 2), lazy, cap));
    const ms = f32x4.splat(m);
    const yt = y1(row + (<usize>t << 2), lazy, cap);
    // Without a soft-cap the gradient pass needs only e = exp(y − max): the sum pass leaves it in
    // the row, and p = e · (1/s) costs one exponential per logit instead of two
    const keep = grad && !capped;
    let sv = f32x4.splat(0);
    for (i = 0; i + 4 <= V; i += 4) {
      const e = expf4(f32x4.sub(y4(row + (<usize>i << 2), lazy, cv), ms));
      if (keep) v128.store(row + (<usize>i << 2), e);
      sv = f32x4.add(sv, e);
    }
    let s: f32 = hsum(sv);
    for (; i < V; i++) {
      const e = exp1(y1(row + (<usize>i << 2), lazy, cap) - m);
      if (keep) store<f32>(row + (<usize>i << 2), e);
      s += e;
    }
    const lse = m + Mathf.log(s);
    store<f32>(losses + (<usize>r << 2), lse - yt);
    if (!grad) continue;
    if (keep) {
      // p = e · (1/s); (p − 1 in the target's column) · gradScale
      const inv1: f32 = <f32>1.0 / s, et = load<f32>(row + (<usize>t << 2));
      const inv = f32x4.splat(inv1), gs1 = f32x4.splat(gradScale);
      for (i = 0; i + 4 <= V; i += 4) {
        const o = <usize>i << 2;
        v128.store(row + o, f32x4.mul(f32x4.mul(v128.load(row + o), inv), gs1));
      }
      for (; i < V; i++) {
        const o = <usize>i << 2;
        store<f32>(row + o, load<f32>(row + o) * inv1 * gradScale);
      }
      const ot = <usize>t << 2;
      store<f32>(row + ot, (et * inv1 - 1.0) * gradScale);
      continue;
    }
    const lv = f32x4.splat(lse), gs = f32x4.splat(gradScale), one = f32x4.splat(1), tv = i32x4.splat(t);
    let idx = i32x4(0, 1, 2, 3);
    for (i = 0; i + 4 <= V; i += 4) {
      const o = <usize>i << 2;
      const y = v128.load(row + o);
      const p = expf4(f32x4.sub(y, lv));
      // p − 1 in the target's lane
      let g = f32x4.mul(f32x4.sub(p, v128.and(i32x4.eq(idx, tv), one)), gs);
      // dy/dz = 1 − tanh² = 1 − (y/cap)²
      if (capped) { const q = f32x4.div(y, cv); g = f32x4.mul(g, f32x4.sub(one, f32x4.mul(q, q))); }
      v128.store(row + o, g);
      idx = i32x4.add(idx, i32x4.splat(4));
    }
    for (; i < V; i++) {
      const o = <usize>i << 2;
      const y = load<f32>(row + o);
      const p = exp1(y - lse);
      let g: f32 = (i == t ? p - 1.0 : p - 0.0) * gradScale;
      if (capped) { const q = y / cap; g *= <f32>1.0 - q * q; }
      store<f32>(row + o, g);
    }
  }
}
