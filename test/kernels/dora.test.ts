// DoRA kernels: scaleColumns, columnDot, doraScale, rowSumSquares, qRowSumSquares (nf4/fp4/int4
// × double quant on/off × blocksizes 64, 128).
//  (a) the float32 reference against the formulas in float64 (qRowSumSquares over bnb's
//      dequantize4bit);
//  (c) every backend under test against the float32 reference, outputs poisoned with NaN, odd
//      sizes, R = 1, every option (offset, bias, accumulate onto a non-zero prior, scale, in place);
//  plus what the shared parity cannot see: qRowSumSquares(W) equals rowSumSquares of the
//  dequantized W bit for bit on every backend; the wasm kernels give the bits of one thread on 2
//  and 3 (through the pool); webgpu's row blocks for operands larger than one storage binding;
//  a non-finite offset is refused. These kernels are elementwise or sums: there is no backward (b).
//
// Tolerances (|got − ref| ≤ atol + rtol·|ref|):
//   scaleColumns, columnDot  0: every backend rounds in the reference's order (reference/index.ts
//                            "DoRA"): one rounding per operation, no fused multiply-add, column sums
//                            over r ascending;
//   doraScale                16·U relative: WGSL's sqrt and division are a few ulp (wasm's are
//                            correctly rounded: checked bit for bit separately);
//   rowSumSquares, qRowSumSquares  16·√C·U relative: a sum of C positive terms in another order
//                            (wasm: f32x4 lanes; webgpu: a tree), as sumSquares in optim.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual, assertClose } from '../helpers/index.ts';
import { dequantize4bit, quantize4bit } from '../../src/quant/quantize.ts';
import type { Backend, QuantUpload, Tensor } from '../../src/backend/backend.ts';
import type { QuantType } from '../../src/quant/types.ts';
import { createWasmBackend, wasmInternals } from '../../src/backend/wasm/index.ts';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
import { U32, parity, put, randn, refF32, runCase, targets, type Case, type Tol } from './harness.ts';
import { testWebGpu } from '../webgpu/gpu.ts';

const EXACT: Tol = { atol: 0, rtol: 0, why: 'the reference\'s rounding order, one rounding per operation, no fma' };
const SQRT_DIV: Tol = { atol: 0, rtol: 16 * U32, why: 'WGSL sqrt and division are a few ulp' };
/** A sum of C positive f32 terms in another order: error ~√C·U relative, bound 16·√C·U. */
const sumTol = (C: number): Tol => ({ atol: 0, rtol: 16 * Math.sqrt(Math.max(C, 1)) * U32, why: 'positive f32 sum in another order' });

/** Positive values spread over four decades (squared norms). */
const positive = (rng: Rng, n: number): Float32Array => Float32Array.from({ length: n }, () => Math.fround(10 ** (4 * rng.next() - 2)));

async function quantWeight(rng: Rng, N: number, K: number, quantType: QuantType, blocksize: number, doubleQuant: boolean): Promise<{ up: QuantUpload; deq: Float32Array }> {
  const w = randn(rng, N * K);
  const q = await quantize4bit(w, { quantType, blocksize, doubleQuant, shape: [N, K] });
  const up: QuantUpload = { N, K, blocksize, quantType, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: `W ${quantType} bs${blocksize}${doubleQuant ? ' dq' : ''}` };
  return { up, deq: await dequantize4bit(q) };
}

/** Every case's reason is kept with it: parity() checks all outputs of a case with one Tol. */
function scaleColumnsCases(rng: Rng, R: number, N: number, heavy = false): Case[] {
  const x = randn(rng, R * N), g = randn(rng, N, 0.2, 1), bias = randn(rng, N), prior = randn(rng, R * N);
  const tag = `R${R} N${N}`;
  return [
    { what: `scaleColumns ${tag}`, heavy, inputs: { x, g }, outputs: { out: R * N }, run: (be, t) => be.scaleColumns(t.out!, t.x!, t.g!, R, N) },
    { what: `scaleColumns offset −1 + bias ${tag}`, heavy, inputs: { x, g, bias }, outputs: { out: R * N }, run: (be, t) => be.scaleColumns(t.out!, t.x!, t.g!, R, N, { offset: -1, bias: t.bias! }) },
    { what: `scaleColumns offset 0.3 accumulate ${tag}`, heavy, inputs: { x, g }, outputs: { out: prior }, run: (be, t) => be.scaleColumns(t.out!, t.x!, t.g!, R, N, { offset: 0.3, accumulate: true }) },
    { what: `scaleColumns bias + accumulate ${tag}`, heavy, inputs: { x, g, bias }, outputs: { out: prior }, run: (be, t) => be.scaleColumns(t.out!, t.x!, t.g!, R, N, { accumulate: true, bias: t.bias! }) },
    // out = x: the in-place form (DoRA scales a linear's output where it lies)
    { what: `scaleColumns in place ${tag}`, heavy, inputs: { g, bias }, outputs: { x }, run: (be, t) => be.scaleColumns(t.x!, t.x!, t.g!, R, N, { offset: -1, bias: t.bias! }) },
  ];
}

