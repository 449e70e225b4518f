// Counter-based random bits, bit-identical to src/backend/rng.ts hash32 and assembly/rng.ts:
// u32 multiplication wraps modulo 2³² exactly like Math.imul, so every backend draws the same
// dropout mask. keep_i = hash32(seed, i) >= dropThreshold(p).

fn mix32(x0: u32) -> u32 {
  var x = x0;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

fn hash32(seed: u32, index: u32) -> u32 {
  var h = (index * 0x9e3779b9u) ^ seed;
  h = mix32(h);
  return mix32(h ^ (seed * 0x85ebca6bu));
}
