// The boundary checks of the Backend contract (src/backend/validate.ts, plus each backend's own
// check that a tensor or weight is its own and live) that the family tests do not reach, as one
// table run on every backend: each row makes one bad call, which must be refused at once (read():
// rejected) with a message naming the call and the operand, and every tensor the row allocated —
// poisoned beforehand — and every 4-bit weight must be unchanged: nothing is written before the
// check. Rows exist where the contract is the same for all backends; `only` marks the few that
// are a backend's own (token ids and targets are checked where the host sees them; head dims).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AttentionShape, Backend, BufferType, QuantUpload, QuantWeight, Tensor } from '../../src/backend/backend.ts';
import { HOST_ARRAY } from '../../src/backend/validate.ts';
import { quantize4bit } from '../../src/quant/quantize.ts';
import type { QuantType } from '../../src/quant/types.ts';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { refF32, targets, type Host } from './harness.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { testWebGpu } from '../webgpu/gpu.ts';

interface Row {
  name: string;
  /** the refusal's message */
  msg: RegExp;
  /** allocates what the call needs through s, and returns the call */
  make(s: Scene): () => unknown;
  /** the backends that refuse it (default: all) */
  only?: Array<Backend['name']>;
}

/** Contents no kernel would write by chance: distinct, finite, exact in every type. */
function pattern(type: BufferType, n: number): Host {
  const a = new HOST_ARRAY[type](n);
  for (let i = 0; i < n; i++) a[i] = type === 'u8' ? (i * 37 + 11) & 255 : type === 'f16' || type === 'bf16' ? 0x3c00 + i : 1000 + i;
  return a;
}

/** What one row allocates on one backend, with the contents each must keep. */
class Scene {
  private readonly kept: Array<[Tensor, Host]> = [];
  private readonly weights: QuantWeight[] = [];
  constructor(readonly be: Backend) {}

  t(type: BufferType, n: number, label: string, data = pattern(type, n)): Tensor {
    const t = this.be.alloc(type, n, label);
    this.kept.push([t, data]);
    this.be.write(t, data);
    return t;
  }
  f32(n: number, label: string): Tensor {
    return this.t('f32', n, label);
  }
  i32(values: number[], label: string): Tensor {
    return this.t('i32', values.length, label, Int32Array.from(values));
  }
  freed(label: string): Tensor {
    const t = this.be.alloc('f32', 8, label);
    this.be.free(t);
    return t;
  }
  quant(u: QuantUpload): QuantWeight {
    const w = this.be.uploadQuant(u);
    this.weights.push(w);
    return w;
  }

  /** The row norms² of every weight: they change if any part of it does. */
  async weightNorms(): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const w of this.weights) {
      const n = this.be.alloc('f32', w.N, 'norms');
      this.be.qRowSumSquares(n, w);
      out.push((await this.be.read(n)) as Float32Array);
      this.be.free(n);
    }
    return out;
  }
  async assertUnchanged(what: string, norms: Float32Array[]): Promise<void> {
    for (const [t, data] of this.kept) assertBitsEqual(await this.be.read(t), data, `${what}: ${t.label}`);
    const now = await this.weightNorms();
    now.forEach((n, i) => assertBitsEqual(n, norms[i]!, `${what}: weight ${this.weights[i]!.label}`));
  }
  release(): void {
    for (const [t] of this.kept) this.be.free(t);
    for (const w of this.weights) this.be.freeQuant(w);
  }
}

/** The error a call is refused with: thrown, or for read() its rejection; null if it went through. */
async function refusal(call: () => unknown): Promise<Error | null> {
  let result: unknown;
  try {
    result = call();
  } catch (e) {
    return e as Error;
  }
  if (!(result instanceof Promise)) return null;
  try {
    await result;
  } catch (e) {
    return e as Error;
  }
  return null;
}

