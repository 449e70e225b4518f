// Counter-based random bits, bit-identical to src/backend/rng.ts hash32 (and wgsl/rng.wgsl):
// 32-bit integer ops only. A scalar form and a four-lane form (i32x4.mul is the low 32 bits
// of the product, like Math.imul).

@inline function mix32(x: u32): u32 {
  x ^= x >> 16;
  x *= 0x7feb352d;
  x ^= x >> 15;
  x *= 0x846ca68b;
  x ^= x >> 16;
  return x;
}

/** A well-mixed u32 from (seed, index). */
@inline export function hash32(seed: u32, index: u32): u32 {
  let h = mix32((index * 0x9e3779b9) ^ seed);
  return mix32(h ^ (seed * 0x85ebca6b));
}

@inline function mix32x4(x: v128): v128 {
  x = v128.xor(x, i32x4.shr_u(x, 16));
  x = i32x4.mul(x, i32x4.splat(0x7feb352d));
  x = v128.xor(x, i32x4.shr_u(x, 15));
  x = i32x4.mul(x, i32x4.splat(<i32>0x846ca68b));
  return v128.xor(x, i32x4.shr_u(x, 16));
}

/** hash32(seed, index lane) for four indices at once. */
@inline export function hash32x4(seed: u32, index: v128): v128 {
  const h = mix32x4(v128.xor(i32x4.mul(index, i32x4.splat(<i32>0x9e3779b9)), i32x4.splat(<i32>seed)));
  return mix32x4(v128.xor(h, i32x4.splat(<i32>(seed * 0x85ebca6b))));
}

/** out[i] = hash32(seed, i0 + i) for i < n: lets tests compare the bits with the TS hash. */
export function hash32_fill(out: usize, seed: u32, i0: u32, n: i32): void {
  for (let i: i32 = 0; i < n; i++) store<u32>(out + (<usize>i << 2), hash32(seed, i0 + <u32>i));
}
