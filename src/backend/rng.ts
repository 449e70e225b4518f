// Counter-based random bits shared by every backend (TS here, assembly/rng.ts, wgsl/rng.wgsl),
// so dropout masks are identical whichever backend runs: 32-bit integer hashing only (WGSL has
// no 64-bit integers). keep_i = hash32(seed, i) >= threshold(p).

/** A well-mixed u32 from (seed, index): two rounds of an xor-shift-multiply finalizer. */
export function hash32(seed: number, index: number): number {
  let h = (Math.imul(index >>> 0, 0x9e3779b9) ^ (seed >>> 0)) >>> 0;
  h = mix32(h);
  h = mix32((h ^ Math.imul(seed >>> 0, 0x85ebca6b)) >>> 0);
  return h;
}

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Dropout keeps element i when hash32(seed, i) >= dropThreshold(p). p = 0 keeps everything. */
export function dropThreshold(p: number): number {
  return Math.min(0xffffffff, Math.floor(p * 4294967296)) >>> 0;
}

/** The scale applied to kept elements, rounded to float32 once on the host. */
export function dropScale(p: number): number {
  return Math.fround(1 / (1 - p));
}

/** Derives a per-use seed (step, layer, module, micro-batch) from the run seed. */
export function deriveSeed(...parts: number[]): number {
  let h = 0x243f6a88;
  for (const p of parts) h = hash32(h, p >>> 0);
  return h;
}
