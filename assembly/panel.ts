// The core shared by the blocked GEMMs (gemm.ts, qgemm.ts): packed A and B micro-panels and the
// 4×8 register-blocked micro-kernel. Not exported from index.ts (v128 arguments cannot cross to JS).
//
// Blocking (GotoBLAS/BLIS shape): the output columns of a call's range are walked in blocks of
// NC; for each block, the inner dimension in equal slices of at most KC (sliceLen); each
// (nc × kc) slice of op(B) is packed once into the scratch area as ceil(nc/8) micro-panels laid
// out [kc][8] (one 32-byte row of 8 columns per k, zero-padded past the last column; ≤ 192 KiB,
// L2). Then the range's rows in blocks of MC: the (mc × kc) block of op(A) is packed as
// micro-panels [kc][4] (4 rows per k, zero-padded; ≤ 192 KiB, L2), whatever A's layout (rows of
// x, rows of dY, or columns of a transposed dYᵀ), so the kernel reads A contiguously and no two
// of its streams alias in L1 (A rows 4 KiB apart map to one L1 set). For each B micro-panel
// (≤ 12 KiB, stays in L1) the micro-kernel runs down the A micro-panels. It keeps a 4×8 output
// tile in eight f32x4 accumulators: per k it loads two vectors of the panel and splats four A
// values (6 loads for 8 multiply-adds), so it is bound by the multiply-add throughput (madd in
// simd.ts: mul + add, or relaxed_madd in the relaxed build), not by loads. Eight accumulators +
// two B vectors + one A splat fit x86-64's 16 vector registers; 6×8 and 4×12 tiles measured
// slower under V8 (spills). Packing A the BLIS way (before: A read in place, 4 rows apart) took
// the large-shape f32 GEMM from ~0.4–0.5 to ~0.8–0.9 of the SIMD peak on this machine.
//
// Bits: every output element is Σ_k in order within a slice, slices added in order, whatever
// the tile, block or work range it falls in, so splitting a call's range never changes results.
// The slicing depends on K alone.
//
// The 4-bit GEMMs produce the same panels from dequantized rows, so the fused kernels run the
// very same micro-kernel on W that is never materialised beyond one (NC × KC) slice.
import { ELEM_TYPE_F32, ELEM_TYPE_F16, ELEM_TYPE_BF16 } from './abi';
import { elemBytes, load4, load1 } from './half';
import { madd, hsum } from './simd';

/** Rows of the output tile. */
export const MR: i32 = 4;
/** Columns of the output tile (two f32x4). */
export const NR: i32 = 8;
/**
 * Longest inner-dimension slice packed at once: 384 × 8 floats = one 12 KiB B micro-panel (L1,
 * next to a 6 KiB A micro-panel). A GEMM cuts its inner dimension into equal slices of at most
 * KC (sliceLen): K = 288 is one slice, not 256 + 32 — every slice after the first re-reads and
 * re-writes C, and a short slice runs the micro-kernel for little work.
 */
export const KC: i32 = 384;
/** Output columns packed at once: KC × NC floats = 192 KiB of panels (L2). */
export const NC: i32 = 128;
/** Output rows whose A block is packed at once: MC × KC floats = 192 KiB (L2). */
export const MC: i32 = 128;

/** Length of the slices an inner dimension of K is cut into: equal, ≤ KC, a multiple of 4. */
@inline export function sliceLen(K: i32): i32 {
  const n = (K + KC - 1) / KC;
  return min(KC, (((K + n - 1) / n) + 3) & ~3);
}

// Scratch layout (per thread; the TS side allocates SCRATCH_BYTES per thread once).
/** packed panels of the current slice, f32 [NC/NR][KC][NR] */
export const SCR_PANELS: usize = 0;
/** dequantized rows of W for the fused 4-bit NT GEMM, f32 [NR][KC]; or one row chunk f32 [NC] */
export const SCR_QROWS: usize = <usize>(KC * NC * 4);
/** packed A block, f32 [MC/MR][KC][MR] */
export const SCR_APACK: usize = SCR_QROWS + <usize>(NR * KC * 4);
/** one whole dequantized row of W (small-M and v1 4-bit paths), f32 [≤ ROW_MAX] */
export const SCR_ROW: usize = SCR_APACK + <usize>(MC * KC * 4);
export const SCRATCH_BYTES: usize = 1024 * 1024;
/** longest row the whole-row paths can hold */
export const ROW_MAX: i32 = <i32>((SCRATCH_BYTES - SCR_ROW) >> 2);