function columnDotCases(rng: Rng, R: number, N: number, heavy = false): Case[] {
  const a = randn(rng, R * N), b = randn(rng, R * N), scale = randn(rng, N), prior = randn(rng, N);
  const tag = `R${R} N${N}`;
  return [
    { what: `columnDot ${tag}`, heavy, inputs: { a, b }, outputs: { out: N }, run: (be, t) => be.columnDot(t.out!, t.a!, t.b!, R, N) },
    { what: `columnDot scale ${tag}`, heavy, inputs: { a, b, scale }, outputs: { out: N }, run: (be, t) => be.columnDot(t.out!, t.a!, t.b!, R, N, { scale: t.scale! }) },
    { what: `columnDot scale + accumulate ${tag}`, heavy, inputs: { a, b, scale }, outputs: { out: prior }, run: (be, t) => be.columnDot(t.out!, t.a!, t.b!, R, N, { scale: t.scale!, accumulate: true }) },
    { what: `columnDot accumulate ${tag}`, heavy, inputs: { a, b }, outputs: { out: prior }, run: (be, t) => be.columnDot(t.out!, t.a!, t.b!, R, N, { accumulate: true }) },
    // a = b: Σ a² (column norms), one tensor bound twice
    { what: `columnDot a = b ${tag}`, heavy, inputs: { a }, outputs: { out: N }, run: (be, t) => be.columnDot(t.out!, t.a!, t.a!, R, N) },
  ];
}

function doraScaleCase(rng: Rng, N: number): Case {
  const m = randn(rng, N), nsq = positive(rng, N);
  return { what: `doraScale N${N}`, inputs: { m, nsq }, outputs: { g: N, inv: N }, run: (be, t) => be.doraScale(t.g!, t.inv!, t.m!, t.nsq!, N) };
}

function rowSumSquaresCases(rng: Rng, R: number, C: number, heavy = false): Case[] {
  const x = randn(rng, R * C), prior = positive(rng, R);
  return [
    { what: `rowSumSquares R${R} C${C}`, heavy, inputs: { x }, outputs: { out: R }, run: (be, t) => be.rowSumSquares(t.out!, t.x!, R, C) },
    { what: `rowSumSquares accumulate R${R} C${C}`, heavy, inputs: { x }, outputs: { out: prior }, run: (be, t) => be.rowSumSquares(t.out!, t.x!, R, C, true) },
  ];
}

const SHAPES: Array<[number, number, boolean]> = [[1, 1, false], [1, 13, false], [3, 1, false], [5, 67, false], [2, 130, false], [33, 37, false], [1, 1027, false], [7, 1027, true], [257, 67, true]];

// ---- (a) the reference against float64 ---------------------------------------------------

