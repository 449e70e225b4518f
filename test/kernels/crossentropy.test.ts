// crossEntropy (losses, and the in-place logits gradient when gradScale is given; −100 ignored).
// (a) reference against logsumexp in float64, (b) the gradient by float64 finite differences
// of gradScale·Σ losses, (c) parity with large logit offsets (max-subtraction must be there).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertClose } from '../helpers/index.ts';
import { fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

function targets(rng: Rng, R: number, V: number, ignoreEvery = 4): Int32Array {
  const t = new Int32Array(R);
  for (let r = 0; r < R; r++) t[r] = r % ignoreEvery === ignoreEvery - 1 ? -100 : rng.int(V);
  return t;
}

test('crossEntropy reference (f32) == logsumexp − logit in float64; gradient (softmax − onehot)·scale', async () => {
  const rng = new Rng(801);
  for (const [R, V] of [[5, 7], [9, 130]] as const) {
    const logits = randn(rng, R * V, 3, 40), tg = targets(rng, R, V), gs = 1 / 7;
    const got = await runCase(refF32, { what: 'ce', inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, gs) });
    const wantL = new Float64Array(R), wantG = new Float64Array(R * V);
    for (let r = 0; r < R; r++) {
      if (tg[r] === -100) continue; // loss 0, gradient row 0
      const row = Array.from(logits.subarray(r * V, (r + 1) * V));
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((a, x) => a + Math.exp(x - mx), 0));
      wantL[r] = lse - row[tg[r]!]!;
      for (let j = 0; j < V; j++) wantG[r * V + j] = (Math.exp(row[j]! - lse) - (j === tg[r] ? 1 : 0)) * gs;
    }
    // lse ≈ 45 is rounded to f32 (≈ 4e-6) before the logit is subtracted
    assertClose(got.losses!, wantL, { atol: 1e-5, rtol: 1e-6, what: `losses R${R} V${V}` });
    assertClose(got.logits!, wantG, { atol: 1e-7, rtol: 1e-5, what: `gradient R${R} V${V}` });
  }
});

test('crossEntropy without gradScale leaves the logits alone', async () => {
  const rng = new Rng(802);
  const R = 4, V = 9, logits = randn(rng, R * V), tg = targets(rng, R, V);
  const got = await runCase(refF32, { what: 'ce', inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V) });
  assertClose(got.logits!, logits, { what: 'logits untouched' });
  assert.ok(got.losses!.every((l, r) => (tg[r] === -100 ? l === 0 : l > 0)));
});

test('crossEntropy gradient == d(gradScale·Σ losses)/d logits (float64 finite differences)', () => {
  const rng = new Rng(803);
  const R = 5, V = 11, gs = 0.37;
  const host = randn(rng, R * V, 2);
  const x = put64(host, 'logits'), g = put64(host, 'grad'), losses = refF64.alloc('f32', R, 'losses');
  const tg = put(refF64, targets(rng, R, V, 3), 'targets');
  refF64.crossEntropy(losses, g, tg, R, V, gs);
  const loss = () => {
    refF64.crossEntropy(losses, x, tg, R, V);
    let s = 0;
    for (const l of refF64.peekF(losses)) s += gs * l;
    return s;
  };
  fdCheck({ x, loss, analytic: refF64.peekF(g), what: 'crossEntropy gradient' });
  freeAll(refF64, x, g, losses, tg);
});

test('crossEntropy parity', async () => {
  const rng = new Rng(804);
  const cases: Case[] = [];
  for (const [R, V, heavy] of [[1, 7, false], [5, 33, false], [17, 130, false], [6, 1000, false], [33, 4099, true]] as const) {
    const logits = randn(rng, R * V, 3, 50), tg = targets(rng, R, V);
    const gs = 1 / Math.max(1, tg.filter((t) => t !== -100).length);
    cases.push(
      { what: `crossEntropy R${R} V${V}`, heavy, inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, gs) },
      { what: `crossEntropy loss only R${R} V${V}`, heavy, inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V) },
    );
  }
  await parity(cases, {
    // lse ≈ 55 carries f32 rounding (~4e-6) plus a V-term positive sum in another order
    losses: { atol: 1.5e-5, rtol: 1e-5, why: 'f32 exp-sum in another order, lse ≈ 55 rounded' },
    // p ∈ [0, 1] to ~1e-6 relative (exp to a few ulp; lse error moves every p by the same factor)
    logits: { atol: 1e-7, rtol: 2e-5, why: 'softmax from an f32 lse, then ·gradScale' },
  });
});

test.run();
