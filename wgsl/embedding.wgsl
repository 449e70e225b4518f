// Embedding gather (backend.ts): Backend.embedding ↔ embedding.
// out[r, c] = table[ids[r], c], the table f32, f16 or bf16 (widened exactly, half.wgsl).
// A table larger than one storage binding (a 128k-token vocabulary) is bound a block of rows
// at a time: each dispatch serves the ids in [row0, row0 + rows) and leaves the other rows to
// the dispatches of the other blocks. An id outside [0, V) gives a NaN row (the host cannot
// check ids that live on the device without a readback).
// #include "abi.wgsl"
// #include "grid.wgsl"
// #include "half.wgsl"

struct Params {
  R: u32,
  C: u32,
  V: u32,
  row0: u32,
  rows: u32,
  t_off: u32,
  nan: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(1) @binding(0) var<storage, read_write> o: array<f32>;
@group(1) @binding(1) var<storage, read> table: array<u32>;
@group(1) @binding(2) var<storage, read> ids: array<i32>;

/** element type of the table, an ELEM_TYPE_* code (abi.wgsl, generated) */
override ELEM_TYPE: u32 = ELEM_TYPE_F32;

@compute @workgroup_size(256)
fn embedding(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = grid_index(wid, nwg, lid);
  if (idx >= P.R * P.C) {
    return;
  }
  let r = idx / P.C;
  let c = idx % P.C;
  let id = ids[r];
  if (id < 0 || u32(id) >= P.V) {
    if (P.row0 == 0u) {
      o[idx] = P.nan;
    }
    return;
  }
  let row = u32(id);
  if (row < P.row0 || row >= P.row0 + P.rows) {
    return;
  }
  let e = P.t_off + (row - P.row0) * P.C + c;
  var val: f32;
  if (ELEM_TYPE == ELEM_TYPE_F32) {
    val = bitcast<f32>(table[e]);
  } else if (ELEM_TYPE == ELEM_TYPE_F16) {
    val = f16_to_f32(half_of(table[e >> 1u], e));
  } else {
    val = bf16_to_f32(half_of(table[e >> 1u], e));
  }
  o[idx] = val;
}
