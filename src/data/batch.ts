// Deterministic micro-batches for training and eval.
//
// A batch is B examples right-padded to T = the longest of them (≤ the sequence length):
//   ids      [B*T] i32  input tokens; padding = padId (its value never matters: targets there are
//                       −100 and attention is causal, so real positions never see padding)
//   targets  [B*T] i32  targets[b*T + t] = labels_b[t + 1] — position t predicts token t+1, the
//                       HF shift; −100 at the last real position and over the padding
// The loss is the sum of cross-entropy over targets ≠ −100 divided by the scored tokens of the
// whole accumulated batch (DESIGN.md): the trainer draws a step's micro-batches, counts their
// scored targets, then runs them.
//
// Order per epoch, from a seed derived from (seed, epoch) so every epoch reshuffles:
//   'grouped'     HF LengthGroupedSampler (qlora sets group_by_length): a seeded permutation cut
//                 into mega-batches of mult × G examples, mult = min(⌊n / 4G⌋, 50) ≥ 1, each sorted
//                 by length descending, the longest example overall swapped to the very front (an
//                 out-of-memory shows at step 1, not hours in). G = batchSize × gradAccum, as HF
//                 Trainer passes train_batch_size × gradient_accumulation_steps. Lengths are token
//                 counts (qlora's length column counts characters; tokens are what costs time).
//   'shuffled'    a seeded permutation.
//   'sequential'  file order (eval).
// The last batch of an epoch may be smaller (HF DataLoader drop_last=False) unless dropLast.
// With `packing` (pack.ts) the rows are packed rows of several examples instead of single examples:
// packed once (first-fit decreasing, seeded), then ordered per epoch as above with a row's length
// its token count, and each batch carries docStart.
// Micro-batches run across epoch boundaries without a gap; the position (epoch, batch) is all the
// state there is, so `state()`/`restore()` resume a run exactly.
import { WebqloraError } from '../errors.ts';
import { exampleScored, type Example } from './example.ts';
import { IGNORE_INDEX } from './format.ts';
import { assemblePacked, packRows } from './pack.ts';
import { mixSeed, seededPermutation } from './shuffle.ts';

export type BatchOrder = 'grouped' | 'shuffled' | 'sequential';

export interface BatcherOptions {
  /** Examples per micro-batch (B). */
  batchSize: number;
  /** Micro-batches per optimizer step; only sets the group size of 'grouped'. Default 1. */
  gradAccum?: number;
  /** Default 'grouped' (training); use 'sequential' for eval. */
  order?: BatchOrder;
  /** Default 0. */
  seed?: number;
  /** Padding id written past each example's end (see padIdFor). Default 0. */
  padId?: number;
  /** Drop the smaller last batch of each epoch. Default false. */
  dropLast?: boolean;
  /** Pack examples into rows of this many tokens (the sequence length; pack.ts). Default 0: one example per row. */
  packing?: number;
}

export interface Batch {
  /** [B*T] input ids, right-padded. */
  ids: Int32Array;
  /** [B*T] next-token targets, −100 where not scored. */
  targets: Int32Array;
  B: number;
  T: number;
  /** Targets ≠ −100 in this batch. */
  scored: number;
  /** The epoch (0-based) the batch belongs to. */
  epoch: number;
  /** Dataset indices of the B rows, in row order (packed: of every example of every row). */
  indices: number[];
  /** Packed batches only: i32 [B*T], the in-row index of each position's example start (pack.ts). */
  docStart?: Int32Array;
}

/** JSON-serialisable batcher position; the other fields guard against restoring onto other data. */
export interface BatcherState {
  epoch: number;
  /** Micro-batches of `epoch` already handed out. */
  batch: number;
  seed: number;
  order: BatchOrder;
  batchSize: number;
  gradAccum: number;
  examples: number;
  /** Row length of packed batches (absent: not packed). */
  packing?: number;
}

