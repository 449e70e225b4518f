// RMSNorm (Llama): out[r, c] = x[r, c] · rstd[r] · w[c], rstd[r] = 1/sqrt(mean_c(x[r, c]²) + eps).
// Backend.rmsNorm ↔ rms_norm, Backend.rmsNormBackward ↔ rms_norm_backward.
// Work range: rows [r0, r1) (rows are independent).
// Sums run in four f32x4 lanes, so they round differently from a sequential f32 (or f64) sum:
// expect relative differences of a few f32 ulps times sqrt(C) against the reference.
import { hsum, rowSumSq } from './simd';

/**
 * out f32 [R, C] (may not alias x); rstd f32 [R] (written, kept for the backward);
 * x f32 [R, C]; w f32 [C].
 */
export function rms_norm(out: usize, rstd: usize, x: usize, w: usize, R: i32, C: i32, eps: f32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    const xr = x + ((<usize>r * <usize>C) << 2);
    const or = out + ((<usize>r * <usize>C) << 2);
    const rs: f32 = 1.0 / Mathf.sqrt(rowSumSq(xr, C) / <f32>C + eps);
    store<f32>(rstd + (<usize>r << 2), rs);
    const rv = f32x4.splat(rs);
    let c: i32 = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      v128.store(or + o, f32x4.mul(f32x4.mul(v128.load(xr + o), rv), v128.load(w + o)));
    }
    for (; c < C; c++) {
      const o = <usize>c << 2;
      store<f32>(or + o, load<f32>(xr + o) * rs * load<f32>(w + o));
    }
  }
}

/**
 * dx[r] (=|+=) rstd·(w⊙dy − x̂·mean_c(x̂⊙w⊙dy)), x̂ = x·rstd.
 * dx, dy, x f32 [R, C]; w f32 [C]; rstd f32 [R] from rms_norm; accumulate 0/1.
 */
export function rms_norm_backward(dx: usize, dy: usize, x: usize, w: usize, rstd: usize, R: i32, C: i32, accumulate: i32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    const base = (<usize>r * <usize>C) << 2;
    const xr = x + base, gr = dy + base, dr = dx + base;
    const rs = load<f32>(rstd + (<usize>r << 2));
    const rv = f32x4.splat(rs);
    // mean_c(x̂ ⊙ w ⊙ dy)
    let s0 = f32x4.splat(0);
    let c: i32 = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      s0 = f32x4.add(s0, f32x4.mul(f32x4.mul(v128.load(xr + o), rv), f32x4.mul(v128.load(w + o), v128.load(gr + o))));
    }
    let s = hsum(s0);
    for (; c < C; c++) {
      const o = <usize>c << 2;
      s += (load<f32>(xr + o) * rs) * (load<f32>(w + o) * load<f32>(gr + o));
    }
    const mean: f32 = s / <f32>C;
    const mv = f32x4.splat(mean);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      const xh = f32x4.mul(v128.load(xr + o), rv);
      let g = f32x4.mul(rv, f32x4.sub(f32x4.mul(v128.load(w + o), v128.load(gr + o)), f32x4.mul(xh, mv)));
      if (accumulate) g = f32x4.add(v128.load(dr + o), g);
      v128.store(dr + o, g);
    }
    for (; c < C; c++) {
      const o = <usize>c << 2;
      const xh = load<f32>(xr + o) * rs;
      let g = rs * (load<f32>(w + o) * load<f32>(gr + o) - xh * mean);
      if (accumulate) g = load<f32>(dr + o) + g;
      store<f32>(dr + o, g);
    }
  }
}
