// attention / attentionBackward (causal GQA, scale 1/√D, lse saved):
//  (a) reference against explicit softmax(QKᵀ/√D + mask)·V in float64, training shape
//      (pos0 = 0, S = T) and KV-cache shape (pos0 > 0, S = pos0 + T, kvStride > S), H/KVH = 1, 2, 4;
//  (b) attentionBackward by float64 finite differences w.r.t. q, k and v;
//  (c) parity. Cache rows S..kvStride−1 hold NaN in every test: they must not be read.
// The same three for the options of AttentionShape — scale, softcap (Gemma 2's cap·tanh(x/cap)),
// sliding window (p − window < j ≤ p) — alone and combined, windows shorter than, equal to and
// longer than T, with KV-cache and decode shapes; plus bit-identity of the WASM pool for any
// thread count, and the refusal of bad option values on every backend.
// And packed sequences (docStart, sample packing): the reference computes every example of a row
// bit for bit as it computes that example alone; finite differences; parity on random layouts
// (several examples per row, single-token examples, a padding tail, examples across key blocks
// and query tiles) alone and with window and soft-cap; the refusals.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual, assertClose } from '../helpers/index.ts';
import type { AttentionShape, Backend } from '../../src/backend/backend.ts';
import { createWasmBackend, wasmInternals } from '../../src/backend/wasm/index.ts';
import { docStartOf } from '../../src/data/pack.ts';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
import { testWebGpu } from '../webgpu/gpu.ts';
import { dot, fdCheck, freeAll, parity, put64, randn, refF32, refF64, runCase, targets, type Case } from './harness.ts';

function shape(B: number, T: number, S: number, H: number, KVH: number, D: number, pos0: number, kvStride: number): AttentionShape {
  return { B, T, S, H, KVH, D, pos0, kvStride };
}
/** The optional fields of AttentionShape. */
type Opts = Pick<AttentionShape, 'scale' | 'softcap' | 'window'>;
const withOpts = (s: AttentionShape, o: Opts): AttentionShape => ({ ...s, ...o });
const label = (s: AttentionShape) => `B${s.B} T${s.T} S${s.S} H${s.H} KVH${s.KVH} D${s.D} pos0 ${s.pos0} stride ${s.kvStride}`
  + (s.scale !== undefined ? ` scale ${s.scale}` : '') + (s.softcap !== undefined ? ` softcap ${s.softcap}` : '') + (s.window !== undefined ? ` window ${s.window}` : '');

/** k or v [B, kvStride, KVH, D] with rows ≥ S set to `pad`. */
function kv(rng: Rng, s: AttentionShape, pad: number): Float32Array {
  const a = randn(rng, s.B * s.kvStride * s.KVH * s.D);
  for (let b = 0; b < s.B; b++) for (let j = s.S; j < s.kvStride; j++) a.fill(pad, ((b * s.kvStride + j) * s.KVH) * s.D, ((b * s.kvStride + j + 1) * s.KVH) * s.D);
  return a;
}

/**
 * Explicit float64 softmax(cap(Q·Kᵀ·scale) + causal/window mask)·V per (sequence, head), plus the
 * lse; scale 1/√D, no cap and no window unless s says so (cap(x) = softcap·tanh(x / softcap));
 * with `docStart` (host copy of s.docStart) query t also masks keys before its example's start.
 */