test('scaleColumns / columnDot / doraScale / rowSumSquares reference (f32) == float64 formulas', async () => {
  const rng = new Rng(801);
  const R = 37, N = 67;
  const x = randn(rng, R * N), g = randn(rng, N, 0.2, 1), bias = randn(rng, N), prior = randn(rng, R * N);
  const sc = await runCase(refF32, { what: '', inputs: { x, g, bias }, outputs: { out: prior }, run: (be, t) => be.scaleColumns(t.out!, t.x!, t.g!, R, N, { offset: -0.5, bias: t.bias!, accumulate: true }) });
  // four roundings of terms of magnitude ≲ 5
  assertClose(sc.out!, Array.from(prior, (p, i) => p + (g[i % N]! - 0.5) * x[i]! + bias[i % N]!), { atol: 16 * 5 * U32, rtol: 0, what: 'scaleColumns' });

  const a = randn(rng, R * N), b = randn(rng, R * N), scale = randn(rng, N), p2 = randn(rng, N);
  const cd = await runCase(refF32, { what: '', inputs: { a, b, scale }, outputs: { out: p2 }, run: (be, t) => be.columnDot(t.out!, t.a!, t.b!, R, N, { scale: t.scale!, accumulate: true }) });
  for (let j = 0; j < N; j++) {
    let s = 0, abs = 0;
    for (let r = 0; r < R; r++) { s += a[r * N + j]! * b[r * N + j]!; abs += Math.abs(a[r * N + j]! * b[r * N + j]!); }
    const want = p2[j]! + scale[j]! * s;
    // a sequential f32 sum of R products: |error| ≤ (R + 1)·U·Σ|a·b|, then ·scale and + prior
    const tol = (R + 3) * U32 * abs * Math.abs(scale[j]!) + 2 * U32 * Math.abs(want);
    assert.ok(Math.abs(cd.out![j]! - want) <= tol, `columnDot column ${j}: expected ${want}, got ${cd.out![j]} (tol ${tol})`);
  }

  const m = randn(rng, N), nsq = positive(rng, N);
  const ds = await runCase(refF32, { what: '', inputs: { m, nsq }, outputs: { g: N, inv: N }, run: (be, t) => be.doraScale(t.g!, t.inv!, t.m!, t.nsq!, N) });
  // √ then ÷, each correctly rounded: ≤ 1.5 ulp
  assertClose(ds.g!, Array.from(m, (v, j) => v / Math.sqrt(nsq[j]!)), { rtol: 4 * U32, what: 'doraScale g' });
  assertClose(ds.inv!, Array.from(nsq, (v) => 1 / Math.sqrt(v)), { rtol: 4 * U32, what: 'doraScale invNorm' });

  const rs = await runCase(refF32, { what: '', inputs: { x }, outputs: { out: Float32Array.from({ length: R }, (_, i) => i) }, run: (be, t) => be.rowSumSquares(t.out!, t.x!, R, N, true) });
  const want = Array.from({ length: R }, (_, r) => { let s = r; for (let c = 0; c < N; c++) s += x[r * N + c]! ** 2; return s; });
  // positive terms: relative error ≤ (N + 1)·U
  assertClose(rs.out!, want, { rtol: (N + 2) * U32, what: 'rowSumSquares accumulate' });
});

test('qRowSumSquares reference (f32) == Σ dequantize4bit(W)² in float64, every type / DQ / blocksize', async () => {
  const rng = new Rng(802);
  for (const qt of ['nf4', 'fp4', 'int4'] as const) for (const dq of [false, true]) for (const bs of [64, 128]) {
    const N = 9, K = 131; // K odd: rows start mid-byte, blocks straddle rows
    const { up, deq } = await quantWeight(rng, N, K, qt, bs, dq);
    const got = (await runCase(refF32, { what: '', outputs: { out: N }, quant: { w: up }, run: (be, t, q) => be.qRowSumSquares(t.out!, q.w!) })).out!;
    const want = Array.from({ length: N }, (_, n) => { let s = 0; for (let k = 0; k < K; k++) s += deq[n * K + k]! ** 2; return s; });
    assertClose(got, want, { rtol: (K + 2) * U32, what: `qRowSumSquares ${qt} bs${bs} dq=${dq}` });
  }
});

// ---- (c) parity -------------------------------------------------------------------------

test('scaleColumns parity: offset, bias, accumulate, in place, odd sizes, R = 1 (exact)', async () => {
  const rng = new Rng(803);
  for (const [R, N, heavy] of SHAPES) await parity(scaleColumnsCases(rng, R, N, heavy), EXACT);
});

test('columnDot parity: scale, accumulate, a = b, odd sizes, R = 1, long columns (exact)', async () => {
  const rng = new Rng(804);
  for (const [R, N, heavy] of [...SHAPES, [2003, 67, true], [300, 1027, true]] as Array<[number, number, boolean]>) {
    await parity(columnDotCases(rng, R, N, heavy), EXACT);
  }
});

