// adamwStep, sgdStep, sumSquares: (a) reference against the update rules written out in float64
// (torch.optim.AdamW order: decoupled decay first), (c) parity over several steps with
// non-zero moments. The optimizer has no backward, so there is no (b).
import { test } from 'uvu';
import { Rng, assertClose } from '../helpers/index.ts';
import type { AdamWParams } from '../../src/backend/backend.ts';
import { U32, parity, randn, refF32, runCase, type Case } from './harness.ts';

const positive = (rng: Rng, n: number, scale: number) => Float32Array.from(randn(rng, n), (x) => Math.fround(x * x * scale));

/** torch.optim.AdamW on float64 arrays, one step (QLORA_SPEC §6.3). */
function adamw64(p: Float64Array, g0: ArrayLike<number>, m: Float64Array, v: Float64Array, o: AdamWParams): void {
  for (let i = 0; i < p.length; i++) {
    const g = g0[i]! * o.gradScale;
    p[i]! *= 1 - o.lr * o.weightDecay;
    m[i] = o.beta1 * m[i]! + (1 - o.beta1) * g;
    v[i] = o.beta2 * v[i]! + (1 - o.beta2) * g * g;
    const mhat = m[i]! / (1 - o.beta1 ** o.step), vhat = v[i]! / (1 - o.beta2 ** o.step);
    p[i]! -= (o.lr * mhat) / (Math.sqrt(vhat) + o.eps);
  }
}

const params = (step: number, over: Partial<AdamWParams> = {}): AdamWParams => ({ lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step, gradScale: 0.5, ...over });

test('adamwStep reference (f32) == torch AdamW in float64 over 5 steps (bias correction, decay, gradScale)', async () => {
  const rng = new Rng(901);
  const n = 257;
  const p0 = randn(rng, n), m0 = randn(rng, n, 0.1), v0 = positive(rng, n, 0.01);
  const grads = [1, 2, 3, 4, 5].map(() => randn(rng, n));
  for (const wd of [0, 0.1]) {
    const got = await runCase(refF32, {
      what: 'adamw', inputs: Object.fromEntries(grads.map((g, i) => [`g${i}`, g])), outputs: { p: p0, m: m0, v: v0 },
      run: (be, t) => { for (let s = 1; s <= 5; s++) be.adamwStep(t.p!, t[`g${s - 1}`]!, t.m!, t.v!, n, params(s, { weightDecay: wd })); },
    });
    const p = Float64Array.from(p0), m = Float64Array.from(m0), v = Float64Array.from(v0);
    for (let s = 1; s <= 5; s++) adamw64(p, grads[s - 1]!, m, v, params(s, { weightDecay: wd }));
    // five steps of f32 rounding of p (|p| ≲ 4) and of the moments
    assertClose(got.p!, p, { atol: 1e-6, rtol: 1e-6, what: `adamw p wd ${wd}` });
    assertClose(got.m!, m, { atol: 1e-7, rtol: 1e-5, what: `adamw m wd ${wd}` });
    assertClose(got.v!, v, { atol: 1e-9, rtol: 1e-5, what: `adamw v wd ${wd}` });
  }
});

test('sgdStep and sumSquares reference (f32) == float64', async () => {
  const rng = new Rng(902);
  const n = 1001, p0 = randn(rng, n), g = randn(rng, n);
  const got = await runCase(refF32, { what: 'sgd', inputs: { g }, outputs: { p: p0 }, run: (be, t) => be.sgdStep(t.p!, t.g!, n, 0.05, 0.25) });
  assertClose(got.p!, Array.from(p0, (x, i) => x - 0.05 * g[i]! * 0.25), { atol: 1e-7, rtol: 4 * U32, what: 'sgd' });
  let ss = 0;
  for (const x of g) ss += x * x;
  const s1 = await runCase(refF32, { what: 'ss', inputs: { g }, outputs: { out: 1 }, run: (be, t) => be.sumSquares(t.out!, t.g!, n) });
  // a sequential f32 sum of n positive terms: relative error ≤ (n − 1)·U, typically ~√n·U
  assertClose(s1.out!, [ss], { rtol: n * U32, what: 'sumSquares' });
  const s2 = await runCase(refF32, { what: 'ss acc', inputs: { g }, outputs: { out: Float32Array.of(3.5) }, run: (be, t) => be.sumSquares(t.out!, t.g!, n, true) });
  assertClose(s2.out!, [ss + 3.5], { rtol: n * U32, what: 'sumSquares accumulate' });
});

test('adamwStep / sgdStep / sumSquares parity', async () => {
  const rng = new Rng(903);
  const adam: Case[] = [], sgd: Case[] = [], ss: Case[] = [];
  for (const [n, heavy] of [[1, false], [7, false], [1000, false], [4099, false], [65537, true]] as const) {
    const p = randn(rng, n), m = randn(rng, n, 0.1), v = positive(rng, n, 0.01), g = randn(rng, n), g2 = randn(rng, n);
    adam.push(
      { what: `adamwStep steps 1-3 n${n}`, heavy, inputs: { g, g2 }, outputs: { p, m, v }, run: (be, t) => { for (let s = 1; s <= 3; s++) be.adamwStep(t.p!, s === 2 ? t.g2! : t.g!, t.m!, t.v!, n, params(s)); } },
      { what: `adamwStep step 1000, wd 0 n${n}`, heavy, inputs: { g }, outputs: { p, m, v }, run: (be, t) => be.adamwStep(t.p!, t.g!, t.m!, t.v!, n, params(1000, { weightDecay: 0, gradScale: 1, lr: 2e-4 })) },
    );
    sgd.push({ what: `sgdStep n${n}`, heavy, inputs: { g }, outputs: { p }, run: (be, t) => be.sgdStep(t.p!, t.g!, n, 0.1, 0.3) });
    ss.push(
      { what: `sumSquares n${n}`, heavy, inputs: { g }, outputs: { out: 1 }, run: (be, t) => be.sumSquares(t.out!, t.g!, n) },
      { what: `sumSquares accumulate n${n}`, heavy, inputs: { g }, outputs: { out: Float32Array.of(12.25) }, run: (be, t) => be.sumSquares(t.out!, t.g!, n, true) },
    );
  }
  await parity(adam, {
    // |p| ≲ 4 rounded a few times (ulp 4.8e-7); the update itself (≤ lr) is accurate to ~1e-6
    p: { atol: 1e-7, rtol: 1e-6, why: 'a few f32 roundings of p and of an O(lr) update' },
    // β1·m + (1−β1)·g can cancel: 3 steps × 2 roundings of terms ≲ 0.6 ≈ 2e-7 worst case
    m: { atol: 1e-7, rtol: 1e-6, why: 'β1·m + (1−β1)·g, possibly fused; cancellation' },
    v: { atol: 1e-10, rtol: 1e-6, why: 'β2·v + (1−β2)·g², positive terms' },
  });
  await parity(sgd, { atol: 1e-7, rtol: 4 * U32, why: 'p − lr·g·scale, possibly fused' });
  // positive f32 sum in another order: |error| ~ √n·U relative for random order, bound 16·√n·U
  // (2e-4 at n = 65537, 3e-5 at n = 1000: dropping or doubling one term still fails)
  for (const c of ss) await parity([c], { atol: 0, rtol: 16 * Math.sqrt(Number(/n(\d+)$/.exec(c.what)![1])) * U32, why: 'positive f32 sum in another order' });
});

test.run();
