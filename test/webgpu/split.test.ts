// Tensors larger than one storage binding (an lm_head [128256, 4096], the logits of a long
// batch, the MLP activations [4096, 11008] of a 7B model: over 128 MiB on adapters like
// lavapipe). The backend is created with an artificial 4 KiB binding limit so the split paths
// run on small tensors: every kernel must give the reference's results through several
// dispatches (embedding table rows, matmul M/N/K blocks in every layout, crossEntropy logit rows,
// qMatmul rows, rmsNorm and rope rows, attention sequences, element ranges, fill/copy), and what
// cannot split (a 4-bit weight or a single row larger than a binding) is refused by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../../src/backend/backend.ts';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
import { f32ToBf16, f32ToF16 } from '../../src/num.ts';
import { Rng, assertBitsEqual, assertClose } from '../helpers/index.ts';
import { U32, randn, refF32, runCase, type Case, type Host, type Tol } from '../kernels/harness.ts';
import type { AttentionShape, QuantUpload } from '../../src/backend/backend.ts';
import { quantize4bit } from '../../src/quant/quantize.ts';
import { WebqloraError } from '../../src/errors.ts';
import { testWebGpu } from './gpu.ts';

const LIMIT = 4096;
const be: Backend | null = await testWebGpu({ maxBindingBytes: LIMIT });

/** Runs c on the reference and on the split backend; returns the outputs and the dispatches it took. */
async function both(c: Case): Promise<{ want: Record<string, Host>; got: Record<string, Host>; dispatches: number }> {
  const want = await runCase(refF32, c);
  const stats = webgpuInternals(be!).stats;
  const d0 = stats.dispatches;
  const got = await runCase(be!, c);
  return { want, got, dispatches: stats.dispatches - d0 };
}

async function check(c: Case, tol: Tol | 'exact', minDispatches: number): Promise<void> {
  const { want, got, dispatches } = await both(c);
  for (const name of Object.keys(want)) {
    if (tol === 'exact') assertBitsEqual(got[name]!, want[name]!, `${c.what}: ${name}`);
    else assertClose(got[name]!, want[name]!, { atol: tol.atol, rtol: tol.rtol, what: `${c.what}: ${name}` });
  }
  assert.ok(dispatches >= minDispatches, `${c.what}: ${dispatches} dispatches — the tensors were not split (expected ≥ ${minDispatches})`);
}

const gemmTol = (K: number): Tol => ({ atol: 1.5 * 8 * U32 * K + 4 * U32, rtol: 1e-6, why: 'f32 sums in another order; K chunks add partial sums' });

test('embedding: an f32 / f16 / bf16 table larger than a binding is gathered block by block, exactly', async () => {
  if (!be) return;
  const rng = new Rng(1);
  const V = 211, C = 24, R = 9; // f32 table 20 KiB, half tables 10 KiB
  for (const type of ['f32', 'f16', 'bf16'] as const) {
    const vals = randn(rng, V * C);
    const table = type === 'f32' ? vals : { type, data: Uint16Array.from(vals, type === 'f16' ? f32ToF16 : f32ToBf16) };
    const ids = Int32Array.from({ length: R }, (_, i) => (i === 0 ? V - 1 : i === 1 ? 0 : rng.int(V)));
    await check({ what: `embedding ${type}`, inputs: { table, ids }, outputs: { out: R * C }, run: (b, t) => b.embedding(t.out!, t.table!, t.ids!, R, C) }, 'exact', 2);
  }
});

