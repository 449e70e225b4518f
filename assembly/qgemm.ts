// Fused 4-bit GEMMs against a frozen W [N, K] stored exactly as bitsandbytes stores it
// (QLORA_SPEC §2-4): packed codes u8 [ceil(N·K/2)] (element 2j in the HIGH nibble of byte j),
// quant_map f32 [16], and absmax f32 [nb] or double-quantized absmax (u8 codes [nb], nested
// absmax f32 [ceil(nb/nbs)], nested map f32 [256], offset). Blocks are runs of the flat N·K array
// and may straddle rows (K need not be a multiple of bs).
//
//   element e = f32(quant_map[code_e] · absmax[e / bs])
//   DQ:  absmax_b = f32(f32(nested_map[q_b] · nested_absmax[b / nbs]) + offset)   (bnb, QLoRA §3)
//
// Backend.qMatmul ↔ q_matmul:  out[M, N] (=|+=) alpha · x[M, K] · deq(W)ᵀ (+ bias)
// Backend.qMatmulBackwardInput ↔ q_matmul_backward_input:  dx[M, K] (=|+=) alpha · dy[M, N] · deq(W)
// Both dequantize one (NC × KC) slice of W at a time straight into the packed-panel layout of
// panel.ts and run the f32 micro-kernel on it, so W is never materialised whole; the *_v1
// versions dequantize one row at a time with scalar code (the oracle of the fused ones).
//
// The weight is described by a descriptor block the TS side writes at upload (u32 words):
//   0 packed, 1 quant_map, 2 absmax (0 when double-quantized), 3 dq codes, 4 nested absmax,
//   5 nested map, 6 offset (f32), 7 bs, 8 nbs, 9 N, 10 K.
import { lutPlane, decode16 } from './lut16';
import { KC, NC, sliceLen, NR, C_ADD, SCR_PANELS, SCR_QROWS, SCR_ROW, ROW_MAX, firstMode, runSlice, packRowsT, emptyInner, dot, storeOne } from './panel';
import { BT_F32 } from './half';
import { dqAbsmaxRule } from './dq';
import { hsum } from './simd';

const SMALL_M: i32 = 4;

@inline function dPacked(d: usize): usize { return <usize>load<u32>(d); }
@inline function dMap(d: usize): usize { return <usize>load<u32>(d, 4); }
@inline function dAbsmax(d: usize): usize { return <usize>load<u32>(d, 8); }
@inline function dCodes(d: usize): usize { return <usize>load<u32>(d, 12); }
@inline function dNested(d: usize): usize { return <usize>load<u32>(d, 16); }
@inline function dNestedMap(d: usize): usize { return <usize>load<u32>(d, 20); }
@inline function dOffset(d: usize): f32 { return load<f32>(d, 24); }
@inline function dBs(d: usize): usize { return <usize>load<u32>(d, 28); }
@inline function dNbs(d: usize): usize { return <usize>load<u32>(d, 32); }
@inline function dN(d: usize): i32 { return load<i32>(d, 36); }
@inline function dK(d: usize): i32 { return load<i32>(d, 40); }

/** absmax of block b, recovered from double quantization on the fly when needed. */
@inline function absmaxOf(d: usize, b: usize): f32 {
  const am = dAbsmax(d);
  if (am != 0) return load<f32>(am + (b << 2));
  return dqAbsmax(d, b, b / dNbs(d));
}

/** Double-quantized absmax of block b, whose nested block is nb = b / nbs. */
@inline function dqAbsmax(d: usize, b: usize, nb: usize): f32 {
  return dqAbsmaxRule(dNestedMap(d), <usize>load<u8>(dCodes(d) + b), dNested(d), nb, dOffset(d));
}

/** a / m, by a shift when m is a power of two (block sizes always are; bnb allows no others). */
@inline function div(a: usize, m: usize): usize {
  return (m & (m - 1)) == 0 ? a >> <usize>ctz(m) : a / m;
}

/** Code of flat element e (high nibble for even e). */
@inline function codeAt(packed: usize, e: usize): usize {
  const byte = <usize>load<u8>(packed + (e >> 1));
  return (e & 1) ? byte & 15 : byte >> 4;
}