test('doraScale parity (wasm bit for bit, webgpu to a few ulp)', async () => {
  const rng = new Rng(805);
  const cases = [1, 3, 7, 67, 1027, 15013].map((N) => doraScaleCase(rng, N));
  await parity(cases, SQRT_DIV);
  // f32x4.sqrt and f32x4.div are correctly rounded: wasm gives the reference's bits
  for (const { name, backend } of (await targets()).filter((b) => b.backend.name === 'wasm')) {
    for (const c of cases) {
      const want = await runCase(refF32, c), got = await runCase(backend, c);
      for (const o of ['g', 'inv']) assertBitsEqual(got[o]!, want[o]!, `${name} ${c.what}: ${o}`);
    }
  }
});

test('rowSumSquares parity: accumulate, odd row lengths, R = 1', async () => {
  const rng = new Rng(806);
  for (const [R, C, heavy] of [...SHAPES, [3, 9001, true]] as Array<[number, number, boolean]>) await parity(rowSumSquaresCases(rng, R, C, heavy), sumTol(C));
});

/** Weights for qRowSumSquares: every type × DQ × blocksize on odd shapes, and rows longer than one
 *  dequantized piece of the wasm kernel (4096). */
async function qWeights(rng: Rng): Promise<Array<{ up: QuantUpload; deq: Float32Array; heavy: boolean }>> {
  const out: Array<{ up: QuantUpload; deq: Float32Array; heavy: boolean }> = [];
  for (const qt of ['nf4', 'fp4', 'int4'] as const) for (const dq of [false, true]) for (const bs of [64, 128]) {
    for (const [N, K] of [[1, 7], [5, 130], [37, 67]] as const) out.push({ ...(await quantWeight(rng, N, K, qt, bs, dq)), heavy: false });
  }
  out.push({ ...(await quantWeight(rng, 3, 9001, 'nf4', 64, true)), heavy: true }, { ...(await quantWeight(rng, 2, 8199, 'fp4', 128, false)), heavy: true });
  return out;
}

test('qRowSumSquares parity: nf4 / fp4 / int4 × DQ × blocksizes 64, 128, K odd, long rows', async () => {
  const rng = new Rng(807);
  for (const { up, heavy } of await qWeights(rng)) {
    await parity([{ what: `qRowSumSquares ${up.label} [${up.N}, ${up.K}]`, heavy, outputs: { out: up.N }, quant: { w: up }, run: (be, t, q) => be.qRowSumSquares(t.out!, q.w!) }], sumTol(up.K));
  }
});

test('qRowSumSquares(W) == rowSumSquares(deq(W)) bit for bit on every backend (the same dequantization and order)', async () => {
  const rng = new Rng(808);
  const all = [{ name: 'reference', backend: refF32 as Backend }, ...(await targets())];
  for (const { up } of await qWeights(rng)) {
    const { N, K } = up;
    const eye = new Float32Array(N * N);
    for (let i = 0; i < N; i++) eye[i * N + i] = 1;
    for (const { name, backend } of all) {
      // deq(W) = qMatmulBackwardInput(I_N) exactly (one non-zero product per element: gemm.test.ts)
      const got = await runCase(backend, {
        what: '', inputs: { eye }, outputs: { w: N * K, viaQ: N, viaF: N }, quant: { w: up },
        run: (be, t, q) => {
          be.qMatmulBackwardInput(t.w!, t.eye!, q.w!, N);
          be.qRowSumSquares(t.viaQ!, q.w!);
          be.rowSumSquares(t.viaF!, t.w!, N, K);
        },
      });
      assertBitsEqual(got.viaQ!, got.viaF!, `${name} ${up.label} [${N}, ${K}]: qRowSumSquares vs rowSumSquares of the dequantized weight`);
    }
  }
});

// ---- wasm: any thread count gives the bits of one ----------------------------------------