test('matmul: a, b or out larger than a binding, every layout, f16 b, alpha, bias, accumulate', async () => {
  if (!be) return;
  const rng = new Rng(2);
  // logits = h·Eᵀ (b and out split), dh = dlogits·E (a and b split along K), and the TN / TT layouts
  for (const [M, N, K] of [[9, 300, 24], [9, 24, 300], [40, 7, 130], [3, 130, 40]] as const) {
    for (const [transA, transB] of [[false, true], [false, false], [true, false], [true, true]] as const) {
      const a = randn(rng, M * K), b = randn(rng, N * K), bias = randn(rng, N), prior = randn(rng, M * N);
      const tag = `${M}x${N}x${K} transA=${transA} transB=${transB}`;
      await check({ what: `matmul ${tag}`, inputs: { a, b }, outputs: { out: M * N }, run: (x, t) => x.matmul(t.out!, t.a!, t.b!, M, N, K, { transA, transB }) }, gemmTol(K), 1);
      await check({ what: `matmul ${tag} alpha+bias`, inputs: { a, b, bias }, outputs: { out: M * N }, run: (x, t) => x.matmul(t.out!, t.a!, t.b!, M, N, K, { transA, transB, alpha: 0.5, bias: t.bias! }) }, gemmTol(K), 1);
      await check({ what: `matmul ${tag} accumulate`, inputs: { a, b }, outputs: { out: prior }, run: (x, t) => x.matmul(t.out!, t.a!, t.b!, M, N, K, { transA, transB, alpha: -1.5, accumulate: true }) }, gemmTol(K), 1);
    }
  }
  // half-precision lm_head: [V=300, C=24] f16 and bf16 (14 KiB), forward and backward layouts
  for (const type of ['f16', 'bf16'] as const) {
    const M = 9, V = 300, C = 24;
    const bits = Uint16Array.from(randn(rng, V * C), type === 'f16' ? f32ToF16 : f32ToBf16);
    const h = randn(rng, M * C), dl = randn(rng, M * V);
    await check({ what: `logits = h·Eᵀ, E ${type}`, inputs: { a: h, b: { type, data: bits } }, outputs: { out: M * V }, run: (x, t) => x.matmul(t.out!, t.a!, t.b!, M, V, C, { transB: true }) }, gemmTol(C), 3);
    await check({ what: `dh = dlogits·E, E ${type}`, inputs: { a: dl, b: { type, data: bits } }, outputs: { out: M * C }, run: (x, t) => x.matmul(t.out!, t.a!, t.b!, M, C, V) }, gemmTol(V), 3);
  }
});

test('crossEntropy: logits larger than a binding, loss and in-place gradient, ignored rows', async () => {
  if (!be) return;
  const rng = new Rng(3);
  const R = 11, V = 300;
  const logits = randn(rng, R * V, 3, 20);
  const tg = Int32Array.from({ length: R }, (_, r) => (r % 4 === 3 ? -100 : rng.int(V)));
  await check({ what: 'crossEntropy', inputs: { tg }, outputs: { losses: R, logits }, run: (x, t) => x.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, 0.125) },
    { atol: 1.5e-5, rtol: 2e-5, why: 'as test/kernels/cross_entropy.test.ts' }, 3);
  const raw = randn(rng, R * V, 40);
  await check({ what: 'crossEntropy softcap', inputs: { tg }, outputs: { losses: R, logits: raw }, run: (x, t) => x.crossEntropy(t.losses!, t.logits!, t.tg!, R, V, 0.125, 30) },
    { atol: 6e-6, rtol: 2e-5, why: 'as test/kernels/cross_entropy.test.ts (softcap parity)' }, 3);
});

test('elementwise kernels over vectors larger than a binding (the dropout mask keeps its global index)', async () => {
  if (!be) return;
  const rng = new Rng(4);
  const n = 3001;
  const x = randn(rng, n), y = randn(rng, n), z = randn(rng, n), prior = randn(rng, n);
  await check({ what: 'add', inputs: { x }, outputs: { out: prior }, run: (b, t) => b.add(t.out!, t.x!, n, -0.37) }, { atol: 8 * U32, rtol: 2 * U32, why: 'one product, one add' }, 3);
  await check({ what: 'dropout', inputs: { x }, outputs: { out: n }, run: (b, t) => b.dropout(t.out!, t.x!, n, 0.3, 77) }, 'exact', 3);
  await check({ what: 'dropout in place', outputs: { x: prior }, run: (b, t) => b.dropout(t.x!, t.x!, n, 0.3, 78) }, 'exact', 3);
  await check({ what: 'swiglu', inputs: { x, y }, outputs: { out: n }, run: (b, t) => b.swiglu(t.out!, t.x!, t.y!, n) }, { atol: 1e-7, rtol: 1e-6, why: 'as swiglu.test.ts' }, 3);
  await check({ what: 'swigluBackward', inputs: { x, y, z }, outputs: { dg: n, du: n }, run: (b, t) => b.swigluBackward(t.dg!, t.du!, t.z!, t.x!, t.y!, n) }, { atol: 1e-6, rtol: 2e-6, why: 'as swiglu.test.ts' }, 3);
  await check({ what: 'geglu', inputs: { x, y }, outputs: { out: n }, run: (b, t) => b.geglu(t.out!, t.x!, t.y!, n) }, { atol: 1e-6, rtol: 1e-6, why: 'as geglu.test.ts' }, 3);
  await check({ what: 'gegluBackward', inputs: { x, y, z }, outputs: { dg: n, du: n }, run: (b, t) => b.gegluBackward(t.dg!, t.du!, t.z!, t.x!, t.y!, n) }, { atol: 4e-6, rtol: 4e-6, why: 'as geglu.test.ts' }, 3);
  await check({ what: 'softcap', outputs: { x: Float32Array.from(prior, (v) => 3 * v) }, run: (b, t) => b.softcap(t.x!, n, 2.5) }, { atol: 1e-30, rtol: 8 * U32, why: 'as softcap.test.ts' }, 3);
  const params = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3, gradScale: 0.5 };
  await check({ what: 'adamwStep', inputs: { g: x }, outputs: { p: y, m: Float32Array.from(z, (v) => v * 0.1), v: Float32Array.from(z, (v) => v * v * 0.01) }, run: (b, t) => b.adamwStep(t.p!, t.g!, t.m!, t.v!, n, params) },
    { atol: 1e-7, rtol: 1e-6, why: 'as optim.test.ts' }, 3);
  await check({ what: 'sgdStep', inputs: { g: x }, outputs: { p: y }, run: (b, t) => b.sgdStep(t.p!, t.g!, n, 0.1, 0.3) }, { atol: 1e-7, rtol: 4 * U32, why: 'as optim.test.ts' }, 3);
});

