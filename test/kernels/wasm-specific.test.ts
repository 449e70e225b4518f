// What the shared parity tests cannot see in the WASM backend:
//  - every ranged kernel run as two or three disjoint work ranges (each with its own scratch
//    area, as the worker threads of src/backend/wasm/pool.ts do) gives the same bits as one
//    full-range call (test/wasm/threads.test.ts runs them through real workers);
//  - dropout masks are bit-identical to src/backend/rng.ts hash32 (any seed, any range start);
//  - the optimized GEMMs agree with their plain *_v1 versions on every layout and edge shape;
//  - f16 → f32 widening is exact for all 65536 halves;
//  - memory growth during alloc keeps the data already written (views are re-created);
//  - the refusals the reference makes (matmul bias + accumulate, attention pos0 + T > S), and
//    use after destroy;
//  - the memory estimate's CountingBackend allocates exactly what this backend allocates.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual, assertClose } from '../helpers/index.ts';
import { createWasmBackend, wasmBackendInfo, wasmInternals, type WasmInternals } from '../../src/backend/wasm/index.ts';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { CountingBackend } from '../../src/backend/counting.ts';
import type { AttentionShape, Backend, QuantWeight, Tensor } from '../../src/backend/backend.ts';
import { dropScale, dropThreshold, hash32 } from '../../src/backend/rng.ts';
import { quantize4bit } from '../../src/quant/quantize.ts';
import { f16ToF32 } from '../../src/num.ts';
import type { QuantType } from '../../src/quant/types.ts';

const U32 = 2 ** -24;

// Two threads' worth of scratch: split runs use scratch(0) and scratch(1) alternately.
const be: Backend = await createWasmBackend({ threads: 2 });
const I: WasmInternals = wasmInternals(be);
const K_ = I.kernels.k;
const P = (t: Tensor) => I.ptr(t);

function put(data: Float32Array | Int32Array | Uint8Array | Uint16Array, label: string, type?: 'f16' | 'bf16'): Tensor {
  const t = be.alloc(type ?? (data instanceof Float32Array ? 'f32' : data instanceof Int32Array ? 'i32' : data instanceof Uint8Array ? 'u8' : 'f16'), data.length, label);
  be.write(t, data);
  return t;
}
function out(n: number, label: string): Tensor {
  const t = be.alloc('f32', n, label);
  be.fill(t, NaN);
  return t;
}
async function readF(t: Tensor): Promise<Float32Array> {
  return (await be.read(t)) as Float32Array;
}
/** [0, n) cut into disjoint ranges at the given interior points. */
function cuts(n: number, at: number[]): Array<[number, number]> {
  const pts = [0, ...at.filter((x) => x > 0 && x < n), n];
  return pts.slice(1).map((e, i) => [pts[i]!, e]);
}

/**
 * Runs `kernel(lo, hi, scratch)` once over [0, n) and once split at `at` into the same outputs
 * (restored to their initial contents in between); the results must be bit-identical.
 */
async function splitEqual(what: string, outputs: Tensor[], n: number, at: number[], kernel: (lo: number, hi: number, scratch: number) => void): Promise<void> {
  const init = await Promise.all(outputs.map((t) => be.read(t)));
  kernel(0, n, I.scratch(0));
  const full = await Promise.all(outputs.map((t) => be.read(t)));
  outputs.forEach((t, i) => be.write(t, init[i]!));
  cuts(n, at).forEach(([lo, hi], i) => kernel(lo, hi, I.scratch(i % 2)));
  const split = await Promise.all(outputs.map((t) => be.read(t)));
  outputs.forEach((t, i) => assertBitsEqual(split[i]!, full[i]!, `${what}: output ${i} (${t.label}) split at ${at.join(',')}`));
}

function halves(rng: Rng, n: number, type: 'f16' | 'bf16'): Uint16Array {
  // random finite halves of moderate magnitude: normal(0,1) rounded through the type's bits
  const h = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const x = rng.normal();
    if (type === 'bf16') h[i] = new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16;
    else {
      const e = Math.max(-14, Math.min(15, Math.floor(Math.log2(Math.abs(x) || 1))));
      const m = Math.min(1023, Math.round((Math.abs(x) / 2 ** e - 1) * 1024));
      h[i] = (x < 0 ? 0x8000 : 0) | ((e + 15) << 10) | Math.max(0, m);
    }
  }
  return h;
}