export class Batcher {
  readonly batchSize: number;
  readonly gradAccum: number;
  readonly order: BatchOrder;
  readonly seed: number;
  readonly padId: number;
  readonly dropLast: boolean;
  /** Row length of packed batches; 0: one example per row. */
  readonly packing: number;
  /** Micro-batches in one epoch. */
  readonly batchesPerEpoch: number;
  /** Packed: the examples of each row (packRows); else null (row i is example i). */
  readonly packedRows: number[][] | null;
  /** tokens per row (an example, or a packed row) */
  private readonly lengths: Int32Array;
  /** scored targets per example */
  private readonly scored: Int32Array;
  private ep = 0;
  private pos = 0;
  private cache = new Map<number, number[]>(); // epoch → order (the current and, after a peek, the next)

  constructor(private readonly examples: readonly Example[], opts: BatcherOptions) {
    const n = examples.length;
    this.batchSize = opts.batchSize;
    this.gradAccum = opts.gradAccum ?? 1;
    this.order = opts.order ?? 'grouped';
    this.seed = (opts.seed ?? 0) >>> 0;
    this.padId = opts.padId ?? 0;
    this.dropLast = opts.dropLast ?? false;
    this.packing = opts.packing ?? 0;
    if (!(Number.isSafeInteger(this.batchSize) && this.batchSize >= 1)) throw new WebqloraError(`batch size must be a positive integer, got ${opts.batchSize}.`);
    if (!(Number.isSafeInteger(this.packing) && this.packing >= 0)) throw new WebqloraError(`the packing row length must be an integer ≥ 0 (0: no packing), got ${opts.packing}.`);
    if (!(Number.isSafeInteger(this.gradAccum) && this.gradAccum >= 1)) throw new WebqloraError(`gradient accumulation must be a positive integer, got ${opts.gradAccum}.`);
    if (!['grouped', 'shuffled', 'sequential'].includes(this.order)) throw new WebqloraError(`unknown batch order "${this.order}".`);
    if (n === 0) throw new WebqloraError('there are no examples to batch.');
    const lengths = new Int32Array(n), scored = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const ex = examples[i]!;
      if (ex.inputIds.length !== ex.labels.length || ex.inputIds.length === 0) {
        throw new WebqloraError(`example ${i}: input ids and labels must be non-empty and of equal length.`);
      }
      lengths[i] = ex.inputIds.length;
      scored[i] = exampleScored(ex);
    }
    this.scored = scored;
    this.packedRows = this.packing ? packRows(lengths, this.packing, this.seed) : null;
    this.lengths = this.packedRows ? Int32Array.from(this.packedRows, (r) => r.reduce((s, i) => s + Math.min(lengths[i]!, this.packing), 0)) : lengths;
    const units = this.lengths.length, what = this.packedRows ? 'packed rows' : 'examples';
    this.batchesPerEpoch = this.dropLast ? Math.floor(units / this.batchSize) : Math.ceil(units / this.batchSize);
    if (this.batchesPerEpoch === 0) throw new WebqloraError(`${units} ${what} cannot fill one batch of ${this.batchSize} (lower the batch size).`);
  }

  /** The epoch the next micro-batch comes from. */
  get epoch(): number { return this.ep; }
  /** Micro-batches handed out since the start of training. */
  get consumed(): number { return this.ep * this.batchesPerEpoch + this.pos; }

  /** The next micro-batch; epochs follow each other without end. */
  next(): Batch {
    const idx = this.rows(this.ep, this.pos);
    const batch = this.assemble(idx, this.ep);
    if (++this.pos === this.batchesPerEpoch) {
      this.cache.delete(this.ep);
      this.ep++;
      this.pos = 0;
    }
    return batch;
  }



  state(): BatcherState {
    const s: BatcherState = { epoch: this.ep, batch: this.pos, seed: this.seed, order: this.order, batchSize: this.batchSize, gradAccum: this.gradAccum, examples: this.examples.length };
    if (this.packing) s.packing = this.packing;
    return s;
  }

  /** Continues exactly where `state()` was taken (a parsed checkpoint value). Throws if the data or batching differ. */
  restore(state: unknown): void {
    const s = state as BatcherState;
    if (s === null || typeof s !== 'object' || typeof s.epoch !== 'number' || typeof s.batch !== 'number') {
      throw new WebqloraError('the saved data position is not a batcher state (expected {"epoch", "batch", ...}).');
    }
    const same = s.seed === this.seed && s.order === this.order && s.batchSize === this.batchSize && s.gradAccum === this.gradAccum && s.examples === this.examples.length
      && (s.packing ?? 0) === this.packing;
    if (!same) {
      const packed = (p: number | undefined) => (p ? `, packed in rows of ${p}` : '');
      throw new WebqloraError(
        `the saved data position (${s.examples} examples, batch ${s.batchSize}×${s.gradAccum}, ${s.order}, seed ${s.seed}${packed(s.packing)}) does not match this run ` +
          `(${this.examples.length} examples, batch ${this.batchSize}×${this.gradAccum}, ${this.order}, seed ${this.seed}${packed(this.packing)}); resume with the same data and flags.`,
      );
    }
    if (!(Number.isSafeInteger(s.epoch) && s.epoch >= 0 && Number.isSafeInteger(s.batch) && s.batch >= 0 && s.batch < this.batchesPerEpoch)) {
      throw new WebqloraError(`the saved data position (epoch ${s.epoch}, batch ${s.batch}) is out of range.`);
    }
    this.ep = s.epoch;
    this.pos = s.batch;
    this.cache.clear();
  }

  /** The example order of an epoch (see the file comment). */
  epochOrder(epoch: number): number[] {
    let o = this.cache.get(epoch);
    if (o === undefined) {
      o = this.computeOrder(epoch);
      if (this.cache.size > 2) this.cache.clear();
      this.cache.set(epoch, o);
    }
    return o;
  }

  private rows(epoch: number, pos: number): number[] {
    return this.epochOrder(epoch).slice(pos * this.batchSize, (pos + 1) * this.batchSize);
  }

  private computeOrder(epoch: number): number[] {
    const n = this.lengths.length;
    if (this.order === 'sequential') return Array.from({ length: n }, (_, i) => i);
    const perm = seededPermutation(n, mixSeed(this.seed, epoch));
    if (this.order === 'shuffled') return perm;
    const G = this.batchSize * this.gradAccum;
    const mult = Math.max(1, Math.min(Math.floor(n / (G * 4)), 50));
    const mega = mult * G;
    const L = this.lengths;
    const out: number[] = [];
    let longestAt = 0;
    for (let s = 0; s < n; s += mega) {
      // Array.prototype.sort is stable, as Python's sorted: equal lengths keep permutation order.
      const group = perm.slice(s, s + mega).sort((a, b) => L[b]! - L[a]!);
      if (L[group[0]!]! > L[out[longestAt] ?? group[0]!]!) longestAt = out.length;
      for (const i of group) out.push(i);
    }
    // Swap the first element of the mega-batch holding the longest example (the first, on ties)
    // with the very first element.
    const t = out[0]!; out[0] = out[longestAt]!; out[longestAt] = t;
    return out;
  }

  private assemble(idx: number[], epoch: number): Batch {
    const B = idx.length;
    let T = 0;
    for (const i of idx) T = Math.max(T, this.lengths[i]!);
    if (this.packedRows) {
      const rows = idx.map((i) => this.packedRows![i]!);
      const { ids, targets, docStart, scored } = assemblePacked(this.examples, rows, T, this.packing, this.padId);
      return { ids, targets, B, T, scored, epoch, indices: rows.flat(), docStart };
    }
    const ids = new Int32Array(B * T).fill(this.padId);
    const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
    let scored = 0;
    for (let b = 0; b < B; b++) {
      const ex = this.examples[idx[b]!]!;
      const Lb = ex.inputIds.length;
      for (let t = 0; t < Lb; t++) ids[b * T + t] = ex.inputIds[t]!;
      for (let t = 0; t + 1 < Lb; t++) targets[b * T + t] = ex.labels[t + 1]!;
      scored += this.scored[idx[b]!]!;
    }
    return { ids, targets, B, T, scored, epoch, indices: idx };
  }
}

/**
 * One pass over the examples in file order, B at a time (the last batch may be smaller): the
 * batches of an evaluation.
 */
export function* evalBatches(examples: readonly Example[], opts: { batchSize: number; padId?: number }): Generator<Batch> {
  const b = new Batcher(examples, { batchSize: opts.batchSize, order: 'sequential', padId: opts.padId ?? 0 });
  for (let i = 0; i < b.batchesPerEpoch; i++) yield b.next();
}