function attention64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, s: AttentionShape, docStart?: Int32Array): { out: Float64Array; lse: Float64Array } {
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
        let x = s.scale === undefined ? qk / Math.sqrt(D) : qk * s.scale;
        if (s.softcap) x = s.softcap * Math.tanh(x / s.softcap);
        const p = pos0 + t, seen = j <= p && !(s.window && j <= p - s.window) && j >= (docStart?.[b * T + t] ?? 0);
        scores.push(x + (seen ? 0 : -Infinity)); // causal mask, sliding window, packed examples
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

// ---- scale, softcap, window --------------------------------------------------------------

/** max_i |a_i − b_i| */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Does the window hide any key from any query of s? (else it must act as no window) */
const windowBites = (s: AttentionShape) => !!s.window && s.window < s.pos0 + s.T;

const OPT_REF_CASES: Array<[AttentionShape, Opts]> = [
  [shape(2, 9, 9, 4, 2, 8, 0, 9), { window: 3 }], // window < T
  [shape(2, 9, 9, 4, 2, 8, 0, 11), { window: 9 }], // window = T: no key hidden
  [shape(1, 6, 6, 4, 4, 16, 0, 6), { window: 40 }], // window > T
  [shape(1, 6, 6, 4, 1, 8, 0, 6), { window: 1 }], // every query sees itself only
  [shape(1, 6, 6, 4, 2, 16, 0, 6), { softcap: 50 }],
  [shape(2, 5, 5, 4, 4, 8, 0, 5), { softcap: 2 }], // |scores| ~ 1.5: the cap bites
  [shape(1, 6, 6, 4, 2, 8, 0, 6), { scale: 0.25 }], // default 1/√8
  [shape(2, 7, 7, 4, 2, 8, 0, 9), { scale: 0.25, softcap: 2, window: 4 }],
  [shape(2, 3, 11, 4, 1, 8, 8, 14), { window: 5 }], // KV cache, MQA, padding rows
  [shape(2, 3, 11, 4, 1, 8, 8, 14), { window: 11, softcap: 2 }], // KV cache, window = S: no key hidden
  [shape(1, 1, 7, 2, 1, 16, 6, 9), { window: 3, softcap: 50, scale: 0.3 }], // decode one token
  [shape(1, 1, 7, 2, 1, 16, 6, 9), { window: 1 }], // decode, only the new key
];

test('attention reference (f32) with scale, softcap, window == explicit float64 formula', async () => {
  const rng = new Rng(505);
  for (const [base, o] of OPT_REF_CASES) {
    const s = withOpts(base, o);
    const nq = s.B * s.T * s.H * s.D;
    const q = randn(rng, nq, 1.5), k = kv(rng, s, NaN), v = kv(rng, s, NaN);
    const run = (sh: AttentionShape) => runCase(refF32, { what: 'attention', inputs: { q, k, v }, outputs: { out: nq, lse: s.B * s.H * s.T }, run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, sh) });
    const got = await run(s);
    const want = attention64(q, k, v, s);
    // as the plain case (f32 scores, exp, ≤ 11-term sums: ~1e-6 relative, |out| ≲ 3); the soft-cap
    // adds three roundings (÷, tanh, ×) of a score |x| ≲ 3, a few 1e-7 absolute
    assertClose(got.out!, want.out, { atol: 4e-6, rtol: 1e-5, what: `out ${label(s)}` });
    assertClose(got.lse!, want.lse, { atol: 2e-6, rtol: 1e-6, what: `lse ${label(s)}` });
    // the case tests what it claims: every option given changes the result, except a window
    // no query exceeds, which must give exactly the bits of no window
    const plain = attention64(q, k, v, base);
    if (o.softcap === 2 || o.scale !== undefined || windowBites(s)) assert.ok(maxDiff(want.out, plain.out) > 1e-2, `${label(s)}: the options do not change the result`);
    if (o.softcap === 50) assert.ok(maxDiff(want.lse, plain.lse) > 1e-5, `${label(s)}: softcap 50 changes nothing`);
    if (o.window && !windowBites(s)) {
      const noWindow = await run(withOpts(s, { window: 0 }));
      assertBitsEqual(got.out as Float32Array, noWindow.out as Float32Array, `out ${label(s)} vs window 0`);
      assertBitsEqual(got.lse as Float32Array, noWindow.lse as Float32Array, `lse ${label(s)} vs window 0`);
    }
  }
});

