// f32 GEMM: out[M, N] (=|+=) alpha · op(A)[M, K] · op(B)[K, N] (+ bias[N]).
// Backend.matmul ↔ matmul (blocked, SIMD) and matmul_v1 (plain triple loop, kept as the oracle
// of the optimized version, llm.c style). Both take the same arguments:
//   out f32 [M, N]; a f32 [M, K] or, with transA, [K, M]; b [K, N] or, with transB, [N, K],
//   of element type elemType (ELEM_TYPE_* of abi.ts: f32, f16, bf16 — half only without transA: a half-precision
//   lm_head / tied embedding, widened exactly while packing); alpha; accumulate (0/1);
//   bias f32 [N] or 0 (added unscaled: out (=|+=) alpha·op(A)·op(B) + bias);
//   scratch: this thread's SCRATCH_BYTES area;
//   work range: output rows [m0, m1) × output columns [n0, n1) — disjoint ranges may run on
//   different threads at once (each thread passes its own scratch).
// Training uses three layouts: forward x·Wᵀ (transB, "NT"), input gradient dY·W ("NN"),
// weight gradient dYᵀ·X (transA, "TN"). TT works too, through the same packing.
// Summation order differs from the reference (four f32x4 lanes per output, KC-long partial
// sums added to out): expect |Δ| of a few ulps · sqrt(K) · max|a||b|.
import { KC, NC, sliceLen, NR, C_ADD, SCR_PANELS, firstMode, runSlice, packRowsT, packRowsN, emptyInner, storeOne } from './panel';
import { ELEM_TYPE_F32, ELEM_TYPE_F16, ELEM_TYPE_BF16 } from './abi';
import { elemBytes, load4, load1 } from './half';
import { madd } from './simd';

/**
 * Below this many rows (M, not the range: the path, and so the bits, must not depend on how a
 * call is split), the NT layout takes the dot-product path (no packing).
 */
const SMALL_M: i32 = 4;

export function matmul_v1(out: usize, a: usize, b: usize, M: i32, N: i32, K: i32, transA: i32, transB: i32, elemType: i32, alpha: f32, accumulate: i32, bias: usize, scratch: usize, m0: i32, m1: i32, n0: i32, n1: i32): void {
  const mode = firstMode(accumulate, bias);
  const es = elemBytes(elemType);
  for (let i = m0; i < m1; i++) {
    for (let j = n0; j < n1; j++) {
      let s: f32 = 0;
      for (let k: i32 = 0; k < K; k++) {
        const av = load<f32>(a + ((transA ? <usize>k * <usize>M + <usize>i : <usize>i * <usize>K + <usize>k) << 2));
        const bv = load1(b + (transB ? <usize>j * <usize>K + <usize>k : <usize>k * <usize>N + <usize>j) * es, elemType);
        s += av * bv;
      }
      storeOne(out + ((<usize>i * <usize>N + <usize>j) << 2), s, alpha, mode, bias + (<usize>j << 2));
    }
  }
}

export function matmul(out: usize, a: usize, b: usize, M: i32, N: i32, K: i32, transA: i32, transB: i32, elemType: i32, alpha: f32, accumulate: i32, bias: usize, scratch: usize, m0: i32, m1: i32, n0: i32, n1: i32): void {
  if (m1 <= m0 || n1 <= n0) return;
  const mode0 = firstMode(accumulate, bias);
  if (K == 0) {
    emptyInner(out, N, mode0, bias, m0, m1, n0, n1);
    return;
  }
  if (transB && !transA && M < SMALL_M) {
    if (elemType == ELEM_TYPE_F32) gemvNT(out, a, b, N, K, alpha, mode0, bias, m0, m1, n0, n1, ELEM_TYPE_F32);
    else if (elemType == ELEM_TYPE_F16) gemvNT(out, a, b, N, K, alpha, mode0, bias, m0, m1, n0, n1, ELEM_TYPE_F16);
    else gemvNT(out, a, b, N, K, alpha, mode0, bias, m0, m1, n0, n1, ELEM_TYPE_BF16);
    return;
  }
  // A(i, k) at a + i·rs + k·ks
  const rs: usize = transA ? 4 : <usize>K << 2;
  const ks: usize = transA ? <usize>M << 2 : 4;
  const es = elemBytes(elemType);
  const ldc = <usize>N << 2;
  const panels = scratch + SCR_PANELS;
  for (let jc = n0; jc < n1; jc += NC) {
    const nc = min(NC, n1 - jc);
    for (let pc: i32 = 0, kstep = sliceLen(K); pc < K; pc += kstep) {
      const kc = min(kstep, K - pc);
      const panelBytes = <usize>kc << 5;
      for (let q: i32 = 0, j = 0; j < nc; q++, j += NR) {
        const nrv = min(NR, nc - j);
        const dst = panels + <usize>q * panelBytes;
        if (transB) packRowsT(b + (<usize>(jc + j) * <usize>K + <usize>pc) * es, <usize>K * es, kc, nrv, dst, elemType);
        else packRowsN(b + (<usize>pc * <usize>N + <usize>(jc + j)) * es, <usize>N * es, kc, nrv, dst, elemType);
      }
      runSlice(out, ldc, a, rs, ks, pc, kc, jc, nc, m0, m1, scratch, alpha, pc == 0 ? mode0 : C_ADD, bias);
    }
  }
}

