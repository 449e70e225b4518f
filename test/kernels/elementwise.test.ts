// add, copy, fill, dropout, and the buffer calls write/read. (a) reference against the
// definitions, dropout's mask against hash32/dropThreshold and its statistics against p,
// (b) dropout's backward (the same mask on the gradient) by float64 finite differences,
// (c) parity — exact for everything but add.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { dropScale, dropThreshold, hash32 } from '../../src/backend/rng.ts';
import { U32, dot, fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

const EXACT = { atol: 0, rtol: 0, why: 'a copy or one correctly rounded product: bit-identical everywhere' };

test('add reference: out += alpha·x', async () => {
  const rng = new Rng(701);
  const n = 100, x = randn(rng, n), prior = randn(rng, n);
  for (const alpha of [1, -0.5, 3]) {
    const got = (await runCase(refF32, { what: 'add', inputs: { x }, outputs: { out: prior }, run: (be, t) => be.add(t.out!, t.x!, n, alpha) })).out!;
    for (let i = 0; i < n; i++) {
      const want = prior[i]! + alpha * x[i]!;
      // two roundings, each at most U of the magnitudes involved (cancellation is allowed)
      const tol = 2 * U32 * (Math.abs(prior[i]!) + Math.abs(alpha * x[i]!));
      assert.ok(Math.abs(got[i]! - want) <= tol, `add alpha ${alpha}: element ${i}: expected ${want}, got ${got[i]}`);
    }
  }
});

test('copy / fill / write / read: offsets, every type, read returns a copy', async () => {
  const rng = new Rng(702);
  const be = refF32;
  const a = put(be, randn(rng, 20), 'a'), b = put(be, randn(rng, 20), 'b');
  const a0 = (await be.read(a)) as Float32Array, b0 = (await be.read(b)) as Float32Array;
  be.copy(b, 3, a, 5, 7);
  const want = b0.slice();
  want.set(a0.subarray(5, 12), 3);
  assertBitsEqual(await be.read(b), want, 'copy f32 with offsets');
  const r = await be.read(b, 2, 4);
  r.fill(0);
  assertBitsEqual(await be.read(b, 2, 4), want.subarray(2, 6), 'read returns a copy, offset/length');
  be.fill(b, 2.5, 10, 6);
  want.fill(2.5, 10, 16);
  assertBitsEqual(await be.read(b), want, 'fill with offset');
  be.fill(b, -1);
  assertBitsEqual(await be.read(b), new Float32Array(20).fill(-1), 'fill all');
  const i = put(be, Int32Array.from([1, 2, 3, 4, 5]), 'i'), u = put(be, Uint8Array.from([9, 8, 7]), 'u');
  be.fill(i, -7, 1, 2);
  be.write(u, Uint8Array.from([200]), 2);
  assertBitsEqual(await be.read(i), Int32Array.from([1, -7, -7, 4, 5]), 'fill i32');
  assertBitsEqual(await be.read(u), Uint8Array.from([9, 8, 200]), 'write u8 at offset');
  freeAll(be, a, b, i, u);
});

test('reference memory(): live and peak bytes follow alloc / free / uploadQuant / freeQuant', () => {
  const be = refF32;
  const base = be.memory().liveBytes;
  const a = be.alloc('f32', 100, 'a'), b = be.alloc('u8', 10, 'b'), c = be.alloc('bf16', 6, 'c');
  assert.is(be.memory().liveBytes - base, 400 + 10 + 12);
  be.free(a);
  assert.is(be.memory().liveBytes - base, 22);
  assert.ok(be.memory().peakBytes >= base + 422);
  const w = be.uploadQuant({ N: 2, K: 64, blocksize: 64, quantType: 'nf4', packed: new Uint8Array(64), quantMap: new Float32Array(16), absmax: new Float32Array(2), dq: null, label: 'w' });
  assert.is(be.memory().liveBytes - base, 22 + 64 + 64 + 8);
  be.freeQuant(w);
  freeAll(be, b, c);
  assert.is(be.memory().liveBytes, base);
  assert.throws(() => be.free(a), /not live/);
});

test('dropout reference: the hash32 mask, scale dropScale(p), keep rate ≈ 1 − p', async () => {
  const rng = new Rng(703);
  const n = 40000, x = randn(rng, n, 1, 3); // shift: no element is zero, so kept ≠ dropped
  for (const p of [0, 0.05, 0.1, 0.5]) {
    const seed = 0x9e37 + Math.round(p * 1000);
    const got = (await runCase(refF32, { what: 'dropout', inputs: { x }, outputs: { out: n }, run: (be, t) => be.dropout(t.out!, t.x!, n, p, seed) })).out! as Float32Array;
    const thr = dropThreshold(p), sc = dropScale(p);
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const keep = hash32(seed, i) >= thr;
      if (keep) kept++;
      const want = keep ? Math.fround(x[i]! * sc) : 0;
      if (got[i] !== want) throw new Error(`dropout p ${p}: element ${i}: expected ${want}, got ${got[i]}`);
    }
    // binomial: 5σ = 5·sqrt(n·p·(1 − p)) ≤ 500
    const sigma = Math.sqrt(n * p * (1 - p));
    assert.ok(Math.abs(n - kept - n * p) <= 5 * sigma + 1e-9, `p ${p}: dropped ${n - kept} of ${n}, expected ${n * p} ± ${5 * sigma}`);
    // E[out] = x: the inverted scaling keeps the mean
    if (p > 0) {
      let so = 0, sx = 0;
      for (let i = 0; i < n; i++) { so += got[i]!; sx += x[i]!; }
      assert.ok(Math.abs(so - sx) / sx < 0.02, `p ${p}: mean ${so / n} vs ${sx / n}`);
    }
  }
  // a different seed is a different mask
  const a = (await runCase(refF32, { what: '', inputs: { x }, outputs: { out: n }, run: (be, t) => be.dropout(t.out!, t.x!, n, 0.5, 1) })).out!;
  const b = (await runCase(refF32, { what: '', inputs: { x }, outputs: { out: n }, run: (be, t) => be.dropout(t.out!, t.x!, n, 0.5, 2) })).out!;
  let same = 0;
  for (let i = 0; i < n; i++) if ((a[i] === 0) === (b[i] === 0)) same++;
  assert.ok(Math.abs(same / n - 0.5) < 0.02, `masks of seeds 1 and 2 agree on ${same} of ${n}`);
});