test('attentionBackward with scale, softcap, window is the gradient (float64 finite differences on q, k, v)', () => {
  const rng = new Rng(506);
  for (const [base, o] of [
    [shape(2, 6, 6, 4, 2, 4, 0, 8), { window: 3, softcap: 2 }],
    [shape(1, 5, 5, 4, 1, 4, 0, 5), { softcap: 1.5 }],
    [shape(1, 7, 7, 2, 2, 8, 0, 7), { scale: 0.25, window: 2 }],
    [shape(1, 4, 4, 2, 1, 8, 0, 6), { window: 4, softcap: 50, scale: 0.6 }],
    [shape(1, 4, 4, 2, 2, 4, 0, 4), { window: 1 }],
  ] as Array<[AttentionShape, Opts]>) {
    const s = withOpts(base, o);
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const q = put64(randn(rng, nq, 1.5), 'q'), k = put64(kv(rng, s, 0.5), 'k'), v = put64(kv(rng, s, -0.5), 'v');
    const out = refF64.alloc('f32', nq, 'out'), lse = refF64.alloc('f32', s.B * s.H * s.T, 'lse');
    const doutHost = randn(rng, nq);
    const dout = put64(doutHost, 'dout');
    const dq = refF64.alloc('f32', nq, 'dq'), dk = refF64.alloc('f32', nkv, 'dk'), dv = refF64.alloc('f32', nkv, 'dv');
    refF64.attention(out, lse, q, k, v, s);
    refF64.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, s);
    const loss = () => { refF64.attention(out, lse, q, k, v, s); return dot(refF64, out, doutHost); };
    // window 1: every softmax has one term (p = 1), so dq = dk = 0 exactly; only dv is informative
    if (s.window !== 1) {
      fdCheck({ x: q, loss, analytic: refF64.peekF(dq).slice(), what: `attention dq ${label(s)}` });
      fdCheck({ x: k, loss, analytic: refF64.peekF(dk).slice(), what: `attention dk ${label(s)}` });
    } else {
      assert.ok(maxDiff(refF64.peekF(dq), new Float64Array(nq)) === 0 && maxDiff(refF64.peekF(dk), new Float64Array(nkv)) === 0, `${label(s)}: dq, dk must be 0`);
    }
    fdCheck({ x: v, loss, analytic: refF64.peekF(dv).slice(), what: `attention dv ${label(s)}` });
    freeAll(refF64, q, k, v, out, lse, dout, dq, dk, dv);
  }
});

test('attention parity with scale, softcap, window: training, KV-cache and decode shapes', async () => {
  const rng = new Rng(507);
  const cases: Case[] = [];
  for (const [base, o, heavy] of [
    [shape(2, 17, 17, 4, 4, 16, 0, 17), { window: 5 }, false],
    [shape(2, 7, 7, 4, 1, 8, 0, 7), { window: 7 }, false], // window = T
    [shape(2, 7, 7, 4, 1, 8, 0, 7), { window: 6 }, false], // window = T − 1: only the last query loses a key
    [shape(2, 3, 20, 4, 2, 16, 17, 24), { window: 19 }, false], // KV cache, window = S − 1: likewise
    [shape(2, 7, 7, 4, 1, 8, 0, 7), { window: 100, softcap: 0, scale: 0.25 }, false], // window > T, softcap 0 = none
    [shape(1, 9, 9, 2, 1, 8, 0, 9), { window: 1 }, false],
    [shape(2, 17, 17, 4, 2, 16, 0, 17), { softcap: 2 }, false],
    [shape(1, 33, 33, 4, 2, 64, 0, 33), { softcap: 50, scale: 0.25 }, false],
    [shape(1, 33, 33, 4, 2, 32, 0, 36), { window: 9, softcap: 2, scale: 0.25 }, false],
    [shape(2, 3, 20, 4, 2, 16, 17, 24), { window: 6 }, false], // KV cache
    [shape(2, 3, 20, 4, 2, 16, 17, 24), { window: 2, softcap: 2 }, false], // KV cache, window < T
    [shape(1, 1, 9, 8, 2, 32, 8, 16), { window: 4, softcap: 50 }, false], // decode
    [shape(1, 1, 9, 8, 2, 32, 8, 16), { window: 1 }, false], // decode, only the new key
    [shape(1, 4, 150, 8, 2, 32, 146, 160), { window: 70, softcap: 2 }, false], // long cache: window starts mid-block
    [shape(1, 100, 100, 4, 2, 16, 0, 100), { window: 70 }, true], // windows across key blocks and query tiles
    [shape(1, 5, 37, 4, 4, 64, 32, 40), { window: 16, softcap: 2, scale: 0.125 }, true],
  ] as Array<[AttentionShape, Opts, boolean]>) {
    const s = withOpts(base, o);
    const nq = s.B * s.T * s.H * s.D;
    cases.push({
      what: `attention ${label(s)}`, heavy,
      inputs: { q: randn(rng, nq, 1.5), k: kv(rng, s, NaN), v: kv(rng, s, NaN) },
      outputs: { out: nq, lse: s.B * s.H * s.T },
      run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s),
    });
  }
  // as the plain parity: scores are D ≤ 64 term f32 dots (|Δ| ~ 1e-6); a backend's tanh is
  // within a few ulp of the reference's, adding ≤ cap·3 ulp(1) ≈ 4e-7 to a capped score (cap 2)
  await parity(cases, { out: { atol: 1e-5, rtol: 1e-5, why: 'f32 dots + tanh + exp + weighted sums in another order' }, lse: { atol: 4e-6, rtol: 2e-6, why: 'max + log of an f32 sum' } });
});

