// attention / attentionBackward (causal GQA, scale 1/√D, lse saved):
//  (a) reference against explicit softmax(QKᵀ/√D + mask)·V in float64, training shape
//      (pos0 = 0, S = T) and KV-cache shape (pos0 > 0, S = pos0 + T, kvStride > S), H/KVH = 1, 2, 4;
//  (b) attentionBackward by float64 finite differences w.r.t. q, k and v;
//  (c) parity. Cache rows S..kvStride−1 hold NaN in every test: they must not be read.
import { test } from 'uvu';
import { Rng, assertClose } from '../helpers/index.ts';
import type { AttentionShape } from '../../src/backend/backend.ts';
import { dot, fdCheck, freeAll, parity, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

function shape(B: number, T: number, S: number, H: number, KVH: number, D: number, pos0: number, kvStride: number): AttentionShape {
  return { B, T, S, H, KVH, D, pos0, kvStride };
}
const label = (s: AttentionShape) => `B${s.B} T${s.T} S${s.S} H${s.H} KVH${s.KVH} D${s.D} pos0 ${s.pos0} stride ${s.kvStride}`;

/** k or v [B, kvStride, KVH, D] with rows ≥ S set to `pad`. */
function kv(rng: Rng, s: AttentionShape, pad: number): Float32Array {
  const a = randn(rng, s.B * s.kvStride * s.KVH * s.D);
  for (let b = 0; b < s.B; b++) for (let j = s.S; j < s.kvStride; j++) a.fill(pad, ((b * s.kvStride + j) * s.KVH) * s.D, ((b * s.kvStride + j + 1) * s.KVH) * s.D);
  return a;
}

/** Explicit float64 softmax(Q·Kᵀ/√D + causal mask)·V per (sequence, head), plus the lse. */
function attention64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, s: AttentionShape): { out: Float64Array; lse: Float64Array } {
  const { B, T, S, H, KVH, D, pos0, kvStride } = s;
  const out = new Float64Array(B * T * H * D), lse = new Float64Array(B * H * T);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const g = Math.floor(h / (H / KVH));
    const Q = (t: number, d: number) => q[((b * T + t) * H + h) * D + d]!;
    const Kx = (j: number, d: number) => k[((b * kvStride + j) * KVH + g) * D + d]!;
    const Vx = (j: number, d: number) => v[((b * kvStride + j) * KVH + g) * D + d]!;
    for (let t = 0; t < T; t++) {
      const scores: number[] = [];
      for (let j = 0; j < S; j++) {
        let qk = 0;
        for (let d = 0; d < D; d++) qk += Q(t, d) * Kx(j, d);
        scores.push(qk / Math.sqrt(D) + (j <= pos0 + t ? 0 : -Infinity)); // causal mask
      }
      const mx = Math.max(...scores);
      const e = scores.map((x) => Math.exp(x - mx));
      const z = e.reduce((a, c) => a + c, 0);
      lse[(b * H + h) * T + t] = mx + Math.log(z);
      for (let d = 0; d < D; d++) {
        let o = 0;
        for (let j = 0; j < S; j++) if (e[j]! > 0) o += (e[j]! / z) * Vx(j, d);
        out[((b * T + t) * H + h) * D + d] = o;
      }
    }
  }
  return { out, lse };
}

const REF_SHAPES = [
  shape(2, 5, 5, 4, 4, 8, 0, 5), // training, MHA
  shape(1, 6, 6, 4, 2, 16, 0, 6), // training, GQA 2
  shape(2, 3, 11, 4, 1, 8, 8, 14), // KV cache, GQA 4 (MQA), padding rows
  shape(1, 1, 7, 2, 1, 16, 6, 9), // decode one token
];

test('attention reference (f32) == explicit softmax(QKᵀ/√D + mask)·V in float64', async () => {
  const rng = new Rng(501);
  for (const s of REF_SHAPES) {
    const q = randn(rng, s.B * s.T * s.H * s.D, 1.5), k = kv(rng, s, NaN), v = kv(rng, s, NaN);
    const got = await runCase(refF32, { what: 'attention', inputs: { q, k, v }, outputs: { out: s.B * s.T * s.H * s.D, lse: s.B * s.H * s.T }, run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s) });
    const want = attention64(q, k, v, s); // reads rows < S only
    // f32 scores (D-term sums), exp and S-term sums: ~1e-6 relative, |out| ≲ 3
    assertClose(got.out!, want.out, { atol: 4e-6, rtol: 1e-5, what: `out ${label(s)}` });
    assertClose(got.lse!, want.lse, { atol: 2e-6, rtol: 1e-6, what: `lse ${label(s)}` });
  }
});

