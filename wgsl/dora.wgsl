// DoRA (weight-decomposed LoRA) kernels (backend.ts "DoRA"): Backend.scaleColumns ↔
// scale_columns, Backend.columnDot ↔ column_dot, Backend.doraScale ↔ dora_scale,
// Backend.rowSumSquares ↔ row_sum_squares, Backend.qRowSumSquares ↔ q_row_sum_squares.
//   scale_columns      o[r, j] (=|+=) f32(f32(v[j] + offset)·x[r, j]) (+ bias[j])   one invocation per element
//   column_dot         o[j] (=|+=) v[j]·Σ_r x[r, j]·y[r, j]   one invocation per column, r ascending
//   dora_scale         n = sqrt(y[j]); o2[j] = 1/n; o[j] = x[j]/n   (y = nsq, x = m; o = g, o2 = invNorm)
//   row_sum_squares    o[r] (=|+=) Σ_c x[r, c]²   one row per workgroup, RED_WG strided, tree-reduced
//   q_row_sum_squares  o[n] = Σ_k deq(W)[n, k]²   the same reduction over the dequantized row of w
// scale_columns and column_dot round in the reference's order (src/backend/reference/index.ts
// "DoRA"), so they give its bits; dora_scale's sqrt and division are WGSL's (not correctly rounded:
// a few ulp); the row sums are tree-reduced (another order than the reference's). q_row_sum_squares
// and row_sum_squares share the loop and the reduction: equal bits for W and its dequantized copy.
//
// Contraction: a compiler may fuse a·b + c into one fma (one rounding instead of two). Where a
// product is added, it is multiplied by P.one (a runtime 1.0) first, as in gemm.wgsl: a fused
// fma(p, 1, c) then rounds exactly like p + c.
//
// The host splits [R, N] operands larger than one storage binding into row blocks (*_off locate a
// block's first element in its window). column_dot carries its partial sums across row blocks in
// o2 (first: start from 0, else from o2; last: finish into o, else store to o2), so the sum runs
// over r in one order however it is cut.
// #include "grid.wgsl"
// #include "in_place.wgsl"
// #include "reduce.wgsl"
// #include "q4.wgsl"

struct Params {
  /** rows of this dispatch (row_sum_squares, column_dot, the row block of scale_columns) */
  R: u32,
  /** columns (row length: C of row_sum_squares, K of q_row_sum_squares) */
  N: u32,
  /** scale_columns, dora_scale: elements of this dispatch */
  n: u32,
  offset: f32,
  accumulate: u32,
  has_bias: u32,
  has_scale: u32,
  first: u32,
  last: u32,
  o_off: u32,
  o2_off: u32,
  x_off: u32,
  y_off: u32,
  // 4-bit weight in w: word offsets of its parts (Params q_* of gemm.wgsl)
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
  // always 1.0 (contraction guard)
  one: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
/** every kernel's output: out, g (dora_scale) */
@group(1) @binding(0) var<storage, read_write> o: array<f32>;
/** dora_scale: invNorm; column_dot: partial sums across row blocks */
@group(1) @binding(1) var<storage, read_write> o2: array<f32>;
/** scale_columns: x; column_dot: a; dora_scale: m; row_sum_squares: x */
@group(1) @binding(2) var<storage, read> x: array<f32>;
/** column_dot: b; dora_scale: nsq */
@group(1) @binding(3) var<storage, read> y: array<f32>;
/** scale_columns: g [N]; column_dot: scale [N] */
@group(1) @binding(4) var<storage, read> v: array<f32>;
@group(1) @binding(5) var<storage, read> bias: array<f32>;
/** the 4-bit weight W [N, K] (all parts in one u32 buffer, as for gemm.wgsl's b) */
@group(1) @binding(6) var<storage, read> w: array<u32>;

// scale_columns: x may alias o (in_place.wgsl)

@compute @workgroup_size(256)
fn scale_columns(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let j = i % P.N;
  let s = v[j] + P.offset;
  var t = s * x_at(i);
  if (P.has_bias != 0u) {
    t = t * P.one + bias[j];
  }
  let at = P.o_off + i;
  if (P.accumulate != 0u) {
    t = o[at] + t * P.one;
  }
  o[at] = t;
}

@compute @workgroup_size(256)
fn column_dot(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let j = grid_index(wid, nwg, lid);
  if (j >= P.N) {
    return;
  }
  var acc = 0.0;
  if (P.first == 0u) {
    acc = o2[j];
  }
  // consecutive invocations read consecutive columns of each row
  for (var r = 0u; r < P.R; r++) {
    let e = r * P.N + j;
    acc = acc + (x[P.x_off + e] * y[P.y_off + e]) * P.one;
  }
  if (P.last == 0u) {
    o2[j] = acc;
    return;
  }
  var t = acc;
  if (P.has_scale != 0u) {
    t = v[j] * acc;
  }
  if (P.accumulate != 0u) {
    t = o[P.o_off + j] + t * P.one;
  }
  o[P.o_off + j] = t;
}

@compute @workgroup_size(256)
fn dora_scale(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let j = grid_index(wid, nwg, lid);
  if (j >= P.n) {
    return;
  }
  let nrm = sqrt(y[P.y_off + j]);
  o2[P.o2_off + j] = 1.0 / nrm;
  o[P.o_off + j] = x[P.x_off + j] / nrm;
}

/** acc + v² with the square rounded first (the one loop step of both row sums). */
fn add_sq(acc: f32, val: f32) -> f32 {
  return acc + (val * val) * P.one;
}

/** The row's sum from each invocation's partial: the reduction, then (=|+=) into o[row]. */
fn finish_row(lid: u32, row: u32, partial: f32) {
  let total = reduce_sum(lid, partial);
  if (lid == 0u) {
    let at = P.o_off + row;
    if (P.accumulate != 0u) {
      o[at] = o[at] + total;
    } else {
      o[at] = total;
    }
  }
}

@compute @workgroup_size(RED_WG)
fn row_sum_squares(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = grid_group(wid, nwg);
  if (row >= P.R) {
    return;
  }
  let xb = P.x_off + row * P.N;
  var ss = 0.0;
  for (var c = lid; c < P.N; c += RED_WG) {
    ss = add_sq(ss, x[xb + c]);
  }
  finish_row(lid, row, ss);
}

// ---- 4-bit weights: dequantized by q4.wgsl, as in the GEMMs ----

/** Word i of the binding that holds a 4-bit weight (q4.wgsl). */
fn q4_word(i: u32) -> u32 {
  return w[i];
}

@compute @workgroup_size(RED_WG)
fn q_row_sum_squares(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = grid_group(wid, nwg);
  if (row >= P.R) {
    return;
  }
  let base = row * P.N;
  var ss = 0.0;
  for (var c = lid; c < P.N; c += RED_WG) {
    ss = add_sq(ss, deq(base + c));
  }
  finish_row(lid, row, ss);
}