/**
 * dst[0..n) = deq(W) flat elements [e0, e0 + n): 16 at a time with the byte-swizzle lookup
 * (lut16.ts) where a run is nibble-aligned and inside one block, one at a time otherwise.
 * The block (and nested block) index is divided out once per call and then stepped: an integer
 * division per 64-element block cost as much as decoding the block.
 */
function deqRange(d: usize, p0: v128, p1: v128, p2: v128, p3: v128, e0: usize, n: i32, dst: usize): void {
  const packed = dPacked(d), map = dMap(d), bs = dBs(d), am = dAbsmax(d), nbs = dNbs(d);
  const end = e0 + <usize>n;
  let e = e0;
  let o = dst;
  let b = div(e0, bs);
  let blockEnd = (b + 1) * bs;
  let nb: usize = am != 0 ? 0 : div(b, nbs);
  let nr: usize = am != 0 ? 0 : b - nb * nbs;
  while (e < end) {
    const bEnd = min(end, blockEnd);
    const a = am != 0 ? load<f32>(am + (b << 2)) : dqAbsmax(d, b, nb);
    if ((e & 1) != 0) {
      store<f32>(o, load<f32>(map + (codeAt(packed, e) << 2)) * a);
      e++; o += 4;
    }
    const av = f32x4.splat(a);
    while (e + 16 <= bEnd) {
      decode16(packed + (e >> 1), p0, p1, p2, p3, av, o);
      e += 16; o += 64;
    }
    while (e < bEnd) {
      store<f32>(o, load<f32>(map + (codeAt(packed, e) << 2)) * a);
      e++; o += 4;
    }
    b++;
    blockEnd += bs;
    if (++nr == nbs) { nr = 0; nb++; }
  }
}

/** Plain scalar dequantization of flat elements [e0, e0 + n) (the v1 path). */
function deqRangeScalar(d: usize, e0: usize, n: i32, dst: usize): void {
  const packed = dPacked(d), map = dMap(d), bs = dBs(d);
  for (let i: i32 = 0; i < n; i++) {
    const e = e0 + <usize>i;
    store<f32>(dst + (<usize>i << 2), load<f32>(map + (codeAt(packed, e) << 2)) * absmaxOf(d, e / bs));
  }
}

/**
 * out[M, N] (=|+=) alpha · x[M, K] · deq(W)ᵀ (+ bias f32 [N], unscaled).
 * x f32 [M, K]; desc: weight descriptor; scratch: this thread's area;
 * work range: rows [m0, m1) × output columns (= rows of W) [n0, n1).
 */
export function q_matmul(out: usize, x: usize, desc: usize, M: i32, alpha: f32, accumulate: i32, bias: usize, scratch: usize, m0: i32, m1: i32, n0: i32, n1: i32): void {
  if (m1 <= m0 || n1 <= n0) return;
  const N = dN(desc), K = dK(desc);
  const mode0 = firstMode(accumulate, bias);
  if (K == 0) {
    emptyInner(out, N, mode0, bias, m0, m1, n0, n1);
    return;
  }
  const map = dMap(desc);
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
        packRowsT(rows, <usize>KC << 2, kc, nrv, panels + <usize>q * panelBytes, BT_F32);
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
  const N = dN(desc), K = dK(desc);
  if (N == 0) {
    emptyInner(dx, K, firstMode(accumulate, 0), 0, m0, m1, k0, k1);
    return;
  }
  const map = dMap(desc);
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
  const N = dN(desc), K = dK(desc);
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
  const N = dN(desc), K = dK(desc);
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

/** Elements of a row of W that q_row_sum_squares dequantizes at once (a multiple of 8). */
const QSS_PIECE: i32 = 4096;

/**
 * out[n] = Σ_k deq(W)[n, k]² for rows [n0, n1) of W (Backend.qRowSumSquares). desc: weight
 * descriptor; scratch: this thread's area. Each row is dequantized QSS_PIECE elements at a time
 * (deqRange, as the GEMMs) and summed in the order of row_sum_squares (dora.ts rowSumSq):
 * 8-element groups into two f32x4 carried across pieces (whole groups except in the last), hsum,
 * then the tail — so out equals row_sum_squares of the dequantized W bit for bit.
 */
export function q_row_sum_squares(out: usize, desc: usize, scratch: usize, n0: i32, n1: i32): void {
  const K = dK(desc);
  const map = dMap(desc);
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
