// GEMM family (backend.ts): Backend.matmul ↔ matmul, Backend.qMatmul ↔ q_matmul,
// Backend.qMatmulBackwardInput ↔ q_matmul_backward_input.
//
//   matmul                   y[M, N] (=|+=) alpha · op(A)[M, K] · op(B)[K, N] (+ bias[N])
//   q_matmul                 y[M, N] (=|+=) alpha · x[M, K] · deq(W)ᵀ,  W [N, K] 4-bit (+ bias)
//   q_matmul_backward_input  dx[M, K] (=|+=) alpha · dy[M, N] · deq(W)
//
// All three are one tile loop (gemm_tile) over y = alpha·A·B with B read by load_b in one of
// four element kinds: f32, f16, bf16 (matmul's ELEM_TYPE override) or B_Q4, a 4-bit weight, whose
// element B(k, n) is deq(e) at the flat index e of the layout, as for a dense B:
//   q_matmul                 B(k, n) = deq(n·K + k): W read transposed (ldb = K)
//   q_matmul_backward_input  B(k, n) = deq(k·K' + n): W read as stored (ldb = K')
// One 64×64 output tile per workgroup of 8×8 invocations; each invocation owns an 8×8 block of
// outputs (rows 8·ty .. 8·ty+7, columns 8·tx .. 8·tx+7) in sixteen vec4 accumulators. K is
// walked in slices of 16 staged in workgroup memory (As[k][m], Bs[k][n], as vec4s); every output
// sums its products in ascending k, the reference's order (only a possible multiply-add
// contraction differs).
//
// Operands are windows of their buffers: the host splits tensors larger than one storage
// binding (an lm_head, the logits, long activations) into several dispatches over blocks of M,
// N and K (src/backend/webgpu/index.ts matmul, qMatmul); *_off is an operand's first element
// inside its binding and ld* its row stride in the full tensor.
//
// 4-bit weights are bnb's layout exactly (backend.ts QuantWeight), all parts in one u32 buffer
// bound as `b`: element i = n·K + k of the flat [N·K] array is the high nibble of byte i/2 when
// i is even; its block is i / bs and blocks run across rows. The 16-entry code map is the one
// stored with the weight (never a built-in table).
// #include "abi.wgsl"
// #include "half.wgsl"
// #include "q4.wgsl"

