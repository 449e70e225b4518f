// crossEntropy (losses, and the in-place logits gradient when gradScale is given; −100 ignored).
// (a) reference against logsumexp in float64, (b) the gradient by float64 finite differences
// of gradScale·Σ losses, (c) parity with large logit offsets (max-subtraction must be there).
// The same three for the fused final-logit soft-cap (softcap > 0: y = cap·tanh(z / cap), gradient
// w.r.t. the raw z) with z up to ±100 at cap 30, plus: softcap 0 is bit for bit the call without
// one, and a negative or non-finite softcap is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual, assertClose } from '../helpers/index.ts';
import { fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, targets as backendsUnderTest, type Case } from './harness.ts';

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

// ---- soft-capped logits (Gemma 2) -------------------------------------------------------

/** Raw logits z: N(0, scale) plus, every 7th, ±(40 .. 100) — far into tanh's saturation at cap 30. */
function rawLogits(rng: Rng, n: number, scale: number): Float32Array {
  const z = randn(rng, n, scale);
  for (let i = 0; i < n; i += 7) z[i] = Math.fround((i % 2 ? 1 : -1) * (40 + 60 * rng.next()));
  z[0] = 100;
  if (n > 1) z[1] = -100;
  return z;
}

test('crossEntropy softcap reference (f32) == float64 formula on y = cap·tanh(z/cap); gradient ·(1 − (y/cap)²)', async () => {
  const rng = new Rng(811);
  const cap = 30;
  for (const [R, V] of [[5, 7], [9, 130]] as const) {
    const logits = rawLogits(rng, R * V, 20), tg = targets(rng, R, V), gs = 1 / 7;
    const got = await runCase(refF32, { what: 'ce softcap', inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, gs, cap) });
    const wantL = new Float64Array(R), wantG = new Float64Array(R * V);
    for (let r = 0; r < R; r++) {
      if (tg[r] === -100) continue; // loss 0, gradient row 0
      const y = Array.from(logits.subarray(r * V, (r + 1) * V), (z) => cap * Math.tanh(z / cap));
      const mx = Math.max(...y);
      const lse = mx + Math.log(y.reduce((a, x) => a + Math.exp(x - mx), 0));
      wantL[r] = lse - y[tg[r]!]!;
      for (let j = 0; j < V; j++) wantG[r * V + j] = (Math.exp(y[j]! - lse) - (j === tg[r] ? 1 : 0)) * gs * (1 - (y[j]! / cap) ** 2);
    }
    // y ≤ 30 is rounded to f32 (≈ 2e-6) before the exp-sum; lse and y_t each carry it
    assertClose(got.losses!, wantL, { atol: 1e-5, rtol: 1e-6, what: `softcap losses R${R} V${V}` });
    // 1 − (y/cap)² cancels where y → ±cap (z = ±100: 0.005 from an f32 q² ≈ 0.995): relative
    // error up to ~3e-5 there, on a gradient that is itself below p·gradScale·0.005
    assertClose(got.logits!, wantG, { atol: 1e-7, rtol: 1e-5, what: `softcap gradient R${R} V${V}` });
  }
});

test('crossEntropy softcap without gradScale leaves the raw logits alone', async () => {
  const rng = new Rng(812);
  const R = 4, V = 9, logits = rawLogits(rng, R * V, 20), tg = targets(rng, R, V);
  const got = await runCase(refF32, { what: 'ce softcap', inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, undefined, 30) });
  assertBitsEqual(got.logits!, logits, 'raw logits untouched');
  assert.ok(got.losses!.every((l, r) => (tg[r] === -100 ? l === 0 : l > 0)));
});

