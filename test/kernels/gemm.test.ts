// matmul (every transA/transB layout, alpha, accumulate, bias), qMatmul and
// qMatmulBackwardInput (nf4/fp4/int4 × double quant on/off × blocksizes 32, 64, 128, 4096).
//  (a) the float32 reference against a float64 GEMM written here, and its dequantization
//      bit-exact against dequantize4bit (bnb-exact WASM);
//  (b) the backward layouts by float64 finite differences;
//  (c) every backend under test against the float32 reference.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertClose } from '../helpers/index.ts';
import { dequantize4bit, quantize4bit } from '../../src/quant/quantize.ts';
import type { QuantUpload } from '../../src/backend/backend.ts';
import type { QuantType } from '../../src/quant/types.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/num.ts';
import { U32, dot, fdCheck, freeAll, parity, put, put64, randn, refF32, refF64, runCase, type Case, type Tol } from './harness.ts';

/** float64 out[M, N] = alpha · op(A) · op(B) (+ bias) (+ prior) — the textbook loop. */
function gemm64(a: ArrayLike<number>, b: ArrayLike<number>, M: number, N: number, K: number, o: { transA?: boolean; transB?: boolean; alpha?: number; bias?: ArrayLike<number>; prior?: ArrayLike<number> } = {}): Float64Array {
  const out = new Float64Array(M * N);
  const opA = (m: number, k: number) => (o.transA ? a[k * M + m]! : a[m * K + k]!);
  const opB = (k: number, n: number) => (o.transB ? b[n * K + k]! : b[k * N + n]!);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += opA(m, k) * opB(k, n);
    out[m * N + n] = (o.alpha ?? 1) * s + (o.bias ? o.bias[n]! : 0) + (o.prior ? o.prior[m * N + n]! : 0);
  }
  return out;
}

