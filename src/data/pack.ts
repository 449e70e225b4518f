// Sample packing (`webqlora train --packing`): short examples share a row of seqLen tokens instead
// of each being padded to the longest of its batch.
//
//   rows     packRows: first-fit decreasing — examples by length, longest first (ties in a seeded
//            order), each into the first row with room — done once per run, as TRL's pack_dataset
//            packs once; the batcher shuffles the rows every epoch. An example longer than seqLen
//            is cut to its first seqLen tokens, as example.ts cuts every format (a no-op for data
//            loaded with maxLen = seqLen).
//   a row    examples back to back, then padding to T (the longest row of the micro-batch):
//     ids       each example's input ids; padding = padId
//     targets   each example's own HF shift (labels[t + 1]), −100 at its last token (never the
//               next example's first token) and over the padding
//     docStart  the in-row index of each token's example start; the padding tail is a segment of
//               its own. The model restarts RoPE positions there and attention never crosses
//               it (Backend AttentionShape.docStart), so every example computes exactly what it
//               computes alone; the loss stays the mean over the scored tokens of the step.
import { IGNORE_INDEX } from './format.ts';
import type { Example } from './example.ts';
import { mixSeed, seededPermutation } from './shuffle.ts';

/** Salt of the packing's tie order (the epochs' orders use mixSeed(seed, epoch)). */
const PACK_SALT = 0x7061636b; // 'pack'

/**
 * First-fit decreasing: the examples (by index, lengths capped at seqLen) in rows of at most
 * seqLen tokens, each row listing its examples in the order placed. Deterministic for a seed;
 * every example is in exactly one row. A segment tree over the rows' free space finds the first
 * row with room in O(log n), unopened rows counting as empty.
 */
export function packRows(lengths: ArrayLike<number>, seqLen: number, seed: number): number[][] {
  const n = lengths.length;
  const len = (i: number) => Math.min(lengths[i]!, seqLen);
  const order = seededPermutation(n, mixSeed(seed, PACK_SALT)).sort((a, b) => len(b) - len(a)); // stable: ties keep the seeded order
  let size = 1;
  while (size < n) size *= 2;
  const free = new Int32Array(2 * size).fill(seqLen); // free[node] = max free space below it
  const rows: number[][] = [];
  for (const i of order) {
    const L = len(i);
    let node = 1;
    while (node < size) node = free[2 * node]! >= L ? 2 * node : 2 * node + 1;
    const r = node - size;
    (rows[r] ??= []).push(i);
    free[node] = free[node]! - L;
    for (node >>= 1; node >= 1; node >>= 1) free[node] = Math.max(free[2 * node]!, free[2 * node + 1]!);
  }
  return rows;
}

/** A packed micro-batch: rows [B, T] as Batch (batch.ts) has them, plus docStart. */
export interface PackedArrays {
  ids: Int32Array;
  targets: Int32Array;
  /** i32 [B·T]: in-row index of each position's example start (the padding tail: its own). */
  docStart: Int32Array;
  /** targets ≠ −100 */
  scored: number;
}

/**
 * Writes the rows (lists of example indices, as packRows made them for seqLen) into [B, T]
 * arrays; T ≥ every row's length.
 */
export function assemblePacked(examples: readonly Example[], rows: readonly (readonly number[])[], T: number, seqLen: number, padId: number): PackedArrays {
  const B = rows.length;
  const ids = new Int32Array(B * T).fill(padId);
  const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
  const docStart = new Int32Array(B * T);
  let scored = 0;
  for (let b = 0; b < B; b++) {
    let o = 0;
    for (const i of rows[b]!) {
      const ex = examples[i]!, L = Math.min(ex.inputIds.length, seqLen);
      if (o + L > T) throw new Error(`assemblePacked: row ${b} needs more than T = ${T} positions`);
      for (let t = 0; t < L; t++) {
        const r = b * T + o + t;
        ids[r] = ex.inputIds[t]!;
        docStart[r] = o;
        if (t + 1 < L) {
          targets[r] = ex.labels[t + 1]!;
          if (targets[r] !== IGNORE_INDEX) scored++;
        }
      }
      o += L;
    }
    docStart.fill(o, b * T + o, (b + 1) * T);
  }
  return { ids, targets, docStart, scored };
}

/** docStart [B·T] of rows whose segments have the given lengths (each row's sum ≤ T; the rest is one more segment). */
export function docStartOf(segments: readonly (readonly number[])[], T: number): Int32Array {
  const ds = new Int32Array(segments.length * T);
  segments.forEach((lens, b) => {
    let o = 0;
    for (const L of lens) {
      ds.fill(o, b * T + o, b * T + o + L);
      o += L;
    }
    if (o > T) throw new Error(`docStartOf: row ${b} holds ${o} positions, more than T = ${T}`);
    ds.fill(o, b * T + o, (b + 1) * T);
  });
  return ds;
}
