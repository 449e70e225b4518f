// Loads the WebAssembly kernel module (embedded in the bundle as base64, so it loads the same way
// in Node and browsers) over a linear memory owned by the TS side, and hands out blocks of that
// memory. Views are re-created on every access: memory.grow() detaches old TypedArray views.
//
// Variants (asconfig.json targets, all from the same assembly/ sources):
//   simd        SIMD128, private memory
//   simd-mt     SIMD128, shared memory (+ threads feature): what the worker pool runs
//   relaxed     + relaxed SIMD (f32x4.relaxed_madd in the GEMM micro-kernels, relaxed_swizzle in
//               the 4-bit lookup), private memory
//   relaxed-mt  relaxed + shared memory
// createWasmBackend (index.ts) chooses at run time through variantFor(): shared when the pool
// runs (threadSupport() in pool.ts, more than one thread), relaxed when WebAssembly.validate
// accepts a one-instruction relaxed-SIMD module (Chromium, Node ≥ 22; Node 20 once node-flags.ts
// has set V8's --experimental-wasm-relaxed-simd, which the Node entry points do). relaxed_madd may or may not fuse, by
// machine; on one machine it always does the same, so every thread gets the same bits.
//
// Shared memory and several instances: each worker instantiates the same module over the same
// memory, and instantiation copies the module's active data segments again. They hold only
// constant tables (quantization maps, Mathf tables) and all lie below heap_base(), where the
// allocator never hands out memory, so a starting worker rewrites identical bytes and nothing
// else; the module defines no mutable global (so no kernel writes a global) and has no start
// function. test/wasm/threads.test.ts checks all three on the built binaries.
import { KERNEL_WASM_BASE64 } from '../../generated/kernels-wasm.ts';
import { WebqloraError } from '../../errors.ts';

export type KernelVariant = 'simd' | 'simd-mt' | 'relaxed' | 'relaxed-mt';

export interface KernelExports {
  heap_base(): number;
  quantize_4bit(x: number, n: number, blocksize: number, qtype: number, packed: number, absmax: number): void;
  dequantize_4bit(packed: number, n: number, blocksize: number, quantMap: number, absmax: number, out: number): void;
  quantize_blockwise_8bit(x: number, n: number, blocksize: number, bounds: number, q: number, absmax: number): void;
  dequantize_blockwise_8bit(q: number, n: number, blocksize: number, code: number, absmax: number, out: number): void;
  dq_recover_absmax(q: number, nb: number, nestedBlocksize: number, code: number, nestedAbsmax: number, offset: number, out: number): void;
  // ---- training kernels (assembly/<family>.ts: embedding, rms_norm, gemm, qgemm, rope, attention,
  // swiglu, elementwise, cross_entropy, dora, optim).
  // Pointers are byte offsets; flags are 0/1; the last arguments are each kernel's work range.
  scratch_bytes(): number;
  simd_peak(iters: number): number;
  simd_peak_par(iters: number, c0: number, c1: number): number;
  hash32_fill(out: number, seed: number, i0: number, n: number): void;
  matmul(out: number, a: number, b: number, M: number, N: number, K: number, transA: number, transB: number, elemType: number, alpha: number, accumulate: number, bias: number, scratch: number, m0: number, m1: number, n0: number, n1: number): void;
  matmul_v1(out: number, a: number, b: number, M: number, N: number, K: number, transA: number, transB: number, elemType: number, alpha: number, accumulate: number, bias: number, scratch: number, m0: number, m1: number, n0: number, n1: number): void;
  q_matmul(out: number, x: number, desc: number, M: number, alpha: number, accumulate: number, bias: number, scratch: number, m0: number, m1: number, n0: number, n1: number): void;
  q_matmul_v1(out: number, x: number, desc: number, M: number, alpha: number, accumulate: number, bias: number, scratch: number, m0: number, m1: number, n0: number, n1: number): void;
  q_matmul_backward_input(dx: number, dy: number, desc: number, M: number, alpha: number, accumulate: number, scratch: number, m0: number, m1: number, k0: number, k1: number): void;
  q_matmul_backward_input_v1(dx: number, dy: number, desc: number, M: number, alpha: number, accumulate: number, scratch: number, m0: number, m1: number, k0: number, k1: number): void;
  rms_norm(out: number, rstd: number, x: number, w: number, R: number, C: number, eps: number, r0: number, r1: number): void;
  rms_norm_backward(dx: number, dy: number, x: number, w: number, rstd: number, R: number, C: number, accumulate: number, r0: number, r1: number): void;
  rope(x: number, cos: number, sin: number, R: number, T: number, nh: number, D: number, pos0: number, docStart: number, r0: number, r1: number): void;
  rope_backward(dx: number, cos: number, sin: number, R: number, T: number, nh: number, D: number, pos0: number, docStart: number, r0: number, r1: number): void;
  attention(out: number, lse: number, q: number, k: number, v: number, B: number, T: number, S: number, H: number, KVH: number, D: number, pos0: number, kvStride: number, scale: number, softcap: number, window: number, docStart: number, scratch: number, bh0: number, bh1: number): void;
  attention_backward(dq: number, dk: number, dv: number, dout: number, q: number, k: number, v: number, out: number, lse: number, B: number, T: number, S: number, H: number, KVH: number, D: number, pos0: number, kvStride: number, scale: number, softcap: number, window: number, docStart: number, scratch: number, g0: number, g1: number): void;
  attention_backward_dq(dq: number, dout: number, q: number, k: number, v: number, out: number, lse: number, B: number, T: number, S: number, H: number, KVH: number, D: number, pos0: number, kvStride: number, scale: number, softcap: number, window: number, docStart: number, scratch: number, u0: number, u1: number): void;
  attention_backward_kv(dk: number, dv: number, dout: number, q: number, k: number, v: number, out: number, lse: number, B: number, T: number, S: number, H: number, KVH: number, D: number, pos0: number, kvStride: number, scale: number, softcap: number, window: number, docStart: number, scratch: number, u0: number, u1: number): void;
  embedding(out: number, table: number, ids: number, C: number, elemType: number, r0: number, r1: number): void;
  copy(dst: number, src: number, bytes: number): void;
  /** bench/quant's bandwidth baseline (v128 loop) */
  copy_bytes(dst: number, src: number, bytes: number): void;
  fill(p: number, n: number, bits: number, size: number): void;
  add(out: number, x: number, alpha: number, i0: number, i1: number): void;
  swiglu(out: number, gate: number, up: number, i0: number, i1: number): void;
  swiglu_backward(dgate: number, dup: number, dout: number, gate: number, up: number, i0: number, i1: number): void;
  geglu(out: number, gate: number, up: number, i0: number, i1: number): void;
  geglu_backward(dgate: number, dup: number, dout: number, gate: number, up: number, i0: number, i1: number): void;
  softcap(x: number, cap: number, i0: number, i1: number): void;
  dropout(out: number, x: number, threshold: number, scale: number, seed: number, i0: number, i1: number): void;
  add_uniform_noise(x: number, scale: number, seed: number, i0: number, i1: number): void;
  cross_entropy(losses: number, logits: number, targets: number, V: number, grad: number, gradScale: number, r0: number, r1: number): void;
  cross_entropy_softcap(losses: number, logits: number, targets: number, V: number, grad: number, gradScale: number, cap: number, r0: number, r1: number): void;
  sum_squares(partials: number, x: number, n: number, chunk: number, c0: number, c1: number): void;
  /** the one-range oracle of sum_squares (tests) */
  sum_squares_v1(out: number, x: number, accumulate: number, i0: number, i1: number): void;
  adamw_step(param: number, grad: number, m: number, v: number, lr: number, beta1: number, beta2: number, omb1: number, omb2: number, eps: number, decay: number, bc1: number, bc2: number, gradScale: number, i0: number, i1: number): void;
  sgd_step(param: number, grad: number, lr: number, gradScale: number, i0: number, i1: number): void;
  [name: string]: (...args: number[]) => number | void;
}