async function quantW(rng: Rng, N: number, K: number, quantType: QuantType, blocksize: number, doubleQuant: boolean): Promise<QuantWeight> {
  const q = await quantize4bit(rng.f32(N * K, 0.5), { quantType, blocksize, doubleQuant, shape: [N, K] });
  return be.uploadQuant({ N, K, blocksize, quantType, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: `W ${quantType} bs${blocksize}${doubleQuant ? ' dq' : ''} [${N},${K}]` });
}

// ---- split work ranges ------------------------------------------------------------------

test('split work ranges == full range: matmul (rows and columns, every layout, f16/bf16 b)', async () => {
  const rng = new Rng(1);
  const M = 23, N = 150, K = 300;
  const a = put(rng.f32(M * K), 'a'), aT = put(rng.f32(K * M), 'aT');
  const b = put(rng.f32(K * N), 'b'), bias = put(rng.f32(N), 'bias');
  const bh = put(halves(rng, K * N, 'f16'), 'b f16', 'f16'), bb = put(halves(rng, K * N, 'bf16'), 'b bf16', 'bf16');
  const o = out(M * N, 'out');
  for (const [ta, tb] of [[0, 0], [0, 1], [1, 0], [1, 1]] as const) {
    for (const [bt, bm] of [[0, b], [1, bh], [2, bb]] as const) {
      if (ta && bt) continue;
      const A = ta ? aT : a;
      for (const [acc, pb] of [[0, 0], [0, P(bias)], [1, P(bias)]] as const) {
        const what = `matmul transA ${ta} transB ${tb} bt ${bt} acc ${acc} bias ${pb ? 1 : 0}`;
        be.fill(o, 0.25);
        // rows, with parts below the 4-row tile (the path depends on M, never on the range)
        await splitEqual(`${what} rows`, [o], M, [2, 13, 20], (lo, hi, s) => K_.matmul(P(o), P(A), P(bm), M, N, K, ta, tb, bt, 0.75, acc, pb, s, lo, hi, 0, N));
        await splitEqual(`${what} cols`, [o], N, [7, 64, 129], (lo, hi, s) => K_.matmul(P(o), P(A), P(bm), M, N, K, ta, tb, bt, 0.75, acc, pb, s, 0, M, lo, hi));
      }
    }
  }
  // the decoding path (M < 4) split by columns
  await splitEqual('matmul NT M=2 cols', [o], N, [3, 77], (lo, hi, s) => K_.matmul(P(o), P(a), P(b), 2, N, K, 0, 1, 0, 1, 0, 0, s, 0, 2, lo, hi));
});

test('split work ranges == full range: q_matmul, q_matmul_backward_input (blocks straddling rows)', async () => {
  const rng = new Rng(2);
  for (const [qt, bs, dq] of [['nf4', 64, true], ['fp4', 128, false], ['int4', 64, false]] as const) {
    const M = 13, N = 70, K = 99; // K odd: rows start mid-byte and mid-block
    const w = await quantW(rng, N, K, qt, bs, dq);
    const d = I.desc(w);
    const x = put(rng.f32(M * K), 'x'), dy = put(rng.f32(M * N), 'dy'), bias = put(rng.f32(N), 'bias');
    const y = out(M * N, 'y'), dx = out(M * K, 'dx');
    const tag = `${qt} bs${bs} dq ${dq}`;
    await splitEqual(`q_matmul ${tag} rows`, [y], M, [4, 9], (lo, hi, s) => K_.q_matmul(P(y), P(x), d, M, 0.5, 0, P(bias), s, lo, hi, 0, N));
    await splitEqual(`q_matmul ${tag} cols`, [y], N, [5, 33], (lo, hi, s) => K_.q_matmul(P(y), P(x), d, M, 0.5, 0, P(bias), s, 0, M, lo, hi));
    await splitEqual(`q_matmul M=1 ${tag} cols`, [y], N, [5, 33], (lo, hi, s) => K_.q_matmul(P(y), P(x), d, 1, 1, 1, 0, s, 0, 1, lo, hi));
    be.fill(dx, 0.5);
    await splitEqual(`q_matmul_backward_input ${tag} rows`, [dx], M, [4, 8], (lo, hi, s) => K_.q_matmul_backward_input(P(dx), P(dy), d, M, 2, 1, s, lo, hi, 0, K));
    await splitEqual(`q_matmul_backward_input ${tag} cols`, [dx], K, [9, 50], (lo, hi, s) => K_.q_matmul_backward_input(P(dx), P(dy), d, M, 2, 1, s, 0, M, lo, hi));
    be.freeQuant(w);
  }
});

