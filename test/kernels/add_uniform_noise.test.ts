// addUniformNoise: x[i] += f32(u_i·scale), u_i = (hash32(seed, i) >>> 8)·2⁻²³ − 1 in [−1, 1)
// (NEFTune's embedding noise). (a) reference against the definition and its statistics (uniform:
// mean 0, variance 1/3, bounded by scale); (b) parity: exact (one exact u, one product, one sum,
// each correctly rounded), also for a prefix and past the 16-element grain of the thread split;
// (c) a bad scale is refused. No backward: the noise is added to frozen embeddings, it passes the
// gradient through unchanged and has no parameters.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../helpers/index.ts';
import { hash32 } from '../../src/backend/rng.ts';
import { parity, put, randn, refF32, runCase, targets, type Case } from './harness.ts';

test('addUniformNoise reference: the hash32 stream, uniform in [−scale, scale)', async () => {
  const rng = new Rng(631);
  const n = 50000, x = randn(rng, n), scale = 0.0123, seed = 0x5eed;
  const got = (await runCase(refF32, { what: 'noise', outputs: { x }, run: (be, t) => be.addUniformNoise(t.x!, n, scale, seed) })).x!;
  let sum = 0, sq = 0;
  for (let i = 0; i < n; i++) {
    const u = ((hash32(seed, i) >>> 8) * 2 ** -23) - 1;
    const want = Math.fround(x[i]! + Math.fround(u * Math.fround(scale)));
    if (got[i] !== want) throw new Error(`noise: element ${i}: expected ${want}, got ${got[i]}`);
    assert.ok(u >= -1 && u < 1);
    sum += u;
    sq += u * u;
  }
  // uniform on [−1, 1): mean 0 (σ/√n ≈ 0.0026), E[u²] = 1/3
  assert.ok(Math.abs(sum / n) < 0.013, `mean ${sum / n}`);
  assert.ok(Math.abs(sq / n - 1 / 3) < 0.01, `E[u²] ${sq / n}`);
  // a different seed is different noise
  const other = (await runCase(refF32, { what: 'noise', outputs: { x }, run: (be, t) => be.addUniformNoise(t.x!, n, scale, seed + 1) })).x!;
  let same = 0;
  for (let i = 0; i < n; i++) if (other[i] === got[i]) same++;
  assert.ok(same < n / 100, `seeds ${seed} and ${seed + 1} agree on ${same} of ${n}`);
});

test('addUniformNoise parity (exact)', async () => {
  const rng = new Rng(632);
  const cases: Case[] = [];
  for (const [n, scale, heavy] of [[1, 0.5, false], [15, 0.01, false], [17, 1e-3, false], [4099, 0.2, false], [65537, 0.05, true]] as const) {
    const x = randn(rng, n);
    cases.push({ what: `noise n${n} scale ${scale}`, heavy, outputs: { x }, run: (be, t) => be.addUniformNoise(t.x!, n, scale, 12345 + n) });
  }
  const x = randn(rng, 9);
  cases.push({ what: 'noise on a prefix', outputs: { x }, run: (be, t) => be.addUniformNoise(t.x!, 5, 0.3, 7) });
  await parity(cases, { atol: 0, rtol: 0, why: 'an exact u, one product and one sum, each correctly rounded' });
});

test('addUniformNoise refuses a scale that is negative or not finite', async () => {
  for (const { name, backend } of [{ name: 'reference', backend: refF32 }, ...(await targets())]) {
    const t = put(backend, new Float32Array(4), 'x');
    for (const scale of [-1, NaN, Infinity]) assert.throws(() => backend.addUniformNoise(t, 4, scale, 1), /scale must be a finite number >= 0/, `${name}: scale ${scale}`);
    backend.free(t);
  }
});

test.run();