/** attention or attentionBackward on operands sized for sh, except those given a type and length in `odd`. */
function attention(s: Scene, sh: AttentionShape, backward: boolean, odd: Record<string, [BufferType, number]> = {}): () => void {
  const nq = sh.B * sh.T * sh.H * sh.D, nkv = sh.B * sh.kvStride * sh.KVH * sh.D, nl = sh.B * sh.H * sh.T;
  const sizes: Record<string, number> = { q: nq, k: nkv, v: nkv, out: nq, lse: nl, dq: nq, dk: nkv, dv: nkv, dout: nq };
  const t = (name: string) => {
    const [type, n]: [BufferType, number] = odd[name] ?? ['f32', sizes[name]!];
    return s.t(type, n, name);
  };
  const q = t('q'), k = t('k'), v = t('v'), out = t('out'), lse = t('lse');
  if (!backward) return () => s.be.attention(out, lse, q, k, v, sh);
  const dq = t('dq'), dk = t('dk'), dv = t('dv'), dout = t('dout');
  return () => s.be.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, sh);
}

/** A [4, 64] weight, blocksize 64 unless given: 4 blocks, 128 packed bytes. */
async function weight(quantType: QuantType, doubleQuant: boolean, blocksize = 64): Promise<QuantUpload> {
  const q = await quantize4bit(new Rng(41).f32(4 * 64, 0.05), { quantType, blocksize, doubleQuant, shape: [4, 64] });
  return { N: 4, K: 64, blocksize, quantType, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: 'w' };
}

type Weights = Record<'plain' | 'dq' | 'bs32' | 'fp4', QuantUpload>;