/** attentionBackward cases (pos0 = 0) with the reference forward's out and lse as inputs. */
async function backwardCases(rng: Rng, list: Array<[AttentionShape, boolean]>): Promise<Case[]> {
  const cases: Case[] = [];
  for (const [s, heavy] of list) {
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
  return cases;
}

test('attentionBackward parity with scale, softcap, window (kvStride > S rows come back zero)', async () => {
  const cases = await backwardCases(new Rng(508), [
    [withOpts(shape(2, 17, 17, 4, 2, 16, 0, 20), { window: 5, softcap: 2 }), false],
    [withOpts(shape(2, 7, 7, 4, 1, 8, 0, 7), { window: 1 }), false],
    [withOpts(shape(1, 9, 9, 2, 2, 8, 0, 12), { window: 9, scale: 0.25 }), false], // window = T
    [withOpts(shape(1, 5, 5, 2, 2, 64, 0, 5), { softcap: 50 }), false],
    [withOpts(shape(1, 40, 40, 4, 2, 32, 0, 40), { window: 23, softcap: 2, scale: 0.125 }), false], // windows across query tiles
    [withOpts(shape(1, 70, 70, 2, 1, 8, 0, 72), { window: 2, softcap: 2 }), false], // a tile's last key seen by the next tile's first query only
    [withOpts(shape(2, 7, 7, 4, 1, 8, 0, 9), { window: 6 }), false], // window = T − 1: only the last query loses a key
    [withOpts(shape(1, 33, 33, 8, 8, 64, 0, 33), { window: 16, scale: 0.25 }), true],
    [withOpts(shape(1, 100, 100, 4, 2, 16, 0, 104), { window: 70, softcap: 50 }), true], // across key blocks
  ]);
  // as the plain backward parity, plus a tanh within a few ulp (≤ 4e-7 on a score capped at 2)
  // and its derivative 1 − tanh² (same relative error) in dS
  await parity(cases, { atol: 2e-5, rtol: 2e-5, why: 'recomputed softmax and soft-cap + f32 sums over D and over queries in another order' });
});


/** Each case on one thread and on the pool: the same bits, and the pool really ran (some job reached it). */
async function assertPoolBits(be1: Backend, be3: Backend, pool: { jobs: number }, cases: Case[]): Promise<void> {
  for (const c of cases) {
    const want = await runCase(be1, c);
    const jobs = pool.jobs;
    const got = await runCase(be3, c);
    assert.ok(pool.jobs > jobs, `${c.what}: the call ran on the caller alone (no job reached the pool)`);
    for (const name of Object.keys(want)) assertBitsEqual(got[name] as Float32Array, want[name] as Float32Array, `${c.what}: ${name}`);
  }
}

test('wasm attention with scale, softcap, window: 1 thread == 3 threads, bit for bit', async () => {
  const be1 = await createWasmBackend({ threads: 1 }), be3 = await createWasmBackend({ threads: 3 });
  try {
    const pool = wasmInternals(be3).pool;
    assert.ok(pool, 'no worker pool (Node always has shared memory)');
    const rng = new Rng(509);
    const fwd = (s: AttentionShape): Case => {
      const nq = s.B * s.T * s.H * s.D;
      return { what: `attention ${label(s)}`, inputs: { q: randn(rng, nq, 1.5), k: kv(rng, s, NaN), v: kv(rng, s, NaN) }, outputs: { out: nq, lse: s.B * s.H * s.T },
        run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, s) };
    };
    const cases = [
      fwd(withOpts(shape(2, 70, 70, 6, 3, 20, 0, 72), { window: 33, softcap: 2, scale: 0.3 })),
      fwd(withOpts(shape(1, 4, 150, 8, 2, 32, 146, 160), { window: 70, softcap: 50 })),
      ...(await backwardCases(rng, [[withOpts(shape(2, 70, 70, 6, 3, 20, 0, 72), { window: 33, softcap: 2, scale: 0.3 }), false]])),
    ];
    await assertPoolBits(be1, be3, pool, cases);
  } finally {
    await be1.destroy();
    await be3.destroy();
  }
});