test('split work ranges == full range: norms, rope, attention, elementwise, loss, optimizer', async () => {
  const rng = new Rng(3);
  const R = 11, C = 37;
  const x = put(rng.f32(R * C), 'x'), w = put(rng.f32(C), 'w'), dy = put(rng.f32(R * C), 'dy');
  const y = out(R * C, 'y'), rstd = out(R, 'rstd'), dx = out(R * C, 'dx');
  await splitEqual('rms_norm', [y, rstd], R, [3, 7], (lo, hi) => K_.rms_norm(P(y), P(rstd), P(x), P(w), R, C, 1e-5, lo, hi));
  be.fill(dx, 1);
  await splitEqual('rms_norm_backward', [dx], R, [1, 6], (lo, hi) => K_.rms_norm_backward(P(dx), P(dy), P(x), P(w), P(rstd), R, C, 1, lo, hi));

  const T = 5, nh = 3, D = 12, pos0 = 4;
  const cos = put(rng.f32(20 * D / 2), 'cos'), sin = put(rng.f32(20 * D / 2), 'sin');
  const xr = put(rng.f32(2 * T * nh * D), 'xr');
  await splitEqual('rope', [xr], 2 * T, [3, 6], (lo, hi) => K_.rope(P(xr), P(cos), P(sin), 2 * T, T, nh, D, pos0, 0, lo, hi));
  await splitEqual('rope_backward', [xr], 2 * T, [4], (lo, hi) => K_.rope_backward(P(xr), P(cos), P(sin), 2 * T, T, nh, D, pos0, 0, lo, hi));
  // packed rows (docStart): examples [2, 3] and [1, 1, 3]
  const dsr = put(new Int32Array([0, 0, 2, 2, 2, /**/ 0, 1, 2, 2, 2]), 'docStart');
  await splitEqual('rope docStart', [xr], 2 * T, [3, 6], (lo, hi) => K_.rope(P(xr), P(cos), P(sin), 2 * T, T, nh, D, pos0, P(dsr), lo, hi));

  // attention: B 2, T 7, H 6, KVH 2, D 20 (tail after the f32x4 lanes), kvStride 9 > S = 7
  {
    const B = 2, T = 7, S = 7, H = 6, KVH = 2, D = 20, kvStride = 9;
    const nq = B * T * H * D, nkv = B * kvStride * KVH * D;
    const q = put(rng.f32(nq), 'q'), k = put(rng.f32(nkv), 'k'), v = put(rng.f32(nkv), 'v'), dout = put(rng.f32(nq), 'dout');
    const o = out(nq, 'out'), lse = out(B * H * T, 'lse');
    const sc = Math.fround(1 / Math.sqrt(D)); // scale, then softcap 0, window 0, docStart 0 (none)
    await splitEqual('attention', [o, lse], B * H, [1, 5, 8], (lo, hi, s) => K_.attention(P(o), P(lse), P(q), P(k), P(v), B, T, S, H, KVH, D, 0, kvStride, sc, 0, 0, 0, s, lo, hi));
    const dq = out(nq, 'dq'), dk = out(nkv, 'dk'), dv = out(nkv, 'dv');
    await splitEqual('attention_backward', [dq, dk, dv], B * KVH, [1, 3], (lo, hi, s) =>
      K_.attention_backward(P(dq), P(dk), P(dv), P(dout), P(q), P(k), P(v), P(o), P(lse), B, T, S, H, KVH, D, 0, kvStride, sc, 0, 0, 0, s, lo, hi));
    // packed rows (docStart): examples [3, 4] and [1, 5, 1]
    const ds = put(new Int32Array([0, 0, 0, 3, 3, 3, 3, /**/ 0, 1, 1, 1, 1, 1, 6]), 'docStart');
    await splitEqual('attention docStart', [o, lse], B * H, [1, 5, 8], (lo, hi, s) => K_.attention(P(o), P(lse), P(q), P(k), P(v), B, T, S, H, KVH, D, 0, kvStride, sc, 0, 0, P(ds), s, lo, hi));
    await splitEqual('attention_backward docStart', [dq, dk, dv], B * KVH, [1, 3], (lo, hi, s) =>
      K_.attention_backward(P(dq), P(dk), P(dv), P(dout), P(q), P(k), P(v), P(o), P(lse), B, T, S, H, KVH, D, 0, kvStride, sc, 0, 0, P(ds), s, lo, hi));
    // with a KV cache: 3 new queries at pos0 4 over S = 7 cached keys
    const o2 = out(B * 3 * H * D, 'out2'), lse2 = out(B * H * 3, 'lse2');
    await splitEqual('attention pos0 4', [o2, lse2], B * H, [7], (lo, hi, s) => K_.attention(P(o2), P(lse2), P(q), P(k), P(v), B, 3, S, H, KVH, D, 4, kvStride, sc, 0, 0, 0, s, lo, hi));
  }

  const n = 103;
  const a = put(rng.f32(n), 'a'), g = put(rng.f32(n), 'g'), u = put(rng.f32(n), 'u'), o = out(n, 'o'), o2 = out(n, 'o2');
  await splitEqual('add', [o], n, [5, 50], (lo, hi) => K_.add(P(o), P(a), -0.5, lo, hi));
  await splitEqual('swiglu', [o], n, [3, 98], (lo, hi) => K_.swiglu(P(o), P(g), P(u), lo, hi));
  await splitEqual('swiglu_backward', [o, o2], n, [1, 64], (lo, hi) => K_.swiglu_backward(P(o), P(o2), P(a), P(g), P(u), lo, hi));
  await splitEqual('geglu', [o], n, [3, 98], (lo, hi) => K_.geglu(P(o), P(g), P(u), lo, hi));
  await splitEqual('geglu_backward', [o, o2], n, [1, 64], (lo, hi) => K_.geglu_backward(P(o), P(o2), P(a), P(g), P(u), lo, hi));
  await splitEqual('softcap', [o], n, [5, 50], (lo, hi) => K_.softcap(P(o), 0.75, lo, hi));
  await splitEqual('dropout', [o], n, [1, 2, 3, 41], (lo, hi) => K_.dropout(P(o), P(a), dropThreshold(0.3), dropScale(0.3), 0xdeadbeef, lo, hi));

  const V = 50;
  const table = put(rng.f32(V * C), 'table'), ids = put(Int32Array.from({ length: R }, () => rng.int(V)), 'ids');
  await splitEqual('embedding', [y], R, [2, 9], (lo, hi) => K_.embedding(P(y), P(table), P(ids), C, 0, lo, hi));
  const logits = put(rng.f32(R * V, 3), 'logits'), losses = out(R, 'losses');
  const targets = put(Int32Array.from({ length: R }, (_, i) => (i === 4 ? -100 : rng.int(V))), 'targets');
  await splitEqual('cross_entropy', [losses, logits], R, [4, 5], (lo, hi) => K_.cross_entropy(P(losses), P(logits), P(targets), V, 1, 1 / 10, lo, hi));
  for (const grad of [0, 1]) {
    await splitEqual(`cross_entropy_softcap grad ${grad}`, [losses, logits], R, [4, 5], (lo, hi) => K_.cross_entropy_softcap(P(losses), P(logits), P(targets), V, grad, 1 / 10, 2.5, lo, hi));
  }

  const pm = put(rng.f32(n), 'p'), m = put(rng.f32(n, 0.1), 'm'), vv = put(rng.uniform(n, 0, 0.01), 'v');
  await splitEqual('adamw_step', [pm, m, vv], n, [7, 66], (lo, hi) => K_.adamw_step(P(pm), P(a), P(m), P(vv), 1e-3, 0.9, 0.999, 0.1, 0.001, 1e-8, 1 - 1e-5, 0.19, 0.002, 0.5, lo, hi));
  await splitEqual('sgd_step', [pm], n, [9], (lo, hi) => K_.sgd_step(P(pm), P(a), 0.01, 2, lo, hi));

  // sum_squares_v1: each range writes a partial sum; the partials add up to the full sum
  const big = 10007;
  const xs = put(rng.f32(big), 'xs'), parts = out(3, 'parts'), whole = out(1, 'whole');
  K_.sum_squares_v1(P(whole), P(xs), 0, 0, big);
  cuts(big, [1001, 5003]).forEach(([lo, hi], i) => K_.sum_squares_v1(P(parts) + 4 * i, P(xs), 0, lo, hi));
  const pr = await readF(parts), wh = (await readF(whole))[0]!;
  assertClose([pr[0]! + pr[1]! + pr[2]!], [wh], { rtol: 4 * U32, what: 'sum_squares_v1 partials' });
  // sum_squares (Backend.sumSquares): f64 sums of fixed chunks, any chunk range gives the same
  // partials; one chunk is exactly sum_squares_v1 before its f32 rounding
  const chunk = 1024, nch = Math.ceil(big / chunk);
  const p64 = be.alloc('f32', 2 * nch, 'partials'), p64b = be.alloc('f32', 2 * nch, 'partials b');
  K_.sum_squares(P(p64), P(xs), big, chunk, 0, nch);
  cuts(nch, [1, 7]).forEach(([lo, hi]) => K_.sum_squares(P(p64b), P(xs), big, chunk, lo, hi));
  assertBitsEqual(await readF(p64b), await readF(p64), 'sum_squares split over chunks');
  const one = be.alloc('f32', 2, 'one chunk');
  K_.sum_squares(P(one), P(xs), big, big, 0, 1);
  const f64 = new Float64Array((await readF(one)).buffer);
  assert.is(Math.fround(f64[0]!), wh, 'one chunk == sum_squares_v1');
});