test('wasm: the DoRA kernels give the same bits on 1, 2 and 3 threads (each call through the pool)', async () => {
  const one = await createWasmBackend({ threads: 1 });
  const pooled: Array<[string, Backend]> = [['2 threads', await createWasmBackend({ threads: 2 })], ['3 threads', await createWasmBackend({ threads: 3 })]];
  const rng = new Rng(809);
  const { up } = await quantWeight(rng, 301, 1001, 'nf4', 64, true);
  const R = 301, N = 1003, C = 1001, n = 100003;
  const x = randn(rng, R * N), y = randn(rng, R * N), g = randn(rng, N, 0.2, 1), bias = randn(rng, N), prior = randn(rng, R * N);
  const m = randn(rng, n), nsq = positive(rng, n), xr = randn(rng, R * C), pn = randn(rng, N);
  const calls: Array<{ name: string; c: Case }> = [
    { name: 'scaleColumns', c: { what: '', inputs: { x, g, bias }, outputs: { out: prior }, run: (be, t) => be.scaleColumns(t.out!, t.x!, t.g!, R, N, { offset: -1, bias: t.bias!, accumulate: true }) } },
    { name: 'columnDot', c: { what: '', inputs: { x, y, g }, outputs: { out: pn }, run: (be, t) => be.columnDot(t.out!, t.x!, t.y!, R, N, { scale: t.g!, accumulate: true }) } },
    { name: 'doraScale', c: { what: '', inputs: { m, nsq }, outputs: { g: n, inv: n }, run: (be, t) => be.doraScale(t.g!, t.inv!, t.m!, t.nsq!, n) } },
    { name: 'rowSumSquares', c: { what: '', inputs: { xr }, outputs: { out: R }, run: (be, t) => be.rowSumSquares(t.out!, t.xr!, R, C) } },
    { name: 'qRowSumSquares', c: { what: '', outputs: { out: up.N }, quant: { w: up }, run: (be, t, q) => be.qRowSumSquares(t.out!, q.w!) } },
  ];
  for (const { name, c } of calls) {
    const want = await runCase(one, c);
    for (const [tag, be] of pooled) {
      const pool = wasmInternals(be).pool!;
      const jobs = pool.jobs;
      const got = await runCase(be, c);
      assert.ok(pool.jobs > jobs, `${name}: ${tag}: the call ran on the caller alone (no job reached the pool)`);
      for (const o of Object.keys(want)) assertBitsEqual(got[o]!, want[o]!, `${name} ${tag}: ${o}`);
    }
  }
  for (const be of [one, ...pooled.map(([, b]) => b)]) await be.destroy();
});

// ---- webgpu: operands larger than one storage binding ------------------------------------

test('webgpu: scaleColumns, columnDot, rowSumSquares, doraScale split into row blocks / ranges (4 KiB bindings)', async () => {
  const be = await testWebGpu({ maxBindingBytes: 4096 });
  if (!be) return;
  const rng = new Rng(810);
  const stats = webgpuInternals(be).stats;
  const check = async (c: Case, tol: Tol, minDispatches: number) => {
    const want = await runCase(refF32, c);
    const d0 = stats.dispatches;
    const got = await runCase(be, c);
    for (const o of Object.keys(want)) assertClose(got[o]!, want[o]!, { atol: tol.atol, rtol: tol.rtol, what: `webgpu split ${c.what}: ${o}` });
    assert.ok(stats.dispatches - d0 >= minDispatches, `${c.what}: ${stats.dispatches - d0} dispatches — the tensors were not split (expected ≥ ${minDispatches})`);
  };
  // [40, 67] f32 = 10.7 KiB: three or more row blocks
  for (const c of scaleColumnsCases(rng, 40, 67)) await check(c, EXACT, 3);
  // the column sums run on across row blocks: still the reference's bits
  for (const c of columnDotCases(rng, 50, 37)) await check(c, EXACT, 2);
  for (const c of rowSumSquaresCases(rng, 30, 100)) await check(c, sumTol(100), 3);
  await check(doraScaleCase(rng, 3001), SQRT_DIV, 3);
  await be.destroy();
});

// ---- refusals -----------------------------------------------------------------------------

test('scaleColumns refuses an offset that is not finite', async () => {
  for (const { name, backend } of [{ name: 'reference', backend: refF32 as Backend }, ...(await targets())]) {
    const t: Tensor = put(backend, new Float32Array(4), 'x'), g = put(backend, new Float32Array(2), 'g');
    for (const offset of [NaN, Infinity, -Infinity]) assert.throws(() => backend.scaleColumns(t, t, g, 2, 2, { offset }), /offset .* must be a finite number/, `${name}: offset ${offset}`);
    backend.free(t);
    backend.free(g);
  }
});

test.run();
