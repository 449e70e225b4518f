// Fused 4-bit GEMMs against a frozen W [N, K] stored exactly as bitsandbytes stores it
// (QLORA_SPEC §2-4): packed codes u8 [ceil(N·K/2)] (element 2j in the HIGH nibble of byte j),
// quant_map f32 [16], and absmax f32 [nb] or double-quantized absmax (u8 codes [nb], nested
// absmax f32 [ceil(nb/nbs)], nested map f32 [256], offset), dequantized by q4.ts. K need not be
// a multiple of bs.
//
// Backend.qMatmul ↔ q_matmul:  out[M, N] (=|+=) alpha · x[M, K] · deq(W)ᵀ (+ bias)
// Backend.qMatmulBackwardInput ↔ q_matmul_backward_input:  dx[M, K] (=|+=) alpha · dy[M, N] · deq(W)
// Both dequantize one (NC × KC) slice of W at a time straight into the packed-panel layout of
// panel.ts and run the f32 micro-kernel on it, so W is never materialised whole; the *_v1
// versions dequantize one row at a time with scalar code (the oracle of the fused ones).
// `desc` is the weight's descriptor (abi.ts), written by the host at upload.
import { ELEM_TYPE_F32, descQuantMap, descN, descK } from './abi';
import { lutPlane } from './lut16';
import { KC, NC, sliceLen, NR, C_ADD, SCR_PANELS, SCR_QROWS, SCR_ROW, ROW_MAX, firstMode, runSlice, packRowsT, emptyInner, dot, storeOne } from './panel';
import { deqRange, deqRangeScalar } from './q4';

const SMALL_M: i32 = 4;

/**
 * out[M, N] (=|+=) alpha · x[M, K] · deq(W)ᵀ (+ bias f32 [N], unscaled).
 * x f32 [M, K]; desc: weight descriptor; scratch: this thread's area;
 * work range: rows [m0, m1) × output columns (= rows of W) [n0, n1).
 */
export function q_matmul(out: usize, x: usize, desc: usize, M: i32, alpha: f32, accumulate: i32, bias: usize, scratch: usize, m0: i32, m1: i32, n0: i32, n1: i32): void {
  if (m1 <= m0 || n1 <= n0) return;
  const N = descN(desc), K = descK(desc);
  const mode0 = firstMode(accumulate, bias);
  if (K == 0) {
    emptyInner(out, N, mode0, bias, m0, m1, n0, n1);
    return;
  }
  const map = descQuantMap(desc);
  const p0 = lutPlane(map, 0), p1 = lutPlane(map, 1), p2 = lutPlane(map, 2), p3 = lutPlane(map, 3);
  const kb = <usize>K << 2;
  if (M < SMALL_M && K <= ROW_MAX) {
    // decoding: dequantize each row of W once, dot it with the few rows of x
    const row = scratch + SCR_ROW;
    for (let j = n0; j < n1; j++) {
      deqRange(desc, p0, p1, p2, p3, <usize>j * <usize>K, K, row);
      for (let i = m0; i < m1; i++) {
        storeOne(out + ((<usize>i * <usize>N + <usize>j) << 2), dot(x + <usize>i * kb, row, K), alpha, mode0, bias + (<usize>j << 2));
      }
    }
    return;
  }
  const panels = scratch + SCR_PANELS;
  const rows = scratch + SCR_QROWS; // f32 [NR][KC]
  const ldc = <usize>N << 2;
  for (let jc = n0; jc < n1; jc += NC) {
    const nc = min(NC, n1 - jc);
    for (let pc: i32 = 0, kstep = sliceLen(K); pc < K; pc += kstep) {
      const kc = min(kstep, K - pc);
      const panelBytes = <usize>kc << 5;
      for (let q: i32 = 0, j = 0; j < nc; q++, j += NR) {
        const nrv = min(NR, nc - j);
        for (let r: i32 = 0; r < nrv; r++) {
          deqRange(desc, p0, p1, p2, p3, <usize>(jc + j + r) * <usize>K + <usize>pc, kc, rows + <usize>r * (<usize>KC << 2));
        }
        packRowsT(rows, <usize>KC << 2, kc, nrv, panels + <usize>q * panelBytes, ELEM_TYPE_F32);
      }
      runSlice(out, ldc, x, kb, 4, pc, kc, jc, nc, m0, m1, scratch, alpha, pc == 0 ? mode0 : C_ADD, bias);
    }
  }
}

