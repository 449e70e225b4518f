// Workgroup-wide tree reductions over RED_WG invocations (one value each), for kernels that keep
// one row per workgroup. RED_WG is a power of two ≤ 256 chosen by the host from the row length
// (no idle invocations on short rows). Call from uniform control flow only (they contain
// barriers). The result is read by every invocation; a trailing barrier makes `red` reusable.

override RED_WG: u32 = 256u;
var<workgroup> red: array<f32, RED_WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = RED_WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] = red[lid] + red[lid + s];
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = RED_WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] = max(red[lid], red[lid + s]);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
