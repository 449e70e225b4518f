// DoRA (weight-decomposed LoRA) kernels (backend.ts "DoRA"): per-output-feature scales and norms.
// Backend.scaleColumns ↔ scale_columns, Backend.columnDot ↔ column_dot, Backend.doraScale ↔
// dora_scale, Backend.rowSumSquares ↔ row_sum_squares, Backend.qRowSumSquares ↔
// q_row_sum_squares (dequantizing through q4.ts, as the 4-bit GEMMs). wgsl/dora.wgsl holds the same five.
//
//   scale_columns    out[r, j] (=|+=) f32(f32(g[j] + offset)·x[r, j]) (+ bias[j])
//   column_dot       out[j] (=|+=) scale[j]·Σ_r a[r, j]·b[r, j]
//   dora_scale       n = √nsq[j]; invNorm[j] = 1/n; g[j] = m[j]/n
//   row_sum_squares  out[r] (=|+=) Σ_c x[r, c]²
//   q_row_sum_squares  out[n] = Σ_k deq(W)[n, k]²
//
// Bits. scale_columns, column_dot and dora_scale give the reference's bits exactly (its rounding
// order is written out in src/backend/reference/index.ts "DoRA"): each step is one IEEE f32
// operation (f32x4.sqrt and f32x4.div are correctly rounded), products are rounded before they
// are added (plain mul + add, also in the relaxed build: no madd), and column_dot sums each column
// over r in ascending order with the lanes holding different columns. row_sum_squares sums a row
// in lanes (simd.ts rowSumSq), not sequentially: parity with the reference is to a tolerance, and
// q_row_sum_squares sums a dequantized row in that same order.
//
// Work ranges (last arguments): rows [r0, r1) for scale_columns and row_sum_squares (rows of W
// [n0, n1) for q_row_sum_squares), columns
// [j0, j1) for column_dot, elements [i0, i1) for dora_scale. No element's arithmetic depends on
// the range it falls in (vector body and scalar tail compute alike), so any split over threads
// gives the bits of one call.
import { descQuantMap, descK } from './abi';
import { lutPlane } from './lut16';
import { SCR_ROW } from './panel';
import { deqRange } from './q4';
import { hsum, rowSumSq } from './simd';

/** Columns column_dot sums at once: their f32 accumulators (4 KiB) stay in L1 in scratch. */
const CD_BLOCK: i32 = 1024;

/**
 * out[r, j] (=|+=) f32(f32(g[j] + offset)·x[r, j]) (+ bias[j]): the product, then + bias, then
 * + out, each rounded. out, x f32 [R, N] (out may be x); g, bias f32 [N] (bias 0: none);
 * accumulate 0/1. Rows [r0, r1).
 */
export function scale_columns(out: usize, x: usize, g: usize, bias: usize, offset: f32, accumulate: i32, N: i32, r0: i32, r1: i32): void {
  if (bias != 0) {
    if (accumulate) scaleRows(out, x, g, bias, offset, N, r0, r1, true, true);
    else scaleRows(out, x, g, bias, offset, N, r0, r1, true, false);
  } else if (accumulate) scaleRows(out, x, g, bias, offset, N, r0, r1, false, true);
  else scaleRows(out, x, g, bias, offset, N, r0, r1, false, false);
}

@inline function scaleRows(out: usize, x: usize, g: usize, bias: usize, offset: f32, N: i32, r0: i32, r1: i32, hasBias: bool, acc: bool): void {
  const ov = f32x4.splat(offset);
  for (let r = r0; r < r1; r++) {
    const base = (<usize>r * <usize>N) << 2;
    const xr = x + base, or = out + base;
    let j: i32 = 0;
    for (; j + 4 <= N; j += 4) {
      const o = <usize>j << 2;
      let v = f32x4.mul(f32x4.add(v128.load(g + o), ov), v128.load(xr + o));
      if (hasBias) v = f32x4.add(v, v128.load(bias + o));
      if (acc) v = f32x4.add(v128.load(or + o), v);
      v128.store(or + o, v);
    }
    for (; j < N; j++) {
      const o = <usize>j << 2;
      let v = (load<f32>(g + o) + offset) * load<f32>(xr + o);
      if (hasBias) v = v + load<f32>(bias + o);
      if (acc) v = load<f32>(or + o) + v;
      store<f32>(or + o, v);
    }
  }
}

/**
 * out[j] (=|+=) scale[j]·Σ_r a[r, j]·b[r, j], the sum in f32 over r ascending from 0, then
 * ·scale, then + out (each rounded). a, b f32 [R, N] (may be the same); scale f32 [N] (0: none);
 * out f32 [N]; scratch: this thread's area (CD_BLOCK accumulators). Columns [j0, j1): a block of
 * columns is walked down all R rows, four rows per pass (each added in its turn).
 */