/**
 * NT with a few rows (decoding): each output is a dot product of two contiguous rows, four
 * columns at a time so a row of x is loaded once per four rows of W.
 */
@inline function gemvNT(out: usize, a: usize, b: usize, N: i32, K: i32, alpha: f32, mode: i32, bias: usize, m0: i32, m1: i32, n0: i32, n1: i32, elemType: i32): void {
  const es = elemBytes(elemType);
  const kb = <usize>K * es; // bytes per row of b
  for (let i = m0; i < m1; i++) {
    const x = a + ((<usize>i * <usize>K) << 2);
    const orow = out + ((<usize>i * <usize>N) << 2);
    let j = n0;
    for (; j + 4 <= n1; j += 4) {
      const w0 = b + <usize>j * kb, w1 = w0 + kb, w2 = w1 + kb, w3 = w2 + kb;
      let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
      let k: i32 = 0;
      for (; k + 4 <= K; k += 4) {
        const xv = v128.load(x + (<usize>k << 2));
        const o = <usize>k * es;
        s0 = madd(xv, load4(w0 + o, elemType), s0);
        s1 = madd(xv, load4(w1 + o, elemType), s1);
        s2 = madd(xv, load4(w2 + o, elemType), s2);
        s3 = madd(xv, load4(w3 + o, elemType), s3);
      }
      // 4×4 transpose-add: lane c of r is the sum of the lanes of s_c
      const t0 = f32x4.add(i32x4.shuffle(s0, s1, 0, 4, 1, 5), i32x4.shuffle(s0, s1, 2, 6, 3, 7));
      const t1 = f32x4.add(i32x4.shuffle(s2, s3, 0, 4, 1, 5), i32x4.shuffle(s2, s3, 2, 6, 3, 7));
      let r = f32x4.add(i64x2.shuffle(t0, t1, 0, 2), i64x2.shuffle(t0, t1, 1, 3));
      for (; k < K; k++) {
        const o = <usize>k * es;
        const xs = f32x4.splat(load<f32>(x + (<usize>k << 2)));
        const wv = f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(load1(w0 + o, elemType)), 1, load1(w1 + o, elemType)), 2, load1(w2 + o, elemType)), 3, load1(w3 + o, elemType));
        r = f32x4.add(r, f32x4.mul(xs, wv));
      }
      const c = orow + (<usize>j << 2);
      for (let l: i32 = 0; l < 4; l++) {
        storeOne(c + (<usize>l << 2), lane4(r, l), alpha, mode, bias + (<usize>(j + l) << 2));
      }
    }
    for (; j < n1; j++) {
      const w = b + <usize>j * kb;
      let sv = f32x4.splat(0);
      let k: i32 = 0;
      for (; k + 4 <= K; k += 4) sv = madd(v128.load(x + (<usize>k << 2)), load4(w + <usize>k * es, elemType), sv);
      // the same pairing as the transpose-add above (not hsum's), so a column's bits do not
      // depend on the range
      let s = (f32x4.extract_lane(sv, 0) + f32x4.extract_lane(sv, 2)) + (f32x4.extract_lane(sv, 1) + f32x4.extract_lane(sv, 3));
      for (; k < K; k++) s += load<f32>(x + (<usize>k << 2)) * load1(w + <usize>k * es, elemType);
      storeOne(orow + (<usize>j << 2), s, alpha, mode, bias + (<usize>j << 2));
    }
  }
}

@inline function lane4(v: v128, l: i32): f32 {
  switch (l) {
    case 0: return f32x4.extract_lane(v, 0);
    case 1: return f32x4.extract_lane(v, 1);
    case 2: return f32x4.extract_lane(v, 2);
    default: return f32x4.extract_lane(v, 3);
  }
}