test('fill and copy across a large u8 / f16 buffer at unaligned offsets', async () => {
  if (!be) return;
  const rng = new Rng(5);
  const bytes = Uint8Array.from({ length: 10007 }, () => rng.int(256));
  const halves = Uint16Array.from({ length: 5003 }, () => rng.int(65536));
  await check({ what: 'u8 fill + copy', inputs: { src: bytes }, outputs: { dst: new Uint8Array(10007).fill(7) }, run: (b, t) => { b.copy(t.dst!, 3, t.src!, 1, 9001); b.fill(t.dst!, 200, 9500, 499); } }, 'exact', 3);
  await check({ what: 'u8 copy within one buffer', outputs: { dst: bytes.slice() }, run: (b, t) => b.copy(t.dst!, 5, t.dst!, 2, 9000) }, 'exact', 1);
  // f16 outputs by hand (runCase types outputs from plain arrays)
  const run = async (b: Backend) => {
    const src = b.alloc('f16', 5003, 'src'), dst = b.alloc('f16', 5003, 'dst');
    b.write(src, halves);
    b.fill(dst, 0);
    b.copy(dst, 1, src, 0, 5000);
    b.fill(dst, -2.5, 4001, 1001);
    b.write(dst, Uint16Array.of(0x3c00, 0xbc00, 0x7e00), 3);
    const out = (await b.read(dst)) as Uint16Array;
    b.free(src);
    b.free(dst);
    return out;
  };
  assertBitsEqual(await run(be), await run(refF32), 'f16 fill + copy + unaligned write');
});

test('qMatmul / qMatmulBackwardInput with activations larger than a binding (row blocks)', async () => {
  if (!be) return;
  const rng = new Rng(6);
  const M = 70, N = 40, K = 48; // x 13 KiB, y 11 KiB; W (nf4 + dq) ≈ 1 KiB
  const q = await quantize4bit(randn(rng, N * K), { quantType: 'nf4', blocksize: 64, doubleQuant: true, shape: [N, K] });
  const up: QuantUpload = { N, K, blocksize: 64, quantType: 'nf4', packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: 'W' };
  const x = randn(rng, M * K), dy = randn(rng, M * N), bias = randn(rng, N), px = randn(rng, M * K);
  await check({ what: 'qMatmul', inputs: { x, bias }, outputs: { y: M * N }, quant: { w: up }, run: (b, t, w) => b.qMatmul(t.y!, t.x!, w.w!, M, { alpha: 0.5, bias: t.bias! }) }, gemmTol(K), 3);
  await check({ what: 'qMatmulBackwardInput', inputs: { dy }, outputs: { dx: px }, quant: { w: up }, run: (b, t, w) => b.qMatmulBackwardInput(t.dx!, t.dy!, w.w!, M, { accumulate: true }) }, gemmTol(N), 3);
});