test('attentionBackward is the gradient of attention (float64 finite differences on q, k, v)', () => {
  const rng = new Rng(502);
  for (const s of [shape(2, 4, 4, 4, 2, 4, 0, 6), shape(1, 5, 5, 4, 1, 4, 0, 5), shape(1, 3, 3, 2, 2, 8, 0, 3)]) {
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const q = put64(randn(rng, nq, 1.5), 'q'), k = put64(kv(rng, s, 0.5), 'k'), v = put64(kv(rng, s, -0.5), 'v');
    const out = refF64.alloc('f32', nq, 'out'), lse = refF64.alloc('f32', s.B * s.H * s.T, 'lse');
    const doutHost = randn(rng, nq);
    const dout = put64(doutHost, 'dout');
    const dq = refF64.alloc('f32', nq, 'dq'), dk = refF64.alloc('f32', nkv, 'dk'), dv = refF64.alloc('f32', nkv, 'dv');
    refF64.attention(out, lse, q, k, v, s);
    refF64.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, s);
    const loss = () => { refF64.attention(out, lse, q, k, v, s); return dot(refF64, out, doutHost); };
    fdCheck({ x: q, loss, analytic: refF64.peekF(dq).slice(), what: `attention dq ${label(s)}` });
    fdCheck({ x: k, loss, analytic: refF64.peekF(dk).slice(), what: `attention dk ${label(s)}` });
    fdCheck({ x: v, loss, analytic: refF64.peekF(dv).slice(), what: `attention dv ${label(s)}` });
    freeAll(refF64, q, k, v, out, lse, dout, dq, dk, dv);
  }
});

test('attention parity: training and KV-cache shapes, GQA groups 1, 2, 4, D 8…64', async () => {
  const rng = new Rng(503);
  const cases: Case[] = [];
  for (const [s, heavy] of [
    [shape(2, 17, 17, 4, 4, 16, 0, 17), false],
    [shape(2, 7, 7, 4, 1, 8, 0, 7), false],
    [shape(1, 33, 33, 4, 2, 64, 0, 33), false],
    [shape(2, 3, 20, 4, 2, 16, 17, 24), false],
    [shape(1, 1, 9, 8, 2, 32, 8, 16), false],
    [shape(2, 1, 1, 2, 1, 8, 0, 4), false],
    [shape(1, 64, 64, 8, 2, 64, 0, 64), true],
    [shape(1, 5, 37, 4, 4, 64, 32, 40), true],
  ] as const) {
    const nq = s.B * s.T * s.H * s.D;
    cases.push({
      what: `attention ${label(s)}`, heavy,
      inputs: { q: randn(rng, nq, 1.5), k: kv(rng, s, NaN), v: kv(rng, s, NaN) },
      outputs: { out: nq, lse: s.B * s.H * s.T },
      run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s),
    });
  }
  // scores are D ≤ 64 term f32 dot products (|Δ| ~ 1e-6), which move exp() by the same
  // relative amount; out sums ≤ 64 weighted values of |v| ≲ 4.
  await parity(cases, { out: { atol: 1e-5, rtol: 1e-5, why: 'f32 dots + exp + weighted sums in another order' }, lse: { atol: 4e-6, rtol: 2e-6, why: 'max + log of an f32 sum' } });
});

test('attentionBackward parity (pos0 = 0; kvStride > S rows come back zero)', async () => {
  const rng = new Rng(504);
  const cases: Case[] = [];
  for (const [s, heavy] of [
    [shape(2, 7, 7, 4, 1, 8, 0, 7), false],
    [shape(2, 17, 17, 4, 2, 16, 0, 20), false],
    [shape(1, 5, 5, 2, 2, 64, 0, 5), false],
    [shape(1, 33, 33, 8, 8, 64, 0, 33), true],
    [shape(1, 64, 64, 4, 2, 32, 0, 64), true],
  ] as const) {
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const q = randn(rng, nq, 1.5), k = kv(rng, s, NaN), v = kv(rng, s, NaN), dout = randn(rng, nq);
    const fwd = await runCase(refF32, { what: '', inputs: { q, k, v }, outputs: { out: nq, lse: s.B * s.H * s.T }, run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s) });
    cases.push({
      what: `attentionBackward ${label(s)}`, heavy,
      inputs: { q, k, v, dout, out: fwd.out!, lse: fwd.lse! },
      outputs: { dq: nq, dk: nkv, dv: nkv },
      run: (be, t) => be.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.out!, t.lse!, s),
    });
  }
  // P recomputed from lse (~1e-6 relative), dP and Di are D-term dots, dk/dv sum over up to
  // T·H/KVH ≤ 128 query rows: errors of a few 1e-6 on gradients of magnitude ≲ 3.
  await parity(cases, { atol: 2e-5, rtol: 2e-5, why: 'recomputed softmax + f32 sums over D and over queries in another order' });
});

test.run();