// ---- dropout / rng ----------------------------------------------------------------------

test('dropout: hash32 and masks bit-identical to src/backend/rng.ts', async () => {
  const n = 4099;
  const h = out(n, 'h');
  for (const seed of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x9e3779b9, 12345]) {
    for (const i0 of [0, 3, 0xfffffff0]) {
      K_.hash32_fill(P(h), seed, i0, n);
      const got = new Uint32Array(((await be.read(h)) as Float32Array).buffer);
      for (let i = 0; i < n; i++) {
        const want = hash32(seed, (i0 + i) >>> 0);
        if (got[i] !== want) assert.unreachable(`hash32(${seed}, ${(i0 + i) >>> 0}): expected ${want}, got ${got[i]}`);
      }
    }
  }
  const rng = new Rng(4);
  const xv = rng.f32(n);
  const x = put(xv, 'x'), o = out(n, 'o');
  for (const p of [0, 0.05, 0.1, 0.5, 0.9]) {
    for (const seed of [7, 0xfedcba98]) {
      // a range that starts at an odd index exercises the four-lane index setup
      be.fill(o, NaN);
      K_.dropout(P(o), P(x), dropThreshold(p), dropScale(p), seed >>> 0, 0, 5);
      K_.dropout(P(o), P(x), dropThreshold(p), dropScale(p), seed >>> 0, 5, n);
      const want = new Float32Array(n);
      const thr = dropThreshold(p), sc = dropScale(p);
      let kept = 0;
      for (let i = 0; i < n; i++) if (hash32(seed, i) >= thr) { want[i] = Math.fround(xv[i]! * sc); kept++; }
      assertBitsEqual(await readF(o), want, `dropout p ${p} seed ${seed}`);
      assert.ok(Math.abs(kept / n - (1 - p)) < 0.05, `dropout p ${p}: kept ${kept} of ${n}`);
      // through the Backend API too
      be.dropout(o, x, n, p, seed);
      assertBitsEqual(await readF(o), want, `Backend.dropout p ${p} seed ${seed}`);
    }
  }
});