const PAGE = 65536;
const ALIGN = 64; // one cache line; also keeps every f32 block v128-aligned
const MAX_PAGES = 65536; // 4 GiB, the wasm32 limit

function decodeBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const compiled = new Map<KernelVariant, Promise<WebAssembly.Module>>();
/** The compiled module of a variant (compiled once per process, shared by every instance). */
export function compileVariant(variant: KernelVariant): Promise<WebAssembly.Module> {
  let p = compiled.get(variant);
  if (!p) {
    const b64 = KERNEL_WASM_BASE64[variant];
    if (!b64) throw new Error(`kernel variant ${variant} was not built`);
    p = WebAssembly.compile(decodeBase64(b64) as BufferSource);
    compiled.set(variant, p);
  }
  return p;
}

/**
 * Whether this engine runs relaxed SIMD: validates (module (func (param v128 v128 v128)
 * (result v128) (f32x4.relaxed_madd (local.get 0) (local.get 1) (local.get 2)))).
 */
export function relaxedSimdSupported(): boolean {
  // not cached: Node 20 turns the feature on at run time (node-flags.ts), and validating this
  // 40-byte module costs microseconds
  return WebAssembly.validate(RELAXED_PROBE);
}

/** A module using one relaxed-SIMD instruction (f32x4.relaxed_madd): valid only where the engine has it. */
export const RELAXED_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128 v128 v128) → v128
  0x03, 0x02, 0x01, 0x00, // one function of type 0
  0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0xfd, 0x85, 0x02, 0x0b, // body
]);

/** The variant for a memory kind and SIMD flavour. */
export function variantFor(shared: boolean, relaxedSimd: boolean): KernelVariant {
  return `${relaxedSimd ? 'relaxed' : 'simd'}${shared ? '-mt' : ''}` as KernelVariant;
}

/**
 * One kernel instance with its memory and a first-fit allocator. Allocation happens when a
 * model or trainer is set up, never inside a step (STYLE.md §9), so a simple free list is enough.
 * With a shared variant the memory is a shared WebAssembly.Memory that worker threads
 * instantiate the same module over (pool.ts); all allocation stays on the creating thread.
 */
