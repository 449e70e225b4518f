// Batching: the HF shift, right padding, −100, T = the longest row, scored counts, the
// length-grouped order (HF LengthGroupedSampler), determinism, per-epoch reshuffles, exact
// resume through state()/restore(), and the held-out split.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebqloraError } from '../../src/errors.ts';
import { Batcher, evalBatches, exampleScored, mixSeed, seededPermutation, splitValidation, type Batch, type Example } from '../../src/data/index.ts';
import { Rng } from '../helpers/index.ts';

/** n examples of random lengths in [1, maxLen], ids 10+, some labels −100 (a prompt prefix). */
function randomExamples(n: number, maxLen: number, seed: number): Example[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const L = 2 + rng.int(maxLen - 1);
    const inputIds = Array.from({ length: L }, () => 10 + rng.int(1000));
    const prompt = rng.int(L);
    return { inputIds, labels: inputIds.map((t, i) => (i < prompt ? -100 : t)) };
  });
}

test('one batch: right padding, targets shifted by one, −100 at each row end and over padding', () => {
  const ex: Example[] = [
    { inputIds: [1, 11, 12, 13], labels: [-100, -100, 12, 13] },
    { inputIds: [1, 21], labels: [1, 21] },
    { inputIds: [1, 31, 32], labels: [-100, 31, -100] },
  ];
  const b = new Batcher(ex, { batchSize: 3, order: 'sequential', padId: 7 }).next();
  assert.is(b.B, 3);
  assert.is(b.T, 4);
  assert.equal([...b.ids], [1, 11, 12, 13, /**/ 1, 21, 7, 7, /**/ 1, 31, 32, 7]);
  assert.equal([...b.targets], [-100, 12, 13, -100, /**/ 21, -100, -100, -100, /**/ 31, -100, -100, -100]);
  assert.is(b.scored, 4);
  assert.equal(b.indices, [0, 1, 2]);
  assert.is(b.epoch, 0);
  assert.is(b.scored, ex.reduce((s, e) => s + exampleScored(e), 0));
});

test('sequential order: file order, smaller last batch, then the next epoch; dropLast', () => {
  const ex = randomExamples(7, 10, 1);
  const b = new Batcher(ex, { batchSize: 3, order: 'sequential' });
  assert.is(b.batchesPerEpoch, 3);
  assert.equal([b.next(), b.next(), b.next()].map((x) => x.indices), [[0, 1, 2], [3, 4, 5], [6]]);
  const n = b.next();
  assert.equal([n.indices, n.epoch], [[0, 1, 2], 1]);
  const d = new Batcher(ex, { batchSize: 3, order: 'sequential', dropLast: true });
  assert.is(d.batchesPerEpoch, 2);
  assert.equal([d.next(), d.next(), d.next()].map((x) => x.indices), [[0, 1, 2], [3, 4, 5], [0, 1, 2]]);
  assert.equal([...evalBatches(ex, { batchSize: 4 })].map((x) => x.indices), [[0, 1, 2, 3], [4, 5, 6]]);
});

/** HF get_length_grouped_indices, written from its description, on a given permutation. */
function groupedReference(perm: number[], lengths: number[], G: number): number[] {
  const n = perm.length;
  const mult = Math.max(1, Math.min(Math.floor(n / (G * 4)), 50));
  const megas: number[][] = [];
  for (let i = 0; i < n; i += mult * G) megas.push(perm.slice(i, i + mult * G).sort((a, b) => lengths[b]! - lengths[a]!));
  let best = 0;
  megas.forEach((m, i) => { if (lengths[m[0]!]! > lengths[megas[best]![0]!]!) best = i; });
  [megas[0]![0], megas[best]![0]] = [megas[best]![0]!, megas[0]![0]!];
  return megas.flat();
}

test('grouped order is HF LengthGroupedSampler on the seeded permutation, group = batch × accumulation', () => {
  for (const [n, B, A] of [[1000, 2, 4], [37, 4, 1], [5, 8, 1], [4000, 1, 16]] as const) {
    const ex = randomExamples(n, 64, n);
    const lengths = ex.map((e) => e.inputIds.length);
    const b = new Batcher(ex, { batchSize: B, gradAccum: A, seed: 42 });
    for (const epoch of [0, 1, 5]) {
      const order = b.epochOrder(epoch);
      assert.equal(order, groupedReference(seededPermutation(n, mixSeed(42, epoch)), lengths, B * A), `n=${n} epoch ${epoch}`);
      assert.equal([...order].sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i), 'a permutation');
      assert.is(lengths[order[0]!], Math.max(...lengths), 'longest first');
    }
  }
  // Within each mega-batch (50·B·A here) lengths descend, except for the swapped first element.
  const ex = randomExamples(2000, 64, 3);
  const order = new Batcher(ex, { batchSize: 2, gradAccum: 2, seed: 1 }).epochOrder(0);
  const L = order.map((i) => ex[i]!.inputIds.length);
  // (the pair (s, s+1) is skipped: the swap may have moved a shorter element to a mega-batch start)
  for (let s = 0; s < 2000; s += 200) for (let i = s + 2; i < s + 200; i++) assert.ok(L[i - 1]! >= L[i]!, `descending at ${i}`);
});