test('crossEntropy softcap gradient == d(gradScale·Σ losses)/dz (float64 finite differences)', () => {
  const rng = new Rng(813);
  const R = 5, V = 11, gs = 0.37, cap = 30;
  // raw z spread over the whole tanh (N(0, 30), tails to ±100), so 1 − (y/cap)² spans (0, 1]
  const host = rawLogits(rng, R * V, 30);
  const x = put64(host, 'logits'), g = put64(host, 'grad'), losses = refF64.alloc('f32', R, 'losses');
  const tg = put(refF64, targets(rng, R, V, 3), 'targets');
  refF64.crossEntropy(losses, g, tg, R, V, gs, cap);
  const loss = () => {
    refF64.crossEntropy(losses, x, tg, R, V, undefined, cap);
    let s = 0;
    for (const l of refF64.peekF(losses)) s += gs * l;
    return s;
  };
  fdCheck({ x, loss, analytic: refF64.peekF(g), what: 'crossEntropy softcap gradient' });
  freeAll(refF64, x, g, losses, tg);
});

test('crossEntropy softcap parity', async () => {
  const rng = new Rng(814);
  const withGrad: Case[] = [], lossOnly: Case[] = [];
  for (const [R, V, cap, heavy] of [[1, 7, 30, false], [5, 33, 30, false], [17, 130, 30, false], [6, 1000, 50, false], [4, 515, 5, false], [33, 4099, 30, true]] as const) {
    const logits = rawLogits(rng, R * V, 20), tg = targets(rng, R, V);
    const gs = 1 / Math.max(1, tg.filter((t) => t !== -100).length);
    withGrad.push({ what: `crossEntropy softcap ${cap} R${R} V${V}`, heavy, inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, gs, cap) });
    lossOnly.push({ what: `crossEntropy softcap ${cap} loss only R${R} V${V}`, heavy, inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, undefined, cap) });
  }
  // |y| ≤ cap ≤ 50: lse ≤ 50 + log V carries f32 rounding (≤ 4e-6) plus a V-term sum in another
  // order, and y_t a kernel's tanh to a few ulp (≤ 2e-6 at 50)
  const losses = { atol: 6e-6, rtol: 1e-6, why: 'f32 exp-sum in another order, lse ≤ 60 rounded, tanh to a few ulp' };
  await parity(withGrad, {
    losses,
    // p ∈ [0, 1] to ~1e-6 relative, times 1 − (y/cap)², which loses relative accuracy near
    // saturation (a few ulp of y/cap ≈ 0.997 on 1 − q² ≈ 0.005: ~1e-4 relative) — there the
    // gradient is below p·gradScale·0.005, inside atol
    logits: { atol: 1e-7, rtol: 2e-5, why: 'softmax from an f32 lse, ·gradScale, ·(1 − q²) cancelling near ±cap' },
  });
  // without gradScale the raw logits must come back untouched, bit for bit
  await parity(lossOnly, { losses, logits: { atol: 0, rtol: 0, why: 'not written' } });
});

test('crossEntropy softcap 0 is the call without a soft-cap, bit for bit; a negative or non-finite softcap is refused', async () => {
  const rng = new Rng(815);
  const R = 6, V = 130;
  const logits = randn(rng, R * V, 3, 50), tg = targets(rng, R, V);
  for (const { name, backend } of [{ name: 'reference', backend: refF32 }, ...(await backendsUnderTest())]) {
    for (const gs of [undefined, 1 / 5]) {
      const run = (cap?: number) => runCase(backend, { what: 'ce', inputs: { tg }, outputs: { losses: R, logits }, run: (be, t) => be.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, gs, cap) });
      const [a, b] = [await run(), await run(0)];
      assertBitsEqual(b.losses!, a.losses!, `${name} gradScale ${gs}: losses with softcap 0`);
      assertBitsEqual(b.logits!, a.logits!, `${name} gradScale ${gs}: logits with softcap 0`);
    }
    const l = put(backend, new Float32Array(R * V), 'logits'), ls = put(backend, new Float32Array(R), 'losses'), t = put(backend, tg, 'targets');
    for (const cap of [-30, NaN, Infinity]) assert.throws(() => backend.crossEntropy(ls, l, t, R, V, 1, cap), /softcap must be 0 \(none\) or a positive finite number/, `${name}: softcap ${cap}`);
    for (const x of [l, ls, t]) backend.free(x);
  }
});

test.run();