/**
 * dx[M, K] (=|+=) alpha · dy[M, N] · deq(W). dy f32 [M, N]; dx f32 [M, K];
 * work range: rows [m0, m1) × output columns (= columns of W) [k0, k1).
 */
export function q_matmul_backward_input(dx: usize, dy: usize, desc: usize, M: i32, alpha: f32, accumulate: i32, scratch: usize, m0: i32, m1: i32, k0: i32, k1: i32): void {
  if (m1 <= m0 || k1 <= k0) return;
  const N = descN(desc), K = descK(desc);
  if (N == 0) {
    emptyInner(dx, K, firstMode(accumulate, 0), 0, m0, m1, k0, k1);
    return;
  }
  const map = descQuantMap(desc);
  const p0 = lutPlane(map, 0), p1 = lutPlane(map, 1), p2 = lutPlane(map, 2), p3 = lutPlane(map, 3);
  const panels = scratch + SCR_PANELS;
  const row = scratch + SCR_QROWS; // f32 [NC]
  const ldc = <usize>K << 2;
  for (let jc = k0; jc < k1; jc += NC) {
    const nc = min(NC, k1 - jc);
    const np = (nc + NR - 1) / NR;
    for (let pc: i32 = 0, kstep = sliceLen(N); pc < N; pc += kstep) {
      const kc = min(kstep, N - pc);
      const panelBytes = <usize>kc << 5;
      // row p of W, columns [jc, jc + nc): one run of the flat array, scattered 8 columns per panel
      for (let p: i32 = 0; p < kc; p++) {
        deqRange(desc, p0, p1, p2, p3, <usize>(pc + p) * <usize>K + <usize>jc, nc, row);
        const dp = panels + (<usize>p << 5);
        for (let q: i32 = 0; q < np; q++) {
          const j = q * NR;
          const dst = dp + <usize>q * panelBytes;
          const src = row + (<usize>j << 2);
          if (nc - j >= NR) {
            v128.store(dst, v128.load(src));
            v128.store(dst, v128.load(src, 16), 16);
          } else {
            for (let c: i32 = 0; c < NR; c++) store<f32>(dst + (<usize>c << 2), j + c < nc ? load<f32>(src + (<usize>c << 2)) : 0);
          }
        }
      }
      runSlice(dx, ldc, dy, <usize>N << 2, 4, pc, kc, jc, nc, m0, m1, scratch, alpha, pc == 0 ? firstMode(accumulate, 0) : C_ADD, 0);
    }
  }
}

/** Plain version of q_matmul (one dequantized row at a time, scalar). Needs K ≤ ROW_MAX. */
export function q_matmul_v1(out: usize, x: usize, desc: usize, M: i32, alpha: f32, accumulate: i32, bias: usize, scratch: usize, m0: i32, m1: i32, n0: i32, n1: i32): void {
  const N = descN(desc), K = descK(desc);
  const row = scratch + SCR_ROW;
  const mode = firstMode(accumulate, bias);
  for (let j = n0; j < n1; j++) {
    deqRangeScalar(desc, <usize>j * <usize>K, K, row);
    for (let i = m0; i < m1; i++) {
      let s: f32 = 0;
      for (let k: i32 = 0; k < K; k++) s += load<f32>(x + ((<usize>i * <usize>K + <usize>k) << 2)) * load<f32>(row + (<usize>k << 2));
      storeOne(out + ((<usize>i * <usize>N + <usize>j) << 2), s, alpha, mode, bias + (<usize>j << 2));
    }
  }
}

/** Plain version of q_matmul_backward_input. Needs K ≤ ROW_MAX. */
export function q_matmul_backward_input_v1(dx: usize, dy: usize, desc: usize, M: i32, alpha: f32, accumulate: i32, scratch: usize, m0: i32, m1: i32, k0: i32, k1: i32): void {
  const N = descN(desc), K = descK(desc);
  const row = scratch + SCR_ROW;
  if (!accumulate) emptyInner(dx, K, 0, 0, m0, m1, k0, k1);
  for (let n: i32 = 0; n < N; n++) {
    deqRangeScalar(desc, <usize>n * <usize>K + <usize>k0, k1 - k0, row);
    for (let i = m0; i < m1; i++) {
      const s: f32 = alpha * load<f32>(dy + ((<usize>i * <usize>N + <usize>n) << 2));
      const o = dx + ((<usize>i * <usize>K) << 2);
      for (let k = k0; k < k1; k++) {
        const p = o + (<usize>k << 2);
        store<f32>(p, load<f32>(p) + s * load<f32>(row + (<usize>(k - k0) << 2)));
      }
    }
  }
}
