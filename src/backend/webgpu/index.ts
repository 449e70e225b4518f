// The WebGPU backend: every Backend kernel (backend.ts) as a WGSL entry point of wgsl/*.wgsl,
// run through GpuRuntime (runtime.ts: pipelines, cached bind groups, params ring, one encoder
// per submit). Isomorphic: the caller passes the GPU object (navigator.gpu in a browser, Dawn's
// in Node via ./dawn.ts); nothing here imports Node.
//
// Every tensor is one GPUBuffer (up to the adapter's maxBufferSize). Tensors larger than one
// storage binding (an lm_head, the logits of a big vocabulary, the MLP activations of a long
// batch on an adapter with 128 MiB bindings) are handled by splitting the call into dispatches
// over blocks of rows, sequences or elements, each binding a window of the buffer: embedding
// (table rows), matmul (M, N and K blocks: a, b and out), crossEntropy (logit rows), qMatmul and
// its backward, rmsNorm and rope (rows), attention (whole sequences), the DoRA kernels (rows;
// columnDot carries its column sums from one row block to the next) and the elementwise and
// optimizer kernels (element ranges). What cannot split is refused with an error naming it: a
// 4-bit weight larger than one binding, or a single row / sequence larger than one binding.
//
// Arithmetic is f32 everywhere: f16/bf16 tables are widened exactly with integer ops, so no
// optional feature (`shader-f16`) is requested; the parity tolerances of test/kernels are set
// for f32.
import type { AdamWParams, AttentionShape, Backend, BufferType, GemmOptions, MemoryStats, QuantWeight, RopeTables, Tensor } from '../backend.ts';
import { WebqloraError } from '../../errors.ts';
import { dropScale, dropThreshold } from '../rng.ts';
import { f32ToBf16, f32ToF16 } from '../../num.ts';
import {
  attentionParams,
  BUFFER_BYTES as BYTES, HOST_ARRAY, checkAlloc, checkAttention, checkCopy, checkCrossEntropySoftcap, checkDocStartTensor, checkDropout,
  checkGemmOptions, checkNoiseScale, checkOperand, takeQuant, checkScaleColumnsOptions, checkSoftcap, checkWrite, elemTypeOf, fillLength,
  readLength, sideTable,
} from '../validate.ts';
import { GpuRuntime, roundUp, type Buf, type RuntimeStats, type View } from './runtime.ts';
import { windows } from './windows.ts';
import { GpuQuant, checkGpuQuant, quantParams, quantParts, writeQuantParts } from './quant.ts';

/** query or key rows per attention workgroup (the override WG of wgsl/attention.wgsl) */
const ATTN_WG = 32;

/** Invocations of a one-row-per-workgroup reduction (RED_WG of wgsl/reduce.wgsl): about four
 *  elements each, a power of two in [32, 256]. */
const redWg = (n: number): number => Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(1, n / 4)))));

class GpuTensor implements Tensor {
  constructor(
    readonly type: BufferType,
    readonly length: number,
    readonly label: string,
    /** null once freed */
    public buf: Buf | null,
  ) {}
}

export interface WebGpuOptions {
  /** navigator.gpu, or Dawn's GPU in Node (dawnGpu() in ./dawn.ts) */
  gpu: GPU;
  powerPreference?: GPUPowerPreference;
  /** an adapter already obtained from gpu (createBackend's auto-selection passes the one it inspected) */
  adapter?: GPUAdapter;
  /**
   * Test hook: treat storage bindings as at most this many bytes, so the split paths for
   * tensors larger than one binding run on small tensors (test/webgpu/split.test.ts).
   */
  maxBindingBytes?: number;
}

/** Below the Backend API, for test/webgpu and benchmarks. */
export interface WebGpuInternals {
  device: GPUDevice;
  runtime: GpuRuntime;
  stats: RuntimeStats;
}

const internals = sideTable<WebGpuInternals>('webgpuInternals', 'webgpu');

export const webgpuInternals: (be: Backend) => WebGpuInternals = internals.get;

export interface AdapterDescription {
  /** a short name: "lavapipe", "SwiftShader", or the adapter's description / vendor */
  name: string;
  /** the adapter runs on the CPU (a software rasterizer / fallback adapter) */
  cpu: boolean;
}

/** What an adapter is, from GPUAdapterInfo: a CPU emulation (lavapipe, SwiftShader, any fallback adapter) or a GPU. */
export function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const text = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ');
  const fallback = (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
  let name = info?.description || [info?.vendor, info?.device].filter(Boolean).join(' ') || 'unknown adapter';
  if (/llvmpipe|lavapipe/i.test(text)) name = 'lavapipe';
  else if (/swiftshader/i.test(text)) name = 'SwiftShader';
  const cpu = fallback || /llvmpipe|lavapipe|swiftshader|\bsoftware\b|\bcpu\b/i.test(text);
  return { name, cpu };
}

/** The adapter limits the kernels benefit from; requested in full instead of the defaults. */
const LIMITS = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage',
] as const;

export async function createWebGpuBackend(opts: WebGpuOptions): Promise<Backend> {
  const adapter = opts.adapter ?? (await opts.gpu.requestAdapter(opts.powerPreference ? { powerPreference: opts.powerPreference } : undefined));
  if (!adapter) throw new WebqloraError('webgpu: no WebGPU adapter is available here (use --backend wasm).');
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) requiredLimits[k] = adapter.limits[k];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ label: 'webqlora', requiredLimits });
  } catch (e) {
    throw new WebqloraError(`webgpu: the adapter refused a device (${(e as Error).message}); use --backend wasm.`);
  }
  const rt = new GpuRuntime(device, { maxBindingBytes: opts.maxBindingBytes });
  const be = makeBackend(rt);
  internals.set(be, { device, runtime: rt, stats: rt.stats });
  return be;
}