// ---- v1 vs optimized ----------------------------------------------------------------------

test('matmul == matmul_v1: every layout, alpha / accumulate / bias, f16 and bf16 b, edge shapes', async () => {
  const rng = new Rng(5);
  const shapes: Array<[number, number, number]> = [[1, 1, 1], [1, 9, 300], [3, 7, 5], [4, 8, 256], [5, 9, 257], [17, 130, 33], [64, 129, 520], [2, 5, 0], [6, 3, 0]];
  for (const [M, N, K] of shapes) {
    const a = put(rng.f32(M * K), 'a'), bias = put(rng.f32(N), 'bias'), prior = rng.f32(M * N);
    const bs: Array<[number, Tensor]> = [[0, put(rng.f32(K * N), 'b')], [1, put(halves(rng, K * N, 'f16'), 'bh', 'f16')], [2, put(halves(rng, K * N, 'bf16'), 'bb', 'bf16')]];
    const o1 = out(M * N, 'o1'), o2 = out(M * N, 'o2');
    for (const [ta, tb] of [[0, 0], [0, 1], [1, 0], [1, 1]] as const) {
      for (const [bt, b] of bs) {
        if (ta && bt) continue;
        for (const [alpha, acc, pb] of [[1, 0, 0], [-0.75, 0, P(bias)], [1.5, 1, 0], [0.5, 1, P(bias)]] as const) {
          for (const o of [o1, o2]) be.write(o, prior);
          K_.matmul_v1(P(o1), P(a), P(b), M, N, K, ta, tb, bt, alpha, acc, pb, I.scratch(0), 0, M, 0, N);
          K_.matmul(P(o2), P(a), P(b), M, N, K, ta, tb, bt, alpha, acc, pb, I.scratch(0), 0, M, 0, N);
          assertClose(await readF(o2), await readF(o1), { atol: 8 * U32 * K * 1.5 + 4 * U32, rtol: 1e-6, what: `matmul ${M}x${N}x${K} transA ${ta} transB ${tb} bt ${bt} alpha ${alpha} acc ${acc} bias ${pb ? 1 : 0}` });
        }
      }
    }
    for (const t of [a, bias, o1, o2, ...bs.map((x) => x[1])]) be.free(t);
  }
});