test('dropout backward = dropout of the gradient with the same seed (float64 finite differences)', () => {
  const rng = new Rng(704);
  const n = 64, p = 0.3, seed = 77;
  const x = put64(randn(rng, n), 'x'), y = refF64.alloc('f32', n, 'y');
  const dyHost = randn(rng, n);
  const dy = put64(dyHost, 'dy'), dx = refF64.alloc('f32', n, 'dx');
  refF64.dropout(dx, dy, n, p, seed);
  fdCheck({ x, loss: () => { refF64.dropout(y, x, n, p, seed); return dot(refF64, y, dyHost); }, analytic: refF64.peekF(dx), what: 'dropout backward' });
  freeAll(refF64, x, y, dy, dx);
});

test('add / copy / fill / dropout parity', async () => {
  const rng = new Rng(705);
  const exact: Case[] = [];
  const adds: Case[] = [];
  for (const n of [1, 7, 1000, 4099]) {
    const x = randn(rng, n), prior = randn(rng, n);
    adds.push(
      { what: `add n${n}`, inputs: { x }, outputs: { out: prior }, run: (be, t) => be.add(t.out!, t.x!, n) },
      { what: `add alpha n${n}`, inputs: { x }, outputs: { out: prior }, run: (be, t) => be.add(t.out!, t.x!, n, -0.37) },
    );
    for (const p of [0, 0.1, 0.5]) {
      exact.push({ what: `dropout n${n} p${p}`, inputs: { x }, outputs: { out: n }, run: (be, t) => be.dropout(t.out!, t.x!, n, p, 1234 + n) });
    }
    const off = n > 3 ? 3 : 0, len = n - off;
    exact.push(
      { what: `copy n${n}`, inputs: { x }, outputs: { out: prior }, run: (be, t) => be.copy(t.out!, 0, t.x!, off, len) },
      { what: `fill n${n}`, outputs: { out: prior }, run: (be, t) => be.fill(t.out!, -2.25, off, len) },
    );
  }
  // int/u8 buffers through copy and fill, read back
  const ints = Int32Array.from({ length: 37 }, (_, i) => i * 7919 - 100000), bytes = Uint8Array.from({ length: 37 }, (_, i) => (i * 37) & 255);
  exact.push(
    { what: 'copy+fill i32', inputs: { src: ints }, outputs: { dst: new Int32Array(37).fill(5) }, run: (be, t) => { be.copy(t.dst!, 2, t.src!, 4, 30); be.fill(t.dst!, -3, 33, 2); } },
    { what: 'copy+fill u8', inputs: { src: bytes }, outputs: { dst: new Uint8Array(37).fill(5) }, run: (be, t) => { be.copy(t.dst!, 1, t.src!, 0, 35); be.fill(t.dst!, 251, 0, 1); } },
  );
  // in place: out aliases x (allowed by the contract)
  const xs = randn(rng, 1003);
  exact.push({ what: 'dropout in place n1003', outputs: { x: xs }, run: (be, t) => be.dropout(t.x!, t.x!, 1003, 0.25, 99) });
  await parity(exact, EXACT);
  // out + alpha·x: with a fused multiply-add the result can differ by one rounding of |alpha·x|
  await parity(adds, { atol: 2 * U32 * 4, rtol: 2 * U32, why: 'one product and one add, possibly fused' });
});

test.run();