test('attention and attentionBackward refuse a bad scale, softcap or window on every backend', async () => {
  const backends: Array<[string, Backend]> = [['reference', refF32], ...(await targets()).map((b): [string, Backend] => [b.name, b.backend])];
  const s = shape(1, 2, 2, 2, 1, 8, 0, 2), nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
  const inputs = { q: new Float32Array(nq), k: new Float32Array(nkv), v: new Float32Array(nkv), dout: new Float32Array(nq), o: new Float32Array(nq), l: new Float32Array(s.B * s.H * s.T) };
  for (const bad of [{ window: -1 }, { window: 2.5 }, { window: NaN }, { softcap: -1 }, { softcap: Infinity }, { softcap: NaN }, { scale: 0 }, { scale: -0.5 }, { scale: Infinity }, { scale: NaN }] as Opts[]) {
    const sb = withOpts(s, bad);
    const field = Object.keys(bad)[0]!;
    for (const [name, be] of backends) {
      for (const which of ['attention', 'attentionBackward'] as const) {
        const c: Case = {
          what: which, inputs, outputs: { out: nq, lse: s.B * s.H * s.T, dq: nq, dk: nkv, dv: nkv },
          run: (b, t) => which === 'attention' ? b.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, sb)
            : b.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.o!, t.l!, sb),
        };
        let err: Error | null = null;
        try { await runCase(be, c); } catch (e) { err = e as Error; }
        assert.ok(err && err.message.includes(field), `${name} ${which} ${JSON.stringify(bad)}: expected an error naming ${field}, got ${err?.message ?? 'none'}`);
      }
    }
  }
});


// ---- packed sequences (docStart) ---------------------------------------------------------

/**
 * A random packed layout of B rows of T: examples of 1..maxLen tokens (a quarter of them one
 * token), the last segment of odd rows standing for a padding tail. Returns the segment lengths.
 */
function randomSegments(rng: Rng, B: number, T: number, maxLen: number): number[][] {
  return Array.from({ length: B }, () => {
    const segs: number[] = [];
    for (let o = 0; o < T;) {
      const L = Math.min(T - o, rng.int(4) === 0 ? 1 : 1 + rng.int(maxLen));
      segs.push(L);
      o += L;
    }
    return segs;
  });
}

/** s with docStart given as a tensor later (runCase input 'ds'). */
const packedCase = (s: AttentionShape, ds: Int32Array, what: string, heavy: boolean): Case => {
  const nq = s.B * s.T * s.H * s.D;
  return {
    what: `${what} ${label(s)} docStart [${[...ds].join(',').slice(0, 60)}…]`, heavy,
    inputs: { q: randn(new Rng(ds.length * 7 + s.D), nq, 1.5), k: kv(new Rng(s.T + 1), s, NaN), v: kv(new Rng(s.T + 2), s, NaN), ds },
    outputs: { out: nq, lse: s.B * s.H * s.T },
    run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, { ...s, docStart: t.ds! }),
  };
};

