// Next-token sampling on the host from one row of logits (V floats): greedy, temperature and
// nucleus (top-p), with a seeded generator so a seed reproduces the same text on every backend.
import { hash32 } from '../backend/rng.ts';

export interface SampleOptions {
  /** 0 = greedy (argmax, lowest id on ties). */
  temperature: number;
  /** Keep the smallest set of most likely tokens whose probability reaches top_p (1 = all). */
  topP: number;
}

/** Seeded uniform numbers in [0, 1): the n-th draw of a seed is the same everywhere. */
export class SampleRng {
  private n = 0;
  constructor(private readonly seed: number) {}
  next(): number {
    return hash32(this.seed, this.n++) / 4294967296;
  }
}

export function argmax(logits: ArrayLike<number>): number {
  let best = 0, bv = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > bv) { bv = v; best = i; }
  }
  return best;
}

/**
 * Samples one token id. With temperature > 0: p ∝ exp((logit − max)/temperature), restricted to
 * the top-p nucleus (ties in probability broken by lower id), then one draw of rng.
 */
export function sampleToken(logits: ArrayLike<number>, opts: SampleOptions, rng: SampleRng): number {
  if (!(opts.temperature > 0)) return argmax(logits);
  const V = logits.length;
  let mx = -Infinity;
  for (let i = 0; i < V; i++) mx = Math.max(mx, logits[i]!);
  const p = new Float64Array(V);
  let z = 0;
  for (let i = 0; i < V; i++) { p[i] = Math.exp((logits[i]! - mx) / opts.temperature); z += p[i]!; }
  let ids: number[];
  if (opts.topP < 1) {
    ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
    let acc = 0, k = 0;
    while (k < V) { acc += p[ids[k]!]! / z; k++; if (acc >= opts.topP) break; }
    ids = ids.slice(0, k);
  } else {
    ids = Array.from({ length: V }, (_, i) => i);
  }
  let mass = 0;
  for (const i of ids) mass += p[i]!;
  let u = rng.next() * mass;
  for (const i of ids) {
    u -= p[i]!;
    if (u < 0) return i;
  }
  return ids[ids.length - 1]!;
}
