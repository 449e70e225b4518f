// RMSNorm (backend.ts): Backend.rmsNorm ↔ rms_norm, Backend.rmsNormBackward ↔ rms_norm_backward.
// One row of C per workgroup of RED_WG invocations (strided over C, tree-reduced). The host may
// split R into row blocks (tensors larger than one binding): *_off locate the block's rows.
//   forward:  rstd = 1/sqrt(mean_c(x²) + eps), out = (x·rstd)·w; rstd kept for the backward
//   backward: dx (=|+=) rstd·(w·dy − x̂·mean_c(x̂·w·dy)), x̂ = x·rstd (w is frozen: no dw)
// #include "grid.wgsl"
// #include "reduce.wgsl"

struct Params {
  R: u32,
  C: u32,
  eps: f32,
  accumulate: u32,
  o_off: u32,
  x_off: u32,
  dy_off: u32,
  r_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
/** forward: out [R, C]; backward: dx [R, C] */
@group(1) @binding(0) var<storage, read_write> o: array<f32>;
@group(1) @binding(1) var<storage, read_write> rstd: array<f32>;
@group(1) @binding(2) var<storage, read> x: array<f32>;
@group(1) @binding(3) var<storage, read> w: array<f32>;
@group(1) @binding(4) var<storage, read> dy: array<f32>;

@compute @workgroup_size(RED_WG)
fn rms_norm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = grid_group(wid, nwg);
  if (row >= P.R) {
    return;
  }
  let xb = P.x_off + row * P.C;
  let ob = P.o_off + row * P.C;
  var ss = 0.0;
  for (var c = lid; c < P.C; c += RED_WG) {
    let xv = x[xb + c];
    ss = ss + xv * xv;
  }
  ss = reduce_sum(lid, ss);
  let s = 1.0 / sqrt(ss / f32(P.C) + P.eps);
  if (lid == 0u) {
    rstd[P.r_off + row] = s;
  }
  for (var c = lid; c < P.C; c += RED_WG) {
    o[ob + c] = (x[xb + c] * s) * w[c];
  }
}

@compute @workgroup_size(RED_WG)
fn rms_norm_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = grid_group(wid, nwg);
  if (row >= P.R) {
    return;
  }
  let xb = P.x_off + row * P.C;
  let gb = P.dy_off + row * P.C;
  let ob = P.o_off + row * P.C;
  let s = rstd[P.r_off + row];
  var dot = 0.0;
  for (var c = lid; c < P.C; c += RED_WG) {
    dot = dot + ((x[xb + c] * s) * w[c]) * dy[gb + c];
  }
  dot = reduce_sum(lid, dot);
  let mean = dot / f32(P.C);
  for (var c = lid; c < P.C; c += RED_WG) {
    let xhat = x[xb + c] * s;
    var g = s * (w[c] * dy[gb + c] - xhat * mean);
    if (P.accumulate != 0u) {
      g = o[ob + c] + g;
    }
    o[ob + c] = g;
  }
}