test('attention reference with docStart: each example bit for bit as alone; == explicit float64 formula', async () => {
  const rng = new Rng(510);
  for (const [base, o, segs] of [
    [shape(2, 9, 9, 4, 2, 8, 0, 11), {}, [[3, 1, 5], [1, 1, 4, 3]]],
    [shape(1, 12, 12, 4, 1, 16, 0, 12), { window: 3, softcap: 2 }, [[5, 1, 1, 4, 1]]],
    [shape(2, 7, 7, 2, 2, 8, 0, 7), { scale: 0.25 }, [[7], [1, 1, 1, 1, 1, 1, 1]]],
  ] as Array<[AttentionShape, Opts, number[][]]>) {
    const s = withOpts(base, o), { B, T, H, KVH, D } = s;
    const ds = docStartOf(segs, T);
    const nq = B * T * H * D;
    const q = randn(rng, nq, 1.5), k = kv(rng, s, NaN), v = kv(rng, s, NaN);
    const got = await runCase(refF32, { what: 'attention', inputs: { q, k, v, ds }, outputs: { out: nq, lse: B * H * T }, run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, { ...s, docStart: t.ds! }) });
    const want = attention64(q, k, v, s, ds);
    assertClose(got.out!, want.out, { atol: 4e-6, rtol: 1e-5, what: `out ${label(s)} packed` });
    assertClose(got.lse!, want.lse, { atol: 2e-6, rtol: 1e-6, what: `lse ${label(s)} packed` });
    // every example, run alone as a sequence of its own, gives the same bits
    for (let b = 0; b < B; b++) {
      let t0 = 0;
      for (const L of segs[b]!) {
        const one = shape(1, L, L, H, KVH, D, 0, L);
        const rows = (a: Float32Array, w: number, r0: number, n: number) => a.slice(r0 * w, (r0 + n) * w);
        const kvRows = (a: Float32Array) => rows(a, KVH * D, b * s.kvStride + t0, L);
        const alone = await runCase(refF32, { what: 'attention alone', inputs: { q: rows(q, H * D, b * T + t0, L), k: kvRows(k), v: kvRows(v) }, outputs: { out: L * H * D, lse: H * L },
          run: (be, t) => be.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, withOpts(one, o)) });
        assertBitsEqual(rows(got.out as Float32Array, H * D, b * T + t0, L), alone.out as Float32Array, `out of example [${t0}, ${t0 + L}) of row ${b}, ${label(s)}`);
        const lseRows = new Float32Array(H * L);
        for (let h = 0; h < H; h++) lseRows.set((got.lse as Float32Array).subarray((b * H + h) * T + t0, (b * H + h) * T + t0 + L), h * L);
        assertBitsEqual(lseRows, alone.lse as Float32Array, `lse of example [${t0}, ${t0 + L}) of row ${b}, ${label(s)}`);
        t0 += L;
      }
    }
  }
});

test('attentionBackward with docStart is the gradient (float64 finite differences on q, k, v)', () => {
  const rng = new Rng(511);
  for (const [base, o, segs] of [
    [shape(2, 6, 6, 4, 2, 4, 0, 8), {}, [[2, 1, 3], [4, 2]]],
    [shape(1, 8, 8, 4, 1, 4, 0, 8), { window: 3, softcap: 2 }, [[1, 5, 2]]],
  ] as Array<[AttentionShape, Opts, number[][]]>) {
    const s = withOpts(base, o);
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const ds = refF64.alloc('i32', s.B * s.T, 'docStart');
    refF64.write(ds, docStartOf(segs, s.T));
    const sd = { ...s, docStart: ds };
    const q = put64(randn(rng, nq, 1.5), 'q'), k = put64(kv(rng, s, 0.5), 'k'), v = put64(kv(rng, s, -0.5), 'v');
    const out = refF64.alloc('f32', nq, 'out'), lse = refF64.alloc('f32', s.B * s.H * s.T, 'lse');
    const doutHost = randn(rng, nq);
    const dout = put64(doutHost, 'dout');
    const dq = refF64.alloc('f32', nq, 'dq'), dk = refF64.alloc('f32', nkv, 'dk'), dv = refF64.alloc('f32', nkv, 'dv');
    refF64.attention(out, lse, q, k, v, sd);
    refF64.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, sd);
    const loss = () => { refF64.attention(out, lse, q, k, v, sd); return dot(refF64, out, doutHost); };
    fdCheck({ x: q, loss, analytic: refF64.peekF(dq).slice(), what: `attention dq ${label(s)} packed` });
    fdCheck({ x: k, loss, analytic: refF64.peekF(dk).slice(), what: `attention dk ${label(s)} packed` });
    fdCheck({ x: v, loss, analytic: refF64.peekF(dv).slice(), what: `attention dv ${label(s)} packed` });
    freeAll(refF64, q, k, v, out, lse, dout, dq, dk, dv, ds);
  }
});

