// rope / ropeBackward (rotate-half RoPE, in place): (a) reference against a complex rotation by
// θ = pos·base^(−2i/D) in float64, (b) ropeBackward as the gradient of rope by float64 finite
// differences (and ropeBackward ∘ rope = identity), (c) parity; each also with docStart (packed
// sequences: positions restart at every example of a row).
import { test } from 'uvu';
import { Rng, assertClose } from '../helpers/index.ts';
import type { Backend, RopeTables } from '../../src/backend/backend.ts';
import { U32, dot, fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, targets, type Case } from './harness.ts';
import * as assert from 'uvu/assert';
import { docStartOf } from '../../src/data/pack.ts';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
import { testWebGpu } from '../webgpu/gpu.ts';

const BASE = 10000;
const MAXPOS = 80;

/** cos/sin f32 [MAXPOS, D/2] as the model builds them: angle = pos · base^(−2i/D). */
function tables(D: number): { cos: Float32Array; sin: Float32Array } {
  const half = D / 2;
  const cos = new Float32Array(MAXPOS * half), sin = new Float32Array(MAXPOS * half);
  for (let p = 0; p < MAXPOS; p++) for (let i = 0; i < half; i++) {
    const a = p * BASE ** (-2 * i / D);
    cos[p * half + i] = Math.cos(a);
    sin[p * half + i] = Math.sin(a);
  }
  return { cos, sin };
}

function putTables(be: Backend, D: number): RopeTables {
  const t = tables(D);
  return { cos: put(be, t.cos, 'cos'), sin: put(be, t.sin, 'sin') };
}

test('rope reference (f32) == complex rotation (a + ib)·e^{iθ} in float64 (also packed: θ at t − docStart)', async () => {
  const rng = new Rng(401);
  for (const [B, T, nh, D, pos0, segs] of [[1, 4, 1, 8, 0, null], [2, 5, 3, 16, 7, null], [2, 6, 2, 8, 0, [[2, 1, 3], [1, 4]]], [1, 7, 1, 16, 3, [[3, 3, 1]]]] as const) {
    const R = B * T, half = D / 2;
    const x = randn(rng, R * nh * D);
    const tb = tables(D);
    const ds = segs ? docStartOf(segs, T) : null;
    const got = (await runCase(refF32, { what: 'rope', inputs: { cos: tb.cos, sin: tb.sin, ...(ds ? { ds } : {}) }, outputs: { x }, run: (be, t) => be.rope(t.x!, { cos: t.cos!, sin: t.sin! }, R, T, nh, D, pos0, t.ds) })).x!;
    const want = new Float64Array(x.length);
    for (let r = 0; r < R; r++) for (let h = 0; h < nh; h++) for (let i = 0; i < half; i++) {
      const theta = (pos0 + (r % T) - (ds ? ds[r]! : 0)) * BASE ** (-2 * i / D);
      const o = (r * nh + h) * D;
      const re = x[o + i]!, im = x[o + i + half]!; // rotate-half pairs element i with i + D/2
      want[o + i] = re * Math.cos(theta) - im * Math.sin(theta);
      want[o + i + half] = re * Math.sin(theta) + im * Math.cos(theta);
    }
    // tables rounded to f32 (U relative each) plus two rounded products and one add
    assertClose(got, want, { atol: 8 * U32 * 4, rtol: 4 * U32, what: `rope B${B} T${T} nh${nh} D${D} pos0 ${pos0}${ds ? ' packed' : ''}` });
  }
});

test('ropeBackward is the gradient of rope (float64 finite differences) and undoes it', async () => {
  const rng = new Rng(402);
  const B = 2, T = 3, nh = 2, D = 8, pos0 = 4, n = B * T * nh * D;
  const tb = putTables(refF64, D);
  const x = put64(randn(rng, n), 'x'), y = refF64.alloc('f32', n, 'y');
  const dyHost = randn(rng, n);
  const g = put64(dyHost, 'g');
  refF64.ropeBackward(g, tb, B * T, T, nh, D, pos0);
  fdCheck({ x, loss: () => { refF64.copy(y, 0, x, 0, n); refF64.rope(y, tb, B * T, T, nh, D, pos0); return dot(refF64, y, dyHost); }, analytic: refF64.peekF(g), what: 'ropeBackward' });
  // rotation by θ then by −θ is the identity, up to cos² + sin² = 1 ± 2U of the f32 tables
  refF64.copy(y, 0, x, 0, n);
  refF64.rope(y, tb, B * T, T, nh, D, pos0);
  refF64.ropeBackward(y, tb, B * T, T, nh, D, pos0);
  assertClose(refF64.peekF(y), refF64.peekF(x), { atol: 4 * U32, rtol: 4 * U32, what: 'ropeBackward ∘ rope' });
  // packed rows: examples [1, 2] and [3]
  const ds = put(refF64, docStartOf([[1, 2], [3]], T), 'docStart');
  const gp = put64(dyHost, 'gp');
  refF64.ropeBackward(gp, tb, B * T, T, nh, D, 0, ds);
  fdCheck({ x, loss: () => { refF64.copy(y, 0, x, 0, n); refF64.rope(y, tb, B * T, T, nh, D, 0, ds); return dot(refF64, y, dyHost); }, analytic: refF64.peekF(gp), what: 'ropeBackward packed' });
  freeAll(refF64, x, y, g, gp, ds, tb.cos, tb.sin);
});

