// The WebAssembly backend: every Backend kernel runs in assembly/ (SIMD128) over one linear
// memory owned by WasmKernels. Tensors are blocks of that memory; kernels run synchronously when
// called (the Backend's enqueue-in-order contract holds trivially) and `read` returns a copy.
//
// Threads: every heavy kernel takes an explicit work range and a per-thread scratch area, so a
// later worker pool can hand disjoint ranges of one call to workers sharing the memory. Today
// one thread runs the full range; `threads` already allocates one scratch area per thread.
// Shapes are the caller's responsibility (backend.ts), but every call checks that its buffers are
// large enough: a short buffer would otherwise be a silent write into a neighbouring tensor.
import type { AdamWParams, AttentionShape, Backend, BufferType, GemmOptions, MemoryStats, QuantUpload, QuantWeight, RopeTables, Tensor } from '../backend.ts';
import type { QuantType } from '../../quant/types.ts';
import { dropScale, dropThreshold } from '../rng.ts';
import { f32ToBf16, f32ToF16 } from '../../io/dtype.ts';
import { WasmKernels, alignUp } from './module.ts';

const BYTES: Record<BufferType, number> = { f32: 4, i32: 4, u8: 1, f16: 2, bf16: 2 };
/** element type codes of assembly/half.ts */
const BT: Partial<Record<BufferType, number>> = { f32: 0, f16: 1, bf16: 2 };

const HOST = { f32: Float32Array, i32: Int32Array, u8: Uint8Array, f16: Uint16Array, bf16: Uint16Array } as const;

class WasmTensor implements Tensor {
  constructor(
    readonly type: BufferType,
    readonly length: number,
    readonly label: string,
    /** byte offset in the kernel memory; 0 once freed */
    public ptr: number,
  ) {}
}

/**
 * Descriptor words read by assembly/qgemm.ts (u32): 0 packed, 1 quant_map, 2 absmax (0 with DQ),
 * 3 dq codes, 4 nested absmax, 5 nested map, 6 offset (f32), 7 bs, 8 nbs, 9 N, 10 K.
 */
const DESC_BYTES = 64;

class WasmQuant implements QuantWeight {
  constructor(
    readonly N: number,
    readonly K: number,
    readonly blocksize: number,
    readonly quantType: QuantType,
    readonly doubleQuant: boolean,
    readonly label: string,
    /** the descriptor; the whole weight is one allocation starting there. 0 once freed */
    public desc: number,
  ) {}
}

/** What the thread pool (and test/kernels/wasm-specific.test.ts) needs below the Backend API. */
export interface WasmInternals {
  kernels: WasmKernels;
  /** byte offset of a tensor of this backend */
  ptr(t: Tensor): number;
  /** descriptor of a 4-bit weight of this backend */
  desc(w: QuantWeight): number;
  /** scratch area of thread i */
  scratch(i: number): number;
  threads: number;
}

const internals = new WeakMap<Backend, WasmInternals>();

/** The kernel memory and pointers behind a wasm backend (threading layer and tests only). */
export function wasmInternals(be: Backend): WasmInternals {
  const i = internals.get(be);
  if (!i) throw new Error(`wasmInternals: ${be.name} is not a wasm backend`);
  return i;
}