// How a tile is written back: bit 0 = add to C, bit 1 = add bias[j] (to alpha·acc, unscaled).
/** C = alpha·acc */
export const C_SET: i32 = 0;
/** C += alpha·acc */
export const C_ADD: i32 = 1;
/** C = alpha·acc + bias[j] */
export const C_SET_BIAS: i32 = 2;
/** C += alpha·acc + bias[j] */
export const C_ADD_BIAS: i32 = 3;

/** The write-back mode of a GEMM's first inner slice (later slices always C_ADD). */
@inline export function firstMode(accumulate: i32, bias: usize): i32 {
  return (accumulate ? C_ADD : 0) | (bias != 0 ? C_SET_BIAS : 0);
}

/** Lane j (0..7) of the 8-wide value held in (v0, v1). extract_lane needs constant lanes. */
@inline function lane8(v0: v128, v1: v128, j: i32): f32 {
  switch (j) {
    case 0: return f32x4.extract_lane(v0, 0);
    case 1: return f32x4.extract_lane(v0, 1);
    case 2: return f32x4.extract_lane(v0, 2);
    case 3: return f32x4.extract_lane(v0, 3);
    case 4: return f32x4.extract_lane(v1, 0);
    case 5: return f32x4.extract_lane(v1, 1);
    case 6: return f32x4.extract_lane(v1, 2);
    default: return f32x4.extract_lane(v1, 3);
  }
}

/** Writes one tile row: c[0..nr) (mode) alpha·(v0, v1). */
@inline function storeRow(c: usize, v0: v128, v1: v128, nr: i32, alpha: f32, mode: i32, bias: usize): void {
  const al = f32x4.splat(alpha);
  let r0 = f32x4.mul(v0, al), r1 = f32x4.mul(v1, al);
  if (nr == NR) {
    if (mode & C_SET_BIAS) {
      r0 = f32x4.add(r0, v128.load(bias));
      r1 = f32x4.add(r1, v128.load(bias, 16));
    }
    if (mode & C_ADD) {
      r0 = f32x4.add(v128.load(c), r0);
      r1 = f32x4.add(v128.load(c, 16), r1);
    }
    v128.store(c, r0);
    v128.store(c, r1, 16);
    return;
  }
  for (let j: i32 = 0; j < nr; j++) {
    const p = c + (<usize>j << 2);
    let s = lane8(r0, r1, j);
    if (mode & C_SET_BIAS) s = s + load<f32>(bias + (<usize>j << 2));
    if (mode & C_ADD) s = load<f32>(p) + s;
    store<f32>(p, s);
  }
}

/**
 * C[0..mr, 0..nr) (mode) alpha · A[0..mr, 0..kc) · P[0..kc, 0..8).
 * pa: one packed A micro-panel f32 [kc][4]; pb: one packed B micro-panel f32 [kc][8];
 * c: C(0, 0) with row stride ldc bytes; bias: bias[0] of these columns (mode C_SET_BIAS).
 * Rows past mr are zero padding in pa; their results are not stored.
 */
export function micro4x8(pa: usize, kc: i32, pb: usize, c: usize, ldc: usize, mr: i32, nr: i32, alpha: f32, mode: i32, bias: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let p = pb, q = pa;
  const pend = pb + (<usize>kc << 5);
  while (p < pend) {
    const b0 = v128.load(p), b1 = v128.load(p, 16);
    let x = v128.load32_splat(q);
    c00 = madd(x, b0, c00);
    c01 = madd(x, b1, c01);
    x = v128.load32_splat(q, 4);
    c10 = madd(x, b0, c10);
    c11 = madd(x, b1, c11);
    x = v128.load32_splat(q, 8);
    c20 = madd(x, b0, c20);
    c21 = madd(x, b1, c21);
    x = v128.load32_splat(q, 12);
    c30 = madd(x, b0, c30);
    c31 = madd(x, b1, c31);
    q += 16;
    p += 32;
  }
  storeRow(c, c00, c01, nr, alpha, mode, bias);
  if (mr > 1) storeRow(c + ldc, c10, c11, nr, alpha, mode, bias);
  if (mr > 2) storeRow(c + 2 * ldc, c20, c21, nr, alpha, mode, bias);
  if (mr > 3) storeRow(c + 3 * ldc, c30, c31, nr, alpha, mode, bias);
}

/**
 * Packs rows [0, mr) (mr ≤ 4) × inner indices [0, kc) of A into one micro-panel dst f32 [kc][4]
 * (zero for rows ≥ mr). a: A(0, 0); A(i, k) at a + i·rs + k·ks bytes.
 */
