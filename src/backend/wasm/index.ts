// The WebAssembly backend: every Backend kernel runs in assembly/ (SIMD128) over one linear
// memory owned by WasmKernels. Tensors are blocks of that memory; kernels run synchronously when
// called (the Backend's enqueue-in-order contract holds trivially) and `read` returns a copy.
//
// Threads: every heavy kernel takes an explicit work range (rows, columns, (b,h) pairs, kv groups,
// elements, sum chunks) and a per-thread scratch area. With more than one thread the memory is a
// shared WebAssembly.Memory and `par` cuts a call's range into a few contiguous chunks per thread,
// which the caller and the workers take until none is left (pool.ts). A kernel's summation order
// never depends on its range, so any split gives the bits of one thread
// (test/wasm/threads.test.ts). Calls too small to pay for the hand-off run on the caller alone —
// also bit-identical. Which dimension a call is cut along is chosen so no work is repeated: GEMMs
// by output columns (each chunk packs only its own part of B, or dequantizes only its own rows of
// W), rows where a GEMM has too few columns; attention by (sequence, head) or kv group.
// Shapes are the caller's responsibility (backend.ts), but every call checks (validate.ts) that its
// buffers are large enough: a short buffer would otherwise be a silent write into a neighbouring
// tensor.
import type { AdamWParams, AttentionShape, Backend, BufferType, GemmOptions, MemoryStats, QuantUpload, QuantWeight, RopeTables, Tensor } from '../backend.ts';
import { dropScale, dropThreshold } from '../rng.ts';
import { ATTN_KB, ATTN_TQ } from '../abi.ts';
import { f32ToBf16, f32ToF16 } from '../../num.ts';
import {
  attentionParams,
  BUFFER_BYTES, HOST_ARRAY, QuantSlot, checkAlloc, checkAttention, checkCopy, checkCrossEntropySoftcap, checkDocStartTensor, checkDocStartValues,
  checkDropout, checkGemmOptions, checkNoiseScale, checkOperand, checkQuantUpload, takeQuant, checkScaleColumnsOptions, checkSoftcap,
  checkTargets, checkTokenIds, checkWrite, elemTypeOf, fillLength, readLength, sideTable,
} from '../validate.ts';
import { WasmKernels, alignUp, relaxedSimdSupported, variantFor, type KernelVariant } from './module.ts';
import { CTRL, MAX_THREADS, ThreadPool, threadSupport } from './pool.ts';
import { wasmQuantLayout, writeWasmQuant } from './layout.ts';

export { splitRange } from './pool.ts';

class WasmTensor implements Tensor {
  constructor(
    readonly type: BufferType,
    readonly length: number,
    readonly label: string,
    /** byte offset in the kernel memory; 0 once freed */
    public ptr: number,
  ) {}
}

/** f32 → its bits without an allocation per call (fill). */
const F32_BITS = new Float32Array(1);
const U32_OF_F32 = new Uint32Array(F32_BITS.buffer);

class WasmQuant extends QuantSlot {
  constructor(
    w: QuantUpload,
    /** the descriptor; the whole weight is one allocation starting there. 0 once freed */
    public desc: number,
  ) {
    super(w);
  }
}

/** How the pool cuts one kernel's calls (KERNELS). */
interface KernelSplit {
  /** the argument before the work range is this thread's scratch area */
  scratch: boolean;
  /** chunks start on multiples of this many range units (whole f32x4 vectors, cache lines of column sums) */
  grain: number;
  /** GEMMs: two work ranges, rows then columns; each call says which one it cuts (ParOptions.by) */
  gemm?: true;
}

/**
 * The kernels the pool runs (assembly/ exports; a job names one by its index in this table) and
 * how their calls are cut. Every kernel takes its work range [lo, hi) as its last two arguments,
 * after its scratch pointer when it has one: rows (rms_norm, rope, cross_entropy, embedding,
 * scale_columns, row_sum_squares), (sequence, head) pairs (attention), kv-head groups
 * (attention_backward), query tiles (attention_backward_dq), key blocks (attention_backward_kv), rows of W (q_row_sum_squares), columns (column_dot), chunks (sum_squares)
 * or elements (the rest).
 */