/** Transposes a row-major [rows, cols] array. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

// Parity tolerance for a length-K float32 dot product of N(0,1)·N(0,1) terms computed in two
// summation orders: each order's rounding error is a random walk of ~U·K/2 (partial sums grow
// like √k), so 8·U·K ≈ 4.8e-7·K covers the difference at > 4σ; a wrong index or a missing
// alpha is off by O(1).
const gemmTol = (K: number): Tol => ({ atol: 8 * U32 * K, rtol: 1e-6, why: 'f32 sums in a different order' });

const LAYOUTS = [
  { transA: false, transB: false },
  { transA: false, transB: true },
  { transA: true, transB: false },
  { transA: true, transB: true },
];

// ---- matmul ---------------------------------------------------------------------------

test('matmul reference (f32) == float64 GEMM, every layout, alpha, bias, accumulate', async () => {
  const rng = new Rng(101);
  for (const [M, N, K] of [[1, 5, 7], [3, 33, 64], [17, 8, 130]] as const) {
    for (const L of LAYOUTS) {
      const a = randn(rng, M * K), b = randn(rng, K * N), bias = randn(rng, N), prior = randn(rng, M * N);
      for (const mode of ['plain', 'alpha+bias', 'accumulate'] as const) {
        const alpha = mode === 'plain' ? 1 : -0.75;
        const c: Case = {
          what: `matmul ${M}x${N}x${K} ${JSON.stringify(L)} ${mode}`,
          inputs: { a, b, bias },
          outputs: { out: mode === 'accumulate' ? prior : M * N },
          run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, { ...L, alpha, accumulate: mode === 'accumulate', bias: mode === 'alpha+bias' ? t.bias! : undefined }),
        };
        const got = (await runCase(refF32, c)).out!;
        const want = gemm64(a, b, M, N, K, { ...L, alpha, bias: mode === 'alpha+bias' ? bias : undefined, prior: mode === 'accumulate' ? prior : undefined });
        // f32 accumulation against exact: half the two-order parity bound
        assertClose(got, want, { atol: 4 * U32 * K, rtol: 1e-6, what: c.what });
      }
    }
  }
});

test('matmul reference: the three training layouts are the gradients of x·Wᵀ (float64 finite differences)', () => {
  const rng = new Rng(102);
  const M = 3, N = 4, K = 5;
  const x = put64(randn(rng, M * K), 'x'), w = put64(randn(rng, N * K), 'w'), y = refF64.alloc('f32', M * N, 'y');
  const dyHost = randn(rng, M * N);
  const dy = put64(dyHost, 'dy'), dx = refF64.alloc('f32', M * K, 'dx'), dw = refF64.alloc('f32', N * K, 'dw');
  const loss = () => { refF64.matmul(y, x, w, M, N, K, { transB: true }); return dot(refF64, y, dyHost); };
  refF64.matmul(dx, dy, w, M, K, N); // dX[M, K] = dY[M, N] · W[N, K]
  refF64.matmul(dw, dy, x, N, K, M, { transA: true }); // dW[N, K] = dYᵀ · X
  fdCheck({ x, loss, analytic: refF64.peekF(dx), what: 'matmul dX' });
  fdCheck({ x: w, loss, analytic: refF64.peekF(dw), what: 'matmul dW' });
  freeAll(refF64, x, w, y, dy, dx, dw);
});

test('matmul parity: every layout, odd sizes, alpha, accumulate onto a non-zero prior, bias', async () => {
  const rng = new Rng(103);
  const shapes: Array<[number, number, number, boolean]> = [
    // M, N, K, heavy
    [1, 5, 7, false], [3, 33, 64, false], [17, 5, 130, false], [1, 128, 256, false],
    [64, 33, 130, true], [17, 128, 256, true], [64, 128, 7, true],
  ];
  for (const [M, N, K, heavy] of shapes) {
    const cases: Case[] = [];
    for (const L of LAYOUTS) {
      const a = randn(rng, M * K), b = randn(rng, K * N), bias = randn(rng, N), prior = randn(rng, M * N);
      cases.push(
        { what: `matmul ${M}x${N}x${K} ${JSON.stringify(L)}`, heavy, inputs: { a, b }, outputs: { out: M * N }, run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, L) },
        { what: `matmul ${M}x${N}x${K} ${JSON.stringify(L)} alpha+bias`, heavy, inputs: { a, b, bias }, outputs: { out: M * N }, run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, { ...L, alpha: 0.3, bias: t.bias! }) },
        { what: `matmul ${M}x${N}x${K} ${JSON.stringify(L)} accumulate`, heavy, inputs: { a, b }, outputs: { out: prior }, run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, { ...L, alpha: -1.5, accumulate: true }) },
      );
    }
    // alpha 1.5 and a prior of magnitude ~1: the error scales with |alpha|·K
    await parity(cases, { atol: 1.5 * gemmTol(K).atol + 4 * U32, rtol: 1e-6, why: 'f32 sums in a different order, scaled by |alpha| ≤ 1.5' });
  }
});

// ---- half-precision b (f16/bf16 lm_head or tied embedding) ----------------------------------

/** b as raw half bits plus its exact float values. */
function halves(rng: Rng, n: number, type: 'f16' | 'bf16'): { bits: Uint16Array; values: Float64Array } {
  const x = randn(rng, n);
  const bits = Uint16Array.from(x, type === 'f16' ? f32ToF16 : f32ToBf16);
  return { bits, values: Float64Array.from(bits, type === 'f16' ? f16ToF32 : bf16ToF32) };
}

test('matmul with an f16 / bf16 b (transA false): reference == float64 GEMM over the widened values', async () => {
  const rng = new Rng(110);
  const M = 3, N = 17, K = 33;
  for (const type of ['f16', 'bf16'] as const) for (const transB of [false, true]) {
    const a = randn(rng, M * K), b = halves(rng, K * N, type);
    const got = (await runCase(refF32, { what: '', inputs: { a, b: { type, data: b.bits } }, outputs: { out: M * N }, run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, { transB, alpha: 0.5 }) })).out!;
    assertClose(got, gemm64(a, b.values, M, N, K, { transB, alpha: 0.5 }), { atol: 4 * U32 * K, rtol: 1e-6, what: `matmul ${type} b transB=${transB}` });
  }
});