export function column_dot(out: usize, a: usize, b: usize, scale: usize, R: i32, N: i32, accumulate: i32, scratch: usize, j0: i32, j1: i32): void {
  const acc = scratch;
  const ld = <usize>N << 2;
  for (let jb = j0; jb < j1; jb += CD_BLOCK) {
    const nb = min(CD_BLOCK, j1 - jb);
    memory.fill(acc, 0, <usize>nb << 2);
    const col = <usize>jb << 2;
    let r: i32 = 0;
    for (; r + 4 <= R; r += 4) {
      const a0 = a + <usize>r * ld + col, b0 = b + <usize>r * ld + col;
      const a1 = a0 + ld, b1 = b0 + ld, a2 = a1 + ld, b2 = b1 + ld, a3 = a2 + ld, b3 = b2 + ld;
      let j: i32 = 0;
      for (; j + 4 <= nb; j += 4) {
        const o = <usize>j << 2;
        let s = f32x4.add(v128.load(acc + o), f32x4.mul(v128.load(a0 + o), v128.load(b0 + o)));
        s = f32x4.add(s, f32x4.mul(v128.load(a1 + o), v128.load(b1 + o)));
        s = f32x4.add(s, f32x4.mul(v128.load(a2 + o), v128.load(b2 + o)));
        v128.store(acc + o, f32x4.add(s, f32x4.mul(v128.load(a3 + o), v128.load(b3 + o))));
      }
      for (; j < nb; j++) {
        const o = <usize>j << 2;
        let s = load<f32>(acc + o) + load<f32>(a0 + o) * load<f32>(b0 + o);
        s = s + load<f32>(a1 + o) * load<f32>(b1 + o);
        s = s + load<f32>(a2 + o) * load<f32>(b2 + o);
        store<f32>(acc + o, s + load<f32>(a3 + o) * load<f32>(b3 + o));
      }
    }
    for (; r < R; r++) {
      const ar = a + <usize>r * ld + col, br = b + <usize>r * ld + col;
      let j: i32 = 0;
      for (; j + 4 <= nb; j += 4) {
        const o = <usize>j << 2;
        v128.store(acc + o, f32x4.add(v128.load(acc + o), f32x4.mul(v128.load(ar + o), v128.load(br + o))));
      }
      for (; j < nb; j++) {
        const o = <usize>j << 2;
        store<f32>(acc + o, load<f32>(acc + o) + load<f32>(ar + o) * load<f32>(br + o));
      }
    }
    for (let j: i32 = 0; j < nb; j++) {
      let v = load<f32>(acc + (<usize>j << 2));
      const c = <usize>(jb + j) << 2;
      if (scale != 0) v = load<f32>(scale + c) * v;
      if (accumulate) v = load<f32>(out + c) + v;
      store<f32>(out + c, v);
    }
  }
}

/**
 * n = √nsq[i]; invNorm[i] = 1/n; g[i] = m[i]/n (three correctly rounded f32 operations) for i in
 * [i0, i1). All f32 [N].
 */
export function dora_scale(g: usize, invNorm: usize, m: usize, nsq: usize, i0: i32, i1: i32): void {
  const one = f32x4.splat(1);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const n = f32x4.sqrt(v128.load(nsq + o));
    v128.store(invNorm + o, f32x4.div(one, n));
    v128.store(g + o, f32x4.div(v128.load(m + o), n));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const n = Mathf.sqrt(load<f32>(nsq + o));
    store<f32>(invNorm + o, <f32>1.0 / n);
    store<f32>(g + o, load<f32>(m + o) / n);
  }
}

/** out[r] (=|+=) Σ_c x[r, c]² (rowSumSq, then + out). x f32 [R, C]; out f32 [R]. Rows [r0, r1). */
export function row_sum_squares(out: usize, x: usize, C: i32, accumulate: i32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    let s = rowSumSq(x + ((<usize>r * <usize>C) << 2), C);
    const p = out + (<usize>r << 2);
    if (accumulate) s = load<f32>(p) + s;
    store<f32>(p, s);
  }
}

/** Elements of a row of W that q_row_sum_squares dequantizes at once (a multiple of 8). */
const QSS_PIECE: i32 = 4096;

/**
 * out[n] = Σ_k deq(W)[n, k]² for rows [n0, n1) of W (Backend.qRowSumSquares). desc: weight
 * descriptor; scratch: this thread's area. Each row is dequantized QSS_PIECE elements at a time
 * (q4.ts deqRange, as the GEMMs) and summed in the order of row_sum_squares (simd.ts rowSumSq):
 * 8-element groups into two f32x4 carried across pieces (whole groups except in the last), hsum,
 * then the tail — so out equals row_sum_squares of the dequantized W bit for bit.
 */
export function q_row_sum_squares(out: usize, desc: usize, scratch: usize, n0: i32, n1: i32): void {
  const K = descK(desc);
  const map = descQuantMap(desc);
  const p0 = lutPlane(map, 0), p1 = lutPlane(map, 1), p2 = lutPlane(map, 2), p3 = lutPlane(map, 3);
  const buf = scratch + SCR_ROW;
  for (let n = n0; n < n1; n++) {
    let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
    let c: i32 = 0, len: i32 = 0;
    for (let p: i32 = 0; p < K; p += QSS_PIECE) {
      len = min(QSS_PIECE, K - p);
      deqRange(desc, p0, p1, p2, p3, <usize>n * <usize>K + <usize>p, len, buf);
      for (c = 0; c + 8 <= len; c += 8) {
        const a = v128.load(buf + (<usize>c << 2)), b = v128.load(buf + (<usize>c << 2), 16);
        s0 = f32x4.add(s0, f32x4.mul(a, a));
        s1 = f32x4.add(s1, f32x4.mul(b, b));
      }
    }
    let s = hsum(f32x4.add(s0, s1));
    for (; c < len; c++) {
      const v = load<f32>(buf + (<usize>c << 2));
      s += v * v;
    }
    store<f32>(out + (<usize>n << 2), s);
  }
}