test('rmsNorm / rmsNormBackward / rope / ropeBackward over row blocks', async () => {
  if (!be) return;
  const rng = new Rng(7);
  const R = 40, C = 64, T = 9, nh = 4, D = 16; // 10 KiB rows
  const x = randn(rng, R * C), w = randn(rng, C, 0.5, 1), dy = randn(rng, R * C), prior = randn(rng, R * C);
  const rstd = (await runCase(refF32, { what: '', inputs: { x, w }, outputs: { o: R * C, r: R }, run: (b, t) => b.rmsNorm(t.o!, t.r!, t.x!, t.w!, R, C, 1e-5) })).r! as Float32Array;
  await check({ what: 'rmsNorm', inputs: { x, w }, outputs: { out: R * C, rstd: R }, run: (b, t) => b.rmsNorm(t.out!, t.rstd!, t.x!, t.w!, R, C, 1e-5) }, { atol: 1e-7, rtol: 4e-6, why: 'as rms_norm.test.ts' }, 3);
  await check({ what: 'rmsNormBackward', inputs: { x, w, dy, rstd }, outputs: { dx: prior }, run: (b, t) => b.rmsNormBackward(t.dx!, t.dy!, t.x!, t.w!, t.rstd!, R, C, true) }, { atol: 2e-6, rtol: 1e-5, why: 'as rms_norm.test.ts' }, 3);
  const half = D / 2, P = 20;
  const cos = Float32Array.from({ length: P * half }, (_, i) => Math.cos(i * 0.37)), sin = Float32Array.from({ length: P * half }, (_, i) => Math.sin(i * 0.37));
  for (const which of ['rope', 'ropeBackward'] as const) {
    await check({ what: which, inputs: { cos, sin }, outputs: { x: randn(rng, R * nh * D) }, run: (b, t) => b[which](t.x!, { cos: t.cos!, sin: t.sin! }, R, T, nh, D, 3) },
      { atol: 16 * U32, rtol: 4 * U32, why: 'as rope.test.ts' }, 3);
  }
});

test('attention / attentionBackward over blocks of sequences', async () => {
  if (!be) return;
  const rng = new Rng(8);
  const s: AttentionShape = { B: 5, T: 12, S: 12, H: 4, KVH: 2, D: 16, pos0: 0, kvStride: 14 }; // one sequence of q: 3 KiB
  const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
  const kv = () => { const a = randn(rng, nkv); for (let b = 0; b < s.B; b++) a.fill(NaN, (b * s.kvStride + s.S) * s.KVH * s.D, (b + 1) * s.kvStride * s.KVH * s.D); return a; };
  const q = randn(rng, nq, 1.5), k = kv(), v = kv(), dout = randn(rng, nq);
  const fwd = await runCase(refF32, { what: '', inputs: { q, k, v }, outputs: { out: nq, lse: s.B * s.H * s.T }, run: (b, t) => b.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s) });
  await check({ what: 'attention', inputs: { q, k, v }, outputs: { out: nq, lse: s.B * s.H * s.T }, run: (b, t) => b.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s) },
    { atol: 1e-5, rtol: 1e-5, why: 'as attention.test.ts' }, 3);
  await check({
    what: 'attentionBackward', inputs: { q, k, v, dout, out: fwd.out!, lse: fwd.lse! }, outputs: { dq: nq, dk: nkv, dv: nkv },
    run: (b, t) => b.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.out!, t.lse!, s),
  }, { atol: 2e-5, rtol: 2e-5, why: 'as attention.test.ts' }, 6);
  await check({ what: 'sumSquares', inputs: { q }, outputs: { o: Float32Array.of(2) }, run: (b, t) => b.sumSquares(t.o!, t.q!, nq, true) }, { atol: 0, rtol: 16 * Math.sqrt(nq) * U32, why: 'as optim.test.ts' }, 3);
});

test('what cannot split is refused by name: a 4-bit weight or one row larger than a binding', async () => {
  if (!be) return;
  const N = 128, K = 128; // 8 KiB of packed codes
  const up: QuantUpload = { N, K, blocksize: 64, quantType: 'nf4', packed: new Uint8Array(N * K / 2), quantMap: new Float32Array(16), absmax: new Float32Array(N * K / 64), dq: null, label: 'layers.0.mlp.up_proj' };
  assert.throws(() => be.uploadQuant(up), (e: unknown) => e instanceof WebqloraError && /layers\.0\.mlp\.up_proj: a 4-bit weight .* exceeds this GPU's largest storage binding/.test((e as Error).message));
  const C = 2048; // one 8 KiB row
  const x = be.alloc('f32', 2 * C, 'x'), out = be.alloc('f32', 2 * C, 'out'), w = be.alloc('f32', C, 'w'), rstd = be.alloc('f32', 2, 'rstd');
  assert.throws(() => be.rmsNorm(out, rstd, x, w, 2, C, 1e-5), /rmsNorm.*storage binding/);
  for (const t of [x, out, w, rstd]) be.free(t);
  await be.flush();
});

test.run();
