// softcap: x ← cap·tanh(x / cap) in place (Gemma 2's final logit soft-cap). (a) reference against
// the formula in float64, (b) parity with values far past the cap (±100 and ±1e4 at cap 30, where
// a naive tanh gives inf/inf = NaN), (c) a cap that is not positive and finite is refused. Its
// gradient, 1 − (y/cap)², is tested where it is used: cross_entropy.test.ts (the fused soft-cap).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../helpers/index.ts';
import { U32, parity, put, randn, refF32, runCase, targets, type Case } from './harness.ts';

/** N(0, cap) values, every 11th far out (±(cap .. 4·cap), then ±100, ±1e4), zeros of both signs. */
function values(rng: Rng, n: number, cap: number): Float32Array {
  const x = randn(rng, n, cap);
  for (let i = 0; i < n; i += 11) x[i] = Math.fround((i % 2 ? 1 : -1) * cap * (1 + 3 * rng.next()));
  const ends = [100, -100, 1e4, -1e4, 0, -0];
  for (let i = 0; i < Math.min(n, ends.length); i++) x[(i * 7) % n] = ends[i]!;
  return x;
}

test('softcap reference (f32) == cap·tanh(x / cap) in float64', async () => {
  const rng = new Rng(621);
  const n = 300;
  for (const cap of [30, 50, 0.75]) {
    const x = values(rng, n, cap);
    const got = (await runCase(refF32, { what: 'softcap', outputs: { x }, run: (be, t) => be.softcap(t.x!, n, cap) })).x!;
    for (let i = 0; i < n; i++) {
      const want = cap * Math.tanh(x[i]! / cap);
      // x / cap, tanh, ·cap each rounded once (tanh's derivative ≤ 1 passes the first on)
      const tol = 4 * U32 * Math.abs(want);
      assert.ok(Math.abs(got[i]! - want) <= tol, `softcap cap ${cap}: index ${i} (x ${x[i]}): expected ${want}, got ${got[i]}`);
    }
  }
});

test('softcap parity', async () => {
  const rng = new Rng(622);
  const cases: Case[] = [];
  for (const [n, cap, heavy] of [[1, 30, false], [7, 30, false], [1000, 30, false], [4099, 50, false], [515, 0.75, false], [65537, 30, true]] as const) {
    const x = values(rng, n, cap);
    cases.push({ what: `softcap n${n} cap ${cap}`, heavy, outputs: { x }, run: (be, t) => be.softcap(t.x!, n, cap) });
  }
  // the first 5 of 9 elements only: the rest must keep their values
  const x = values(rng, 9, 30);
  cases.push({ what: 'softcap of a prefix', outputs: { x }, run: (be, t) => be.softcap(t.x!, 5, 30) });
  // a kernel's tanh is a few ulp off the correctly rounded one (≤ 1 ulp on the saturated ±1)
  await parity(cases, { atol: 1e-30, rtol: 8 * U32, why: 'tanh to a few ulp, then one product' });
});

test('softcap refuses a cap that is not positive and finite', async () => {
  for (const { name, backend } of [{ name: 'reference', backend: refF32 }, ...(await targets())]) {
    const t = put(backend, new Float32Array(4), 'x');
    for (const cap of [0, -30, NaN, Infinity]) assert.throws(() => backend.softcap(t, 4, cap), /cap must be a positive finite number/, `${name}: cap ${cap}`);
    backend.free(t);
  }
});

test.run();