const KERNELS = {
  embedding: { scratch: false, grain: 1 },
  rms_norm: { scratch: false, grain: 1 },
  rms_norm_backward: { scratch: false, grain: 1 },
  matmul: { scratch: true, grain: 4, gemm: true },
  q_matmul: { scratch: true, grain: 8, gemm: true },
  q_matmul_backward_input: { scratch: true, grain: 16, gemm: true },
  rope: { scratch: false, grain: 1 },
  rope_backward: { scratch: false, grain: 1 },
  attention: { scratch: true, grain: 1 },
  attention_backward: { scratch: true, grain: 1 },
  attention_backward_dq: { scratch: true, grain: 1 },
  attention_backward_kv: { scratch: true, grain: 1 },
  swiglu: { scratch: false, grain: 16 },
  swiglu_backward: { scratch: false, grain: 16 },
  geglu: { scratch: false, grain: 16 },
  geglu_backward: { scratch: false, grain: 16 },
  softcap: { scratch: false, grain: 16 },
  add: { scratch: false, grain: 16 },
  add_uniform_noise: { scratch: false, grain: 16 },
  dropout: { scratch: false, grain: 16 },
  cross_entropy: { scratch: false, grain: 1 },
  cross_entropy_softcap: { scratch: false, grain: 1 },
  scale_columns: { scratch: false, grain: 1 },
  // 16 columns: chunks start on whole cache lines of out
  column_dot: { scratch: true, grain: 16 },
  dora_scale: { scratch: false, grain: 16 },
  row_sum_squares: { scratch: false, grain: 1 },
  q_row_sum_squares: { scratch: true, grain: 1 },
  sum_squares: { scratch: false, grain: 1 },
  adamw_step: { scratch: false, grain: 16 },
  sgd_step: { scratch: false, grain: 16 },
  simd_peak_par: { scratch: false, grain: 1 }, // bench/threads.ts
} satisfies Record<string, KernelSplit>;
type ParKernel = keyof typeof KERNELS;
const KERNEL_NAMES = Object.keys(KERNELS) as ParKernel[];
const FN_INDEX = new Map<string, number>(KERNEL_NAMES.map((n, i) => [n, i]));

/** How one call is cut, beyond its kernel's KERNELS entry. */
export interface ParOptions {
  /** GEMMs: cut the output rows or the output columns */
  by?: 'rows' | 'cols';
  /** a grain other than the kernel's (a GEMM's depends on its layout) */
  grain?: number;
  /** at most this many chunks (a GEMM cut by columns packs A once per chunk) */
  maxChunks?: number;
  /** exactly these chunks, always through the pool (tests, bench/threads.ts) */
  chunks?: Array<[number, number]>;
  /** with `chunks`: false leaves every chunk to the workers */
  callerWorks?: boolean;
}

/**
 * A call is cut into chunks of at least this much work (≈ flops), so a chunk costs far more than
 * taking it (a compare-exchange and a call); calls with less than two chunks' worth run on the
 * caller alone, sparing the wake-up of the workers.
 */
const MIN_CHUNK_WORK = 1 << 16;
/** Chunks per thread: enough to even out threads the OS slows down, few enough to stay coarse. */
const CHUNKS_PER_THREAD = 4;
/** sumSquares: chunks of this many elements (more for huge n), each summed alone, then in order. */
const SUMSQ_CHUNK = 1 << 16;
const SUMSQ_MAX_CHUNKS = 1024;

/** What the thread pool tests (test/wasm/, test/kernels/wasm-specific.test.ts) need below the Backend API. */
export interface WasmInternals {
  kernels: WasmKernels;
  /** byte offset of a tensor of this backend */
  ptr(t: Tensor): number;
  /** descriptor of a 4-bit weight of this backend */
  desc(w: QuantWeight): number;
  /** scratch area of thread i */
  scratch(i: number): number;
  threads: number;
  /** the worker pool (null with one thread) */
  pool: ThreadPool | null;
  /**
   * Runs a ranged kernel as the Backend methods do: args end with its full work range (after
   * thread 0's scratch where the kernel takes one, KERNELS); it is cut into chunks by its work
   * (`work` per range unit), or into `o.chunks` when given.
   */
  par(name: ParKernel, args: number[], work: number, o?: ParOptions): void;
}

const internals = sideTable<WasmInternals>('wasmInternals', 'wasm');

