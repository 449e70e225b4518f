// Sample packing (data/pack.ts through the Batcher's `packing` option): first-fit decreasing
// rows (every example in exactly one row, never split unless longer than the row, then cut to
// its first seqLen tokens), each example's own HF shift with −100 at its end, docStart segments
// (the padding tail its own), determinism for a seed, per-epoch row order, and exact resume
// through state()/restore().
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Batcher, docStartOf, exampleScored, packRows, type Batch, type Example } from '../../src/data/index.ts';
import { Rng } from '../helpers/index.ts';

/** n examples of lengths in [1, maxLen], ids 10+ unique per example start, a prompt prefix of −100 labels. */
function randomExamples(n: number, maxLen: number, seed: number): Example[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const L = 1 + rng.int(maxLen);
    const inputIds = Array.from({ length: L }, () => 10 + rng.int(1000));
    const prompt = rng.int(L);
    return { inputIds, labels: inputIds.map((t, i) => (i < prompt ? -100 : t)) };
  });
}

/**
 * Reads a packed batch back through its docStart segments: each is the next example of
 * b.indices, whole (its first seqLen tokens) with its own shift, or the row's padding tail.
 */
function checkPackedBatch(b: Batch, ex: readonly Example[], seqLen: number, padId: number): void {
  const ds = b.docStart!;
  assert.ok(ds && ds.length === b.B * b.T, 'docStart [B·T]');
  let k = 0; // the next example of b.indices
  for (let r = 0; r < b.B; r++) {
    for (let start = 0, t = 0; start < b.T; start = t) {
      while (t < b.T && ds[r * b.T + t] === start) t++;
      const at = (a: Int32Array, i: number) => a[r * b.T + start + i]!;
      const e = k < b.indices.length ? ex[b.indices[k]!]! : null, n = e ? Math.min(e.inputIds.length, seqLen) : 0;
      if (e && t - start === n && e.inputIds.slice(0, n).every((id, i) => at(b.ids, i) === id)) {
        for (let i = 0; i < n; i++) assert.is(at(b.targets, i), i + 1 < n ? e.labels[i + 1] : -100, `row ${r} pos ${start + i}: the example's own shift, −100 at its end`);
        k++;
        continue;
      }
      assert.is(t, b.T, `row ${r}: segment [${start}, ${t}) is neither the next example (whole) nor the tail`);
      for (let i = 0; i < t - start; i++) assert.ok(at(b.ids, i) === padId && at(b.targets, i) === -100, 'the tail is unscored padding');
    }
  }
  assert.is(k, b.indices.length, 'every example of the batch is one whole segment');
}

test('packRows: first-fit decreasing, every example in exactly one row, rows ≤ seqLen', () => {
  assert.equal(packRows([5, 3, 1, 7, 2, 4, 6], 12, 0), [[3, 0], [6, 5, 4], [1, 2]]);
  // equal lengths: the seed decides the order
  const ties = [0, 1, 2, 3, 4].map((seed) => packRows([4, 4, 4, 4], 4, seed).flat().join(''));
  assert.ok(ties.every((o) => [...o].sort().join('') === '0123') && new Set(ties).size > 1, `tie orders ${ties}`);
  const rng = new Rng(3);
  for (const [n, maxLen, seqLen] of [[1, 5, 5], [50, 30, 32], [400, 200, 256], [100, 600, 512]]) {
    const lengths = Array.from({ length: n }, () => 1 + rng.int(maxLen));
    const rows = packRows(lengths, seqLen, 7);
    const seen = rows.flat().sort((a, b) => a - b);
    assert.equal(seen, Array.from({ length: n }, (_, i) => i), 'each example once');
    for (const r of rows) assert.ok(r.reduce((s, i) => s + Math.min(lengths[i]!, seqLen), 0) <= seqLen, 'a row fits');
    // first fit: no example could have gone into an earlier row (its free space when it was placed ≥ what is free at the end)
    const free = rows.map((r) => seqLen - r.reduce((s, i) => s + Math.min(lengths[i]!, seqLen), 0));
    rows.forEach((r, ri) => { for (const i of r) for (let e = 0; e < ri; e++) assert.ok(free[e]! < Math.min(lengths[i]!, seqLen), `example ${i} would fit row ${e}`); });
    assert.equal(packRows(lengths, seqLen, 7), rows, 'deterministic for a seed');
  }
});

