// rope / ropeBackward (rotate-half RoPE, in place): (a) reference against a complex rotation by
// θ = pos·base^(−2i/D) in float64, (b) ropeBackward as the gradient of rope by float64 finite
// differences (and ropeBackward ∘ rope = identity), (c) parity.
import { test } from 'uvu';
import { Rng, assertClose } from '../helpers/index.ts';
import type { Backend, RopeTables } from '../../src/backend/backend.ts';
import { U32, dot, fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

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

test('rope reference (f32) == complex rotation (a + ib)·e^{iθ} in float64', async () => {
  const rng = new Rng(401);
  for (const [B, T, nh, D, pos0] of [[1, 4, 1, 8, 0], [2, 5, 3, 16, 7]] as const) {
    const R = B * T, half = D / 2;
    const x = randn(rng, R * nh * D);
    const tb = tables(D);
    const got = (await runCase(refF32, { what: 'rope', inputs: { cos: tb.cos, sin: tb.sin }, outputs: { x }, run: (be, t) => be.rope(t.x!, { cos: t.cos!, sin: t.sin! }, R, T, nh, D, pos0) })).x!;
    const want = new Float64Array(x.length);
    for (let r = 0; r < R; r++) for (let h = 0; h < nh; h++) for (let i = 0; i < half; i++) {
      const theta = (pos0 + (r % T)) * BASE ** (-2 * i / D);
      const o = (r * nh + h) * D;
      const re = x[o + i]!, im = x[o + i + half]!; // rotate-half pairs element i with i + D/2
      want[o + i] = re * Math.cos(theta) - im * Math.sin(theta);
      want[o + i + half] = re * Math.sin(theta) + im * Math.cos(theta);
    }
    // tables rounded to f32 (U relative each) plus two rounded products and one add
    assertClose(got, want, { atol: 8 * U32 * 4, rtol: 4 * U32, what: `rope B${B} T${T} nh${nh} D${D} pos0 ${pos0}` });
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
  freeAll(refF64, x, y, g, tb.cos, tb.sin);
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
  // two rounded (or fused) products and an add per output, |x| ≲ 4: an ulp or two of the terms
  await parity(cases, { atol: 4 * U32 * 4, rtol: 4 * U32, why: 'a·cos ∓ b·sin, possibly fused' });
});

test.run();