/** The kernel memory and pointers behind a wasm backend (threading layer and tests only). */
export const wasmInternals: (be: Backend) => WasmInternals = internals.get;

export interface WasmBackendOptions {
  /**
   * Threads, the caller included. Default: every core (os.availableParallelism() in Node,
   * navigator.hardwareConcurrency in browsers) when shared memory works, else 1. Without shared
   * memory (a browser page that is not cross-origin isolated) any request runs on one thread,
   * and onInfo says why.
   */
  threads?: number;
  /** Use the relaxed-SIMD build. Default: when the engine validates relaxed SIMD. */
  relaxedSimd?: boolean;
  /** Told the thread count, the kernel variant, and why threads are off when they are. */
  onInfo?: (message: string) => void;
}

/** How a wasm backend runs (for the CLI and the browser page to show). */
export interface WasmBackendInfo {
  threads: number;
  variant: KernelVariant;
  sharedMemory: boolean;
  relaxedSimd: boolean;
  /** one line: threads, SIMD flavour, and the reason for a single thread if any */
  summary: string;
}
const infos = sideTable<WasmBackendInfo>('wasmBackendInfo', 'wasm');

/** Threads and kernel variant of a wasm backend. */
export const wasmBackendInfo: (be: Backend) => WasmBackendInfo = infos.get;