test('rope / ropeBackward parity (in place; T not dividing into tiles, pos0 > 0)', async () => {
  const rng = new Rng(403);
  const cases: Case[] = [];
  for (const [B, T, nh, D, pos0, heavy] of [[1, 1, 1, 8, 0, false], [2, 7, 3, 8, 5, false], [1, 17, 4, 64, 0, false], [3, 5, 2, 128, 30, true], [2, 33, 8, 64, 0, true]] as const) {
    const R = B * T, tb = tables(D);
    for (const which of ['rope', 'ropeBackward'] as const) {
      cases.push({
        what: `${which} B${B} T${T} nh${nh} D${D} pos0 ${pos0}`, heavy,
        inputs: { cos: tb.cos, sin: tb.sin }, outputs: { x: randn(rng, R * nh * D) },
        run: (be, t) => be[which](t.x!, { cos: t.cos!, sin: t.sin! }, R, T, nh, D, pos0),
      });
    }
  }
  // packed rows (docStart): several examples per row, single-token examples, a padding tail
  for (const [T, nh, D, pos0, segs] of [[7, 3, 8, 0, [[2, 1, 4], [1, 1, 1, 1, 3]]], [33, 4, 64, 0, [[20, 1, 10], [33], [5, 5, 5, 5]]], [9, 2, 16, 4, [[4, 5]]]] as const) {
    const R = segs.length * T, tb = tables(D), ds = docStartOf(segs, T);
    for (const which of ['rope', 'ropeBackward'] as const) {
      cases.push({
        what: `${which} T${T} nh${nh} D${D} pos0 ${pos0} packed`,
        inputs: { cos: tb.cos, sin: tb.sin, ds }, outputs: { x: randn(rng, R * nh * D) },
        run: (be, t) => be[which](t.x!, { cos: t.cos!, sin: t.sin! }, R, T, nh, D, pos0, t.ds!),
      });
    }
  }
  // two rounded (or fused) products and an add per output, |x| ≲ 4: an ulp or two of the terms
  await parity(cases, { atol: 4 * U32 * 4, rtol: 4 * U32, why: 'a·cos ∓ b·sin, possibly fused' });
});

test('rope refuses a docStart of the wrong type or length on every backend; bad layouts on reference and wasm', async () => {
  const backends: Array<[string, Backend]> = [['reference', refF32], ...(await targets()).map((b): [string, Backend] => [b.name, b.backend])];
  const T = 4, nh = 1, D = 8, tb = tables(D);
  for (const [name, be] of backends) {
    for (const [ds, expect] of [[new Float32Array(T), 'expected i32'], [new Int32Array(T - 1), 'docStart'], [new Int32Array([0, 1, 0, 3]), 'docStart[2]']] as const) {
      if (name === 'webgpu' && expect === 'docStart[2]') continue; // the values stay on the GPU: the layout is the caller's contract
      let err: Error | null = null;
      try {
        await runCase(be, { what: 'rope', inputs: { cos: tb.cos, sin: tb.sin, ds }, outputs: { x: T * nh * D }, run: (b, t) => b.rope(t.x!, { cos: t.cos!, sin: t.sin! }, T, T, nh, D, 0, t.ds!) });
      } catch (e) { err = e as Error; }
      assert.ok(err && err.message.includes(expect), `${name} rope: expected an error naming "${expect}", got ${err?.message ?? 'none'}`);
    }
  }
});

test('webgpu rope / ropeBackward with docStart over row blocks (x larger than a 4 KiB binding)', async () => {
  const be = await testWebGpu({ maxBindingBytes: 4096 });
  if (!be) return; // no WebGPU here (CI=true makes that a failure)
  try {
    const rng = new Rng(405);
    const T = 10, nh = 4, D = 16, segs = [[3, 1, 6], [10], [1, 1, 1, 4], [2, 2, 2, 2, 2]], R = segs.length * T, tb = tables(D); // rows of 256 bytes
    for (const which of ['rope', 'ropeBackward'] as const) {
      const c: Case = { what: `${which} split packed`, inputs: { cos: tb.cos, sin: tb.sin, ds: docStartOf(segs, T) }, outputs: { x: randn(rng, R * nh * D) },
        run: (b, t) => b[which](t.x!, { cos: t.cos!, sin: t.sin! }, R, T, nh, D, 0, t.ds!) };
      const want = await runCase(refF32, c), stats = webgpuInternals(be).stats, d0 = stats.dispatches;
      const got = await runCase(be, c);
      assert.ok(stats.dispatches - d0 >= 3, `${which}: not split over row blocks`);
      assertClose(got.x!, want.x!, { atol: 16 * U32, rtol: 4 * U32, what: `split ${which} packed` });
    }
  } finally {
    await be.destroy();
  }
});

test.run();