struct Params {
  M: u32,
  N: u32,
  K: u32,
  lda: u32,
  ldb: u32,
  ldo: u32,
  a_off: u32,
  b_off: u32,
  o_off: u32,
  bias_off: u32,
  alpha: f32,
  accumulate: u32,
  has_bias: u32,
  // 4-bit weight W held in b (its row length is ldb): word offsets of its parts
  q_packed: u32,
  q_map: u32,
  q_absmax: u32,
  q_codes: u32,
  q_nabsmax: u32,
  q_nmap: u32,
  q_bs: u32,
  q_nbs: u32,
  q_dq: u32,
  q_offset: f32,
  // always 1.0 (see absmax_of)
  one: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(1) @binding(0) var<storage, read_write> y: array<f32>;
@group(1) @binding(1) var<storage, read> a: array<f32>;
@group(1) @binding(2) var<storage, read> b: array<u32>;
@group(1) @binding(3) var<storage, read> bias: array<f32>;

/** matmul: A is stored [K, M] */
override TRANS_A: bool = false;
/** matmul: B is stored [N, K] */
override TRANS_B: bool = false;
/** matmul: element type of B, an ELEM_TYPE_* code (abi.wgsl, generated) */
override ELEM_TYPE: u32 = ELEM_TYPE_F32;
/** load_b's element kind of the 4-bit entry points (no ELEM_TYPE_* code) */
const B_Q4 = 3u;

const BM = 64u;
const BN = 64u;
const BK = 16u;
const TILE = 1024u; // BM·BK = BK·BN elements
const WG = 64u;

// Staged K slice, 4 consecutive rows (As) or columns (Bs) per vec4: As[k·16 + i] holds rows
// 4i .. 4i+3 of column k, so an invocation's 8×8 block is four vec4 loads per k.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

/** An invocation's 8×8 outputs: row 8·ty + i is (ri_l, ri_h) = columns 8·tx .. 8·tx+7. */
struct Acc {
  r0l: vec4<f32>, r0h: vec4<f32>,
  r1l: vec4<f32>, r1h: vec4<f32>,
  r2l: vec4<f32>, r2h: vec4<f32>,
  r3l: vec4<f32>, r3h: vec4<f32>,
  r4l: vec4<f32>, r4h: vec4<f32>,
  r5l: vec4<f32>, r5h: vec4<f32>,
  r6l: vec4<f32>, r6h: vec4<f32>,
  r7l: vec4<f32>, r7h: vec4<f32>,
}

// ---- operand loads (0 outside the dispatch's M, N, K) -------------------------------------

// The layout arguments (trans_a, trans_b, b_kind) are constants at every call (an entry
// point's overrides or literals): the compiler folds the branches on them away.

fn load_a(trans_a: bool, m: u32, k: u32) -> f32 {
  if (m >= P.M || k >= P.K) {
    return 0.0;
  }
  if (trans_a) {
    return a[P.a_off + k * P.lda + m];
  }
  return a[P.a_off + m * P.lda + k];
}

fn load_b(trans_b: bool, b_kind: u32, k: u32, n: u32) -> f32 {
  if (k >= P.K || n >= P.N) {
    return 0.0;
  }
  var e: u32;
  if (trans_b) {
    e = P.b_off + n * P.ldb + k;
  } else {
    e = P.b_off + k * P.ldb + n;
  }
  if (b_kind == B_Q4) {
    return deq(e);
  }
  if (b_kind == ELEM_TYPE_F32) {
    return bitcast<f32>(b[e]);
  }
  let h = half_of(b[e >> 1u], e);
  if (b_kind == ELEM_TYPE_F16) {
    return f16_to_f32(h);
  }
  return bf16_to_f32(h);
}

/** Word i of the binding that holds a 4-bit weight (q4.wgsl). */
fn q4_word(i: u32) -> u32 {
  return b[i];
}

// ---- the shared tile loop ------------------------------------------------------------------

fn stage_a(k: u32, m: u32, v: f32) {
  As[k * 16u + m / 4u][m % 4u] = v;
}

fn stage_b(k: u32, n: u32, v: f32) {
  Bs[k * 16u + n / 4u][n % 4u] = v;
}

/** acc += As·Bs over one staged K slice, k ascending (invocation tx, ty). */
fn mma(tx: u32, ty: u32, acc: ptr<function, Acc>) {
  for (var kk = 0u; kk < BK; kk++) {
    let a0 = As[kk * 16u + 2u * ty];
    let a1 = As[kk * 16u + 2u * ty + 1u];
    let bl = Bs[kk * 16u + 2u * tx];
    let bh = Bs[kk * 16u + 2u * tx + 1u];
    (*acc).r0l += a0.x * bl; (*acc).r0h += a0.x * bh;
    (*acc).r1l += a0.y * bl; (*acc).r1h += a0.y * bh;
    (*acc).r2l += a0.z * bl; (*acc).r2h += a0.z * bh;
    (*acc).r3l += a0.w * bl; (*acc).r3h += a0.w * bh;
    (*acc).r4l += a1.x * bl; (*acc).r4h += a1.x * bh;
    (*acc).r5l += a1.y * bl; (*acc).r5h += a1.y * bh;
    (*acc).r6l += a1.z * bl; (*acc).r6h += a1.z * bh;
    (*acc).r7l += a1.w * bl; (*acc).r7h += a1.w * bh;
  }
}

fn store_one(m: u32, n: u32, s: f32) {
  if (m < P.M && n < P.N) {
    var v = P.alpha * s;
    if (P.has_bias != 0u) {
      v = v + bias[P.bias_off + n];
    }
    let o = P.o_off + m * P.ldo + n;
    if (P.accumulate != 0u) {
      v = y[o] + v;
    }
    y[o] = v;
  }
}

fn store_row(m: u32, n: u32, r: vec4<f32>) {
  store_one(m, n, r.x);
  store_one(m, n + 1u, r.y);
  store_one(m, n + 2u, r.z);
  store_one(m, n + 3u, r.w);
}

/** y = alpha·acc (+ bias) (+ y) for the in-range outputs of the tile at (m0, n0). */
fn store(m0: u32, n0: u32, tx: u32, ty: u32, acc: ptr<function, Acc>) {
  let m = m0 + 8u * ty;
  let n = n0 + 8u * tx;
  store_row(m, n, (*acc).r0l); store_row(m, n + 4u, (*acc).r0h);
  store_row(m + 1u, n, (*acc).r1l); store_row(m + 1u, n + 4u, (*acc).r1h);
  store_row(m + 2u, n, (*acc).r2l); store_row(m + 2u, n + 4u, (*acc).r2h);
  store_row(m + 3u, n, (*acc).r3l); store_row(m + 3u, n + 4u, (*acc).r3h);
  store_row(m + 4u, n, (*acc).r4l); store_row(m + 4u, n + 4u, (*acc).r4h);
  store_row(m + 5u, n, (*acc).r5l); store_row(m + 5u, n + 4u, (*acc).r5h);
  store_row(m + 6u, n, (*acc).r6l); store_row(m + 6u, n + 4u, (*acc).r6h);
  store_row(m + 7u, n, (*acc).r7l); store_row(m + 7u, n + 4u, (*acc).r7h);
}

/**
 * The output tile (wid.x, wid.y) of y = alpha·op(A)·B (+ bias) (+ y). Tile loads: consecutive
 * invocations walk the stored layout's contiguous dimension.
 */
fn gemm_tile(wid: vec3u, lid: u32, trans_a: bool, trans_b: bool, b_kind: u32) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  var acc: Acc;
  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    for (var e = lid; e < TILE; e += WG) {
      var mm: u32;
      var ka: u32;
      if (trans_a) { mm = e % BM; ka = e / BM; } else { ka = e % BK; mm = e / BK; }
      stage_a(ka, mm, load_a(trans_a, m0 + mm, k0 + ka));
      var nn: u32;
      var kb: u32;
      if (trans_b) { kb = e % BK; nn = e / BK; } else { nn = e % BN; kb = e / BN; }
      stage_b(kb, nn, load_b(trans_b, b_kind, k0 + kb, n0 + nn));
    }
    workgroupBarrier();
    mma(lid % 8u, lid / 8u, &acc);
    workgroupBarrier();
  }
  store(m0, n0, lid % 8u, lid / 8u, &acc);
}

@compute @workgroup_size(8, 8)
fn matmul(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  gemm_tile(wid, lid, TRANS_A, TRANS_B, ELEM_TYPE);
}

@compute @workgroup_size(8, 8)
fn q_matmul(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // y[M, N] = x[M, K] · deq(W)ᵀ: B(k, n) = deq(n·K + k), the host sets ldb = K, b_off = 0
  gemm_tile(wid, lid, false, true, B_Q4);
}

@compute @workgroup_size(8, 8)
fn q_matmul_backward_input(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // dx[M, K'] = dy[M, N'] · deq(W)[N', K']: here P.N = K' (W's in features), P.K = N' (its out
  // features) and B(k, n) = deq(k·K' + n), the host sets ldb = K', b_off = 0
  gemm_tile(wid, lid, false, false, B_Q4);
}