test('packed batches: whole examples back to back, own shifts, −100 at each end and over the tail; docStart segments', () => {
  const ex: Example[] = [
    { inputIds: [1, 11, 12, 13], labels: [-100, -100, 12, 13] },
    { inputIds: [1, 21], labels: [1, 21] },
    { inputIds: [1, 31, 32], labels: [-100, 31, 32] },
  ];
  const b = new Batcher(ex, { batchSize: 2, order: 'sequential', packing: 6, padId: 7 }).next();
  // rows: [example 0 (4), example 1 (2)], [example 2 (3)]; T = 6
  assert.equal([b.B, b.T, b.indices], [2, 6, [0, 1, 2]]);
  assert.equal([...b.ids], [1, 11, 12, 13, 1, 21, /**/ 1, 31, 32, 7, 7, 7]);
  assert.equal([...b.targets], [-100, 12, 13, -100, 21, -100, /**/ 31, 32, -100, -100, -100, -100]);
  assert.equal([...b.docStart!], [0, 0, 0, 0, 4, 4, /**/ 0, 0, 0, 3, 3, 3]);
  assert.equal([...b.docStart!], [...docStartOf([[4, 2], [3]], 6)]);
  assert.is(b.scored, ex.reduce((s, e) => s + exampleScored(e), 0));
  // unpacked batches carry no docStart
  assert.is(new Batcher(ex, { batchSize: 2 }).next().docStart, undefined);
});

test('packed batches over an epoch: every example once and whole; longer examples cut to seqLen; the scored count', () => {
  const seqLen = 24;
  const ex = [...randomExamples(60, 20, 5), { inputIds: Array.from({ length: 30 }, (_, i) => 500 + i), labels: Array.from({ length: 30 }, (_, i) => 500 + i) }];
  for (const order of ['grouped', 'shuffled', 'sequential'] as const) {
    const bt = new Batcher(ex, { batchSize: 3, gradAccum: 2, order, seed: 4, packing: seqLen, padId: 0 });
    const got: number[] = [];
    for (let i = 0; i < bt.batchesPerEpoch; i++) {
      const b = bt.next();
      assert.ok(b.T <= seqLen && b.epoch === 0);
      checkPackedBatch(b, ex, seqLen, 0);
      let scored = 0;
      for (const t of b.targets) if (t !== -100) scored++;
      assert.is(b.scored, scored);
      got.push(...b.indices);
    }
    assert.equal(got.sort((a, b) => a - b), ex.map((_, i) => i), `${order}: each example once per epoch`);
    assert.is(bt.next().epoch, 1);
  }
  // the cut keeps the first seqLen tokens (as example.ts's maxLen cut): the 30-token example alone in a full row
  const bt = new Batcher(ex, { batchSize: 1, order: 'sequential', packing: seqLen });
  let hits = 0;
  for (let i = 0; i < bt.batchesPerEpoch; i++) {
    const b = bt.next();
    if (!b.indices.includes(60)) continue;
    hits++;
    assert.equal([b.indices, b.T, [...b.ids]], [[60], seqLen, Array.from({ length: seqLen }, (_, i) => 500 + i)]);
    assert.is(b.targets[seqLen - 1], -100);
  }
  assert.is(hits, 1, 'the long example is in exactly one row');
});

test('packing is deterministic for a seed, reshuffles rows per epoch, and resumes exactly from state()', () => {
  const ex = randomExamples(80, 30, 9);
  const opts = { batchSize: 4, gradAccum: 2, seed: 11, packing: 32 } as const;
  const seq = (b: Batcher, n: number) => Array.from({ length: n }, () => b.next());
  const a = new Batcher(ex, opts), c = new Batcher(ex, opts);
  const n = 3 * a.batchesPerEpoch + 2;
  const sa = seq(a, n), sc = seq(c, n);
  assert.equal(sa.map((b) => [...b.ids]), sc.map((b) => [...b.ids]), 'same seed, same batches');
  assert.equal(sa.map((b) => [...b.docStart!]), sc.map((b) => [...b.docStart!]));
  const e0 = sa.slice(0, a.batchesPerEpoch).map((b) => b.indices), e1 = sa.slice(a.batchesPerEpoch, 2 * a.batchesPerEpoch).map((b) => b.indices);
  assert.not.equal(e0, e1, 'the next epoch orders the rows differently');
  assert.not.equal(new Batcher(ex, { ...opts, seed: 12 }).next().indices, sa[0]!.indices, 'another seed, other rows first');
  // resume at every position of the first two epochs
  for (let k = 0; k < 2 * a.batchesPerEpoch; k += 3) {
    const r = new Batcher(ex, opts);
    seq(r, k);
    const state = JSON.parse(JSON.stringify(r.state()));
    assert.is(state.packing, 32);
    const fresh = new Batcher(ex, opts);
    fresh.restore(state);
    const rest = seq(fresh, 4), cont = sa.slice(k, k + 4);
    assert.equal(rest.map((b) => [[...b.ids], [...b.targets], [...b.docStart!], b.epoch]), cont.map((b) => [[...b.ids], [...b.targets], [...b.docStart!], b.epoch]), `resume at ${k}`);
  }
  // a position saved with or without packing does not restore onto the other
  const packedState = new Batcher(ex, opts).state();
  assert.throws(() => new Batcher(ex, { ...opts, packing: 0 }).restore(packedState), /packed in rows of 32/);
  assert.throws(() => new Batcher(ex, opts).restore(new Batcher(ex, { ...opts, packing: 0 }).state()), /does not match/);
  assert.throws(() => new Batcher(ex, { ...opts, packing: 64 }).restore(packedState), /rows of 64/);
  assert.throws(() => new Batcher(ex, { ...opts, packing: -1 }), /packing row length/);
});

test.run();
