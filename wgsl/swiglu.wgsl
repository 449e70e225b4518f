// SwiGLU (backend.ts): Backend.swiglu ↔ swiglu, Backend.swigluBackward ↔ swiglu_backward.
//   out = silu(g)·u, silu(g) = g·σ(g), σ(g) = 1/(1 + e^−g)
//   dgate = dout·u·σ(g)·(1 + g·(1 − σ(g))), dup = dout·silu(g)
// GeGLU: Backend.geglu ↔ geglu, Backend.gegluBackward ↔ geglu_backward (same bindings and params).
//   out = gelu(g)·u, gelu(g) = (0.5·g)·(1 + t), t = tanh(β·(g + κ·g³)), β = √(2/π), κ = 0.044715
//   dgate = dout·u·(0.5·(1 + t) + (0.5·g)·(1 − t²)·β·(1 + 3κ·g²)), dup = dout·gelu(g)
//   (PyTorch's gelu(approximate='tanh') and its backward, in their order of operations)
// Element ranges are windows (*_off) so the host can split very long vectors across bindings.
// #include "grid.wgsl"
// #include "tanh.wgsl"

struct Params {
  n: u32,
  o_off: u32,
  o2_off: u32,
  g_off: u32,
  u_off: u32,
  d_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
/** forward: out; backward: dgate */
@group(1) @binding(0) var<storage, read_write> o: array<f32>;
/** backward: dup */
@group(1) @binding(1) var<storage, read_write> o2: array<f32>;
@group(1) @binding(2) var<storage, read> gate: array<f32>;
@group(1) @binding(3) var<storage, read> up: array<f32>;
@group(1) @binding(4) var<storage, read> dout: array<f32>;

/** forward with out aliasing inputs (allowed by the contract): bit 0 gate is out, bit 1 up is
 *  out — an aliased input is read from `o` (WebGPU refuses a buffer bound twice when one
 *  binding is writable) */
override ALIAS: u32 = 0u;

fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
}

const GELU_BETA: f32 = 0.7978845608028654;
const GELU_KAPPA: f32 = 0.044715;
const GELU_KAPPA3: f32 = 0.134145;

/** tanh(β·(g + κ·g³)) of the tanh-approximated GELU, given g³ */
fn gelu_tanh(g: f32, g3: f32) -> f32 {
  return tanh_f32(GELU_BETA * (g + GELU_KAPPA * g3));
}

/** the forward inputs, an aliased one read from `o` (see ALIAS) */
fn glu_inputs(i: u32) -> vec2f {
  var g: f32;
  var u: f32;
  if ((ALIAS & 1u) != 0u) {
    g = o[P.o_off + i];
  } else {
    g = gate[P.g_off + i];
  }
  if ((ALIAS & 2u) != 0u) {
    u = o[P.o_off + i];
  } else {
    u = up[P.u_off + i];
  }
  return vec2f(g, u);
}

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  var g: f32;
  var u: f32;
  if ((ALIAS & 1u) != 0u) {
    g = o[P.o_off + i];
  } else {
    g = gate[P.g_off + i];
  }
  if ((ALIAS & 2u) != 0u) {
    u = o[P.o_off + i];
  } else {
    u = up[P.u_off + i];
  }
  o[P.o_off + i] = (g * sigmoid(g)) * u;
}

@compute @workgroup_size(256)
fn swiglu_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let g = gate[P.g_off + i];
  let u = up[P.u_off + i];
  let d = dout[P.d_off + i];
  let sg = sigmoid(g);
  let silu = g * sg;
  let dsilu = sg * (1.0 + g * (1.0 - sg));
  o[P.o_off + i] = (d * u) * dsilu;
  o2[P.o2_off + i] = d * silu;
}

@compute @workgroup_size(256)
fn geglu(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let gu = glu_inputs(i);
  let g = gu.x;
  let t = gelu_tanh(g, (g * g) * g);
  o[P.o_off + i] = ((0.5 * g) * (1.0 + t)) * gu.y;
}

@compute @workgroup_size(256)
fn geglu_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let g = gate[P.g_off + i];
  let u = up[P.u_off + i];
  let d = dout[P.d_off + i];
  let sq = g * g;
  let t = gelu_tanh(g, sq * g);
  let left = 0.5 * g;
  let right = 1.0 + t;
  let dgelu = 0.5 * right + (left * (1.0 - t * t)) * (GELU_BETA * (1.0 + GELU_KAPPA3 * sq));
  o[P.o_off + i] = (d * u) * dgelu;
  o2[P.o2_off + i] = d * (left * right);
}
