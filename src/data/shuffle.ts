// Seeded permutations for data order and the validation split. Plain 32-bit integer arithmetic, so
// the order for a seed is the same in every JS engine; never Math.random.

/** Mixes (seed, ...parts) into one u32 (murmur3 fmix32 over a running hash). */
export function mixSeed(seed: number, ...parts: number[]): number {
  let h = (seed ^ 0x5bd1e995) >>> 0;
  for (const p of [0x27d4eb2f, ...parts]) {
    h = Math.imul(h ^ (p >>> 0), 0x9e3779b1) >>> 0;
    h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b) >>> 0;
    h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}

/** splitmix32-style generator: a counter passed through a 32-bit finalizer. */
export class SeededRandom {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0; }
  u32(): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  }
  /** Uniform integer in [0, n), from 53 random bits (bias below 2^-20 for n < 2^32). */
  below(n: number): number {
    const x = (this.u32() >>> 11) * 4294967296 + this.u32(); // 21 + 32 bits
    return Math.floor((x / 2 ** 53) * n);
  }
}

/** A uniformly random permutation of 0..n-1 (Fisher–Yates) determined by `seed`. */
export function seededPermutation(n: number, seed: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  const rng = new SeededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = p[i]!; p[i] = p[j]!; p[j] = t;
  }
  return p;
}