function rows(w: Weights): Row[] {
  const { plain, dq } = w;
  const nested = dq.dq!;
  // B 1, T 2, H 2, KVH 1, D 8 (a head dim every backend takes), no cache
  const base: AttentionShape = { B: 1, T: 2, S: 2, H: 2, KVH: 1, D: 8, pos0: 0, kvStride: 2 };
  const short = (name: string, msg: RegExp, make: (s: Scene) => () => unknown): Row => ({ name: `${name} short`, msg, make });
  return [
    // ---- buffers
    { name: 'alloc of a negative length', msg: /^alloc neg: bad length -1$/, make: (s) => () => s.be.alloc('f32', -1, 'neg') },
    { name: 'alloc of a fractional length', msg: /^alloc frac: bad length 2\.5$/, make: (s) => () => s.be.alloc('f32', 2.5, 'frac') },
    { name: 'write of another host array', msg: /^write x: a f32 tensor takes a Float32Array, got Int32Array$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.write(x, Int32Array.of(1)); } },
    { name: 'write of floats into halves', msg: /^write h: a bf16 tensor takes a Uint16Array, got Float32Array$/, make: (s) => { const h = s.t('bf16', 4, 'h'); return () => s.be.write(h, Float32Array.of(1)); } },
    { name: 'write past the end', msg: /^write: \[3, 5\) is outside x \[4\]$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.write(x, Float32Array.of(1, 2), 3); } },
    { name: 'write at a fractional offset', msg: /^write: \[0\.5, 1\.5\) is outside x \[4\]$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.write(x, Float32Array.of(1), 0.5); } },
    { name: 'read past the end', msg: /^read: \[1, 5\) is outside x \[4\]$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.read(x, 1, 4); } },
    { name: 'read at a negative offset', msg: /^read: \[-1, 0\) is outside x \[4\]$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.read(x, -1, 1); } },
    { name: 'copy between types', msg: /^copy: s is i32, d is f32$/, make: (s) => { const d = s.f32(4, 'd'), src = s.t('i32', 4, 's'); return () => s.be.copy(d, 0, src, 0, 2); } },
    { name: 'copy from past the end', msg: /^copy from: \[2, 5\) is outside s \[4\]$/, make: (s) => { const d = s.f32(8, 'd'), src = s.f32(4, 's'); return () => s.be.copy(d, 0, src, 2, 3); } },
    { name: 'copy to past the end', msg: /^copy to: \[3, 5\) is outside d \[4\]$/, make: (s) => { const d = s.f32(4, 'd'), src = s.f32(8, 's'); return () => s.be.copy(d, 3, src, 0, 2); } },
    { name: 'copy of a negative count', msg: /^copy from: \[0, -1\) is outside s \[4\]$/, make: (s) => { const d = s.f32(4, 'd'), src = s.f32(4, 's'); return () => s.be.copy(d, 0, src, 0, -1); } },
    { name: 'fill past the end', msg: /^fill: \[2, 5\) is outside x \[4\]$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.fill(x, 1, 2, 3); } },
    { name: 'fill from past the end to the end', msg: /^fill: \[5, 4\) is outside x \[4\]$/, make: (s) => { const x = s.f32(4, 'x'); return () => s.be.fill(x, 1, 5); } },

    // ---- tensors and weights of this backend, live (each backend words it its own way)
    { name: 'a freed operand', msg: /add x: .*\bx (was freed|is not a live reference tensor)$/, make: (s) => { const o = s.f32(8, 'o'), x = s.freed('x'); return () => s.be.add(o, x, 8); } },
    { name: 'a tensor freed twice', msg: /free: .*\bx (was freed|is not live)$/, make: (s) => { const x = s.freed('x'); return () => s.be.free(x); } },
    {
      name: 'a tensor no backend made',
      msg: /add x: .*\bforeign (is not a live reference tensor|does not belong to the (wasm|webgpu) backend)$/,
      make: (s) => { const o = s.f32(8, 'o'), foreign: Tensor = { type: 'f32', length: 8, label: 'foreign' }; return () => s.be.add(o, foreign, 8); },
    },
    {
      name: 'a freed weight',
      msg: /qMatmul: .*\bw (was freed|is not a live reference quant weight)$/,
      make: (s) => { const y = s.f32(8, 'y'), x = s.f32(128, 'x'), q = s.be.uploadQuant(plain); s.be.freeQuant(q); return () => s.be.qMatmul(y, x, q, 2); },
    },

    // ---- operands: type, and at least the elements the call reads or writes (one kernel each)
    short('embedding ids', /^embedding ids: ids holds 1 elements, 2 needed$/, (s) => { const o = s.f32(8, 'out'), tb = s.f32(12, 'table'), ids = s.i32([0], 'ids'); return () => s.be.embedding(o, tb, ids, 2, 4); }),
    { name: 'embedding ids of floats', msg: /^embedding ids: ids is f32, expected i32$/, make: (s) => { const o = s.f32(8, 'out'), tb = s.f32(12, 'table'), ids = s.f32(2, 'ids'); return () => s.be.embedding(o, tb, ids, 2, 4); } },
    { name: 'embedding table of ints', msg: /^embedding table: table is i32, expected f32, f16 or bf16$/, make: (s) => { const o = s.f32(8, 'out'), tb = s.t('i32', 12, 'table'), ids = s.i32([0, 1], 'ids'); return () => s.be.embedding(o, tb, ids, 2, 4); } },
    short('rmsNorm rstd', /^rmsNorm rstd: rstd holds 1 elements, 2 needed$/, (s) => { const o = s.f32(8, 'out'), r = s.f32(1, 'rstd'), x = s.f32(8, 'x'), g = s.f32(4, 'w'); return () => s.be.rmsNorm(o, r, x, g, 2, 4, 1e-5); }),
    short('rmsNormBackward w', /^rmsNormBackward w: w holds 3 elements, 4 needed$/, (s) => {
      const dx = s.f32(8, 'dx'), dy = s.f32(8, 'dy'), x = s.f32(8, 'x'), g = s.f32(3, 'w'), r = s.f32(2, 'rstd');
      return () => s.be.rmsNormBackward(dx, dy, x, g, r, 2, 4);
    }),
    short('matmul b', /^matmul b: b holds 11 elements, 12 needed$/, (s) => { const o = s.f32(6, 'out'), a = s.f32(8, 'a'), b = s.f32(11, 'b'); return () => s.be.matmul(o, a, b, 2, 3, 4, { transB: true }); }),
    short('matmul bias', /^matmul bias: bias holds 2 elements, 3 needed$/, (s) => { const o = s.f32(6, 'out'), a = s.f32(8, 'a'), b = s.f32(12, 'b'), bias = s.f32(2, 'bias'); return () => s.be.matmul(o, a, b, 2, 3, 4, { bias }); }),
    { name: 'matmul of a half b with transA', msg: /^matmul b: b is f16, expected f32$/, make: (s) => { const o = s.f32(6, 'out'), a = s.f32(8, 'a'), b = s.t('f16', 12, 'b'); return () => s.be.matmul(o, a, b, 2, 3, 4, { transA: true }); } },
    short('qMatmul bias', /^qMatmul bias: bias holds 3 elements, 4 needed$/, (s) => { const y = s.f32(8, 'out'), x = s.f32(128, 'x'), bias = s.f32(3, 'bias'), q = s.quant(plain); return () => s.be.qMatmul(y, x, q, 2, { bias }); }),
    short('qMatmulBackwardInput dy', /^qMatmulBackwardInput dy: dy holds 7 elements, 8 needed$/, (s) => { const dx = s.f32(128, 'dx'), dy = s.f32(7, 'dy'), q = s.quant(plain); return () => s.be.qMatmulBackwardInput(dx, dy, q, 2); }),
    // positions 3 and 4 of D 8: 5 rows of 4 angles
    short('rope cos', /^rope cos: cos holds 16 elements, 20 needed$/, (s) => { const x = s.f32(16, 'x'), cos = s.f32(16, 'cos'), sin = s.f32(20, 'sin'); return () => s.be.rope(x, { cos, sin }, 2, 2, 1, 8, 3); }),
    short('ropeBackward sin', /^ropeBackward sin: sin holds 16 elements, 20 needed$/, (s) => { const x = s.f32(16, 'dx'), cos = s.f32(20, 'cos'), sin = s.f32(16, 'sin'); return () => s.be.ropeBackward(x, { cos, sin }, 2, 2, 1, 8, 3); }),
    short('attention lse', /^attention lse: lse holds 3 elements, 4 needed$/, (s) => attention(s, base, false, { lse: ['f32', 3] })),
    { name: 'attention q of bytes', msg: /^attention q: q is u8, expected f32$/, make: (s) => attention(s, base, false, { q: ['u8', 32] }) },
    short('attentionBackward dv', /^attentionBackward dv: dv holds 15 elements, 16 needed$/, (s) => attention(s, base, true, { dv: ['f32', 15] })),
    short('swiglu up', /^swiglu up: up holds 7 elements, 8 needed$/, (s) => { const o = s.f32(8, 'out'), g = s.f32(8, 'gate'), u = s.f32(7, 'up'); return () => s.be.swiglu(o, g, u, 8); }),
    short('geglu gate', /^geglu gate: gate holds 7 elements, 8 needed$/, (s) => { const o = s.f32(8, 'out'), g = s.f32(7, 'gate'), u = s.f32(8, 'up'); return () => s.be.geglu(o, g, u, 8); }),
    short('swigluBackward dup', /^swigluBackward dup: dup holds 7 elements, 8 needed$/, (s) => {
      const dg = s.f32(8, 'dgate'), du = s.f32(7, 'dup'), d = s.f32(8, 'dout'), g = s.f32(8, 'gate'), u = s.f32(8, 'up');
      return () => s.be.swigluBackward(dg, du, d, g, u, 8);
    }),
    short('gegluBackward dout', /^gegluBackward dout: dout holds 7 elements, 8 needed$/, (s) => {
      const dg = s.f32(8, 'dgate'), du = s.f32(8, 'dup'), d = s.f32(7, 'dout'), g = s.f32(8, 'gate'), u = s.f32(8, 'up');
      return () => s.be.gegluBackward(dg, du, d, g, u, 8);
    }),
    short('softcap x', /^softcap x: x holds 7 elements, 8 needed$/, (s) => { const x = s.f32(7, 'x'); return () => s.be.softcap(x, 8, 30); }),
    short('addUniformNoise x', /^addUniformNoise x: x holds 7 elements, 8 needed$/, (s) => { const x = s.f32(7, 'x'); return () => s.be.addUniformNoise(x, 8, 0.1, 1); }),
    short('add out', /^add out: out holds 7 elements, 8 needed$/, (s) => { const o = s.f32(7, 'out'), x = s.f32(8, 'x'); return () => s.be.add(o, x, 8); }),
    short('dropout x', /^dropout x: x holds 7 elements, 8 needed$/, (s) => { const o = s.f32(8, 'out'), x = s.f32(7, 'x'); return () => s.be.dropout(o, x, 8, 0.1, 1); }),
    short('crossEntropy targets', /^crossEntropy targets: targets holds 1 elements, 2 needed$/, (s) => {
      const l = s.f32(2, 'losses'), z = s.f32(10, 'logits'), t = s.i32([0], 'targets');
      return () => s.be.crossEntropy(l, z, t, 2, 5, 1);
    }),
    { name: 'crossEntropy targets of floats', msg: /^crossEntropy targets: targets is f32, expected i32$/, make: (s) => { const l = s.f32(2, 'losses'), z = s.f32(10, 'logits'), t = s.f32(2, 'targets'); return () => s.be.crossEntropy(l, z, t, 2, 5, 1); } },
    short('crossEntropy losses', /^crossEntropy losses: losses holds 1 elements, 2 needed$/, (s) => {
      const l = s.f32(1, 'losses'), z = s.f32(10, 'logits'), t = s.i32([0, 4], 'targets');
      return () => s.be.crossEntropy(l, z, t, 2, 5, 1);
    }),
    short('scaleColumns bias', /^scaleColumns bias: bias holds 3 elements, 4 needed$/, (s) => {
      const o = s.f32(8, 'out'), x = s.f32(8, 'x'), g = s.f32(4, 'g'), bias = s.f32(3, 'bias');
      return () => s.be.scaleColumns(o, x, g, 2, 4, { bias });
    }),
    short('columnDot scale', /^columnDot scale: scale holds 3 elements, 4 needed$/, (s) => {
      const o = s.f32(4, 'out'), a = s.f32(8, 'a'), b = s.f32(8, 'b'), scale = s.f32(3, 'scale');
      return () => s.be.columnDot(o, a, b, 2, 4, { scale });
    }),
    short('doraScale nsq', /^doraScale nsq: nsq holds 3 elements, 4 needed$/, (s) => {
      const g = s.f32(4, 'g'), inv = s.f32(4, 'invNorm'), m = s.f32(4, 'm'), nsq = s.f32(3, 'nsq');
      return () => s.be.doraScale(g, inv, m, nsq, 4);
    }),
    short('rowSumSquares out', /^rowSumSquares out: out holds 1 elements, 2 needed$/, (s) => { const o = s.f32(1, 'out'), x = s.f32(8, 'x'); return () => s.be.rowSumSquares(o, x, 2, 4); }),
    short('qRowSumSquares out', /^qRowSumSquares out: out holds 3 elements, 4 needed$/, (s) => { const o = s.f32(3, 'out'), q = s.quant(plain); return () => s.be.qRowSumSquares(o, q); }),
    short('sumSquares out', /^sumSquares out: out holds 0 elements, 1 needed$/, (s) => { const o = s.f32(0, 'out'), x = s.f32(8, 'x'); return () => s.be.sumSquares(o, x, 8); }),
    short('adamwStep v', /^adamwStep v: v holds 7 elements, 8 needed$/, (s) => {
      const p = s.f32(8, 'param'), g = s.f32(8, 'grad'), m = s.f32(8, 'm'), v = s.f32(7, 'v');
      return () => s.be.adamwStep(p, g, m, v, 8, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 });
    }),
    short('sgdStep grad', /^sgdStep grad: grad holds 7 elements, 8 needed$/, (s) => { const p = s.f32(8, 'param'), g = s.f32(7, 'grad'); return () => s.be.sgdStep(p, g, 8, 0.1, 1); }),

    // ---- options and scalars
    { name: 'matmul bias with accumulate', msg: /^matmul: bias is only allowed with accumulate false$/, make: (s) => { const o = s.f32(6, 'out'), a = s.f32(8, 'a'), b = s.f32(12, 'b'), bias = s.f32(3, 'bias'); return () => s.be.matmul(o, a, b, 2, 3, 4, { bias, accumulate: true }); } },
    { name: 'qMatmul bias with accumulate', msg: /^qMatmul: bias is only allowed with accumulate false$/, make: (s) => { const y = s.f32(8, 'out'), x = s.f32(128, 'x'), bias = s.f32(4, 'bias'), q = s.quant(plain); return () => s.be.qMatmul(y, x, q, 2, { bias, accumulate: true }); } },
    ...[1, -0.1, NaN].map((p): Row => ({ name: `dropout p ${p}`, msg: new RegExp(`^dropout: p must be in \\[0, 1\\), got ${p}$`), make: (s) => { const o = s.f32(8, 'out'), x = s.f32(8, 'x'); return () => s.be.dropout(o, x, 8, p, 1); } })),

    // ---- attention shapes (scale, softcap, window and the docStart refusals: attention.test.ts)
    { name: 'attention H 4, KVH 3', msg: /^attention: H must be a multiple of KVH \(/, make: (s) => attention(s, { ...base, H: 4, KVH: 3 }, false) },
    { name: 'attentionBackward KVH 0', msg: /^attentionBackward: H must be a multiple of KVH \(/, make: (s) => attention(s, { ...base, KVH: 0 }, true) },
    { name: 'attention pos0 -1', msg: /^attention: pos0 must be ≥ 0 \(/, make: (s) => attention(s, { ...base, pos0: -1 }, false) },
    { name: 'attention pos0 + T > S', msg: /^attention: pos0 \+ T exceeds S \(/, make: (s) => attention(s, { ...base, pos0: 1 }, false) },
    { name: 'attention S > kvStride', msg: /^attention: S exceeds kvStride \(/, make: (s) => attention(s, { ...base, T: 3, S: 3 }, false) },
    { name: 'attention D 0', msg: /^attention: this backend's attention kernels take head dims/, make: (s) => attention(s, { ...base, D: 0 }, false) },
    { name: 'attentionBackward with a KV cache', msg: /^attentionBackward: pos0 must be 0 \(training has no KV cache\)/, make: (s) => attention(s, { ...base, T: 1, pos0: 1 }, true) },
    {
      name: 'attention docStart with S ≠ T', msg: /^attention: docStart \(packed sequences\) needs pos0 = 0 and S = T .*got pos0 0, S 3, T 2$/,
      make: (s) => attention(s, { ...base, S: 3, kvStride: 3, docStart: s.i32([0, 0], 'docStart') }, false),
    },
    // the head dims of the kernels (the reference takes any)
    { name: 'attention D 2²⁰', only: ['wasm', 'webgpu'], msg: /^attention: this backend's attention kernels take head dims .*up to \d+ \(/, make: (s) => attention(s, { B: 1, T: 1, S: 1, H: 1, KVH: 1, D: 2 ** 20, pos0: 0, kvStride: 1 }, false) },
    { name: 'attention D 6', only: ['webgpu'], msg: /^attention: this backend's attention kernels take head dims that are multiples of 4 up to/, make: (s) => attention(s, { ...base, D: 6 }, false) },

    // ---- token ids and targets: checked where the host sees them (webgpu keeps them on the GPU)
    { name: 'embedding id V', only: ['reference', 'wasm'], msg: /^embedding: token id 3 at row 1 is outside table \[3, 4\]$/, make: (s) => { const o = s.f32(8, 'out'), tb = s.f32(12, 'table'), ids = s.i32([0, 3], 'ids'); return () => s.be.embedding(o, tb, ids, 2, 4); } },
    { name: 'embedding id -1', only: ['reference', 'wasm'], msg: /^embedding: token id -1 at row 0 is outside table \[3, 4\]$/, make: (s) => { const o = s.f32(8, 'out'), tb = s.f32(12, 'table'), ids = s.i32([-1, 0], 'ids'); return () => s.be.embedding(o, tb, ids, 2, 4); } },
    ...[5, -1].map((target): Row => ({
      name: `crossEntropy target ${target}`, only: ['reference', 'wasm'], msg: new RegExp(`^crossEntropy: target ${target} at row 1 is outside \\[0, 5\\) and is not the ignore index -100$`),
      make: (s) => { const l = s.f32(2, 'losses'), z = s.f32(10, 'logits'), t = s.i32([-100, target], 'targets'); return () => s.be.crossEntropy(l, z, t, 2, 5, 1); },
    })),

    // ---- 4-bit uploads (part lengths beyond these, and larger weights: quantslot.test.ts)
    { name: 'uploadQuant of 0 rows', msg: /^uploadQuant w: \[0, 64\] blocksize 64 is not a valid weight$/, make: (s) => () => s.be.uploadQuant({ ...plain, N: 0 }) },
    { name: 'uploadQuant of blocksize 0', msg: /^uploadQuant w: \[4, 64\] blocksize 0 is not a valid weight$/, make: (s) => () => s.be.uploadQuant({ ...plain, blocksize: 0 }) },
    { name: 'uploadQuant packed short', msg: /^uploadQuant w: packed has 127 bytes, \[4, 64\] needs 128$/, make: (s) => () => s.be.uploadQuant({ ...plain, packed: plain.packed.subarray(1) }) },
    { name: 'uploadQuant quant map of 15', msg: /^uploadQuant w: quant map has 15 entries, expected 16$/, make: (s) => () => s.be.uploadQuant({ ...plain, quantMap: plain.quantMap.subarray(1) }) },
    { name: 'uploadQuant absmax and dq', msg: /^uploadQuant w: exactly one of absmax and dq must be given$/, make: (s) => () => s.be.uploadQuant({ ...plain, dq: nested }) },
    { name: 'uploadQuant neither absmax nor dq', msg: /^uploadQuant w: exactly one of absmax and dq must be given$/, make: (s) => () => s.be.uploadQuant({ ...plain, absmax: null }) },
    { name: 'uploadQuant nested blocksize 0', msg: /^uploadQuant w: nested blocksize 0 is not positive$/, make: (s) => () => s.be.uploadQuant({ ...dq, dq: { ...nested, nestedBlocksize: 0 } }) },
    { name: 'uploadQuant nested quant map of 255', msg: /^uploadQuant w: nested quant map has 255 entries, expected 256$/, make: (s) => () => s.be.uploadQuant({ ...dq, dq: { ...nested, nestedQuantMap: nested.nestedQuantMap.subarray(1) } }) },
    { name: 'writeQuant quant map of 15', msg: /^writeQuant w: quant map has 15 entries, expected 16$/, make: (s) => { const q = s.quant(plain); return () => s.be.writeQuant(q, { ...plain, quantMap: plain.quantMap.subarray(1) }); } },
    { name: 'writeQuant of another blocksize', msg: /^writeQuant w: \[4, 64\] nf4 bs32 does not fit the slot of 256 elements nf4 bs64$/, make: (s) => { const q = s.quant(plain); return () => s.be.writeQuant(q, w.bs32); } },
    { name: 'writeQuant of another quant type', msg: /^writeQuant w: \[4, 64\] fp4 bs64 does not fit the slot of 256 elements nf4 bs64$/, make: (s) => { const q = s.quant(plain); return () => s.be.writeQuant(q, w.fp4); } },
    { name: 'writeQuant double-quant into plain', msg: /^writeQuant w: \[4, 64\] nf4 bs64 dq does not fit the slot of 256 elements nf4 bs64$/, make: (s) => { const q = s.quant(plain); return () => s.be.writeQuant(q, dq); } },
  ];
}

test('every backend refuses each bad call by name and writes nothing', async () => {
  const w: Weights = { plain: await weight('nf4', false), dq: await weight('nf4', true), bs32: await weight('nf4', false, 32), fp4: await weight('fp4', false) };
  const backends: Array<[string, Backend]> = [['reference', refF32], ...(await targets()).map((t): [string, Backend] => [t.name, t.backend])];
  for (const [name, be] of backends) {
    for (const row of rows(w)) {
      if (row.only && !row.only.includes(be.name)) continue;
      const what = `${name} ${row.name}`;
      const s = new Scene(be);
      try {
        const call = row.make(s);
        const norms = await s.weightNorms();
        const err = await refusal(call);
        assert.ok(err, `${what}: not refused`);
        assert.match(err!.message, row.msg, `${what}: ${err!.message}`);
        await s.assertUnchanged(what, norms);
      } finally {
        s.release();
      }
    }
  }
});

test('a tensor or weight of another backend of the same kind is refused (its pointer or buffer means nothing here)', async () => {
  const plain = await weight('nf4', false);
  const pairs: Array<[Backend, Backend]> = [[await createWasmBackend(), await createWasmBackend()]];
  const g1 = await testWebGpu(), g2 = g1 ? await testWebGpu() : null;
  if (process.env.CI === 'true') assert.ok(g1 && g2, 'WebGPU adapter');
  if (g1 && g2) pairs.push([g1, g2]);
  for (const [a, b] of pairs) {
    const theirs = a.alloc('f32', 64, 'theirs'), theirW = a.uploadQuant(plain);
    const out = b.alloc('f32', 64, 'out'), x = b.alloc('f32', 64, 'x');
    b.write(out, pattern('f32', 64) as Float32Array);
    assert.throws(() => b.add(out, theirs, 64), new RegExp(`^add x: tensor theirs belongs to another ${b.name} backend$`));
    assert.throws(() => b.qMatmul(out, x, theirW, 1), new RegExp(`^qMatmul: weight w belongs to another ${b.name} backend$`));
    assertBitsEqual((await b.read(out)) as Float32Array, pattern('f32', 64) as Float32Array, `${b.name}: out unchanged`);
    await a.destroy();
    await b.destroy();
  }
});

test.run();
