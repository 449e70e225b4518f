// Rotate-half RoPE in place (backend.ts): Backend.rope ↔ rope, Backend.ropeBackward ↔ rope_backward.
// x [R, nh, D], row r at position pos0 + r mod T; cos/sin [positions, D/2]. One invocation per
// pair (x_i, x_{i+D/2}): (a, b) ← (a·cos − b·sin, b·cos + a·sin); the backward rotates by −θ.
// A dispatch covers rows row0 .. row0+R−1 of x (x_off: where row0 starts in the binding).
// Packed sequences (has_doc = 1): ds [rows] i32 holds each row's example start, and row r sits at
// pos0 + (r mod T) − ds[r] (ds_off: where row0's entry starts in its binding); without, ds is a
// dummy binding never read.
// #include "grid.wgsl"

struct Params {
  R: u32,
  T: u32,
  nh: u32,
  D: u32,
  pos0: u32,
  row0: u32,
  x_off: u32,
  /** 1: ds holds the rows' example starts */
  has_doc: u32,
  ds_off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(1) @binding(0) var<storage, read_write> x: array<f32>;
@group(1) @binding(1) var<storage, read> cos_t: array<f32>;
@group(1) @binding(2) var<storage, read> sin_t: array<f32>;
@group(1) @binding(3) var<storage, read> ds: array<i32>;

fn rotate(idx: u32, dir: f32) {
  let hd = P.D / 2u;
  if (idx >= P.R * P.nh * hd) {
    return;
  }
  let i = idx % hd;
  let rh = idx / hd; // row · nh + head
  var pos = P.pos0 + (P.row0 + rh / P.nh) % P.T;
  if (P.has_doc != 0u) {
    pos -= u32(ds[P.ds_off + rh / P.nh]);
  }
  let c = cos_t[pos * hd + i];
  let s = dir * sin_t[pos * hd + i];
  let o = P.x_off + rh * P.D + i;
  let a = x[o];
  let b = x[o + hd];
  x[o] = a * c - b * s;
  x[o + hd] = b * c + a * s;
}

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  rotate(grid_index(wid, nwg, lid), 1.0);
}

@compute @workgroup_size(256)
fn rope_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  rotate(grid_index(wid, nwg, lid), -1.0);
}