function makeBackend(rt: GpuRuntime): Backend {
  let liveBytes = 0, peakBytes = 0;
  const track = (bytes: number) => {
    liveBytes += bytes;
    if (liveBytes > peakBytes) peakBytes = liveBytes;
  };
  const tensors = new Set<GpuTensor>();
  const quants = new Set<GpuQuant>();

  // sizes the host shares with the shaders, read from them (wgsl/*.wgsl module-scope consts)
  /** GEMM output tile (BM = BN of wgsl/gemm.wgsl) */
  const TILE = rt.constant('gemm', 'BM');
  if (rt.constant('gemm', 'BN') !== TILE) throw new Error('webgpu: wgsl/gemm.wgsl tiles are not square (BM ≠ BN)');
  /** Longest head dim of the attention kernels (private arrays of MAX_D4 vec4s in wgsl/attention.wgsl). */
  const MAX_HEAD_DIM = 4 * rt.constant('attention', 'MAX_D4');
  /** most kv (or query) rows staged per attention tile: the KT override's bound and s0/s1's length */
  const MAX_KT = rt.constant('attention', 'MAX_KT');

  // ---- operand checks (a short buffer would be a silent out-of-bounds access) --------------
  const live = (t: Tensor, what: string): Buf => {
    if (!(t instanceof GpuTensor)) throw new Error(`${what}: tensor ${t?.label} does not belong to the webgpu backend`);
    if (!t.buf) throw new Error(`${what}: tensor ${t.label} was freed`);
    if (!tensors.has(t)) throw new Error(`${what}: tensor ${t.label} belongs to another webgpu backend`);
    return t.buf;
  };
  /** The buffer of an operand of `type` holding at least n elements (validate.ts checkOperand). */
  const buf = (t: Tensor, type: BufferType, n: number, what: string): Buf => {
    const b = live(t, what);
    checkOperand(t, type, n, what);
    return b;
  };
  const f32 = (t: Tensor, n: number, what: string): Buf => buf(t, 'f32', n, what);
  const qlive = (w: QuantWeight, what: string): GpuQuant & { buf: Buf } => {
    if (!(w instanceof GpuQuant)) throw new Error(`${what}: weight ${w?.label} does not belong to the webgpu backend`);
    if (!w.buf) throw new Error(`${what}: weight ${w.label} was freed`);
    if (!quants.has(w)) throw new Error(`${what}: weight ${w.label} belongs to another webgpu backend`);
    return w as GpuQuant & { buf: Buf };
  };
  // tensors larger than one binding: calls cut into windows (windows.ts)
  const { win, whole, ranges, rowBlocks } = windows(rt);

  /** Rows staged per attention tile: two KT×D f32 tiles plus 3·MAX_KT + 1 words in workgroup memory. */
  const attnTile = (D: number): number => {
    const fit = Math.floor((rt.maxWorkgroupStorage - (3 * MAX_KT + 1) * 4) / (2 * D * 4));
    return Math.min(MAX_KT, 2 ** Math.floor(Math.log2(Math.max(1, fit))));
  };
  /** What wgsl/attention.wgsl takes: head dims of whole vec4s, up to MAX_HEAD_DIM. */
  const attnLimits = { maxHeadDim: MAX_HEAD_DIM, headDimStep: 4 };

  /** Byte copy dst[db ..+nb] = src[sb ..] through wgsl/elementwise.wgsl copy (any alignment). */
  const copyBytes = (dst: Buf, db: number, src: Buf, sb: number, nb: number): void => {
    const per = rt.windowBytes - 8;
    for (let c = 0; c < nb; c += per) {
      const len = Math.min(per, nb - c);
      const dv = rt.view(dst, db + c, len, 'copy'), sv = rt.view(src, sb + c, len, 'copy');
      rt.dispatch('elementwise', 'copy', {}, { dst: dv, src: sv }, { dst_byte: dv.shift, src_byte: sv.shift, nbytes: len },
        rt.grid1d(Math.ceil((dv.shift + len) / 4) - Math.floor(dv.shift / 4)));
    }
  };
  const fillBytes = (dst: Buf, db: number, nb: number, pattern: number): void => {
    const per = rt.windowBytes - 8;
    for (let c = 0; c < nb; c += per) {
      const len = Math.min(per, nb - c);
      const dv = rt.view(dst, db + c, len, 'fill');
      rt.dispatch('elementwise', 'fill', {}, { dst: dv }, { dst_byte: dv.shift, nbytes: len, pattern },
        rt.grid1d(Math.ceil((dv.shift + len) / 4) - Math.floor(dv.shift / 4)));
    }
  };

  const be: Backend = {
    name: 'webgpu',

    // ---- buffers ----------------------------------------------------------------------

    alloc(type, length, label) {
      rt.check();
      checkAlloc(length, label);
      const bytes = length * BYTES[type];
      const t = new GpuTensor(type, length, label, rt.createBuf(bytes, label));
      tensors.add(t);
      track(bytes);
      return t;
    },

    free(t) {
      const b = live(t, 'free');
      rt.destroyBuf(b);
      (t as GpuTensor).buf = null;
      tensors.delete(t as GpuTensor);
      liveBytes -= t.length * BYTES[t.type];
    },

    write(t, data, offset = 0) {
      const b = live(t, 'write');
      checkWrite(t, data, offset);
      if (data.length === 0) return;
      const eb = BYTES[t.type], db = offset * eb, bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      if (db % 4 === 0 && bytes.length % 4 === 0) {
        rt.writeBuffer(b, db, bytes);
        return;
      }
      // a u8 / half range not on word boundaries: upload to scratch, then a byte-exact copy kernel
      const up = rt.scratchBuf('upload', roundUp(bytes.length, 4));
      const padded = new Uint8Array(roundUp(bytes.length, 4));
      padded.set(bytes);
      rt.writeBuffer(up, 0, padded);
      copyBytes(b, db, up, 0, bytes.length);
    },

    async read(t, offset = 0, length) {
      const b = live(t, 'read');
      const n = readLength(t, offset, length);
      const eb = BYTES[t.type];
      return new HOST_ARRAY[t.type](await rt.read(b, offset * eb, n * eb));
    },

    copy(dst, dstOffset, src, srcOffset, n) {
      const bd = live(dst, 'copy'), bs = live(src, 'copy');
      checkCopy(dst, dstOffset, src, srcOffset, n);
      if (n === 0) return;
      const eb = BYTES[dst.type], db = dstOffset * eb, sb = srcOffset * eb, nb = n * eb;
      const aligned = db % 4 === 0 && sb % 4 === 0 && nb % 4 === 0;
      if (bd !== bs) {
        if (aligned) rt.copyBuffer(bs, sb, bd, db, nb);
        else copyBytes(bd, db, bs, sb, nb);
        return;
      }
      // within one buffer (copyBufferToBuffer refuses src = dst): bounce through scratch
      const s0 = Math.floor(sb / 4) * 4, len = roundUp(sb + nb, 4) - s0;
      const bounce = rt.scratchBuf('bounce', len);
      rt.copyBuffer(bs, s0, bounce, 0, len);
      if (aligned) rt.copyBuffer(bounce, 0, bd, db, nb);
      else copyBytes(bd, db, bounce, sb - s0, nb);
    },

    fill(t, value, offset = 0, n) {
      const b = live(t, 'fill');
      const count = fillLength(t, offset, n);
      if (count === 0) return;
      let pattern: number;
      if (t.type === 'f32') pattern = new Uint32Array(Float32Array.of(value).buffer)[0]!;
      else if (t.type === 'i32') pattern = value | 0;
      else if (t.type === 'u8') pattern = (value & 255) * 0x01010101;
      else {
        const h = t.type === 'f16' ? f32ToF16(value) : f32ToBf16(value);
        pattern = (h | (h << 16)) >>> 0;
      }
      const eb = BYTES[t.type], db = offset * eb, nb = count * eb;
      if (pattern === 0 && db % 4 === 0 && nb % 4 === 0) rt.clear(b, db, nb);
      else fillBytes(b, db, nb, pattern >>> 0);
    },

    uploadQuant(w) {
      rt.check();
      checkGpuQuant(w);
      const parts = quantParts(w);
      if (parts.words * 4 > rt.maxBinding) {
        throw new WebqloraError(`${w.label}: a 4-bit weight of ${(parts.words / 2 ** 18).toFixed(0)} MiB exceeds this GPU's largest storage binding (${(rt.maxBinding / 2 ** 20).toFixed(0)} MiB); use --backend wasm.`);
      }
      const b = rt.createBuf(parts.words * 4, w.label);
      writeQuantParts(rt, b, parts, w);
      const q = new GpuQuant(w, b, parts);
      quants.add(q);
      track(q.bytes);
      return q;
    },

    writeQuant(w, src) {
      const q = qlive(w, 'writeQuant');
      // the slot's kind and at most its elements: src's parts fit the slot's buffer; kernels
      // enqueued later read src's shape and part offsets from q
      takeQuant(q, src);
      q.parts = quantParts(src);
      writeQuantParts(rt, q.buf, q.parts, src);
      q.offset = src.dq ? Math.fround(src.dq.offset) : 0;
    },

    freeQuant(w) {
      const q = qlive(w, 'freeQuant');
      rt.destroyBuf(q.buf);
      (q as GpuQuant).buf = null;
      quants.delete(q);
      liveBytes -= q.bytes;
    },

    async flush() {
      await rt.flush();
    },

    memory(): MemoryStats {
      return { liveBytes, peakBytes };
    },

    async destroy() {
      if (rt.lost) return;
      rt.submit();
      for (const t of tensors) t.buf = null;
      for (const q of quants) q.buf = null;
      tensors.clear();
      quants.clear();
      liveBytes = 0;
      rt.destroy();
    },

    // ---- forward ----------------------------------------------------------------------

    embedding(out, table, ids, R, C) {
      const et = elemTypeOf(table, 'embedding table');
      const bo = f32(out, R * C, 'embedding out'), bt = buf(table, table.type, C, 'embedding table'), bi = buf(ids, 'i32', R, 'embedding ids');
      const V = Math.floor(table.length / C), eb = BYTES[table.type];
      // whole rows of the table per dispatch (all of them when the table fits one binding)
      const per = bt.size <= rt.maxBinding ? V : Math.floor(rt.windowBytes / (C * eb));
      if (per < 1) throw new Error(`embedding: one row of ${table.label} is larger than a storage binding`);
      const ov = whole(bo, 'embedding out', R * C * 4), iv = whole(bi, 'embedding ids', R * 4);
      for (let row0 = 0; row0 < V; row0 += per) {
        const rows = Math.min(per, V - row0);
        const tv = win(bt, eb, row0 * C, rows * C, 'embedding table');
        rt.dispatch('embedding', 'embedding', { ELEM_TYPE: et }, { o: ov, table: tv.v, ids: iv }, { R, C, V, row0, rows, t_off: tv.off, nan: NaN }, rt.grid1d(R * C));
      }
    },

    rmsNorm(out, rstd, x, w, R, C, eps) {
      const n = R * C;
      const bo = f32(out, n, 'rmsNorm out'), br = f32(rstd, R, 'rmsNorm rstd'), bx = f32(x, n, 'rmsNorm x'), bw = f32(w, C, 'rmsNorm w');
      const wv = whole(bw, 'rmsNorm w');
      for (const [r0, r1] of rowBlocks(R, C * 4, [bo, br, bx], 'rmsNorm')) {
        const rows = r1 - r0;
        const o = win(bo, 4, r0 * C, rows * C, 'rmsNorm out'), xx = win(bx, 4, r0 * C, rows * C, 'rmsNorm x'), r = win(br, 4, r0, rows, 'rmsNorm rstd');
        rt.dispatch('rms_norm', 'rms_norm', { RED_WG: redWg(C) }, { o: o.v, rstd: r.v, x: xx.v, w: wv },
          { R: rows, C, eps, o_off: o.off, x_off: xx.off, r_off: r.off }, rt.fold(rows));
      }
    },

    matmul(out, a, b, M, N, K, o: GemmOptions = {}) {
      const { transA = false, transB = false, alpha = 1, accumulate = false, bias } = o;
      checkGemmOptions(o, 'matmul');
      const et = elemTypeOf(b, 'matmul b', !transA);
      const bo = f32(out, M * N, 'matmul out'), ba = f32(a, M * K, 'matmul a'), bb = buf(b, b.type, K * N, 'matmul b');
      const bbias = bias ? f32(bias, N, 'matmul bias') : null;
      if (M === 0 || N === 0) return;
      const eb = BYTES[b.type], L = rt.windowBytes;
      // Chunk sizes so that each operand's window — its outer-dimension rows at the full row
      // stride — fits one binding (a no-op unless a tensor is larger than a binding).
      let mc = M, nc = N, kc = Math.max(K, 1);
      if (bo.size > rt.maxBinding) mc = Math.min(mc, Math.floor(L / (N * 4)));
      if (ba.size > rt.maxBinding) {
        if (transA) kc = Math.min(kc, Math.floor(L / (M * 4)));
        else mc = Math.min(mc, Math.floor(L / (K * 4)));
      }
      if (bb.size > rt.maxBinding) {
        if (transB) nc = Math.min(nc, Math.floor(L / (K * eb)));
        else kc = Math.min(kc, Math.floor(L / (N * eb)));
      }
      if (mc < 1 || nc < 1 || kc < 1) throw new Error(`matmul ${M}×${N}×${K}: one row of an operand is larger than a storage binding`);
      const constants = { TRANS_A: transA ? 1 : 0, TRANS_B: transB ? 1 : 0, ELEM_TYPE: et };
      for (let m0 = 0; m0 < M; m0 += mc) {
        const m1 = Math.min(M, m0 + mc);
        for (let n0 = 0; n0 < N; n0 += nc) {
          const n1 = Math.min(N, n0 + nc);
          // the K chunks of one output block add up: the first one applies accumulate/bias
          for (let k0 = 0; k0 < Math.max(K, 1); k0 += kc) {
            const k1 = Math.min(K, k0 + kc);
            const rows = m1 - m0, cols = n1 - n0, depth = k1 - k0;
            const av = transA ? win(ba, 4, k0 * M + m0, Math.max(0, depth - 1) * M + rows, 'matmul a') : win(ba, 4, m0 * K + k0, (rows - 1) * K + depth, 'matmul a');
            const bv = transB ? win(bb, eb, n0 * K + k0, (cols - 1) * K + depth, 'matmul b') : win(bb, eb, k0 * N + n0, Math.max(0, depth - 1) * N + cols, 'matmul b');
            const ov = win(bo, 4, m0 * N + n0, (rows - 1) * N + cols, 'matmul out');
            const first = k0 === 0;
            const views: Record<string, View> = { y: ov.v, a: av.v, b: bv.v };
            let biasOff = 0;
            if (bbias && first) {
              const w = win(bbias, 4, n0, cols, 'matmul bias');
              views.bias = w.v;
              biasOff = w.off;
            }
            rt.dispatch('gemm', 'matmul', constants, views, {
              M: rows, N: cols, K: depth, lda: transA ? M : K, ldb: transB ? K : N, ldo: N,
              a_off: av.off, b_off: bv.off, o_off: ov.off, bias_off: biasOff,
              alpha, accumulate: first ? (accumulate ? 1 : 0) : 1, has_bias: bbias && first ? 1 : 0,
            }, [Math.ceil(cols / TILE), Math.ceil(rows / TILE)]);
          }
        }
      }
    },

    qMatmul(out, x, w, M, o = {}) {
      const q = qlive(w, 'qMatmul');
      const { alpha = 1, accumulate = false, bias } = o;
      checkGemmOptions(o, 'qMatmul');
      const { N, K } = q;
      const bo = f32(out, M * N, 'qMatmul out'), bx = f32(x, M * K, 'qMatmul x');
      const wv = whole(q.buf, 'qMatmul W'), biasV = bias ? whole(f32(bias, N, 'qMatmul bias'), 'qMatmul bias') : null;
      for (const [m0, m1] of rowBlocks(M, Math.max(N, K) * 4, [bo, bx], 'qMatmul')) {
        const rows = m1 - m0, yv = win(bo, 4, m0 * N, rows * N, 'qMatmul out'), xv = win(bx, 4, m0 * K, rows * K, 'qMatmul x');
        const views: Record<string, View> = { y: yv.v, a: xv.v, b: wv };
        if (biasV) views.bias = biasV;
        rt.dispatch('gemm', 'q_matmul', {}, views, {
          M: rows, N, K, lda: K, ldo: N, a_off: xv.off, o_off: yv.off, alpha, accumulate: accumulate ? 1 : 0, has_bias: bias ? 1 : 0, ...quantParams(q),
        }, [Math.ceil(N / TILE), Math.ceil(rows / TILE)]);
      }
    },

    rope(x, t: RopeTables, R, T, nh, D, pos0, docStart) {
      ropeCall('rope', x, t, R, T, nh, D, pos0, docStart);
    },

    attention(out, lse, q, k, v, s) {
      checkAttention(s, 'attention', attnLimits);
      const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
      // packed sequences: the docStart tensor is bound as `di` (unused by the forward otherwise)
      const bd = s.docStart ? buf(s.docStart, 'i32', s.B * s.T, 'attention docStart') : null;
      attentionCalls(s, 'attention', {
        q: [['o', f32(out, nq, 'attention out')], ['q', f32(q, nq, 'attention q')]],
        kv: [['k', f32(k, nkv, 'attention k')], ['v', f32(v, nkv, 'attention v')]],
        l: [['lse', f32(lse, s.B * s.H * s.T, 'attention lse')]],
      }, (views, params, nb, b0) => {
        if (bd) {
          const dv = rt.view(bd, b0 * s.T * 4, nb * s.T * 4, 'attention docStart');
          views.di = dv;
          params.has_doc = 1;
          params.ds_off = dv.shift / 4;
        }
        rt.dispatch('attention', 'attention', { D4: s.D / 4, KT: attnTile(s.D), WG: ATTN_WG }, views, params, [Math.ceil(s.T / ATTN_WG), nb * s.H]);
      });
    },

    swiglu(out, gate, up, n) { gated('swiglu', out, gate, up, n); },
    geglu(out, gate, up, n) { gated('geglu', out, gate, up, n); },

    softcap(x, n, cap) {
      checkSoftcap(cap);
      const bx = f32(x, n, 'softcap x');
      for (const [i0, i1] of ranges(n, [bx])) {
        const c = i1 - i0, xv = win(bx, 4, i0, c, 'softcap x');
        rt.dispatch('elementwise', 'softcap', {}, { o: xv.v }, { n: c, o_off: xv.off, cap }, rt.grid1d(c));
      }
    },

    add(out, x, n, alpha = 1) {
      elementwise('add', out, x, n, { alpha });
    },

    addUniformNoise(x, n, scale, seed) {
      checkNoiseScale(scale);
      elementwise('add_uniform_noise', x, x, n, { scale: Math.fround(scale), seed: seed >>> 0 });
    },

    dropout(out, x, n, p, seed) {
      checkDropout(p);
      elementwise('dropout', out, x, n, { threshold: dropThreshold(p), scale: dropScale(p), seed: seed >>> 0 });
    },

    crossEntropy(losses, logits, targets, R, V, gradScale, softcap = 0) {
      checkCrossEntropySoftcap(softcap);
      const bl = f32(losses, R, 'crossEntropy losses'), bg = f32(logits, R * V, 'crossEntropy logits'), bt = buf(targets, 'i32', R, 'crossEntropy targets');
      // whole rows of logits per dispatch (all of them when the logits fit one binding)
      const per = bg.size <= rt.maxBinding ? R : Math.floor(rt.windowBytes / (V * 4));
      if (per < 1) throw new Error(`crossEntropy: one row of ${V} logits is larger than a storage binding`);
      const lv = whole(bl, 'crossEntropy losses', R * 4), tv = whole(bt, 'crossEntropy targets', R * 4);
      for (let r0 = 0; r0 < R; r0 += per) {
        const rows = Math.min(per, R - r0);
        const gv = win(bg, 4, r0 * V, rows * V, 'crossEntropy logits');
        rt.dispatch('cross_entropy', 'cross_entropy', { RED_WG: redWg(V) }, { losses: lv, logits: gv.v, targets: tv }, {
          V, rows, row0: r0, l_off: gv.off, grad: gradScale === undefined ? 0 : 1, grad_scale: gradScale ?? 0, nan: NaN, cap: softcap,
        }, rt.fold(rows));
      }
    },

    // ---- DoRA (wgsl/dora.wgsl) ----------------------------------------------------------

    scaleColumns(out, x, g, R, N, o = {}) {
      checkScaleColumnsOptions(o, 'scaleColumns');
      const { offset = 0, accumulate = false, bias } = o;
      const bo = f32(out, R * N, 'scaleColumns out'), bx = f32(x, R * N, 'scaleColumns x');
      const gv = whole(f32(g, N, 'scaleColumns g'), 'scaleColumns g', N * 4);
      const biasV = bias ? whole(f32(bias, N, 'scaleColumns bias'), 'scaleColumns bias', N * 4) : null;
      const inPlace = bo === bx;
      for (const [r0, r1] of rowBlocks(R, N * 4, [bo, bx], 'scaleColumns')) {
        const c = (r1 - r0) * N, ov = win(bo, 4, r0 * N, c, 'scaleColumns out');
        const views: Record<string, View> = { o: ov.v, v: gv };
        let xOff = 0;
        if (!inPlace) {
          const xv = win(bx, 4, r0 * N, c, 'scaleColumns x');
          views.x = xv.v;
          xOff = xv.off;
        }
        if (biasV) views.bias = biasV;
        rt.dispatch('dora', 'scale_columns', { IN_PLACE: inPlace ? 1 : 0 }, views,
          { n: c, N, offset, accumulate: accumulate ? 1 : 0, has_bias: bias ? 1 : 0, o_off: ov.off, x_off: xOff, one: 1 }, rt.grid1d(c));
      }
    },

    columnDot(out, a, b, R, N, o = {}) {
      const { scale, accumulate = false } = o;
      const ov = whole(f32(out, N, 'columnDot out'), 'columnDot out', N * 4);
      const ba = f32(a, R * N, 'columnDot a'), bb = f32(b, R * N, 'columnDot b');
      const sv = scale ? whole(f32(scale, N, 'columnDot scale'), 'columnDot scale', N * 4) : null;
      const blocks = R > 0 ? rowBlocks(R, N * 4, [ba, bb], 'columnDot') : [[0, 0]];
      // a, b larger than a binding: row blocks, each column's running sum carried between them
      // in scratch (the same order of additions as one dispatch)
      const part = blocks.length > 1 ? whole(rt.scratchBuf('columnDot sums', N * 4), 'columnDot sums') : null;
      blocks.forEach(([r0, r1], i) => {
        const rows = r1 - r0;
        const av = win(ba, 4, r0 * N, rows * N, 'columnDot a'), bv = win(bb, 4, r0 * N, rows * N, 'columnDot b');
        const views: Record<string, View> = { o: ov, x: av.v, y: bv.v };
        if (sv) views.v = sv;
        if (part) views.o2 = part;
        rt.dispatch('dora', 'column_dot', {}, views, {
          R: rows, N, first: i === 0 ? 1 : 0, last: i === blocks.length - 1 ? 1 : 0, accumulate: accumulate ? 1 : 0, has_scale: scale ? 1 : 0,
          x_off: av.off, y_off: bv.off, one: 1,
        }, rt.grid1d(N));
      });
    },

    doraScale(g, invNorm, m, nsq, N) {
      const bg = f32(g, N, 'doraScale g'), bi = f32(invNorm, N, 'doraScale invNorm'), bm = f32(m, N, 'doraScale m'), bn = f32(nsq, N, 'doraScale nsq');
      for (const [i0, i1] of ranges(N, [bg, bi, bm, bn])) {
        const c = i1 - i0;
        const gv = win(bg, 4, i0, c, 'doraScale g'), iv = win(bi, 4, i0, c, 'doraScale invNorm');
        const mv = win(bm, 4, i0, c, 'doraScale m'), nv = win(bn, 4, i0, c, 'doraScale nsq');
        rt.dispatch('dora', 'dora_scale', {}, { o: gv.v, o2: iv.v, x: mv.v, y: nv.v },
          { n: c, o_off: gv.off, o2_off: iv.off, x_off: mv.off, y_off: nv.off }, rt.grid1d(c));
      }
    },

    rowSumSquares(out, x, R, C, accumulate) {
      const bo = f32(out, R, 'rowSumSquares out'), bx = f32(x, R * C, 'rowSumSquares x');
      for (const [r0, r1] of rowBlocks(R, C * 4, [bo, bx], 'rowSumSquares')) {
        const rows = r1 - r0;
        const ov = win(bo, 4, r0, rows, 'rowSumSquares out'), xv = win(bx, 4, r0 * C, rows * C, 'rowSumSquares x');
        rt.dispatch('dora', 'row_sum_squares', { RED_WG: redWg(C) }, { o: ov.v, x: xv.v },
          { R: rows, N: C, accumulate: accumulate ? 1 : 0, o_off: ov.off, x_off: xv.off, one: 1 }, rt.fold(rows));
      }
    },

    qRowSumSquares(out, w) {
      const q = qlive(w, 'qRowSumSquares');
      const { N, K } = q;
      const ov = whole(f32(out, N, 'qRowSumSquares out'), 'qRowSumSquares out', N * 4);
      // the weight's parts as for q_matmul; its rows are K long (RED_WG as rowSumSquares' for C = K)
      const { ldb: _ldb, b_off: _bOff, ...parts } = quantParams(q);
      rt.dispatch('dora', 'q_row_sum_squares', { RED_WG: redWg(K) }, { o: ov, w: whole(q.buf, 'qRowSumSquares W') }, { R: N, N: K, ...parts }, rt.fold(N));
    },

    // ---- backward ---------------------------------------------------------------------

    qMatmulBackwardInput(dx, dy, w, M, o = {}) {
      const q = qlive(w, 'qMatmulBackwardInput');
      const { alpha = 1, accumulate = false } = o;
      const { N, K } = q;
      const bo = f32(dx, M * K, 'qMatmulBackwardInput dx'), bg = f32(dy, M * N, 'qMatmulBackwardInput dy'), wv = whole(q.buf, 'qMatmulBackwardInput W');
      for (const [m0, m1] of rowBlocks(M, Math.max(N, K) * 4, [bo, bg], 'qMatmulBackwardInput')) {
        const rows = m1 - m0, yv = win(bo, 4, m0 * K, rows * K, 'qMatmulBackwardInput dx'), gv = win(bg, 4, m0 * N, rows * N, 'qMatmulBackwardInput dy');
        rt.dispatch('gemm', 'q_matmul_backward_input', {}, { y: yv.v, a: gv.v, b: wv }, {
          M: rows, N: K, K: N, lda: N, ldo: K, a_off: gv.off, o_off: yv.off, alpha, accumulate: accumulate ? 1 : 0, ...quantParams(q),
        }, [Math.ceil(K / TILE), Math.ceil(rows / TILE)]);
      }
    },

    rmsNormBackward(dx, dy, x, w, rstd, R, C, accumulate) {
      const n = R * C;
      const bo = f32(dx, n, 'rmsNormBackward dx'), bg = f32(dy, n, 'rmsNormBackward dy'), bx = f32(x, n, 'rmsNormBackward x');
      const br = f32(rstd, R, 'rmsNormBackward rstd'), wv = whole(f32(w, C, 'rmsNormBackward w'), 'rmsNormBackward w');
      for (const [r0, r1] of rowBlocks(R, C * 4, [bo, bg, bx, br], 'rmsNormBackward')) {
        const rows = r1 - r0;
        const o = win(bo, 4, r0 * C, rows * C, 'rmsNormBackward dx'), g = win(bg, 4, r0 * C, rows * C, 'rmsNormBackward dy');
        const xx = win(bx, 4, r0 * C, rows * C, 'rmsNormBackward x'), r = win(br, 4, r0, rows, 'rmsNormBackward rstd');
        rt.dispatch('rms_norm', 'rms_norm_backward', { RED_WG: redWg(C) }, { o: o.v, dy: g.v, x: xx.v, w: wv, rstd: r.v },
          { R: rows, C, accumulate: accumulate ? 1 : 0, o_off: o.off, x_off: xx.off, dy_off: g.off, r_off: r.off }, rt.fold(rows));
      }
    },

    ropeBackward(dx, t, R, T, nh, D, pos0, docStart) {
      ropeCall('rope_backward', dx, t, R, T, nh, D, pos0, docStart);
    },

    attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, s) {
      checkAttention(s, 'attentionBackward', attnLimits);
      const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D, nl = s.B * s.H * s.T;
      const F = (t: Tensor, n: number, what: string) => f32(t, n, `attentionBackward ${what}`);
      // Di: one float per query row, written by the first kernel for the second (slack for window
      // shifts); packed sequences: docStart copied behind it (both kernels read it, and eight
      // bindings are all a stage may have)
      const dsAt = roundUp(nl + rt.align / 4 + 4, 4), rowsBT = s.B * s.T;
      const di = rt.scratchBuf('attention Di', (dsAt + (s.docStart ? rowsBT : 0)) * 4);
      // (word-aligned on both sides: a buffer copy, no shader)
      if (s.docStart) rt.copyBuffer(buf(s.docStart, 'i32', rowsBT, 'attentionBackward docStart'), 0, di, dsAt * 4, rowsBT * 4);
      const consts = { D4: s.D / 4, KT: attnTile(s.D), WG: ATTN_WG };
      attentionCalls(s, 'attentionBackward', {
        q: [['dq', F(dq, nq, 'dq')], ['q', F(q, nq, 'q')], ['dout', F(dout, nq, 'dout')], ['out', F(out, nq, 'out')]],
        kv: [['k', F(k, nkv, 'k')], ['v', F(v, nkv, 'v')], ['dk', F(dk, nkv, 'dk')], ['dv', F(dv, nkv, 'dv')]],
        l: [['lse', F(lse, nl, 'lse')]],
      }, (w, params, nb, b0) => {
        const common = { q: w.q!, k: w.k!, v: w.v!, dout: w.dout!, lse: w.lse!, di: whole(di, 'attention Di') };
        if (s.docStart) {
          params.has_doc = 1;
          params.ds_off = dsAt + b0 * s.T;
        }
        // the outputs share two bindings (wgsl/attention.wgsl): o = dq, o2 = out; then o = dk, o2 = dv
        rt.dispatch('attention', 'attention_backward', consts, { ...common, o: w.dq!, o2: w.out! }, params, [Math.ceil(s.T / ATTN_WG), nb * s.H]);
        rt.dispatch('attention', 'attention_backward_kv', consts, { ...common, o: w.dk!, o2: w.dv! }, params, [Math.ceil(s.kvStride / ATTN_WG), nb * s.KVH]);
      });
    },

    swigluBackward(dgate, dup, dout, gate, up, n) { gatedBackward('swiglu_backward', dgate, dup, dout, gate, up, n); },
    gegluBackward(dgate, dup, dout, gate, up, n) { gatedBackward('geglu_backward', dgate, dup, dout, gate, up, n); },

    // ---- optimizer --------------------------------------------------------------------

    sumSquares(out, x, n, accumulate) {
      const bx = f32(x, n, 'sumSquares x'), ov = whole(f32(out, 1, 'sumSquares out'), 'sumSquares out');
      // one workgroup per range; later ranges add to the first
      ranges(n, [bx]).forEach(([i0, i1], i) => {
        const xv = win(bx, 4, i0, i1 - i0, 'sumSquares x');
        rt.dispatch('optim', 'sum_squares', { RED_WG: 256 }, { p: ov, g: xv.v }, { n: i1 - i0, g_off: xv.off, accumulate: accumulate || i > 0 ? 1 : 0 }, [1, 1]);
      });
    },

    adamwStep(param, grad, m, v, n, p: AdamWParams) {
      const bp = f32(param, n, 'adamwStep param'), bg = f32(grad, n, 'adamwStep grad'), bm = f32(m, n, 'adamwStep m'), bv = f32(v, n, 'adamwStep v');
      // scalars rounded to f32 once on the host, as the reference computes them
      const scalars = {
        lr: p.lr, beta1: p.beta1, beta2: p.beta2, obeta1: 1 - p.beta1, obeta2: 1 - p.beta2, eps: p.eps,
        decay: 1 - p.lr * p.weightDecay, c1: 1 - Math.pow(p.beta1, p.step), c2: 1 - Math.pow(p.beta2, p.step), gscale: p.gradScale,
      };
      for (const [i0, i1] of ranges(n, [bp, bg, bm, bv])) {
        const c = i1 - i0;
        const wp = win(bp, 4, i0, c, 'adamwStep param'), wg = win(bg, 4, i0, c, 'adamwStep grad'), wm = win(bm, 4, i0, c, 'adamwStep m'), wv = win(bv, 4, i0, c, 'adamwStep v');
        rt.dispatch('optim', 'adamw_step', {}, { p: wp.v, g: wg.v, m: wm.v, v: wv.v },
          { n: c, p_off: wp.off, g_off: wg.off, m_off: wm.off, v_off: wv.off, ...scalars }, rt.grid1d(c));
      }
    },

    sgdStep(param, grad, n, lr, gradScale) {
      const bp = f32(param, n, 'sgdStep param'), bg = f32(grad, n, 'sgdStep grad');
      for (const [i0, i1] of ranges(n, [bp, bg])) {
        const c = i1 - i0;
        const wp = win(bp, 4, i0, c, 'sgdStep param'), wg = win(bg, 4, i0, c, 'sgdStep grad');
        rt.dispatch('optim', 'sgd_step', {}, { p: wp.v, g: wg.v }, { n: c, p_off: wp.off, g_off: wg.off, lr, gscale: gradScale }, rt.grid1d(c));
      }
    },
  };

  /**
   * Attention dispatches over blocks of whole sequences: all of them at once unless an operand is
   * larger than a binding. Operands come in three groups sharing one index space each — q-like
   * [B·T, H, D], kv-like [B, kvStride, KVH, D], lse-like [B, H, T] — and every operand of a group
   * is bound at the same window shift, passed as q_off / kv_off (vec4s) and l_off (floats).
   */
  function attentionCalls(s: AttentionShape, what: string, groups: Record<'q' | 'kv' | 'l', Array<[string, Buf]>>,
    run: (views: Record<string, View>, params: Record<string, number>, nb: number, b0: number) => void): void {
    const per = { q: s.T * s.H * s.D, kv: s.kvStride * s.KVH * s.D, l: s.H * s.T };
    const all = [...groups.q, ...groups.kv, ...groups.l].map(([, b]) => b);
    const split = !all.every((b) => b.size <= rt.maxBinding);
    const nbMax = split ? Math.max(1, Math.floor(rt.windowBytes / (4 * Math.max(per.q, per.kv, per.l)))) : s.B;
    for (let b0 = 0; b0 < s.B; b0 += nbMax) {
      const nb = Math.min(nbMax, s.B - b0);
      const views: Record<string, View> = {};
      const offs: Record<string, number> = {};
      for (const g of ['q', 'kv', 'l'] as const) {
        for (const [name, b] of groups[g]) {
          const v = rt.view(b, b0 * per[g] * 4, nb * per[g] * 4, `${what} ${name}`, split);
          if (offs[g] !== undefined && offs[g] !== v.shift) throw new Error(`${what}: ${name} is bound at another offset than the rest of its group`);
          offs[g] = v.shift;
          views[name] = v;
        }
      }
      run(views, {
        B: nb, T: s.T, S: s.S, H: s.H, KVH: s.KVH, pos0: s.pos0, kv_stride: s.kvStride, ...attentionParams(s),
        q_off: offs.q! / 16, kv_off: offs.kv! / 16, l_off: offs.l! / 4,
      }, nb, b0);
    }
  }

  function ropeCall(entry: 'rope' | 'rope_backward', x: Tensor, t: RopeTables, R: number, T: number, nh: number, D: number, pos0: number, docStart?: Tensor): void {
    const what = entry === 'rope' ? 'rope' : 'ropeBackward';
    const half = D / 2, maxPos = pos0 + Math.min(T, R), row = nh * D;
    const bx = f32(x, R * row, `${what} x`);
    const cv = whole(f32(t.cos, maxPos * half, `${what} cos`), `${what} cos`), sv = whole(f32(t.sin, maxPos * half, `${what} sin`), `${what} sin`);
    // docStart's values stay on the GPU: their layout is the caller's contract (backend.ts)
    if (docStart) checkDocStartTensor(docStart, R, what);
    const bd = docStart ? buf(docStart, 'i32', R, `${what} docStart`) : null;
    for (const [r0, r1] of rowBlocks(R, row * 4, bd ? [bx, bd] : [bx], what)) {
      const rows = r1 - r0, xv = win(bx, 4, r0 * row, rows * row, `${what} x`);
      const views: Record<string, View> = { x: xv.v, cos_t: cv, sin_t: sv };
      const params: Record<string, number> = { R: rows, T, nh, D, pos0, row0: r0, x_off: xv.off };
      if (bd) {
        const dv = win(bd, 4, r0, rows, `${what} docStart`);
        views.ds = dv.v;
        params.has_doc = 1;
        params.ds_off = dv.off;
      }
      rt.dispatch('rope', entry, {}, views, params, rt.grid1d(rows * nh * half));
    }
  }

  /** swiglu / geglu (swiglu.wgsl): out = act(gate)·up in binding-sized ranges; out may alias gate or up. */
  function gated(entry: 'swiglu' | 'geglu', out: Tensor, gate: Tensor, up: Tensor, n: number): void {
    const bo = f32(out, n, `${entry} out`), bg = f32(gate, n, `${entry} gate`), bu = f32(up, n, `${entry} up`);
    const alias = (bg === bo ? 1 : 0) | (bu === bo ? 2 : 0);
    for (const [i0, i1] of ranges(n, [bo, bg, bu])) {
      const c = i1 - i0, ov = win(bo, 4, i0, c, `${entry} out`);
      const views: Record<string, View> = { o: ov.v };
      const params: Record<string, number> = { n: c, o_off: ov.off };
      if (!(alias & 1)) { const g = win(bg, 4, i0, c, `${entry} gate`); views.gate = g.v; params.g_off = g.off; }
      if (!(alias & 2)) { const u = win(bu, 4, i0, c, `${entry} up`); views.up = u.v; params.u_off = u.off; }
      rt.dispatch('swiglu', entry, { ALIAS: alias }, views, params, rt.grid1d(c));
    }
  }

  /** swiglu_backward / geglu_backward: dgate, dup from dout and the forward's gate, up. */
  function gatedBackward(entry: 'swiglu_backward' | 'geglu_backward', dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor, n: number): void {
    const what = entry === 'swiglu_backward' ? 'swigluBackward' : 'gegluBackward';
    const bdg = f32(dgate, n, `${what} dgate`), bdu = f32(dup, n, `${what} dup`), bdo = f32(dout, n, `${what} dout`);
    const bg = f32(gate, n, `${what} gate`), bu = f32(up, n, `${what} up`);
    for (const [i0, i1] of ranges(n, [bdg, bdu, bdo, bg, bu])) {
      const c = i1 - i0;
      const o = win(bdg, 4, i0, c, `${what} dgate`), o2 = win(bdu, 4, i0, c, `${what} dup`), d = win(bdo, 4, i0, c, `${what} dout`);
      const g = win(bg, 4, i0, c, `${what} gate`), u = win(bu, 4, i0, c, `${what} up`);
      rt.dispatch('swiglu', entry, {}, { o: o.v, o2: o2.v, dout: d.v, gate: g.v, up: u.v },
        { n: c, o_off: o.off, o2_off: o2.off, d_off: d.off, g_off: g.off, u_off: u.off }, rt.grid1d(c));
    }
  }

  /** add / dropout: o (op)= x over n elements, in ranges that fit a binding; x may alias o. */
  function elementwise(entry: 'add' | 'dropout' | 'add_uniform_noise', out: Tensor, x: Tensor, n: number, params: Record<string, number>): void {
    // messages name the Backend call and its operands (addUniformNoise has one, x, noised in place)
    const what = entry === 'add_uniform_noise' ? 'addUniformNoise' : entry;
    const bo = f32(out, n, entry === 'add_uniform_noise' ? `${what} x` : `${what} out`), bx = f32(x, n, `${what} x`);
    const inPlace = bo === bx;
    for (const [i0, i1] of ranges(n, [bo, bx])) {
      const c = i1 - i0, ov = win(bo, 4, i0, c, `${what} out`);
      const views: Record<string, View> = { o: ov.v };
      let xOff = 0;
      if (!inPlace) {
        const xv = win(bx, 4, i0, c, `${what} x`);
        views.x = xv.v;
        xOff = xv.off;
      }
      rt.dispatch('elementwise', entry, { IN_PLACE: inPlace ? 1 : 0 }, views, { ...params, n: c, i0, o_off: ov.off, x_off: xOff }, rt.grid1d(c));
    }
  }

  return be;
}
