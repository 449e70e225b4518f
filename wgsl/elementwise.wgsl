// Elementwise kernels (backend.ts): Backend.add ↔ add, Backend.dropout ↔ dropout,
// Backend.addUniformNoise ↔ add_uniform_noise,
// Backend.copy ↔ copy, Backend.fill ↔ fill, Backend.softcap ↔ softcap.
//   add      o[i] += alpha·x[i]
//   softcap  o[i] = cap·tanh(o[i] / cap)   (in place; tanh_f32 of tanh.wgsl)
//   add_uniform_noise  o[i] += f32(u·scale), u = (hash32(seed, i0 + i) >> 8)·2⁻²³ − 1 (exact)
//   dropout  o[i] = hash32(seed, i0 + i) ≥ threshold ? x[i]·scale : 0 (scale = f32(1/(1−p)),
//            a product, so every backend is bit-identical; rng.wgsl)
//   copy     bytes dst[dst_byte ..+nbytes] = src[src_byte ..]    (any alignment; one word each)
//   fill     bytes dst[dst_byte ..+nbytes] = the 32-bit pattern  (u8 / half patterns replicated)
// copy and fill serve the ranges copyBufferToBuffer / clearBuffer cannot (not 4-byte aligned, a
// non-zero value); each invocation owns one destination word and keeps the bytes outside the range.
// #include "grid.wgsl"
// #include "in_place.wgsl"
// #include "rng.wgsl"
// #include "tanh.wgsl"

struct Params {
  n: u32,
  i0: u32,
  o_off: u32,
  x_off: u32,
  alpha: f32,
  threshold: u32,
  scale: f32,
  seed: u32,
  dst_byte: u32,
  src_byte: u32,
  nbytes: u32,
  pattern: u32,
  cap: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(1) @binding(0) var<storage, read_write> o: array<f32>;
@group(1) @binding(1) var<storage, read> x: array<f32>;
@group(1) @binding(2) var<storage, read_write> dst: array<u32>;
@group(1) @binding(3) var<storage, read> src: array<u32>;

// add / dropout: x may alias o (in_place.wgsl)

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  o[P.o_off + i] = o[P.o_off + i] + P.alpha * x_at(i);
}

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  var r = 0.0;
  if (hash32(P.seed, P.i0 + i) >= P.threshold) {
    r = x_at(i) * P.scale;
  }
  o[P.o_off + i] = r;
}

@compute @workgroup_size(256)
fn add_uniform_noise(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  let u = f32(hash32(P.seed, P.i0 + i) >> 8u) * 1.1920928955078125e-7 - 1.0;
  o[P.o_off + i] = o[P.o_off + i] + u * P.scale;
}

@compute @workgroup_size(256)
fn softcap(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = grid_index(wid, nwg, lid);
  if (i >= P.n) {
    return;
  }
  o[P.o_off + i] = P.cap * tanh_f32(o[P.o_off + i] / P.cap);
}

/** Mask of the bytes of destination word w that lie in [dst_byte, dst_byte + nbytes). */
fn byte_mask(w: u32) -> u32 {
  var mask = 0u;
  for (var j = 0u; j < 4u; j++) {
    let at = w * 4u + j;
    if (at >= P.dst_byte && at < P.dst_byte + P.nbytes) {
      mask |= 0xffu << (j * 8u);
    }
  }
  return mask;
}

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let w = P.dst_byte / 4u + grid_index(wid, nwg, lid);
  if (w * 4u >= P.dst_byte + P.nbytes) {
    return;
  }
  var word = dst[w];
  for (var j = 0u; j < 4u; j++) {
    let at = w * 4u + j;
    if (at >= P.dst_byte && at < P.dst_byte + P.nbytes) {
      let sb = at - P.dst_byte + P.src_byte;
      let bv = (src[sb / 4u] >> ((sb % 4u) * 8u)) & 0xffu;
      word = (word & ~(0xffu << (j * 8u))) | (bv << (j * 8u));
    }
  }
  dst[w] = word;
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let w = P.dst_byte / 4u + grid_index(wid, nwg, lid);
  if (w * 4u >= P.dst_byte + P.nbytes) {
    return;
  }
  let mask = byte_mask(w);
  dst[w] = (dst[w] & ~mask) | (P.pattern & mask);
}