function packA(a: usize, rs: usize, ks: usize, kc: i32, mr: i32, dst: usize): void {
  if (mr == MR && ks == 4) {
    // rows contiguous along k (x, dY): 4×4 transposes
    const r0 = a, r1 = a + rs, r2 = r1 + rs, r3 = r2 + rs;
    let k: i32 = 0;
    for (; k + 4 <= kc; k += 4) {
      const o = <usize>k << 2;
      const x0 = v128.load(r0 + o), x1 = v128.load(r1 + o), x2 = v128.load(r2 + o), x3 = v128.load(r3 + o);
      const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5);
      const t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
      const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
      const t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
      const d = dst + (<usize>k << 4);
      v128.store(d, i64x2.shuffle(t0, t1, 0, 2));
      v128.store(d, i64x2.shuffle(t0, t1, 1, 3), 16);
      v128.store(d, i64x2.shuffle(t2, t3, 0, 2), 32);
      v128.store(d, i64x2.shuffle(t2, t3, 1, 3), 48);
    }
    for (; k < kc; k++) {
      const o = <usize>k << 2;
      const d = dst + (<usize>k << 4);
      store<f32>(d, load<f32>(r0 + o));
      store<f32>(d, load<f32>(r1 + o), 4);
      store<f32>(d, load<f32>(r2 + o), 8);
      store<f32>(d, load<f32>(r3 + o), 12);
    }
    return;
  }
  if (mr == MR && rs == 4) {
    // A stored transposed (dYᵀ): the four rows of one k are adjacent
    for (let k: i32 = 0; k < kc; k++) v128.store(dst + (<usize>k << 4), v128.load(a + <usize>k * ks));
    return;
  }
  for (let k: i32 = 0; k < kc; k++) {
    const d = dst + (<usize>k << 4);
    const ak = a + <usize>k * ks;
    for (let i: i32 = 0; i < MR; i++) store<f32>(d + (<usize>i << 2), i < mr ? load<f32>(ak + <usize>i * rs) : 0);
  }
}

/**
 * Runs the micro-kernel over rows [m0, m1) for the packed B slice: columns [jc, jc + nc) of C,
 * inner indices [pc, pc + kc). a: A(0, 0) with strides rs, ks (bytes); out: C [·, ldc/4];
 * scratch: this thread's area (B panels at SCR_PANELS, A blocks packed at SCR_APACK).
 */
export function runSlice(out: usize, ldc: usize, a: usize, rs: usize, ks: usize, pc: i32, kc: i32, jc: i32, nc: i32, m0: i32, m1: i32, scratch: usize, alpha: f32, mode: i32, bias: usize): void {
  const np = (nc + NR - 1) / NR;
  const panelBytes = <usize>kc << 5;
  const aBytes = <usize>kc << 4;
  const panels = scratch + SCR_PANELS, apack = scratch + SCR_APACK;
  const ak = a + <usize>pc * ks;
  for (let ic = m0; ic < m1; ic += MC) {
    const mc = min(MC, m1 - ic);
    for (let i: i32 = 0, g: usize = 0; i < mc; i += MR, g++) packA(ak + <usize>(ic + i) * rs, rs, ks, kc, min(MR, mc - i), apack + g * aBytes);
    const ci = out + <usize>ic * ldc + (<usize>jc << 2);
    for (let q: i32 = 0; q < np; q++) {
      const j = q * NR;
      const pb = panels + <usize>q * panelBytes;
      const nr = min(NR, nc - j);
      const cj = ci + (<usize>j << 2), bj = bias + (<usize>(jc + j) << 2);
      for (let i: i32 = 0, g: usize = 0; i < mc; i += MR, g++) {
        micro4x8(apack + g * aBytes, kc, pb, cj + <usize>i * ldc, ldc, min(MR, mc - i), nr, alpha, mode, bj);
      }
    }
  }
}

/**
 * Packs 8 columns of op(B) = Bᵀ (B rows are the output columns, contiguous along k):
 * dst[k][c] = row_c[k] for k < kc, c < nrv (row_c at src + c·ld bytes, elements of type elemType,
 * widened to f32); zero for c ≥ nrv. Four rows at a time are transposed 4×4 in registers.
 */
export function packRowsT(src: usize, ld: usize, kc: i32, nrv: i32, dst: usize, elemType: i32): void {
  if (elemType == ELEM_TYPE_F32) packRowsTOf(src, ld, kc, nrv, dst, ELEM_TYPE_F32);
  else if (elemType == ELEM_TYPE_F16) packRowsTOf(src, ld, kc, nrv, dst, ELEM_TYPE_F16);
  else packRowsTOf(src, ld, kc, nrv, dst, ELEM_TYPE_BF16);
}