test('matmul parity with an f16 / bf16 b', async () => {
  const rng = new Rng(111);
  const cases: Case[] = [];
  for (const type of ['f16', 'bf16'] as const) {
    for (const [M, N, K, heavy] of [[1, 5, 7, false], [3, 33, 64, false], [17, 130, 64, true]] as const) {
      for (const transB of [false, true]) {
        const a = randn(rng, M * K), b = halves(rng, K * N, type), prior = randn(rng, M * N);
        cases.push(
          { what: `matmul ${type} b ${M}x${N}x${K} transB=${transB}`, heavy, inputs: { a, b: { type, data: b.bits } }, outputs: { out: M * N }, run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, { transB }) },
          { what: `matmul ${type} b ${M}x${N}x${K} transB=${transB} accumulate`, heavy, inputs: { a, b: { type, data: b.bits } }, outputs: { out: prior }, run: (be, t) => be.matmul(t.out!, t.a!, t.b!, M, N, K, { transB, alpha: 1.5, accumulate: true }) },
        );
      }
    }
  }
  await parity(cases, { atol: 1.5 * gemmTol(64).atol + 4 * U32, rtol: 1e-6, why: 'f32 sums over K ≤ 64 in a different order (the widening is exact)' });
});

// ---- quantized weights --------------------------------------------------------------------

const QTYPES: QuantType[] = ['nf4', 'fp4', 'int4'];

async function quantWeight(rng: Rng, N: number, K: number, quantType: QuantType, blocksize: number, doubleQuant: boolean): Promise<{ up: QuantUpload; deq: Float32Array }> {
  const w = randn(rng, N * K);
  const q = await quantize4bit(w, { quantType, blocksize, doubleQuant, shape: [N, K] });
  const up: QuantUpload = { N, K, blocksize, quantType, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: `W ${quantType} bs${blocksize}${doubleQuant ? ' dq' : ''}` };
  return { up, deq: await dequantize4bit(q) };
}

function configs(): Array<{ qt: QuantType; bs: number; dq: boolean }> {
  const out: Array<{ qt: QuantType; bs: number; dq: boolean }> = [];
  for (const qt of QTYPES) for (const dq of [false, true]) for (const bs of [32, 64, 128]) out.push({ qt, bs, dq });
  out.push({ qt: 'nf4', bs: 4096, dq: true }, { qt: 'fp4', bs: 4096, dq: false });
  return out;
}

/** Identity-input cases: qMatmul(I_K) = deq(W)ᵀ and qMatmulBackwardInput(I_N) = deq(W), exactly
 *  (one non-zero product per output), so the dequantization itself is compared bit for bit. */
function identityCases(up: QuantUpload, what: string): Case[] {
  const { N, K } = up;
  const eyeK = new Float32Array(K * K), eyeN = new Float32Array(N * N);
  for (let i = 0; i < K; i++) eyeK[i * K + i] = 1;
  for (let i = 0; i < N; i++) eyeN[i * N + i] = 1;
  return [
    { what: `qMatmul(I) ${what}`, inputs: { x: eyeK }, outputs: { out: K * N }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, K) },
    { what: `qMatmulBackwardInput(I) ${what}`, inputs: { dy: eyeN }, outputs: { dx: N * K }, quant: { w: up }, run: (be, t, q) => be.qMatmulBackwardInput(t.dx!, t.dy!, q.w!, N) },
  ];
}

test('qMatmul reference dequantizes bit-exactly like dequantize4bit (bnb), every type / DQ / blocksize', async () => {
  const rng = new Rng(201);
  for (const { qt, bs, dq } of configs()) {
    for (const [N, K] of [[40, 130], [5, 7]] as const) {
      const { up, deq } = await quantWeight(rng, N, K, qt, bs, dq);
      const [fwd, bwd] = identityCases(up, `${qt} bs${bs} dq=${dq} [${N},${K}]`);
      const wT = (await runCase(refF32, fwd!)).out!;
      assertClose(wT, transpose(deq, N, K), { what: fwd!.what }); // exact
      assertClose((await runCase(refF32, bwd!)).dx!, deq, { what: bwd!.what }); // exact
    }
  }
});

