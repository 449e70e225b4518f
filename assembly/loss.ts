// Cross-entropy over rows of logits, with the gradient written in place (Backend.crossEntropy ↔
// cross_entropy). Stable logsumexp: max first, then Σ exp(l − max) in four f32 lanes with the
// vector exp of simd.ts (< 1 ulp on the tested range; inputs ≤ 0 here), log with Mathf.log.
// Expected deviation from the reference: a few f32 ulps of lse (different summation order).
import { expf4, exp1, hsum, hmax } from './simd';

/**
 * losses f32 [R]: logsumexp(logits[r]) − logits[r, t] (0 where targets[r] < 0, e.g. −100).
 * logits f32 [R, V]; targets i32 [R]. With grad ≠ 0, logits[r] ← (softmax − onehot)·gradScale
 * (a zero row for an ignored target). Work range: rows [r0, r1).
 */
export function cross_entropy(losses: usize, logits: usize, targets: usize, V: i32, grad: i32, gradScale: f32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    const row = logits + ((<usize>r * <usize>V) << 2);
    const t = load<i32>(targets + (<usize>r << 2));
    if (t < 0) {
      store<f32>(losses + (<usize>r << 2), 0);
      if (grad) memory.fill(row, 0, <usize>V << 2);
      continue;
    }
    let mv = f32x4.splat(-Infinity);
    let i: i32 = 0;
    for (; i + 4 <= V; i += 4) mv = f32x4.max(mv, v128.load(row + (<usize>i << 2)));
    let m = hmax(mv);
    for (; i < V; i++) m = max(m, load<f32>(row + (<usize>i << 2)));
    const ms = f32x4.splat(m);
    let sv = f32x4.splat(0);
    for (i = 0; i + 4 <= V; i += 4) sv = f32x4.add(sv, expf4(f32x4.sub(v128.load(row + (<usize>i << 2)), ms)));
    let s: f32 = hsum(sv);
    for (; i < V; i++) s += exp1(load<f32>(row + (<usize>i << 2)) - m);
    const lse = m + Mathf.log(s);
    store<f32>(losses + (<usize>r << 2), lse - load<f32>(row + (<usize>t << 2)));
    if (!grad) continue;
    const lv = f32x4.splat(lse), gs = f32x4.splat(gradScale), one = f32x4.splat(1), tv = i32x4.splat(t);
    let idx = i32x4(0, 1, 2, 3);
    for (i = 0; i + 4 <= V; i += 4) {
      const o = <usize>i << 2;
      const p = expf4(f32x4.sub(v128.load(row + o), lv));
      // p − 1 in the target's lane
      v128.store(row + o, f32x4.mul(f32x4.sub(p, v128.and(i32x4.eq(idx, tv), one)), gs));
      idx = i32x4.add(idx, i32x4.splat(4));
    }
    for (; i < V; i++) {
      const o = <usize>i << 2;
      const p = exp1(load<f32>(row + o) - lse);
      store<f32>(row + o, (i == t ? p - 1.0 : p - 0.0) * gradScale);
    }
  }
}