export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<Backend> {
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) {
    throw new Error(`createWasmBackend: threads must be a positive integer, got ${opts.threads}`);
  }
  const sup = await threadSupport();
  let threads = 1, why = '';
  if (!sup.shared) why = `${opts.threads !== undefined && opts.threads > 1 ? `${opts.threads} threads asked for, but ` : ''}${sup.reason}`;
  else {
    threads = Math.min(MAX_THREADS, opts.threads ?? sup.cores);
    if (threads === 1) why = opts.threads === 1 ? 'one thread asked for' : 'one core';
  }
  const relaxed = opts.relaxedSimd ?? relaxedSimdSupported();
  if (relaxed && !relaxedSimdSupported()) throw new Error('createWasmBackend: relaxedSimd asked for, but this engine does not validate relaxed SIMD (Node 20: --experimental-wasm-relaxed-simd)');
  const variant = variantFor(threads > 1, relaxed);
  const km = await WasmKernels.create(variant);
  const k = km.k;
  const scratchBytes = k.scratch_bytes();
  const scratch = Array.from({ length: threads }, () => km.alloc(scratchBytes));
  const s0 = scratch[0]!;
  const sumsqParts = km.alloc(SUMSQ_MAX_CHUNKS * 8);
  let pool: ThreadPool | null = null;
  if (threads > 1) {
    const ctrl = km.alloc(CTRL.BYTES);
    pool = await ThreadPool.start({ memory: km.memory, module: km.module, exports: k as unknown as Record<string, unknown>, ctrl, scratch, names: KERNEL_NAMES, spawn: sup.spawn! });
  }
  const summary = `wasm: ${threads} thread${threads > 1 ? 's (shared memory)' : ''}, ${relaxed ? 'relaxed SIMD' : 'SIMD128'} kernels${why ? ` — ${why}` : ''}`;
  opts.onInfo?.(summary);
  /** Chunks of a GEMM split by columns: each packs its own copy of A, so none below 64 columns. */
  const gemmChunks = (cols: number): number => Math.max(threads, Math.floor(cols / 64));
  let destroyed = false;

  /**
   * Runs kernel `name` on args (ending with its full work range, KERNELS), cut on multiples of
   * its grain into chunks of at least MIN_CHUNK_WORK (one range unit ≈ `work`), at most
   * CHUNKS_PER_THREAD per thread; one chunk runs here without the pool.
   */
  const par = (name: ParKernel, args: number[], work: number, o: ParOptions = {}): void => {
    if (pool) {
      const split: KernelSplit = KERNELS[name];
      if (split.gemm && !o.by) throw new Error(`wasm ${name}: a GEMM call says whether it is cut by rows or by columns`);
      // the range is the last two arguments (a GEMM's columns), or the two before (its rows)
      const rangePos = args.length - (o.by === 'rows' ? 4 : 2);
      const scratchPos = split.scratch ? args.length - (split.gemm ? 4 : 2) - 1 : -1;
      if (o.chunks) {
        pool.run(FN_INDEX.get(name)!, args, rangePos, scratchPos, o.chunks, o.callerWorks ?? true);
        return;
      }
      const lo = args[rangePos]!, hi = args[rangePos + 1]!, grain = o.grain ?? split.grain;
      const n = Math.min(pool.threads * CHUNKS_PER_THREAD, CTRL.MAX_CHUNKS, Math.ceil((hi - lo) / grain), o.maxChunks ?? Infinity, Math.floor(((hi - lo) * work) / MIN_CHUNK_WORK));
      if (n >= 2) {
        pool.runSplit(FN_INDEX.get(name)!, args, rangePos, scratchPos, n, grain, true);
        return;
      }
    }
    (k[name] as (...a: number[]) => void).apply(undefined, args);
  };

  // every call that touches memory checks: after a worker thread stopped mid-kernel, memory holds
  // a half-done step, and nothing may be read from it or computed on it
  const live = (): void => {
    if (destroyed) throw new Error('wasm backend used after destroy()');
    pool?.assertAlive();
  };
  // what this backend made: a tensor of another wasm backend holds a pointer into another memory
  const mine = new WeakSet<object>();
  const ptr = (t: Tensor, what: string): number => {
    live();
    if (!(t instanceof WasmTensor)) throw new Error(`${what}: tensor ${t.label} does not belong to the wasm backend`);
    if (t.ptr === 0) throw new Error(`${what}: tensor ${t.label} was freed`);
    if (!mine.has(t)) throw new Error(`${what}: tensor ${t.label} belongs to another wasm backend`);
    return t.ptr;
  };
  /** Pointer of an operand of `type` holding at least n elements (validate.ts checkOperand). */
  const buf = (t: Tensor, type: BufferType, n: number, what: string): number => {
    const p = ptr(t, what);
    checkOperand(t, type, n, what);
    return p;
  };
  const f32 = (t: Tensor, n: number, what: string): number => buf(t, 'f32', n, what);
  /** Pointer of a docStart operand of R rows of T (0 when absent), its values checked (validate.ts). */
  const docStartPtr = (t: Tensor | undefined, R: number, T: number, what: string): number => {
    if (!t) return 0;
    checkDocStartTensor(t, R, what);
    const p = buf(t, 'i32', R, `${what} docStart`);
    checkDocStartValues(km.i32(p, R), R, T, what);
    return p;
  };
  const qdesc = (w: QuantWeight, what: string): number => {
    live();
    if (!(w instanceof WasmQuant)) throw new Error(`${what}: weight ${w.label} does not belong to the wasm backend`);
    if (w.desc === 0) throw new Error(`${what}: weight ${w.label} was freed`);
    if (!mine.has(w)) throw new Error(`${what}: weight ${w.label} belongs to another wasm backend`);
    return w.desc;
  };
  /** The limits of assembly/attention.ts: its forward keeps a 64-score block and one row of D in scratch. */
  const attnLimits = { maxHeadDim: (scratchBytes >> 2) - 64, headDimStep: 1 };

  const be: Backend = {
    name: 'wasm',

    alloc(type, length, label) {
      live();
      checkAlloc(length, label);
      const bytes = length * BUFFER_BYTES[type];
      const p = km.alloc(bytes);
      // contents are undefined by contract; zeroed here so a forgotten init is at least reproducible
      k.fill(p, alignUp(Math.max(bytes, 1), 4) >> 2, 0, 4);
      const t = new WasmTensor(type, length, label, p);
      mine.add(t);
      return t;
    },

    free(t) {
      const p = ptr(t, 'free');
      km.release(p);
      (t as WasmTensor).ptr = 0;
    },

    write(t, data, offset = 0) {
      const p = ptr(t, 'write');
      checkWrite(t, data, offset);
      km.u8(p + offset * BUFFER_BYTES[t.type], data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    },

    async read(t, offset = 0, length) {
      const p = ptr(t, 'read');
      const n = readLength(t, offset, length);
      const out = new HOST_ARRAY[t.type](n);
      new Uint8Array(out.buffer).set(km.u8(p + offset * BUFFER_BYTES[t.type], n * BUFFER_BYTES[t.type]));
      return out;
    },

    copy(dst, dstOffset, src, srcOffset, n) {
      const pd = ptr(dst, 'copy'), ps = ptr(src, 'copy');
      checkCopy(dst, dstOffset, src, srcOffset, n);
      const e = BUFFER_BYTES[dst.type];
      k.copy(pd + dstOffset * e, ps + srcOffset * e, n * e);
    },

    fill(t, value, offset = 0, n) {
      const p = ptr(t, 'fill');
      const count = fillLength(t, offset, n);
      let bits: number;
      if (t.type === 'f32') {
        F32_BITS[0] = value;
        bits = U32_OF_F32[0]!;
      }
      else if (t.type === 'f16') bits = f32ToF16(value);
      else if (t.type === 'bf16') bits = f32ToBf16(value);
      else if (t.type === 'i32') bits = value | 0;
      else bits = value & 255;
      k.fill(p + offset * BUFFER_BYTES[t.type], count, bits, BUFFER_BYTES[t.type]);
    },

    // A 4-bit weight is one allocation laid out by wasmQuantLayout and written by writeWasmQuant
    // (layout.ts). w has been checked (checkQuantUpload): every part has exactly the length its
    // shape implies, so it fits.
    uploadQuant(w: QuantUpload): QuantWeight {
      live();
      checkQuantUpload(w);
      const base = km.alloc(wasmQuantLayout(w.N, w.K, w.blocksize, w.dq ? w.dq.nestedBlocksize : null).total);
      writeWasmQuant(km.memory.buffer, base, w);
      const q = new WasmQuant(w, base);
      mine.add(q);
      return q;
    },

    writeQuant(w, src) {
      const base = qdesc(w, 'writeQuant');
      // the slot's kind and at most its elements: the parts, laid out for src's shape, stay
      // inside the slot's allocation, and the descriptor is rewritten with that shape
      takeQuant(w as WasmQuant, src);
      writeWasmQuant(km.memory.buffer, base, src);
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
      await pool?.destroy();
    },

    // ---- forward ----------------------------------------------------------------------
    // Each call: its operands checked, then `par(kernel, [the export's arguments], work per
    // range unit, how it is cut)`; KERNELS says where the range and scratch arguments are.

    embedding(out, table, ids, R, C) {
      const et = elemTypeOf(table, 'embedding table');
      const po = f32(out, R * C, 'embedding out'), pt = buf(table, table.type, C, 'embedding table');
      const pi = buf(ids, 'i32', R, 'embedding ids');
      checkTokenIds(km.i32(pi, R), R, table, C);
      par('embedding', [po, pt, pi, C, et, 0, R], C);
    },

    rmsNorm(out, rstd, x, w, R, C, eps) {
      par('rms_norm', [f32(out, R * C, 'rmsNorm out'), f32(rstd, R, 'rmsNorm rstd'), f32(x, R * C, 'rmsNorm x'), f32(w, C, 'rmsNorm w'), R, C, eps, 0, R], 4 * C);
    },

    matmul(out, a, b, M, N, K, o: GemmOptions = {}) {
      checkGemmOptions(o, 'matmul');
      const et = elemTypeOf(b, 'matmul b', !o.transA);
      const pb = o.bias ? f32(o.bias, N, 'matmul bias') : 0;
      const args = [f32(out, M * N, 'matmul out'), f32(a, M * K, 'matmul a'), buf(b, b.type, K * N, 'matmul b'), M, N, K,
        o.transA ? 1 : 0, o.transB ? 1 : 0, et, o.alpha ?? 1, o.accumulate ? 1 : 0, pb, s0, 0, M, 0, N];
      // Columns split without duplicated work on B (each chunk packs only its panels of B; every
      // chunk packs A, so chunks stay ≥ 64 columns wide); rows when there are too few columns for
      // every thread (e.g. LoRA's x·Aᵀ, N = r).
      const gemv = o.transB && !o.transA && M < 4;
      if (gemv) par('matmul', args, 2 * M * K, { by: 'cols' });
      else if (N >= 32 * threads) par('matmul', args, 2 * M * K, { by: 'cols', grain: 8, maxChunks: gemmChunks(N) });
      else par('matmul', args, 2 * N * K, { by: 'rows' });
    },

    qMatmul(out, x, w, M, o = {}) {
      checkGemmOptions(o, 'qMatmul');
      const d = qdesc(w, 'qMatmul');
      const pb = o.bias ? f32(o.bias, w.N, 'qMatmul bias') : 0;
      // split over the rows of W: each thread dequantizes only its own rows
      par('q_matmul', [f32(out, M * w.N, 'qMatmul out'), f32(x, M * w.K, 'qMatmul x'), d, M, o.alpha ?? 1, o.accumulate ? 1 : 0, pb, s0, 0, M, 0, w.N],
        2 * M * w.K, { by: 'cols', maxChunks: M < 4 ? Infinity : gemmChunks(w.N) });
    },

    rope(x, t: RopeTables, R, T, nh, D, pos0, docStart) {
      const half = D / 2, maxPos = pos0 + Math.min(T, R);
      par('rope', [f32(x, R * nh * D, 'rope x'), f32(t.cos, maxPos * half, 'rope cos'), f32(t.sin, maxPos * half, 'rope sin'), R, T, nh, D, pos0,
        docStartPtr(docStart, R, T, 'rope'), 0, R], 3 * nh * D);
    },

    attention(out, lse, q, kk, v, s: AttentionShape) {
      checkAttention(s, 'attention', attnLimits);
      const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
      par('attention', [f32(out, nq, 'attention out'), f32(lse, s.B * s.H * s.T, 'attention lse'), f32(q, nq, 'attention q'),
        f32(kk, nkv, 'attention k'), f32(v, nkv, 'attention v'), s.B, s.T, s.S, s.H, s.KVH, s.D, s.pos0, s.kvStride, ...attnOptions(s),
        docStartPtr(s.docStart, s.B * s.T, s.T, 'attention'), s0, 0, s.B * s.H],
      4 * s.T * attnKeys(s) * s.D);
    },

    swiglu(out, gate, up, n) {
      par('swiglu', [f32(out, n, 'swiglu out'), f32(gate, n, 'swiglu gate'), f32(up, n, 'swiglu up'), 0, n], 24);
    },

    geglu(out, gate, up, n) {
      par('geglu', [f32(out, n, 'geglu out'), f32(gate, n, 'geglu gate'), f32(up, n, 'geglu up'), 0, n], 40);
    },

    softcap(x, n, cap) {
      checkSoftcap(cap);
      par('softcap', [f32(x, n, 'softcap x'), cap, 0, n], 32);
    },

    add(out, x, n, alpha = 1) {
      par('add', [f32(out, n, 'add out'), f32(x, n, 'add x'), alpha, 0, n], 2);
    },

    addUniformNoise(x, n, scale, seed) {
      checkNoiseScale(scale);
      par('add_uniform_noise', [f32(x, n, 'addUniformNoise x'), Math.fround(scale), seed >>> 0, 0, n], 4);
    },

    dropout(out, x, n, p, seed) {
      checkDropout(p);
      par('dropout', [f32(out, n, 'dropout out'), f32(x, n, 'dropout x'), dropThreshold(p), dropScale(p), seed >>> 0, 0, n], 4);
    },

    crossEntropy(losses, logits, targets, R, V, gradScale, softcap = 0) {
      checkCrossEntropySoftcap(softcap);
      const pt = buf(targets, 'i32', R, 'crossEntropy targets');
      checkTargets(km.i32(pt, R), R, V);
      const pl = f32(losses, R, 'crossEntropy losses'), pg = f32(logits, R * V, 'crossEntropy logits');
      if (softcap > 0) par('cross_entropy_softcap', [pl, pg, pt, V, gradScale === undefined ? 0 : 1, gradScale ?? 0, softcap, 0, R], 48 * V);
      else par('cross_entropy', [pl, pg, pt, V, gradScale === undefined ? 0 : 1, gradScale ?? 0, 0, R], 24 * V);
    },

    // ---- DoRA (assembly/dora.ts) --------------------------------------------------------

    scaleColumns(out, x, g, R, N, o = {}) {
      checkScaleColumnsOptions(o, 'scaleColumns');
      const pb = o.bias ? f32(o.bias, N, 'scaleColumns bias') : 0;
      par('scale_columns', [f32(out, R * N, 'scaleColumns out'), f32(x, R * N, 'scaleColumns x'), f32(g, N, 'scaleColumns g'), pb,
        o.offset ?? 0, o.accumulate ? 1 : 0, N, 0, R], 3 * N);
    },

    columnDot(out, a, b, R, N, o = {}) {
      const ps = o.scale ? f32(o.scale, N, 'columnDot scale') : 0;
      // split over columns (each column's sum runs down all R rows in one chunk)
      par('column_dot', [f32(out, N, 'columnDot out'), f32(a, R * N, 'columnDot a'), f32(b, R * N, 'columnDot b'), ps, R, N,
        o.accumulate ? 1 : 0, s0, 0, N], 2 * R);
    },

    doraScale(g, invNorm, m, nsq, N) {
      par('dora_scale', [f32(g, N, 'doraScale g'), f32(invNorm, N, 'doraScale invNorm'), f32(m, N, 'doraScale m'), f32(nsq, N, 'doraScale nsq'), 0, N], 24);
    },

    rowSumSquares(out, x, R, C, accumulate) {
      par('row_sum_squares', [f32(out, R, 'rowSumSquares out'), f32(x, R * C, 'rowSumSquares x'), C, accumulate ? 1 : 0, 0, R], 2 * C);
    },

    qRowSumSquares(out, w) {
      const d = qdesc(w, 'qRowSumSquares');
      // split over the rows of W: each thread dequantizes only its own rows
      par('q_row_sum_squares', [f32(out, w.N, 'qRowSumSquares out'), d, s0, 0, w.N], 4 * w.K);
    },

    // ---- backward ---------------------------------------------------------------------

    qMatmulBackwardInput(dx, dy, w, M, o = {}) {
      const d = qdesc(w, 'qMatmulBackwardInput');
      // split over the columns of W (each thread dequantizes only its own), on 16-column steps so
      // every thread's row pieces stay on whole bytes and 16-code runs
      par('q_matmul_backward_input', [f32(dx, M * w.K, 'qMatmulBackwardInput dx'), f32(dy, M * w.N, 'qMatmulBackwardInput dy'), d, M,
        o.alpha ?? 1, o.accumulate ? 1 : 0, s0, 0, M, 0, w.K], 2 * M * w.N, { by: 'cols', maxChunks: gemmChunks(w.K) });
    },

    rmsNormBackward(dx, dy, x, w, rstd, R, C, accumulate) {
      par('rms_norm_backward', [f32(dx, R * C, 'rmsNormBackward dx'), f32(dy, R * C, 'rmsNormBackward dy'), f32(x, R * C, 'rmsNormBackward x'),
        f32(w, C, 'rmsNormBackward w'), f32(rstd, R, 'rmsNormBackward rstd'), R, C, accumulate ? 1 : 0, 0, R], 8 * C);
    },

    ropeBackward(dx, t, R, T, nh, D, pos0, docStart) {
      const half = D / 2, maxPos = pos0 + Math.min(T, R);
      par('rope_backward', [f32(dx, R * nh * D, 'ropeBackward dx'), f32(t.cos, maxPos * half, 'ropeBackward cos'), f32(t.sin, maxPos * half, 'ropeBackward sin'), R, T, nh, D, pos0,
        docStartPtr(docStart, R, T, 'ropeBackward'), 0, R], 3 * nh * D);
    },

    attentionBackward(dq, dk, dv, dout, q, kk, v, out, lse, s) {
      checkAttention(s, 'attentionBackward', attnLimits);
      const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
      const [pdq, pdk, pdv] = [f32(dq, nq, 'attentionBackward dq'), f32(dk, nkv, 'attentionBackward dk'), f32(dv, nkv, 'attentionBackward dv')];
      const inputs = [f32(dout, nq, 'attentionBackward dout'), f32(q, nq, 'attentionBackward q'), f32(kk, nkv, 'attentionBackward k'), f32(v, nkv, 'attentionBackward v'),
        f32(out, nq, 'attentionBackward out'), f32(lse, s.B * s.H * s.T, 'attentionBackward lse'),
        s.B, s.T, s.S, s.H, s.KVH, s.D, s.pos0, s.kvStride, ...attnOptions(s), docStartPtr(s.docStart, s.B * s.T, s.T, 'attentionBackward'), s0];
      const work = 8 * (s.H / s.KVH) * s.T * attnKeys(s) * s.D;
      if (!pool || s.B * s.KVH >= pool.threads) {
        par('attention_backward', [pdq, pdk, pdv, ...inputs, 0, s.B * s.KVH], work);
        return;
      }
      // fewer (sequence, kv head) groups than threads: dq over query tiles, then dk/dv over key
      // blocks — more work (the scores twice) split finer, with the same bits (assembly/attention.ts)
      const tiles = Math.ceil(s.T / ATTN_TQ), blocks = Math.ceil(s.kvStride / ATTN_KB);
      par('attention_backward_dq', [pdq, ...inputs, 0, s.B * s.H * tiles], (4 / 8) * work / (s.H / s.KVH) / tiles);
      par('attention_backward_kv', [pdk, pdv, ...inputs, 0, s.B * s.KVH * blocks], (5 / 8) * work / blocks);
    },

    swigluBackward(dgate, dup, dout, gate, up, n) {
      par('swiglu_backward', [f32(dgate, n, 'swigluBackward dgate'), f32(dup, n, 'swigluBackward dup'), f32(dout, n, 'swigluBackward dout'),
        f32(gate, n, 'swigluBackward gate'), f32(up, n, 'swigluBackward up'), 0, n], 32);
    },

    gegluBackward(dgate, dup, dout, gate, up, n) {
      par('geglu_backward', [f32(dgate, n, 'gegluBackward dgate'), f32(dup, n, 'gegluBackward dup'), f32(dout, n, 'gegluBackward dout'),
        f32(gate, n, 'gegluBackward gate'), f32(up, n, 'gegluBackward up'), 0, n], 48);
    },

    // ---- optimizer --------------------------------------------------------------------

    sumSquares(out, x, n, accumulate) {
      // Fixed chunks (by n alone), each summed in f64 by whichever thread, then added in chunk
      // order here: the same bits for any thread count. One chunk = sum_squares_v1 (one range).
      const po = f32(out, 1, 'sumSquares out'), px = f32(x, n, 'sumSquares x');
      const chunk = Math.max(SUMSQ_CHUNK, alignUp(Math.ceil(n / SUMSQ_MAX_CHUNKS), 16));
      const nc = Math.max(1, Math.ceil(n / chunk));
      par('sum_squares', [sumsqParts, px, n, chunk, 0, nc], 2 * chunk);
      const partials = new Float64Array(km.memory.buffer, sumsqParts, nc);
      let sum = 0;
      for (let c = 0; c < nc; c++) sum += partials[c]!;
      const o = km.f32(po, 1);
      if (accumulate) sum += o[0]!;
      o[0] = sum;
    },

    adamwStep(param, grad, m, v, n, p: AdamWParams) {
      par('adamw_step', [f32(param, n, 'adamwStep param'), f32(grad, n, 'adamwStep grad'), f32(m, n, 'adamwStep m'), f32(v, n, 'adamwStep v'),
        p.lr, p.beta1, p.beta2, 1 - p.beta1, 1 - p.beta2, p.eps, 1 - p.lr * p.weightDecay,
        1 - Math.pow(p.beta1, p.step), 1 - Math.pow(p.beta2, p.step), p.gradScale, 0, n], 12);
    },

    sgdStep(param, grad, n, lr, gradScale) {
      par('sgd_step', [f32(param, n, 'sgdStep param'), f32(grad, n, 'sgdStep grad'), lr, gradScale, 0, n], 2);
    },
  };

  internals.set(be, {
    kernels: km,
    ptr: (t) => ptr(t, 'wasmInternals'),
    desc: (w) => qdesc(w, 'wasmInternals'),
    scratch: (i) => scratch[i]!,
    threads,
    pool,
    par,
  });
  infos.set(be, { threads, variant, sharedMemory: threads > 1, relaxedSimd: relaxed, summary });
  return be;
}

/**
 * The kernels' scale, softcap, window arguments (attentionParams, validate.ts).
 */
function attnOptions(s: AttentionShape): [number, number, number] {
  const p = attentionParams(s);
  return [p.scale, p.softcap, p.window];
}

/** Keys a query scores at most (the window or S): sizes a chunk of work. */
function attnKeys(s: AttentionShape): number {
  return s.window ? Math.min(s.window, s.S) : s.S;
}