export async function createWasmBackend(opts: { threads?: number } = {}): Promise<Backend> {
  const threads = opts.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`createWasmBackend: threads must be a positive integer, got ${threads}`);
  const km = await WasmKernels.create();
  const k = km.k;
  const scratchBytes = k.scratch_bytes();
  const scratch = Array.from({ length: threads }, () => km.alloc(scratchBytes));
  const s0 = scratch[0]!;
  // attention's forward keeps a 64-score block and one row of D in scratch (assembly/attention.ts)
  const maxHeadDim = (scratchBytes >> 2) - 64;
  let destroyed = false;

  const live = (): void => {
    if (destroyed) throw new Error('wasm backend used after destroy()');
  };
  const ptr = (t: Tensor, what: string): number => {
    if (!(t instanceof WasmTensor)) throw new Error(`${what}: tensor ${t.label} does not belong to the wasm backend`);
    if (t.ptr === 0) throw new Error(`${what}: tensor ${t.label} was freed`);
    return t.ptr;
  };
  /** Pointer of t after checking its type and that it holds at least n elements. */
  const buf = (t: Tensor, type: BufferType, n: number, what: string): number => {
    const p = ptr(t, what);
    if (t.type !== type) throw new Error(`${what}: ${t.label} is ${t.type}, expected ${type}`);
    if (!(n <= t.length)) throw new Error(`${what}: ${t.label} holds ${t.length} elements, ${n} needed`);
    return p;
  };
  const f32 = (t: Tensor, n: number, what: string): number => buf(t, 'f32', n, what);
  const qdesc = (w: QuantWeight, what: string): number => {
    if (!(w instanceof WasmQuant)) throw new Error(`${what}: weight ${w.label} does not belong to the wasm backend`);
    if (w.desc === 0) throw new Error(`${what}: weight ${w.label} was freed`);
    return w.desc;
  };

  // A 4-bit weight is one allocation: descriptor | quant map | nested map | nested absmax |
  // absmax or dq codes | packed codes (each part 64-byte aligned).
  const quantLayout = (w: QuantUpload) => {
    const nb = Math.ceil((w.N * w.K) / w.blocksize), dq = w.dq;
    const parts = [DESC_BYTES, 64, dq ? 1024 : 0, dq ? dq.nestedAbsmax.length * 4 : 0, dq ? nb : nb * 4, w.packed.length];
    const offs: number[] = [];
    let total = 0;
    for (const b of parts) { offs.push(total); total += alignUp(b, 64); }
    return { offs, total, nb };
  };
  const writeQuantParts = (base: number, w: QuantUpload): void => {
    const { offs, nb } = quantLayout(w), dq = w.dq;
    const at = (i: number) => base + offs[i]!;
    km.f32(at(1), 16).set(w.quantMap);
    if (dq) {
      km.f32(at(2), 256).set(dq.nestedQuantMap);
      km.f32(at(3), dq.nestedAbsmax.length).set(dq.nestedAbsmax);
      km.u8(at(4), nb).set(dq.codes);
    } else {
      km.f32(at(4), nb).set(w.absmax!);
    }
    km.u8(at(5), w.packed.length).set(w.packed);
    const d = km.u8(base, DESC_BYTES);
    const dv = new DataView(d.buffer, d.byteOffset, DESC_BYTES);
    const words = [at(5), at(1), dq ? 0 : at(4), dq ? at(4) : 0, dq ? at(3) : 0, dq ? at(2) : 0];
    words.forEach((x, i) => dv.setUint32(4 * i, x, true));
    dv.setFloat32(24, dq ? dq.offset : 0, true);
    dv.setUint32(28, w.blocksize, true);
    dv.setUint32(32, dq ? dq.nestedBlocksize : 1, true);
    dv.setInt32(36, w.N, true);
    dv.setInt32(40, w.K, true);
  };

  const be: Backend = {
    name: 'wasm',

    alloc(type, length, label) {
      live();
      if (!Number.isInteger(length) || length < 0) throw new Error(`alloc ${label}: bad length ${length}`);
      const bytes = length * BYTES[type];
      const p = km.alloc(bytes);
      // contents are undefined by contract; zeroed here so a forgotten init is at least reproducible
      k.fill(p, alignUp(Math.max(bytes, 1), 4) >> 2, 0, 4);
      return new WasmTensor(type, length, label, p);
    },

    free(t) {
      const p = ptr(t, 'free');
      km.release(p);
      (t as WasmTensor).ptr = 0;
    },

    write(t, data, offset = 0) {
      const p = ptr(t, 'write');
      const want = HOST[t.type];
      if (!(data instanceof want)) throw new Error(`write ${t.label}: a ${t.type} tensor takes a ${want.name}, got ${data.constructor.name}`);
      if (offset < 0 || offset + data.length > t.length) throw new Error(`write ${t.label}: [${offset}, ${offset + data.length}) is outside its ${t.length} elements`);
      km.u8(p + offset * BYTES[t.type], data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    },

    async read(t, offset = 0, length) {
      const p = ptr(t, 'read');
      const n = length ?? t.length - offset;
      if (offset < 0 || n < 0 || offset + n > t.length) throw new Error(`read ${t.label}: [${offset}, ${offset + n}) is outside its ${t.length} elements`);
      const out = new HOST[t.type](n);
      new Uint8Array(out.buffer).set(km.u8(p + offset * BYTES[t.type], n * BYTES[t.type]));
      return out;
    },

    copy(dst, dstOffset, src, srcOffset, n) {
      const pd = ptr(dst, 'copy'), ps = ptr(src, 'copy');
      if (dst.type !== src.type) throw new Error(`copy: ${src.label} is ${src.type}, ${dst.label} is ${dst.type}`);
      if (dstOffset < 0 || srcOffset < 0 || n < 0 || dstOffset + n > dst.length || srcOffset + n > src.length) {
        throw new Error(`copy ${src.label}[${srcOffset}..+${n}] → ${dst.label}[${dstOffset}..]: out of range`);
      }
      const e = BYTES[dst.type];
      k.copy(pd + dstOffset * e, ps + srcOffset * e, n * e);
    },

    fill(t, value, offset = 0, n) {
      const p = ptr(t, 'fill');
      const count = n ?? t.length - offset;
      if (offset < 0 || count < 0 || offset + count > t.length) throw new Error(`fill ${t.label}: [${offset}, ${offset + count}) is outside its ${t.length} elements`);
      let bits: number;
      if (t.type === 'f32') bits = new Uint32Array(new Float32Array([value]).buffer)[0]!;
      else if (t.type === 'f16') bits = f32ToF16(value);
      else if (t.type === 'bf16') bits = f32ToBf16(value);
      else if (t.type === 'i32') bits = value | 0;
      else bits = value & 255;
      k.fill(p + offset * BYTES[t.type], count, bits, BYTES[t.type]);
    },

    uploadQuant(w: QuantUpload): QuantWeight {
      live();
      const { N, K, blocksize: bs } = w;
      const n = N * K, nb = Math.ceil(n / bs);
      const bad = (msg: string) => new Error(`uploadQuant ${w.label}: ${msg}`);
      if (w.packed.length !== Math.ceil(n / 2)) throw bad(`packed has ${w.packed.length} bytes, expected ${Math.ceil(n / 2)} for [${N}, ${K}]`);
      if (w.quantMap.length !== 16) throw bad(`quant map has ${w.quantMap.length} entries, expected 16`);
      if ((w.absmax === null) === (w.dq === null)) throw bad('exactly one of absmax and dq must be given');
      if (w.absmax && w.absmax.length !== nb) throw bad(`absmax has ${w.absmax.length} entries, expected ${nb}`);
      const dq = w.dq;
      if (dq) {
        if (dq.codes.length !== nb) throw bad(`dq codes have ${dq.codes.length} entries, expected ${nb}`);
        if (dq.nestedQuantMap.length !== 256) throw bad(`nested quant map has ${dq.nestedQuantMap.length} entries, expected 256`);
        if (dq.nestedAbsmax.length !== Math.ceil(nb / dq.nestedBlocksize)) throw bad(`nested absmax has ${dq.nestedAbsmax.length} entries, expected ${Math.ceil(nb / dq.nestedBlocksize)}`);
      }
      const base = km.alloc(quantLayout(w).total);
      writeQuantParts(base, w);
      return new WasmQuant(N, K, bs, w.quantType, dq !== null, w.label, base);
    },

    writeQuant(w, src) {
      const base = qdesc(w, 'writeQuant');
      const q = w as WasmQuant;
      const same = q.N === src.N && q.K === src.K && q.blocksize === src.blocksize && q.quantType === src.quantType && q.doubleQuant === (src.dq !== null)
        && km.i32(base + 32, 1)[0] === (src.dq ? src.dq.nestedBlocksize : 1);
      if (!same) throw new Error(`writeQuant ${w.label}: the new weight does not have the slot's shape and quantization`);
      writeQuantParts(base, src);
    },

    freeQuant(w) {
      km.release(qdesc(w, 'freeQuant'));
      (w as WasmQuant).desc = 0;
    },

    async flush() {},

    memory(): MemoryStats {
      return { liveBytes: km.liveBytes, peakBytes: km.peakBytes };
    },

    async destroy() {
      destroyed = true;
    },

    // ---- forward ----------------------------------------------------------------------

    embedding(out, table, ids, R, C) {
      const bt = BT[table.type];
      if (bt === undefined) throw new Error(`embedding: table ${table.label} is ${table.type}, expected f32, f16 or bf16`);
      const po = f32(out, R * C, 'embedding out'), pt = buf(table, table.type, C, 'embedding table');
      const pi = buf(ids, 'i32', R, 'embedding ids');
      const V = Math.floor(table.length / C);
      const idv = km.i32(pi, R);
      for (let r = 0; r < R; r++) {
        if (!(idv[r]! >= 0 && idv[r]! < V)) throw new Error(`embedding: token id ${idv[r]} at row ${r} is outside ${table.label} [${V}, ${C}]`);
      }
      k.embedding(po, pt, pi, C, bt, 0, R);
    },

    rmsNorm(out, rstd, x, w, R, C, eps) {
      k.rms_norm(f32(out, R * C, 'rmsNorm out'), f32(rstd, R, 'rmsNorm rstd'), f32(x, R * C, 'rmsNorm x'), f32(w, C, 'rmsNorm w'), R, C, eps, 0, R);
    },

    matmul(out, a, b, M, N, K, o: GemmOptions = {}) {
      const bt = BT[b.type];
      if (bt === undefined || (bt !== 0 && o.transA)) throw new Error(`matmul: b ${b.label} is ${b.type}, expected f32${o.transA ? '' : ', f16 or bf16'}`);
      const pb = o.bias ? f32(o.bias, N, 'matmul bias') : 0;
      k.matmul(f32(out, M * N, 'matmul out'), f32(a, M * K, 'matmul a'), buf(b, b.type, K * N, 'matmul b'), M, N, K,
        o.transA ? 1 : 0, o.transB ? 1 : 0, bt, o.alpha ?? 1, o.accumulate ? 1 : 0, pb, s0, 0, M, 0, N);
    },

    qMatmul(out, x, w, M, o = {}) {
      if (o.bias && o.accumulate) throw new Error('qMatmul: bias is only allowed with accumulate false');
      const d = qdesc(w, 'qMatmul');
      const pb = o.bias ? f32(o.bias, w.N, 'qMatmul bias') : 0;
      k.q_matmul(f32(out, M * w.N, 'qMatmul out'), f32(x, M * w.K, 'qMatmul x'), d, M, o.alpha ?? 1, o.accumulate ? 1 : 0, pb, s0, 0, M, 0, w.N);
    },

    rope(x, t: RopeTables, R, T, nh, D, pos0) {
      const half = D / 2, maxPos = pos0 + Math.min(T, R);
      k.rope(f32(x, R * nh * D, 'rope x'), f32(t.cos, maxPos * half, 'rope cos'), f32(t.sin, maxPos * half, 'rope sin'), R, T, nh, D, pos0, 0, R);
    },

    attention(out, lse, q, kk, v, s: AttentionShape) {
      checkAttention(s, maxHeadDim);
      const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
      k.attention(f32(out, nq, 'attention out'), f32(lse, s.B * s.H * s.T, 'attention lse'), f32(q, nq, 'attention q'),
        f32(kk, nkv, 'attention k'), f32(v, nkv, 'attention v'), s.B, s.T, s.S, s.H, s.KVH, s.D, s.pos0, s.kvStride, s0, 0, s.B * s.H);
    },

    swiglu(out, gate, up, n) {
      k.swiglu(f32(out, n, 'swiglu out'), f32(gate, n, 'swiglu gate'), f32(up, n, 'swiglu up'), 0, n);
    },

    add(out, x, n, alpha = 1) {
      k.add(f32(out, n, 'add out'), f32(x, n, 'add x'), alpha, 0, n);
    },

    dropout(out, x, n, p, seed) {
      if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
      k.dropout(f32(out, n, 'dropout out'), f32(x, n, 'dropout x'), dropThreshold(p), dropScale(p), seed >>> 0, 0, n);
    },

    crossEntropy(losses, logits, targets, R, V, gradScale) {
      const pt = buf(targets, 'i32', R, 'crossEntropy targets');
      const tv = km.i32(pt, R);
      for (let r = 0; r < R; r++) {
        const t = tv[r]!;
        if (t !== -100 && !(t >= 0 && t < V)) throw new Error(`crossEntropy: target ${t} at row ${r} is outside [0, ${V}) and is not the ignore index -100`);
      }
      k.cross_entropy(f32(losses, R, 'crossEntropy losses'), f32(logits, R * V, 'crossEntropy logits'), pt,
        V, gradScale === undefined ? 0 : 1, gradScale ?? 0, 0, R);
    },

    // ---- backward ---------------------------------------------------------------------

    qMatmulBackwardInput(dx, dy, w, M, o = {}) {
      const d = qdesc(w, 'qMatmulBackwardInput');
      k.q_matmul_backward_input(f32(dx, M * w.K, 'qMatmulBackwardInput dx'), f32(dy, M * w.N, 'qMatmulBackwardInput dy'), d, M,
        o.alpha ?? 1, o.accumulate ? 1 : 0, s0, 0, M, 0, w.K);
    },

    rmsNormBackward(dx, dy, x, w, rstd, R, C, accumulate) {
      k.rms_norm_backward(f32(dx, R * C, 'rmsNormBackward dx'), f32(dy, R * C, 'rmsNormBackward dy'), f32(x, R * C, 'rmsNormBackward x'),
        f32(w, C, 'rmsNormBackward w'), f32(rstd, R, 'rmsNormBackward rstd'), R, C, accumulate ? 1 : 0, 0, R);
    },

    ropeBackward(dx, t, R, T, nh, D, pos0) {
      const half = D / 2, maxPos = pos0 + Math.min(T, R);
      k.rope_backward(f32(dx, R * nh * D, 'ropeBackward dx'), f32(t.cos, maxPos * half, 'ropeBackward cos'), f32(t.sin, maxPos * half, 'ropeBackward sin'), R, T, nh, D, pos0, 0, R);
    },

    attentionBackward(dq, dk, dv, dout, q, kk, v, out, lse, s) {
      checkAttention(s, maxHeadDim);
      if (s.pos0 !== 0) throw new Error(`attentionBackward: pos0 must be 0 (training has no KV cache), got ${s.pos0}`);
      const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
      k.attention_backward(f32(dq, nq, 'attentionBackward dq'), f32(dk, nkv, 'attentionBackward dk'), f32(dv, nkv, 'attentionBackward dv'),
        f32(dout, nq, 'attentionBackward dout'), f32(q, nq, 'attentionBackward q'), f32(kk, nkv, 'attentionBackward k'), f32(v, nkv, 'attentionBackward v'),
        f32(out, nq, 'attentionBackward out'), f32(lse, s.B * s.H * s.T, 'attentionBackward lse'),
        s.B, s.T, s.S, s.H, s.KVH, s.D, s.pos0, s.kvStride, s0, 0, s.B * s.KVH);
    },

    swigluBackward(dgate, dup, dout, gate, up, n) {
      k.swiglu_backward(f32(dgate, n, 'swigluBackward dgate'), f32(dup, n, 'swigluBackward dup'), f32(dout, n, 'swigluBackward dout'),
        f32(gate, n, 'swigluBackward gate'), f32(up, n, 'swigluBackward up'), 0, n);
    },

    // ---- optimizer --------------------------------------------------------------------

    sumSquares(out, x, n, accumulate) {
      k.sum_squares(f32(out, 1, 'sumSquares out'), f32(x, n, 'sumSquares x'), accumulate ? 1 : 0, 0, n);
    },

    adamwStep(param, grad, m, v, n, p: AdamWParams) {
      k.adamw_step(f32(param, n, 'adamwStep param'), f32(grad, n, 'adamwStep grad'), f32(m, n, 'adamwStep m'), f32(v, n, 'adamwStep v'),
        p.lr, p.beta1, p.beta2, 1 - p.beta1, 1 - p.beta2, p.eps, 1 - p.lr * p.weightDecay,
        1 - Math.pow(p.beta1, p.step), 1 - Math.pow(p.beta2, p.step), p.gradScale, 0, n);
    },

    sgdStep(param, grad, n, lr, gradScale) {
      k.sgd_step(f32(param, n, 'sgdStep param'), f32(grad, n, 'sgdStep grad'), lr, gradScale, 0, n);
    },
  };

  internals.set(be, {
    kernels: km,
    ptr: (t) => ptr(t, 'wasmInternals'),
    desc: (w) => qdesc(w, 'wasmInternals'),
    scratch: (i) => scratch[i]!,
    threads,
  });
  return be;
}

function checkAttention(s: AttentionShape, maxHeadDim: number): void {
  const bad = (m: string) => new Error(`attention: ${m} (B ${s.B}, T ${s.T}, S ${s.S}, H ${s.H}, KVH ${s.KVH}, D ${s.D}, pos0 ${s.pos0}, kvStride ${s.kvStride})`);
  if (s.KVH < 1 || s.H % s.KVH !== 0) throw bad('H must be a multiple of KVH');
  if (s.S > s.kvStride) throw bad('S exceeds kvStride');
  if (s.D > maxHeadDim) throw bad(`head dim above ${maxHeadDim}`);
  if (s.pos0 < 0) throw bad('pos0 must be ≥ 0');
}
