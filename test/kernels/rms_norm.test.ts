// rmsNorm / rmsNormBackward: (a) reference against the formula in float64, (b) the backward by
// float64 finite differences, (c) every backend under test against the float32 reference.
import { test } from 'uvu';
import { Rng, assertClose } from '../helpers/index.ts';
import { U32, dot, fdCheck, freeAll, parity, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

/** y = x / sqrt(mean(x²) + eps) · w, float64. */
function rmsNorm64(x: ArrayLike<number>, w: ArrayLike<number>, R: number, C: number, eps: number): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(R * C), rstd = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let ms = 0;
    for (let c = 0; c < C; c++) ms += x[r * C + c]! ** 2;
    rstd[r] = 1 / Math.sqrt(ms / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = x[r * C + c]! * rstd[r]! * w[c]!;
  }
  return { y, rstd };
}

const weights = (rng: Rng, C: number) => randn(rng, C, 0.2, 1); // around 1, like trained norm weights

test('rmsNorm reference (f32) == formula in float64', async () => {
  const rng = new Rng(301);
  for (const [R, C, eps] of [[1, 5, 1e-5], [3, 64, 1e-6], [4, 130, 1e-5]] as const) {
    const x = randn(rng, R * C, 2, 0.5), w = weights(rng, C);
    const got = await runCase(refF32, { what: 'rmsNorm', inputs: { x, w }, outputs: { out: R * C, rstd: R }, run: (be, t) => be.rmsNorm(t.out!, t.rstd!, t.x!, t.w!, R, C, eps) });
    const want = rmsNorm64(x, w, R, C, eps);
    // a float32 sum of C squares (relative error ≤ C·U) then a few rounded operations
    assertClose(got.rstd!, want.rstd, { rtol: (C + 8) * U32, what: `rstd R${R} C${C}` });
    assertClose(got.out!, want.y, { atol: 1e-7, rtol: (C + 8) * U32, what: `out R${R} C${C}` });
  }
});

test('rmsNormBackward is the gradient of rmsNorm (float64 finite differences), and accumulates', () => {
  const rng = new Rng(302);
  for (const [R, C] of [[1, 5], [3, 16]] as const) {
    const eps = 1e-5;
    const x = put64(randn(rng, R * C, 1.5, 0.3), 'x'), w = put64(weights(rng, C), 'w');
    const y = refF64.alloc('f32', R * C, 'y'), rstd = refF64.alloc('f32', R, 'rstd');
    const dyHost = randn(rng, R * C);
    const dy = put64(dyHost, 'dy'), dx = refF64.alloc('f32', R * C, 'dx');
    refF64.rmsNorm(y, rstd, x, w, R, C, eps);
    refF64.rmsNormBackward(dx, dy, x, w, rstd, R, C);
    const analytic = refF64.peekF(dx).slice();
    fdCheck({ x, loss: () => { refF64.rmsNorm(y, rstd, x, w, R, C, eps); return dot(refF64, y, dyHost); }, analytic, what: `rmsNorm dx R${R} C${C}` });
    // accumulate = true adds the same gradient onto the prior contents
    refF64.rmsNorm(y, rstd, x, w, R, C, eps);
    refF64.rmsNormBackward(dx, dy, x, w, rstd, R, C, true);
    assertClose(refF64.peekF(dx), analytic.map((v) => 2 * v), { atol: 1e-12, rtol: 1e-12, what: 'rmsNormBackward accumulate' });
    freeAll(refF64, x, w, y, rstd, dy, dx);
  }
});

test('rmsNorm / rmsNormBackward parity', async () => {
  const rng = new Rng(303);
  const fwd: Case[] = [], bwd: Case[] = [];
  for (const [R, C, heavy] of [[1, 5, false], [3, 64, false], [17, 130, false], [64, 256, true], [7, 1000, true]] as const) {
    const eps = C % 2 ? 1e-6 : 1e-5;
    const x = randn(rng, R * C, 2, 0.5), w = weights(rng, C), dy = randn(rng, R * C), prior = randn(rng, R * C);
    const rstd = (await runCase(refF32, { what: '', inputs: { x, w }, outputs: { out: R * C, rstd: R }, run: (be, t) => be.rmsNorm(t.out!, t.rstd!, t.x!, t.w!, R, C, eps) })).rstd as Float32Array;
    fwd.push({ what: `rmsNorm R${R} C${C}`, heavy, inputs: { x, w }, outputs: { out: R * C, rstd: R }, run: (be, t) => be.rmsNorm(t.out!, t.rstd!, t.x!, t.w!, R, C, eps) });
    bwd.push(
      { what: `rmsNormBackward R${R} C${C}`, heavy, inputs: { x, w, dy, rstd }, outputs: { dx: R * C }, run: (be, t) => be.rmsNormBackward(t.dx!, t.dy!, t.x!, t.w!, t.rstd!, R, C) },
      { what: `rmsNormBackward accumulate R${R} C${C}`, heavy, inputs: { x, w, dy, rstd }, outputs: { dx: prior }, run: (be, t) => be.rmsNormBackward(t.dx!, t.dy!, t.x!, t.w!, t.rstd!, R, C, true) },
    );
  }
  // forward: the sum of squares over C ≤ 1000 in a different order moves rstd by a few 1e-6
  // relative at most (all terms positive), and out inherits it.
  await parity(fwd, { atol: 1e-7, rtol: 4e-6, why: 'positive f32 sum over C in another order, then a sqrt' });
  // backward: the mean over C is a signed sum (cancellation), its error ~U·√C·|terms| enters
  // every element multiplied by x̂ and rstd (~0.5…2 here).
  await parity(bwd, { atol: 2e-6, rtol: 1e-5, why: 'signed f32 mean over C in another order, times x̂·rstd' });
});

test.run();
