// The held-out validation split used when no --valid file is given.
import { mixSeed, seededPermutation } from './shuffle.ts';

export interface SplitOptions {
  /** Default 0. The split uses its own stream derived from it, independent of the batch order. */
  seed?: number;
  /** Share of the examples held out. Default 0.1 (the 10% "test" split qlora makes for local files). */
  fraction?: number;
  /** At most this many held out. Default 1024 (qlora's eval_dataset_size). */
  max?: number;
  /** Below this many examples nothing is held out: a 1-example eval of a 9-example run says little. Default 10. */
  minExamples?: number;
}

/**
 * Splits items into train and valid by a seeded draw: ⌊fraction·n⌋ clamped to [1, max] held out,
 * none when n < minExamples. Both parts keep the input order.
 */
export function splitValidation<T>(items: readonly T[], opts: SplitOptions = {}): { train: T[]; valid: T[] } {
  const n = items.length;
  const fraction = opts.fraction ?? 0.1, max = opts.max ?? 1024, minExamples = opts.minExamples ?? 10;
  const k = n < minExamples ? 0 : Math.min(max, Math.max(1, Math.floor(n * fraction)));
  if (k === 0) return { train: items.slice(), valid: [] };
  const held = new Uint8Array(n);
  const perm = seededPermutation(n, mixSeed(opts.seed ?? 0, 0x76616c69)); // 'vali'
  for (let j = 0; j < k; j++) held[perm[j]!] = 1;
  const train: T[] = [], valid: T[] = [];
  for (let i = 0; i < n; i++) (held[i] ? valid : train).push(items[i]!);
  return { train, valid };
}