test('qMatmul / qMatmulBackwardInput reference (f32) == float64 GEMM over dequantize4bit', async () => {
  const rng = new Rng(202);
  for (const { qt, bs, dq } of configs()) {
    const M = 3, N = 33, K = 130;
    const { up, deq } = await quantWeight(rng, N, K, qt, bs, dq);
    const x = randn(rng, M * K), dy = randn(rng, M * N), bias = randn(rng, N), priorY = randn(rng, M * N), priorX = randn(rng, M * K);
    const tag = `${qt} bs${bs} dq=${dq}`;
    const y = await runCase(refF32, { what: '', inputs: { x, bias }, outputs: { out: M * N }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M, { alpha: 0.5, bias: t.bias! }) });
    assertClose(y.out!, gemm64(x, deq, M, N, K, { transB: true, alpha: 0.5, bias }), { atol: 4 * U32 * K, rtol: 1e-6, what: `qMatmul ${tag}` });
    const ya = await runCase(refF32, { what: '', inputs: { x }, outputs: { out: priorY }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M, { accumulate: true }) });
    assertClose(ya.out!, gemm64(x, deq, M, N, K, { transB: true, prior: priorY }), { atol: 4 * U32 * K, rtol: 1e-6, what: `qMatmul accumulate ${tag}` });
    const dx = await runCase(refF32, { what: '', inputs: { dy }, outputs: { dx: priorX }, quant: { w: up }, run: (be, t, q) => be.qMatmulBackwardInput(t.dx!, t.dy!, q.w!, M, { alpha: 2, accumulate: true }) });
    assertClose(dx.dx!, gemm64(dy, deq, M, K, N, { alpha: 2, prior: priorX }), { atol: 8 * U32 * N, rtol: 1e-6, what: `qMatmulBackwardInput ${tag}` });
  }
});

test('qMatmulBackwardInput is the input gradient of qMatmul (float64 finite differences)', async () => {
  const rng = new Rng(203);
  for (const dq of [false, true]) {
    const M = 3, N = 9, K = 16;
    const { up } = await quantWeight(rng, N, K, 'nf4', 64, dq);
    const w = refF64.uploadQuant(up);
    const x = put64(randn(rng, M * K), 'x'), y = refF64.alloc('f32', M * N, 'y');
    const dyHost = randn(rng, M * N);
    const dy = put64(dyHost, 'dy'), dx = refF64.alloc('f32', M * K, 'dx');
    refF64.qMatmulBackwardInput(dx, dy, w, M);
    fdCheck({ x, loss: () => { refF64.qMatmul(y, x, w, M); return dot(refF64, y, dyHost); }, analytic: refF64.peekF(dx), what: `qMatmul dX dq=${dq}` });
    freeAll(refF64, x, y, dy, dx);
    refF64.freeQuant(w);
  }
});