@inline function packRowsTOf(src: usize, ld: usize, kc: i32, nrv: i32, dst: usize, elemType: i32): void {
  const es = elemBytes(elemType);
  if (nrv == NR) {
    for (let h: usize = 0; h < 2; h++) {
      const r0 = src + 4 * h * ld, r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
      const d = dst + (h << 4);
      let k: i32 = 0;
      for (; k + 4 <= kc; k += 4) {
        const o = <usize>k * es;
        const x0 = load4(r0 + o, elemType), x1 = load4(r1 + o, elemType), x2 = load4(r2 + o, elemType), x3 = load4(r3 + o, elemType);
        const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5); // x0.0 x1.0 x0.1 x1.1
        const t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
        const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
        const t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
        const dk = d + (<usize>k << 5);
        v128.store(dk, i64x2.shuffle(t0, t1, 0, 2));
        v128.store(dk, i64x2.shuffle(t0, t1, 1, 3), 32);
        v128.store(dk, i64x2.shuffle(t2, t3, 0, 2), 64);
        v128.store(dk, i64x2.shuffle(t2, t3, 1, 3), 96);
      }
      for (; k < kc; k++) {
        const o = <usize>k * es;
        const dk = d + (<usize>k << 5);
        store<f32>(dk, load1(r0 + o, elemType));
        store<f32>(dk, load1(r1 + o, elemType), 4);
        store<f32>(dk, load1(r2 + o, elemType), 8);
        store<f32>(dk, load1(r3 + o, elemType), 12);
      }
    }
    return;
  }
  for (let k: i32 = 0; k < kc; k++) {
    const dk = dst + (<usize>k << 5);
    for (let c: i32 = 0; c < NR; c++) {
      store<f32>(dk + (<usize>c << 2), c < nrv ? load1(src + <usize>c * ld + <usize>k * es, elemType) : 0);
    }
  }
}

/**
 * Packs 8 columns of op(B) = B (B rows are the inner index, contiguous along the columns):
 * dst[k][c] = src[k·ld + c] for k < kc, c < nrv (elements of type elemType); zero for c ≥ nrv.
 */
export function packRowsN(src: usize, ld: usize, kc: i32, nrv: i32, dst: usize, elemType: i32): void {
  if (elemType == ELEM_TYPE_F32) packRowsNOf(src, ld, kc, nrv, dst, ELEM_TYPE_F32);
  else if (elemType == ELEM_TYPE_F16) packRowsNOf(src, ld, kc, nrv, dst, ELEM_TYPE_F16);
  else packRowsNOf(src, ld, kc, nrv, dst, ELEM_TYPE_BF16);
}

@inline function packRowsNOf(src: usize, ld: usize, kc: i32, nrv: i32, dst: usize, elemType: i32): void {
  const es = elemBytes(elemType);
  if (nrv == NR) {
    for (let k: i32 = 0; k < kc; k++) {
      const s = src + <usize>k * ld;
      const dk = dst + (<usize>k << 5);
      v128.store(dk, load4(s, elemType));
      v128.store(dk, load4(s + 4 * es, elemType), 16);
    }
    return;
  }
  for (let k: i32 = 0; k < kc; k++) {
    const s = src + <usize>k * ld;
    const dk = dst + (<usize>k << 5);
    for (let c: i32 = 0; c < NR; c++) store<f32>(dk + (<usize>c << 2), c < nrv ? load1(s + <usize>c * es, elemType) : 0);
  }
}

/** C[m0..m1, n0..n1) (mode) 0: the K = 0 case (an empty inner dimension still adds the bias). */
export function emptyInner(out: usize, N: i32, mode: i32, bias: usize, m0: i32, m1: i32, n0: i32, n1: i32): void {
  for (let i = m0; i < m1; i++) {
    for (let j = n0; j < n1; j++) storeOne(out + ((<usize>i * <usize>N + <usize>j) << 2), 0, 1, mode, bias + (<usize>j << 2));
  }
}

/** Σ x[k]·y[k] for k < n, f32x4 lanes then a scalar tail. */
@inline export function dot(x: usize, y: usize, n: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let k: i32 = 0;
  for (; k + 8 <= n; k += 8) {
    const o = <usize>k << 2;
    s0 = madd(v128.load(x + o), v128.load(y + o), s0);
    s1 = madd(v128.load(x + o, 16), v128.load(y + o, 16), s1);
  }
  if (k + 4 <= n) {
    const o = <usize>k << 2;
    s0 = madd(v128.load(x + o), v128.load(y + o), s0);
    k += 4;
  }
  let s = hsum(f32x4.add(s0, s1));
  for (; k < n; k++) s += load<f32>(x + (<usize>k << 2)) * load<f32>(y + (<usize>k << 2));
  return s;
}

/** Writes one output element: c (mode) alpha·s. */
@inline export function storeOne(c: usize, s: f32, alpha: f32, mode: i32, bias: usize): void {
  let r = alpha * s;
  if (mode & C_SET_BIAS) r = r + load<f32>(bias);
  if (mode & C_ADD) r = load<f32>(c) + r;
  store<f32>(c, r);
}
