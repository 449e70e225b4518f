// Cross-entropy (backend.ts): Backend.crossEntropy ↔ cross_entropy.
// One row of logits [R, V] per workgroup: mx = max_j, Z = Σ_j e^(l_j − mx), lse = mx + log Z,
// loss = lse − l_t (0 when t = −100); with grad, the row becomes (softmax − onehot)·grad_scale
// in place (zeros for ignored rows). Logits larger than one binding are bound a block of rows
// at a time (rows, row0, l_off). A target outside [0, V) gives a NaN loss.
// With cap > 0 (Gemma 2's final logit soft-cap) every l above is y = cap·tanh(z / cap) of the
// stored raw z, recomputed where it is read (so no barrier is needed before the row is
// overwritten), and the gradient is d/dz: (softmax(y) − onehot)·grad_scale·(1 − (y/cap)²).
// cap 0 reads z unchanged: the arithmetic of the kernel without a soft-cap.
// #include "grid.wgsl"
// #include "reduce.wgsl"
// #include "tanh.wgsl"

struct Params {
  V: u32,
  rows: u32,
  row0: u32,
  l_off: u32,
  grad: u32,
  grad_scale: f32,
  nan: f32,
  cap: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(1) @binding(0) var<storage, read_write> losses: array<f32>;
@group(1) @binding(1) var<storage, read_write> logits: array<f32>;
@group(1) @binding(2) var<storage, read> targets: array<i32>;

/** the logit the formulas use: the stored z, or y = cap·tanh(z / cap) with a soft-cap */
fn logit(k: u32) -> f32 {
  let z = logits[k];
  if (P.cap > 0.0) {
    return P.cap * tanh_f32(z / P.cap);
  }
  return z;
}

@compute @workgroup_size(RED_WG)
fn cross_entropy(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let rl = grid_group(wid, nwg);
  if (rl >= P.rows) {
    return;
  }
  let row = P.row0 + rl;
  let base = P.l_off + rl * P.V;
  let t = targets[row];
  let scored = t >= 0 && u32(t) < P.V;
  // the reductions run for every row (they hold barriers: uniform control flow only)
  var m = -3.0e38;
  for (var j = lid; j < P.V; j += RED_WG) {
    m = max(m, logit(base + j));
  }
  let mx = reduce_max(lid, m);
  var s = 0.0;
  for (var j = lid; j < P.V; j += RED_WG) {
    s = s + exp(logit(base + j) - mx);
  }
  // read the target's logit before any invocation overwrites the row with its gradient
  var lt = 0.0;
  if (scored) {
    lt = logit(base + u32(t));
  }
  let z = reduce_sum(lid, s);
  let lse = mx + log(z);
  if (lid == 0u) {
    if (t == -100) {
      losses[row] = 0.0;
    } else if (scored) {
      losses[row] = lse - lt;
    } else {
      losses[row] = P.nan;
    }
  }
  if (P.grad != 0u) {
    for (var j = lid; j < P.V; j += RED_WG) {
      var g = 0.0;
      if (scored) {
        let y = logit(base + j);
        let p = exp(y - mx) / z;
        g = (p - select(0.0, 1.0, j == u32(t))) * P.grad_scale;
        if (P.cap > 0.0) {
          let q = y / P.cap;
          g = g * (1.0 - q * q);
        }
      } else if (t != -100) {
        g = P.nan;
      }
      logits[base + j] = g;
    }
  }
}