export class WasmKernels {
  readonly memory: WebAssembly.Memory;
  readonly k: KernelExports;
  readonly module: WebAssembly.Module;
  readonly variant: KernelVariant;
  /** the memory's maximum in pages (a shared memory may get less than 4 GiB: newMemory) */
  readonly maxPages: number;
  private top: number;
  private readonly free: Array<{ ptr: number; size: number }> = [];
  private readonly sizes = new Map<number, number>();
  private _live = 0;
  private _peak = 0;

  private constructor(variant: KernelVariant, module: WebAssembly.Module, memory: WebAssembly.Memory, maxPages: number, exports: KernelExports) {
    this.maxPages = maxPages;
    this.variant = variant;
    this.module = module;
    this.memory = memory;
    this.k = exports;
    this.top = alignUp(exports.heap_base(), ALIGN);
  }

  static async create(variant: KernelVariant = 'simd'): Promise<WasmKernels> {
    const module = await compileVariant(variant);
    const [memory, maxPages] = newMemory(variant.endsWith('-mt'));
    const inst = await WebAssembly.instantiate(module, { env: { memory, abort: wasmAbort } });
    return new WasmKernels(variant, module, memory, maxPages, inst.exports as unknown as KernelExports);
  }

  /** Bytes currently allocated, and the most ever allocated at once. */
  get liveBytes(): number { return this._live; }
  get peakBytes(): number { return this._peak; }

  alloc(bytes: number): number {
    const size = alignUp(Math.max(bytes, 1), ALIGN);
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i]!;
      if (f.size >= size) {
        const ptr = f.ptr;
        if (f.size === size) this.free.splice(i, 1);
        else { f.ptr += size; f.size -= size; }
        return this.track(ptr, size);
      }
    }
    const ptr = this.top;
    const end = ptr + size;
    if (end > this.maxPages * PAGE) {
      const limit = this.maxPages === MAX_PAGES ? 'the limit of one wasm32 memory is 4 GiB' : `this engine gave the shared memory ${fmtBytes(this.maxPages * PAGE)} at most`;
      throw new WebqloraError(`WebAssembly memory is full: ${fmtBytes(end)} needed, ${limit} (page base layers or use a smaller model).`);
    }
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / PAGE));
    this.top = end;
    return this.track(ptr, size);
  }

  release(ptr: number): void {
    const size = this.sizes.get(ptr);
    if (size === undefined) throw new Error(`wasm release of unknown pointer ${ptr}`);
    this.sizes.delete(ptr);
    this._live -= size;
    // Insert sorted and coalesce neighbours so long runs of alloc/free do not fragment.
    let i = 0;
    while (i < this.free.length && this.free[i]!.ptr < ptr) i++;
    this.free.splice(i, 0, { ptr, size });
    const next = this.free[i + 1];
    if (next && ptr + size === next.ptr) { this.free[i]!.size += next.size; this.free.splice(i + 1, 1); }
    const prev = this.free[i - 1];
    if (prev && prev.ptr + prev.size === ptr) { prev.size += this.free[i]!.size; this.free.splice(i, 1); i--; }
    const last = this.free[this.free.length - 1];
    if (last && last.ptr + last.size === this.top) { this.top = last.ptr; this.free.pop(); }
  }

  private track(ptr: number, size: number): number {
    this.sizes.set(ptr, size);
    this._live += size;
    if (this._live > this._peak) this._peak = this._live;
    return ptr;
  }

  f32(ptr: number, n: number): Float32Array { return new Float32Array(this.memory.buffer, ptr, n); }
  u8(ptr: number, n: number): Uint8Array { return new Uint8Array(this.memory.buffer, ptr, n); }
  i32(ptr: number, n: number): Int32Array { return new Int32Array(this.memory.buffer, ptr, n); }
}

/**
 * The kernel memory. A shared memory cannot move when it grows, so engines reserve its maximum
 * up front (address space only): 4 GiB where the engine allows it, else the largest of 2 GiB,
 * 1 GiB, 512 MiB it accepts (some 32-bit or mobile browsers refuse 4 GiB reservations).
 */
function newMemory(shared: boolean): [WebAssembly.Memory, number] {
  if (!shared) return [new WebAssembly.Memory({ initial: 16, maximum: MAX_PAGES }), MAX_PAGES];
  let err: unknown = null;
  for (let maximum = MAX_PAGES; maximum >= MAX_PAGES / 8; maximum /= 2) {
    try {
      return [new WebAssembly.Memory({ initial: 16, maximum, shared: true }), maximum];
    } catch (e) {
      err = e;
    }
  }
  throw err;
}

function wasmAbort(): never {
  throw new Error('wasm kernel aborted');
}

export function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

let shared: Promise<WasmKernels> | null = null;
/** The process-wide kernel instance used by quantization helpers outside a backend. */
export function sharedKernels(): Promise<WasmKernels> {
  shared ??= WasmKernels.create();
  return shared;
}
