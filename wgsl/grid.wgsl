// Linear invocation index of a 1-D kernel dispatched as a 2-D grid of 256-wide workgroups (the
// host folds more than 65535 workgroups into y: runtime.ts grid1d).

const GRID_WG = 256u;

fn grid_index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * GRID_WG + lid;
}

/** Workgroup index of a kernel with one workgroup per row (rows folded into y the same way). */
fn grid_group(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.y * nwg.x + wid.x;
}