/** Packed shapes of the parity tests: [shape, options, maxLen of the random examples, heavy]. */
const PACKED: Array<[AttentionShape, Opts, number, boolean]> = [
  [shape(2, 17, 17, 4, 4, 16, 0, 17), {}, 6, false],
  [shape(2, 9, 9, 4, 1, 8, 0, 12), {}, 1, false], // one-token examples only: every query sees itself alone
  [shape(1, 33, 33, 4, 2, 64, 0, 33), { softcap: 2 }, 12, false],
  [shape(2, 40, 40, 4, 2, 32, 0, 44), { window: 9, scale: 0.25 }, 20, false],
  [shape(1, 100, 100, 4, 2, 16, 0, 104), {}, 70, false], // examples across key blocks (64) and query tiles (16, 32)
  [shape(1, 130, 130, 2, 1, 8, 0, 130), { window: 70, softcap: 50 }, 90, true],
  [shape(3, 64, 64, 8, 2, 64, 0, 64), {}, 40, true],
];

test('attention parity with docStart: random layouts, alone and with window, soft-cap, scale', async () => {
  const rng = new Rng(512);
  const cases = PACKED.map(([base, o, maxLen, heavy]) => packedCase(withOpts(base, o), docStartOf(randomSegments(rng, base.B, base.T, maxLen), base.T), 'attention', heavy));
  await parity(cases, { out: { atol: 1e-5, rtol: 1e-5, why: 'f32 dots + tanh + exp + weighted sums in another order' }, lse: { atol: 4e-6, rtol: 2e-6, why: 'max + log of an f32 sum' } });
});

test('attentionBackward parity with docStart: random layouts (kvStride > S rows come back zero)', async () => {
  const rng = new Rng(513);
  const cases: Case[] = [];
  for (const [base, o, maxLen, heavy] of PACKED) {
    const s = withOpts(base, o), ds = docStartOf(randomSegments(rng, s.B, s.T, maxLen), s.T);
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const fc = packedCase(s, ds, 'attention', heavy);
    const fwd = await runCase(refF32, fc);
    const dout = randn(rng, nq);
    cases.push({
      what: `attentionBackward ${label(s)} packed`, heavy,
      inputs: { ...fc.inputs, dout, out: fwd.out!, lse: fwd.lse! },
      outputs: { dq: nq, dk: nkv, dv: nkv },
      run: (be, t) => be.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.out!, t.lse!, { ...s, docStart: t.ds! }),
    });
  }
  await parity(cases, { atol: 2e-5, rtol: 2e-5, why: 'recomputed softmax and soft-cap + f32 sums over D and over queries in another order' });
});

test('wasm attention with docStart: 1 thread == 3 threads, bit for bit', async () => {
  const be1 = await createWasmBackend({ threads: 1 }), be3 = await createWasmBackend({ threads: 3 });
  try {
    const pool = wasmInternals(be3).pool;
    assert.ok(pool, 'no worker pool (Node always has shared memory)');
    const rng = new Rng(514);
    const s = withOpts(shape(2, 70, 70, 6, 3, 20, 0, 72), { window: 33, softcap: 2 });
    const ds = docStartOf(randomSegments(rng, s.B, s.T, 30), s.T);
    const fc = packedCase(s, ds, 'attention', false);
    const fwd = await runCase(refF32, fc), nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const bc: Case = {
      what: `attentionBackward ${label(s)} packed`, inputs: { ...fc.inputs, dout: randn(rng, nq), out: fwd.out!, lse: fwd.lse! }, outputs: { dq: nq, dk: nkv, dv: nkv },
      run: (be, t) => be.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.out!, t.lse!, { ...s, docStart: t.ds! }),
    };
    await assertPoolBits(be1, be3, pool, [fc, bc]);
  } finally {
    await be1.destroy();
    await be3.destroy();
  }
});