test('q_matmul == q_matmul_v1 and q_matmul_backward_input == its v1: types × DQ × blocksizes, odd shapes', async () => {
  const rng = new Rng(6);
  const shapes: Array<[number, number, number]> = [[1, 3, 5], [2, 17, 64], [4, 9, 33], [7, 40, 130], [33, 130, 257]];
  for (const [qt, bs, dq] of [['nf4', 64, true], ['nf4', 64, false], ['nf4', 4096, true], ['fp4', 128, true], ['fp4', 64, false], ['int4', 256, false]] as const) {
    for (const [M, N, K] of shapes) {
      const w = await quantW(rng, N, K, qt, bs, dq);
      const d = I.desc(w);
      const x = put(rng.f32(M * K), 'x'), dy = put(rng.f32(M * N), 'dy'), bias = put(rng.f32(N), 'bias');
      const py = rng.f32(M * N), px = rng.f32(M * K);
      const y1 = out(M * N, 'y1'), y2 = out(M * N, 'y2'), d1 = out(M * K, 'd1'), d2 = out(M * K, 'd2');
      const tag = `${qt} bs${bs} dq ${dq} ${M}x${N}x${K}`;
      for (const [alpha, acc, pb] of [[1, 0, 0], [0.5, 0, P(bias)], [-2, 1, 0]] as const) {
        for (const o of [y1, y2]) be.write(o, py);
        K_.q_matmul_v1(P(y1), P(x), d, M, alpha, acc, pb, I.scratch(0), 0, M, 0, N);
        K_.q_matmul(P(y2), P(x), d, M, alpha, acc, pb, I.scratch(0), 0, M, 0, N);
        assertClose(await readF(y2), await readF(y1), { atol: 8 * U32 * K * 2 + 4 * U32, rtol: 1e-6, what: `q_matmul ${tag} alpha ${alpha} acc ${acc}` });
        for (const o of [d1, d2]) be.write(o, px);
        K_.q_matmul_backward_input_v1(P(d1), P(dy), d, M, alpha, acc, I.scratch(0), 0, M, 0, K);
        K_.q_matmul_backward_input(P(d2), P(dy), d, M, alpha, acc, I.scratch(0), 0, M, 0, K);
        assertClose(await readF(d2), await readF(d1), { atol: 8 * U32 * N * 2 + 4 * U32, rtol: 1e-6, what: `q_matmul_backward_input ${tag} alpha ${alpha} acc ${acc}` });
      }
      be.freeQuant(w);
      for (const t of [x, dy, bias, y1, y2, d1, d2]) be.free(t);
    }
  }
});

// ---- attention blocking ---------------------------------------------------------------------

// The shared parity shapes stay within one 64-key block; these cross several key blocks (the
// online-softmax rescale of the forward, with key norms growing along s so the running max does
// grow) and several 16-query tiles of the backward, with D off the 16-float register chunks.
test('attention / attentionBackward across key blocks and query tiles == reference', async () => {
  const ref = createReferenceBackend();
  const rng = new Rng(8);
  const shapes: AttentionShape[] = [
    { B: 1, T: 150, S: 150, H: 4, KVH: 2, D: 20, pos0: 0, kvStride: 152 },
    { B: 2, T: 70, S: 70, H: 2, KVH: 1, D: 6, pos0: 0, kvStride: 70 },
    { B: 1, T: 3, S: 200, H: 2, KVH: 2, D: 36, pos0: 197, kvStride: 200 },
  ];
  for (const s of shapes) {
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const q = rng.f32(nq), k = rng.f32(nkv), v = rng.f32(nkv), dout = rng.f32(nq);
    for (let i = 0; i < nkv; i++) k[i] = Math.fround(k[i]! * (1 + Math.floor(i / (s.KVH * s.D)) % s.kvStride / 40));
    const run = async (b: Backend) => {
      const T = (d: Float32Array, l: string) => { const t = b.alloc('f32', d.length, l); b.write(t, d); return t; };
      const tq = T(q, 'q'), tk = T(k, 'k'), tv = T(v, 'v'), td = T(dout, 'dout');
      const o = b.alloc('f32', nq, 'o'), lse = b.alloc('f32', s.B * s.H * s.T, 'lse');
      b.attention(o, lse, tq, tk, tv, s);
      const res: Record<string, Float32Array> = { out: (await b.read(o)) as Float32Array, lse: (await b.read(lse)) as Float32Array };
      if (s.pos0 === 0) {
        const dq = b.alloc('f32', nq, 'dq'), dk = b.alloc('f32', nkv, 'dk'), dv = b.alloc('f32', nkv, 'dv');
        b.fill(dk, NaN); b.fill(dv, NaN);
        b.attentionBackward(dq, dk, dv, td, tq, tk, tv, o, lse, s);
        res.dq = (await b.read(dq)) as Float32Array; res.dk = (await b.read(dk)) as Float32Array; res.dv = (await b.read(dv)) as Float32Array;
      }
      return res;
    };
    const want = await run(ref), got = await run(be);
    const tag = JSON.stringify(s);
    assertClose(got.out!, want.out!, { atol: 1e-5, rtol: 1e-5, what: `out ${tag}` });
    assertClose(got.lse!, want.lse!, { atol: 8e-6, rtol: 2e-6, what: `lse ${tag}` });
    for (const n of ['dq', 'dk', 'dv']) if (want[n]) assertClose(got[n]!, want[n]!, { atol: 4e-5, rtol: 4e-5, what: `${n} ${tag}` });
  }
});

