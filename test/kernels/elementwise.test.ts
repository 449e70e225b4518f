// add, copy, fill, dropout, and the buffer calls write/read. (a) reference against the
// definitions, dropout's mask against hash32/dropThreshold and its statistics against p,
// (b) dropout's backward (the same mask on the gradient) by float64 finite differences,
// (c) parity — exact for everything but add.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { dropScale, dropThreshold, hash32 } from '../../src/backend/rng.ts';
import { U32, dot, fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, targets, type Case, type Host } from './harness.ts';
import type { BufferType } from '../../src/backend/backend.ts';

/** n random finite values of a buffer type (raw bits for f16/bf16: no Inf/NaN patterns). */
function hostOf(rng: Rng, type: BufferType, n: number): Host {
  if (type === 'f32') return randn(rng, n);
  if (type === 'i32') return Int32Array.from({ length: n }, () => rng.int(0x7fffffff) - 0x3fffffff);
  if (type === 'u8') return Uint8Array.from({ length: n }, () => rng.int(256));
  const top = type === 'f16' ? 0x7c00 : 0x7f80; // exponent all ones: Inf/NaN
  return Uint16Array.from({ length: n }, () => {
    let h: number;
    do h = rng.int(65536); while ((h & 0x7fff) >= top);
    return h;
  });
}

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
  // a negative offset is refused, not wrapped around (subarray(-1) would read the last element)
  assert.throws(() => be.write(u, Uint8Array.from([1]), -1), /outside u/);
  let msg = '';
  try { await be.read(u, -1, 1); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /outside u/);
  freeAll(be, a, b, i, u);
});

test('write / read with offsets and lengths, every type, on every backend', async () => {
  const rng = new Rng(706);
  for (const be of [refF32, ...(await targets()).map((t) => t.backend)]) {
    for (const type of ['f32', 'i32', 'u8', 'f16', 'bf16'] as const) {
      const n = 37, tag = `${be.name} ${type}`;
      const base = hostOf(rng, type, n), part = hostOf(rng, type, 9), one = hostOf(rng, type, 1), three = hostOf(rng, type, 3);
      const t = be.alloc(type, n, `rw ${type}`);
      be.write(t, base);
      be.write(t, part, 20);
      be.write(t, one, 1); // odd element offsets: byte offsets that are not multiples of 4 for u8, f16, bf16
      be.write(t, three, n - 3);
      const want = base.slice();
      want.set(part, 20);
      want.set(one, 1);
      want.set(three, n - 3);
      assertBitsEqual(await be.read(t), want, `${tag}: whole tensor after writes at offsets`);
      for (const [off, len] of [[5, 11], [1, 1], [3, 2], [n - 1, 1], [0, n], [n, 0]] as const) {
        assertBitsEqual(await be.read(t, off, len), want.subarray(off, off + len), `${tag}: read(${off}, ${len})`);
      }
      assertBitsEqual(await be.read(t, 30), want.subarray(30), `${tag}: read from an offset to the end`);
      assert.throws(() => be.write(t, three, n - 2), undefined, `${tag}: a write past the end`);
      let threw = false;
      try { await be.read(t, n - 1, 2); } catch { threw = true; }
      assert.ok(threw, `${tag}: a read past the end`);
      be.free(t);
    }
  }
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
  // f16/bf16 buffers through copy and fill (raw bits compared exactly). Fill values that need
  // rounding to the half type (1/3, 1e-5 below f16's normal range, 70000 above its largest
  // finite value) check every backend rounds f32 → half the same way.
  for (const type of ['f16', 'bf16'] as const) {
    const src = hostOf(rng, type, 41), dst = hostOf(rng, type, 41);
    exact.push({
      what: `copy+fill ${type}`, inputs: { src: { type, data: src } }, outputs: { dst: { type, data: dst } },
      run: (be, t) => { be.copy(t.dst!, 3, t.src!, 1, 30); be.fill(t.dst!, -2.5, 35, 3); be.fill(t.dst!, 1 / 3, 0, 2); be.fill(t.dst!, 1e-5, 38, 1); be.fill(t.dst!, 70000, 39); },
    });
    exact.push({ what: `fill all ${type}`, outputs: { dst: { type, data: dst } }, run: (be, t) => be.fill(t.dst!, -0.1) });
    exact.push({ what: `copy at odd offsets ${type}`, inputs: { src: { type, data: src } }, outputs: { dst: { type, data: dst } }, run: (be, t) => be.copy(t.dst!, 1, t.src!, 2, 1) });
  }
  // in place: out aliases x (allowed by the contract)
  const xs = randn(rng, 1003);
  exact.push({ what: 'dropout in place n1003', outputs: { x: xs }, run: (be, t) => be.dropout(t.x!, t.x!, 1003, 0.25, 99) });
  await parity(exact, EXACT);
  // out + alpha·x: with a fused multiply-add the result can differ by one rounding of |alpha·x|
  await parity(adds, { atol: 2 * U32 * 4, rtol: 2 * U32, why: 'one product and one add, possibly fused' });
});

test('add in place parity (out aliases x: webgpu IN_PLACE)', async () => {
  const rng = new Rng(707);
  const cases: Case[] = [];
  for (const n of [7, 1003]) {
    const xs = randn(rng, n);
    cases.push(
      { what: `add in place n${n}`, outputs: { x: xs }, run: (be, t) => be.add(t.x!, t.x!, n) },
      { what: `add in place alpha n${n}`, outputs: { x: xs }, run: (be, t) => be.add(t.x!, t.x!, n, -0.37) },
    );
  }
  await parity(cases, { atol: 2 * U32 * 4, rtol: 2 * U32, why: 'one product and one add, possibly fused' });
});

test.run();