test('attention refuses docStart with a KV cache or of the wrong type on every backend; bad layouts on reference and wasm', async () => {
  const backends: Array<[string, Backend]> = [['reference', refF32], ...(await targets()).map((b): [string, Backend] => [b.name, b.backend])];
  const refuse = async (name: string, be: Backend, s: AttentionShape, ds: Int32Array | Float32Array, expect: string) => {
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    for (const which of ['attention', 'attentionBackward'] as const) {
      if (which === 'attentionBackward' && s.pos0 !== 0) continue; // refused for pos0 alone
      const c: Case = {
        what: which, inputs: { q: new Float32Array(nq), k: new Float32Array(nkv), v: new Float32Array(nkv), dout: new Float32Array(nq), o: new Float32Array(nq), l: new Float32Array(s.B * s.H * s.T), ds },
        outputs: { out: nq, lse: s.B * s.H * s.T, dq: nq, dk: nkv, dv: nkv },
        run: (b, t) => which === 'attention' ? b.attention(t.out!, t.lse!, t.q!, t.k!, t.v!, { ...s, docStart: t.ds! })
          : b.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.o!, t.l!, { ...s, docStart: t.ds! }),
      };
      let err: Error | null = null;
      try { await runCase(be, c); } catch (e) { err = e as Error; }
      assert.ok(err && err.message.includes(expect), `${name} ${which}: expected an error naming "${expect}", got ${err?.message ?? 'none'}`);
    }
  };
  const train = shape(1, 4, 4, 2, 1, 8, 0, 4);
  for (const [name, be] of backends) {
    await refuse(name, be, shape(1, 2, 5, 2, 1, 8, 3, 6), new Int32Array(2), 'pos0 = 0 and S = T');
    await refuse(name, be, train, new Float32Array(4), 'expected i32');
    await refuse(name, be, train, new Int32Array(3), 'docStart');
    if (name === 'webgpu') continue; // its docStart stays on the GPU: the layout is the caller's contract
    await refuse(name, be, train, new Int32Array([0, 0, 2, 0]), 'docStart[3]'); // an example cannot start before the previous one
    await refuse(name, be, train, new Int32Array([1, 1, 2, 3]), 'docStart[0]');
  }
});

test('webgpu with docStart over blocks of sequences (tensors larger than a 4 KiB binding)', async () => {
  const be = await testWebGpu({ maxBindingBytes: 4096 });
  if (!be) return; // no WebGPU here (CI=true makes that a failure)
  try {
    const rng = new Rng(515);
    const s = withOpts(shape(5, 12, 12, 4, 2, 16, 0, 14), { window: 7 }); // one sequence of q: 3 KiB
    const ds = docStartOf(randomSegments(rng, s.B, s.T, 6), s.T);
    const fc = packedCase(s, ds, 'attention', false), nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const fwd = await runCase(refF32, fc);
    const bc: Case = {
      what: `attentionBackward ${label(s)} packed`, inputs: { ...fc.inputs, dout: randn(rng, nq), out: fwd.out!, lse: fwd.lse! }, outputs: { dq: nq, dk: nkv, dv: nkv },
      run: (b, t) => b.attentionBackward(t.dq!, t.dk!, t.dv!, t.dout!, t.q!, t.k!, t.v!, t.out!, t.lse!, { ...s, docStart: t.ds! }),
    };
    for (const [c, tol, minDispatches] of [[fc, 1e-5, 3], [bc, 2e-5, 6]] as const) {
      const want = await runCase(refF32, c), stats = webgpuInternals(be).stats, d0 = stats.dispatches;
      const got = await runCase(be, c);
      assert.ok(stats.dispatches - d0 >= minDispatches, `${c.what}: not split over sequences`);
      for (const name of Object.keys(want)) assertClose(got[name]!, want[name]!, { atol: tol, rtol: tol, what: `split ${c.what}: ${name}` });
    }
  } finally {
    await be.destroy();
  }
});

test.run();