// ---- half precision ---------------------------------------------------------------------

test('f16 → f32 widening is exact for every half (embedding of a [65536, 1] f16 table)', async () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const table = put(all, 'all halves', 'f16');
  const ids = put(Int32Array.from({ length: 65536 }, (_, i) => i), 'ids');
  const o = out(65536, 'o');
  // C = 1 takes the scalar path; C = 4 (table viewed as [16384, 4]) the four-lane path
  for (const C of [1, 4]) {
    K_.embedding(P(o), P(table), P(ids), C, 1, 0, 65536 / C);
    const got = await readF(o);
    for (let i = 0; i < 65536; i++) {
      const want = f16ToF32(i);
      const ok = Number.isNaN(want) ? Number.isNaN(got[i]!) : Object.is(got[i], Math.fround(want));
      if (!ok) assert.unreachable(`C ${C}: half 0x${i.toString(16)}: expected ${want}, got ${got[i]}`);
    }
  }
});

// ---- memory -------------------------------------------------------------------------------

test('memory growth during alloc keeps data already written; kernels see it', async () => {
  // one thread: a private memory, whose buffer (and every view of it) detaches on growth
  const b2 = await createWasmBackend({ threads: 1 });
  const km = wasmInternals(b2).kernels;
  const rng = new Rng(7);
  const data = rng.f32(1000);
  const a = b2.alloc('f32', 1000, 'a');
  b2.write(a, data);
  assert.not.ok(wasmBackendInfo(b2).sharedMemory, 'one thread runs on a private memory');
  const old = km.memory.buffer, before = old.byteLength;
  const bufs: Tensor[] = [];
  for (let i = 0; i < 4; i++) bufs.push(b2.alloc('f32', 4 << 20, `big ${i}`)); // 64 MiB: forces memory.grow
  assert.ok(km.memory.buffer.byteLength > before, 'memory grew');
  assert.is(old.byteLength, 0, 'the buffer in use before the growth detached (so stale views would fail)');
  assertBitsEqual((await b2.read(a)) as Float32Array, data, 'tensor written before the growth');
  // writes and kernels after the growth go through fresh views
  b2.write(bufs[3]!, data, (4 << 20) - 1000);
  b2.add(a, a, 1000, 1);
  assertBitsEqual((await b2.read(a)) as Float32Array, data.map((x) => x * 2), 'kernel on an old tensor after growth');
  assertBitsEqual((await b2.read(bufs[3]!, (4 << 20) - 1000)) as Float32Array, data, 'tail of a new tensor');
  // a freed block is reused and the allocator's bookkeeping holds
  const live = b2.memory().liveBytes;
  b2.free(bufs[1]!);
  const c = b2.alloc('f32', 1 << 20, 'reuse');
  assert.ok(b2.memory().liveBytes < live, 'freed bytes are no longer live');
  b2.free(c);
  await b2.destroy();
});

