// Optimizer kernels (backend.ts): Backend.sumSquares ↔ sum_squares, Backend.adamwStep ↔
// adamw_step, Backend.sgdStep ↔ sgd_step. Scalars (β, 1−β, bias corrections, decay) are
// computed on the host and rounded to f32 once, as the reference does.
//   adamw: g = grad·gscale; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g·g; p = p·decay;
//          p = p − lr·(m/c1) / (sqrt(v/c2) + eps)            (torch AdamW order, QLORA_SPEC §6.3)
//   sgd:   p = p − lr·(grad·gscale)
//   sum_squares: out[0] (=|+=) Σ x² — one workgroup, RED_WG strided partial sums, tree-reduced.
// #include "grid.wgsl"
// #include "reduce.wgsl"

struct Params {
  n: u32,
  accumulate: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  obeta1: f32,
  obeta2: f32,
  eps: f32,
  decay: f32,
  c1: f32,
  c2: f32,
  gscale: f32,
  p_off: u32,
  g_off: u32,
  m_off: u32,
  v_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
/** param (adamw, sgd); out [1] (sum_squares) */
@group(1) @binding(0) var<storage, read_write> p: array<f32>;
/** grad; x (sum_squares) */
@group(1) @binding(1) var<storage, read> g: array<f32>;
@group(1) @binding(2) var<storage, read_write> m: array<f32>;
@group(1) @binding(3) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(RED_WG)
fn sum_squares(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < P.n; i += RED_WG) {
    let xv = g[P.g_off + i];
    acc = acc + xv * xv;
  }
  let total = reduce_sum(lid, acc);
  if (lid == 0u) {
    if (P.accumulate != 0u) {
      p[0] = p[0] + total;
    } else {
      p[0] = total;
    }
  }
}

@compute @workgroup_size(256)
fn adamw_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let gr = g[P.g_off + i] * P.gscale;
  let mi = P.beta1 * m[P.m_off + i] + P.obeta1 * gr;
  let vi = P.beta2 * v[P.v_off + i] + (P.obeta2 * gr) * gr;
  m[P.m_off + i] = mi;
  v[P.v_off + i] = vi;
  let pd = p[P.p_off + i] * P.decay;
  p[P.p_off + i] = pd - P.lr * ((mi / P.c1) / (sqrt(vi / P.c2) + P.eps));
}

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let j = P.p_off + i;
  p[j] = p[j] - P.lr * (g[P.g_off + i] * P.gscale);
}