test('deterministic for a seed; another seed or epoch reshuffles; shuffled is a plain permutation', () => {
  const ex = randomExamples(300, 40, 9);
  const seq = (o: ConstructorParameters<typeof Batcher>[1], k: number) => {
    const b = new Batcher(ex, o);
    return Array.from({ length: k }, () => b.next().indices);
  };
  assert.equal(seq({ batchSize: 4, seed: 5 }, 200), seq({ batchSize: 4, seed: 5 }, 200));
  assert.not.equal(seq({ batchSize: 4, seed: 5 }, 20), seq({ batchSize: 4, seed: 6 }, 20));
  const b = new Batcher(ex, { batchSize: 4, order: 'shuffled', seed: 5 });
  assert.equal(b.epochOrder(0), seededPermutation(300, mixSeed(5, 0)));
  assert.not.equal(b.epochOrder(0), b.epochOrder(1));
  assert.not.equal(b.epochOrder(0), Array.from({ length: 300 }, (_, i) => i));
});

test('state/restore through JSON continues identically, mid-epoch and across epochs', () => {
  const ex = randomExamples(50, 30, 11);
  const batchKey = (x: Batch) => [x.epoch, x.indices, [...x.ids], [...x.targets], x.B, x.T, x.scored];
  for (const order of ['grouped', 'shuffled', 'sequential'] as const) {
    const straight = new Batcher(ex, { batchSize: 3, gradAccum: 2, seed: 3, order });
    const want = Array.from({ length: 60 }, () => batchKey(straight.next()));
    for (const cut of [0, 7, 17, 34, 41]) {
      const a = new Batcher(ex, { batchSize: 3, gradAccum: 2, seed: 3, order });
      for (let i = 0; i < cut; i++) a.next();
      const saved = JSON.parse(JSON.stringify(a.state()));
      const b = new Batcher(ex, { batchSize: 3, gradAccum: 2, seed: 3, order });
      b.restore(saved);
      assert.is(b.consumed, cut);
      for (let i = cut; i < 60; i++) assert.equal(batchKey(b.next()), want[i], `${order} cut ${cut} batch ${i}`);
    }
  }
});

test('restore refuses other data or flags', () => {
  const ex = randomExamples(50, 30, 11);
  const s = new Batcher(ex, { batchSize: 3, seed: 3 }).state();
  const fails = (b: Batcher, state: unknown) => {
    try { b.restore(state); } catch (e) { assert.instance(e, WebqloraError); return (e as Error).message; }
    return 'no error';
  };
  assert.is(fails(new Batcher(ex.slice(1), { batchSize: 3, seed: 3 }), s),
    'the saved data position (50 examples, batch 3×1, grouped, seed 3) does not match this run (49 examples, batch 3×1, grouped, seed 3); resume with the same data and flags.');
  assert.match(fails(new Batcher(ex, { batchSize: 3, seed: 4 }), s), /does not match this run/);
  assert.is(fails(new Batcher(ex, { batchSize: 3, seed: 3 }), { ...s, batch: 17 }), 'the saved data position (epoch 0, batch 17) is out of range.');
  assert.is(fails(new Batcher(ex, { batchSize: 3, seed: 3 }), null), 'the saved data position is not a batcher state (expected {"epoch", "batch", ...}).');
});

test('T is the longest row of the batch; grouped batches pad less than shuffled ones', () => {
  const ex = randomExamples(800, 200, 21);
  const padding = (order: 'grouped' | 'shuffled') => {
    const b = new Batcher(ex, { batchSize: 8, order, seed: 0 });
    let pad = 0;
    for (let i = 0; i < b.batchesPerEpoch; i++) {
      const x = b.next();
      assert.is(x.T, Math.max(...x.indices.map((j) => ex[j]!.inputIds.length)));
      pad += x.B * x.T - x.indices.reduce((s, j) => s + ex[j]!.inputIds.length, 0);
    }
    return pad;
  };
  assert.ok(padding('grouped') * 5 < padding('shuffled'));
});

test('bad options are user errors', () => {
  const ex = randomExamples(3, 5, 1);
  const msg = (fn: () => unknown) => { try { fn(); } catch (e) { return (e as Error).message; } return 'no error'; };
  assert.is(msg(() => new Batcher([], { batchSize: 1 })), 'there are no examples to batch.');
  assert.is(msg(() => new Batcher(ex, { batchSize: 0 })), 'batch size must be a positive integer, got 0.');
  assert.is(msg(() => new Batcher(ex, { batchSize: 4, dropLast: true })), '3 examples cannot fill one batch of 4 (lower the batch size).');
});

test('validation split: 10% capped at 1024, at least 1, none under 10 examples; seeded, disjoint, order kept', () => {
  const items = (n: number) => Array.from({ length: n }, (_, i) => i);
  assert.is(splitValidation(items(9)).valid.length, 0);
  assert.is(splitValidation(items(10)).valid.length, 1);
  assert.is(splitValidation(items(19)).valid.length, 1);
  assert.is(splitValidation(items(100)).valid.length, 10);
  assert.is(splitValidation(items(50000)).valid.length, 1024);
  const a = splitValidation(items(500), { seed: 7 });
  assert.equal(a, splitValidation(items(500), { seed: 7 }));
  assert.not.equal(a.valid, splitValidation(items(500), { seed: 8 }).valid);
  assert.equal([...a.train, ...a.valid].sort((x, y) => x - y), items(500));
  assert.equal(a.train, [...a.train].sort((x, y) => x - y));
  assert.equal(a.valid, [...a.valid].sort((x, y) => x - y));
});

test.run();