test('contract refusals, as the reference refuses them: matmul bias + accumulate, attention pos0 + T > S', () => {
  const ref = createReferenceBackend();
  for (const b of [ref, be]) {
    const M = 2, N = 3, K = 4;
    const a = b.alloc('f32', M * K, 'a'), w = b.alloc('f32', K * N, 'w'), bias = b.alloc('f32', N, 'bias'), o = b.alloc('f32', M * N, 'o');
    assert.throws(() => b.matmul(o, a, w, M, N, K, { bias, accumulate: true }), /matmul: bias is only allowed with accumulate false/, `${b.name} matmul`);
    b.matmul(o, a, w, M, N, K, { bias }); // either alone is fine
    b.matmul(o, a, w, M, N, K, { accumulate: true });
    // 3 new queries at pos0 5 need S ≥ 8 keys; S = 7 would read keys nobody wrote
    const s: AttentionShape = { B: 1, T: 3, S: 7, H: 2, KVH: 1, D: 8, pos0: 5, kvStride: 8 };
    const nq = s.T * s.H * s.D, nkv = s.kvStride * s.KVH * s.D;
    const q = b.alloc('f32', nq, 'q'), k = b.alloc('f32', nkv, 'k'), v = b.alloc('f32', nkv, 'v'), out = b.alloc('f32', nq, 'out'), lse = b.alloc('f32', s.H * s.T, 'lse');
    assert.throws(() => b.attention(out, lse, q, k, v, s), /attention: .*pos0 \+ T/, `${b.name} attention`);
    b.attention(out, lse, q, k, v, { ...s, S: 8 });
    for (const t of [a, w, bias, o, q, k, v, out, lse]) b.free(t);
  }
});

test('use after destroy: every tensor and weight call throws, nothing touches the memory', async () => {
  const b = await createWasmBackend({ threads: 1 });
  const x = b.alloc('f32', 64, 'x'), y = b.alloc('f32', 64, 'y');
  const q = await quantize4bit(new Rng(9).f32(64 * 4, 0.5), { quantType: 'nf4', blocksize: 64, doubleQuant: false, shape: [4, 64] });
  const up = { N: 4, K: 64, blocksize: 64, quantType: 'nf4' as const, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: 'w' };
  const w = b.uploadQuant(up);
  await b.destroy();
  const after = /wasm backend used after destroy\(\)/;
  assert.throws(() => b.write(x, new Float32Array(64)), after);
  assert.throws(() => b.fill(x, 1), after);
  assert.throws(() => b.copy(y, 0, x, 0, 64), after);
  assert.throws(() => b.add(y, x, 64), after);
  assert.throws(() => b.qMatmul(y, x, w, 1), after);
  assert.throws(() => b.writeQuant(w, up), after);
  assert.throws(() => b.free(x), after);
  assert.throws(() => b.freeQuant(w), after);
  assert.throws(() => b.uploadQuant(up), after);
  assert.throws(() => wasmInternals(b).ptr(x), after);
  assert.throws(() => wasmInternals(b).desc(w), after);
  try {
    await b.read(x);
    assert.unreachable('read after destroy must throw');
  } catch (e) {
    assert.match((e as Error).message, after);
  }
});

test('CountingBackend (the memory estimate) counts exactly the bytes the wasm backend allocates', async () => {
  const b = await createWasmBackend({ threads: 1 });
  const count = new CountingBackend();
  const rng = new Rng(10);
  const delta = (x: Backend, f: () => void) => { const l0 = x.memory().liveBytes; f(); return x.memory().liveBytes - l0; };
  for (const [type, n] of [['f32', 1], ['f32', 1000], ['u8', 65], ['bf16', 33], ['i32', 0]] as const) {
    assert.is(delta(count, () => count.alloc(type, n, 't')), delta(b, () => b.alloc(type, n, 't')), `${type} [${n}]`);
  }
  for (const [N, K, bs, dq] of [[48, 80, 64, true], [5, 7, 32, false], [300, 1000, 64, true], [3, 4096, 4096, true], [17, 130, 128, false]] as const) {
    const q = await quantize4bit(rng.f32(N * K, 0.5), { quantType: 'nf4', blocksize: bs, doubleQuant: dq, shape: [N, K] });
    const up = { N, K, blocksize: bs, quantType: 'nf4' as const, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: 'w' };
    assert.is(delta(count, () => count.uploadQuant(up)), delta(b, () => b.uploadQuant(up)), `4-bit [${N}, ${K}] bs${bs} dq ${dq}`);
  }
  await b.destroy();
});

test('buffer checks: short or foreign tensors are refused before any kernel runs', () => {
  const x = be.alloc('f32', 10, 'x'), o = be.alloc('f32', 10, 'o');
  assert.throws(() => be.add(o, x, 11), /holds 10 elements, 11 needed/);
  const i = be.alloc('i32', 10, 'i');
  assert.throws(() => be.add(o, i, 10), /is i32, expected f32/);
  be.free(x);
  assert.throws(() => be.add(o, x, 10), /was freed/);
  be.free(o); be.free(i);
});

test.run();