test('qMatmul / qMatmulBackwardInput parity: types × DQ × blocksizes, odd shapes, alpha, accumulate, bias', async () => {
  const rng = new Rng(204);
  const shapes: Array<[number, number, number, boolean]> = [[1, 5, 7, false], [3, 33, 130, false], [17, 128, 256, true]];
  for (const { qt, bs, dq } of configs()) {
    for (const [M, N, K, heavy] of shapes) {
      const { up } = await quantWeight(rng, N, K, qt, bs, dq);
      const tag = `${qt} bs${bs} dq=${dq} M${M} N${N} K${K}`;
      const x = randn(rng, M * K), dy = randn(rng, M * N), bias = randn(rng, N), priorY = randn(rng, M * N), priorX = randn(rng, M * K);
      await parity([
        { what: `qMatmul ${tag}`, heavy, inputs: { x }, outputs: { out: M * N }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M) },
        { what: `qMatmul alpha+bias ${tag}`, heavy, inputs: { x, bias }, outputs: { out: M * N }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M, { alpha: 0.25, bias: t.bias! }) },
        { what: `qMatmul accumulate ${tag}`, heavy, inputs: { x }, outputs: { out: priorY }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M, { alpha: 1.5, accumulate: true }) },
      ], { atol: 1.5 * gemmTol(K).atol + 4 * U32, rtol: 1e-6, why: 'f32 sums over K in a different order, |alpha| ≤ 1.5' });
      await parity([
        { what: `qMatmulBackwardInput ${tag}`, heavy, inputs: { dy }, outputs: { dx: M * K }, quant: { w: up }, run: (be, t, q) => be.qMatmulBackwardInput(t.dx!, t.dy!, q.w!, M) },
        { what: `qMatmulBackwardInput accumulate ${tag}`, heavy, inputs: { dy }, outputs: { dx: priorX }, quant: { w: up }, run: (be, t, q) => be.qMatmulBackwardInput(t.dx!, t.dy!, q.w!, M, { alpha: -0.5, accumulate: true }) },
      ], { atol: gemmTol(N).atol + 4 * U32, rtol: 1e-6, why: 'f32 sums over N in a different order' });
    }
    // dequantization compared exactly through identity inputs
    const { up } = await quantWeight(rng, 40, 130, qt, bs, dq);
    await parity(identityCases(up, `${qt} bs${bs} dq=${dq}`), { atol: 0, rtol: 0, why: 'one exact product per output: the dequantized weights must match bit for bit' });
  }
});

// The wasm kernels dequantize a whole row of W into a scratch area for few rows of x (M < 4,
// decoding) only up to ROW_MAX = (1 MiB scratch − 405504) / 4 = 160768 elements (assembly/
// panel.ts); a longer row takes the blocked path with M < 4. K odd: rows of W start mid-byte.
test('qMatmul / qMatmulBackwardInput parity: M < 4 with K beyond the whole-row limit', async () => {
  const rng = new Rng(206);
  const K = 200003, N = 3;
  for (const [qt, bs, dq] of [['nf4', 64, true], ['fp4', 32, false]] as const) {
    const { up } = await quantWeight(rng, N, K, qt, bs, dq);
    for (const M of [1, 3]) {
      const tag = `${qt} bs${bs} dq=${dq} M${M} N${N} K${K}`;
      const x = randn(rng, M * K), dy = randn(rng, M * N), priorY = randn(rng, M * N);
      await parity([
        { what: `qMatmul ${tag}`, heavy: true, inputs: { x }, outputs: { out: M * N }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M) },
        { what: `qMatmul accumulate ${tag}`, heavy: true, inputs: { x }, outputs: { out: priorY }, quant: { w: up }, run: (be, t, q) => be.qMatmul(t.out!, t.x!, q.w!, M, { alpha: -0.5, accumulate: true }) },
      ], { atol: gemmTol(K).atol + 4 * U32, rtol: 1e-6, why: 'f32 sums over K in a different order' });
      await parity([
        { what: `qMatmulBackwardInput ${tag}`, heavy: true, inputs: { dy }, outputs: { dx: M * K }, quant: { w: up }, run: (be, t, q) => be.qMatmulBackwardInput(t.dx!, t.dy!, q.w!, M) },
      ], { atol: gemmTol(N).atol + 4 * U32, rtol: 1e-6, why: 'f32 sums over N = 3' });
    }
  }
});

test('harness sanity: a transposed index or a missing alpha fails the gemm tolerance', () => {
  const rng = new Rng(205);
  const M = 17, N = 33, K = 130;
  const a = randn(rng, M * K), b = randn(rng, K * N);
  const A = put(refF32, a, 'a'), B = put(refF32, b, 'b'), out = refF32.alloc('f32', M * N, 'out'), bad = refF32.alloc('f32', M * N, 'bad');
  refF32.matmul(out, A, B, M, N, K, { alpha: 0.9 });
  refF32.matmul(bad, A, B, M, N, K); // alpha forgotten
  const tol = gemmTol(K);
  assert.throws(() => assertClose(refF32.peekF(bad), refF32.peekF(out), tol));
  freeAll(refF32, A, B, out, bad);
});

test.run();
