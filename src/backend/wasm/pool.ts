// Worker threads for the WASM kernels: one shared WebAssembly.Memory, one kernel instance per
// thread, and a small control block in that memory through which the calling thread hands out
// the chunks of a kernel call. No postMessage in the hot path.
//
// Dispatch (one job = one kernel call whose work range is cut into chunks, index.ts decides how):
//   caller: writes the kernel index, the f64 arguments and the chunks' [lo, hi) into the control
//           block, zeroes DONE, publishes CLAIM = (job << 32 | chunks << 16 | 0) and the new SEQ
//           (Atomics.store), notifies SEQ; then takes chunks itself like any worker, and waits
//           until DONE equals the chunk count.
//   worker: polls SEQ a little (`spin`), then sleeps in Atomics.wait on SEQ; on a new SEQ it
//           takes chunks by compare-exchange on CLAIM (claimChunks in worker.ts) and runs each
//           with its own scratch area, counting DONE and notifying the caller after the last.
// Chunks are taken, not assigned: a thread the OS deschedules (another tab, other processes on a
// shared machine) just takes fewer, and the others finish the job; a worker that wakes after the
// job is over finds CLAIM naming another job and goes back to sleep. Results do not depend on
// who ran which chunk: a kernel's summation order never depends on its range.
// Atomics operations are sequentially consistent, so the plain stores of the arguments
// (before CLAIM is published) and of the kernel results (before the DONE increment) are visible
// to the other side once it has seen the atomic update.
//
// Waiting: Node's main thread (and any worker thread) may block in Atomics.wait, so the caller
// polls briefly and then sleeps. A browser's main thread may not block at all (Atomics.wait
// throws there); it keeps polling DONE with Atomics.load — it has just run chunks itself, so it
// only waits for the last chunks in flight. This is detected once (`canBlock`), not assumed.
// Atomics.waitAsync would need the kernel calls to be async, which the Backend contract
// (synchronous enqueue) does not allow.
//
// Errors: every chunk's exception (a trap included) is caught where it ran, its message stored
// in the control block, and the chunk still counted as done, so the caller never hangs; it throws
// the message after the join.
//
// A worker that dies (terminated, out of memory) never counts the chunk it held. Its death is
// written into the control block (markDead in worker.ts: DEAD, a reason, and DONE bumped so the
// caller wakes) by a thread whose event loop is free to see the exit: in Node the watchdog thread
// that started the workers (worker.ts `watch`; the caller's own event loop is stopped during a
// kernel call). The call in progress, and every later call, then throws one sentence
// (deathError). In browsers the page's Worker 'error' handler marks it, but a page's main thread
// runs that handler only between kernel calls, so there the next call throws (a page has no way
// to lose one worker mid-call but its own terminate(), which only destroy() calls).
//
// Browsers hand out shared memory only to cross-origin isolated pages. Serve the page with both
//   Cross-Origin-Opener-Policy: same-origin
//   Cross-Origin-Embedder-Policy: require-corp
// (then `crossOriginIsolated` is true). Without them the backend runs on one thread and says so
// through onInfo / wasmBackendInfo().
import { CTRL, chunkRunner, claimChunks, deathReason, markDead, type ChunkRunner, type Spawn, type WorkerGroup, type WorkerInit } from './worker.ts';
import { WASM_WORKER_SOURCE } from '../../generated/wasm-worker.ts';
import { WebqloraError } from '../../errors.ts';

export { CTRL };
/** Most threads one pool can run (no real limit of the protocol; a sanity bound). */
export const MAX_THREADS = 64;

/** What this environment can do, decided once. */
export interface ThreadSupport {
  /** shared WebAssembly.Memory + workers available */
  shared: boolean;
  /** logical cores (the default thread count when shared) */
  cores: number;
  /** why threads are unavailable ('' when they are) */
  reason: string;
  spawn: Spawn | null;
}

declare const __WEBQLORA_BROWSER__: boolean;

function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

function sharedMemoryWorks(): boolean {
  if (typeof SharedArrayBuffer === 'undefined' || typeof Atomics === 'undefined') return false;
  try {
    const m = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return m.buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}

let support: Promise<ThreadSupport> | null = null;
export function threadSupport(): Promise<ThreadSupport> {
  support ??= detect();
  return support;
}

async function detect(): Promise<ThreadSupport> {
  // The browser bundle is built with __WEBQLORA_BROWSER__ = true, which drops this branch and
  // with it the Node-only file (no Node import reaches a browser, no bundler stubs needed).
  if (typeof __WEBQLORA_BROWSER__ === 'undefined' && isNode()) {
    const node = await import('./pool-node.ts');
    const cores = node.nodeCores();
    if (!sharedMemoryWorks()) return { shared: false, cores, reason: 'this Node.js has no shared WebAssembly memory', spawn: null };
    return { shared: true, cores, reason: '', spawn: node.spawnNodeWorkers };
  }
  const g = globalThis as { navigator?: { hardwareConcurrency?: number }; crossOriginIsolated?: boolean; Worker?: unknown };
  const cores = Math.max(1, g.navigator?.hardwareConcurrency ?? 1);
  if (typeof g.Worker !== 'function') return { shared: false, cores, reason: 'Web Workers are not available here', spawn: null };
  if (g.crossOriginIsolated !== true) {
    return {
      shared: false, cores, spawn: null,
      reason: 'the page is not cross-origin isolated, so browsers give it no shared memory; serve it with the headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp',
    };
  }
  if (!sharedMemoryWorks()) return { shared: false, cores, reason: 'this browser has no shared WebAssembly memory', spawn: null };
  return { shared: true, cores, reason: '', spawn: spawnWebWorkers };
}

let workerUrl: string | null = null;
/** Browsers: module workers from a Blob URL of the embedded worker source (made once). */
const spawnWebWorkers: Spawn = async (source, inits) => {
  workerUrl ??= URL.createObjectURL(new Blob([source + '\nwebqloraWorker.main((m) => self.postMessage(m), (f) => { self.onmessage = (e) => { self.onmessage = null; f(e.data); }; });\n'], { type: 'text/javascript' }));
  const workers: Worker[] = [];
  let stopping = false;
  const started = await Promise.allSettled(inits.map((init) => {
    const name = `webqlora-wasm-${init.thread}`;
    const w = new Worker(workerUrl!, { type: 'module', name });
    workers.push(w);
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const fail = (reason: string) => {
        if (stopping) return;
        if (ready) markDead(init.memory, init.ctrl, `${name}: ${reason}`);
        else reject(new Error(`wasm worker ${name}: ${reason}`));
      };
      w.onmessage = (e: MessageEvent) => {
        const m = e.data as { type: string; message?: string };
        if (m.type === 'ready' && !ready) {
          ready = true;
          resolve();
        } else if (m.type === 'error') fail(m.message ?? 'failed');
      };
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        fail(e.message || (ready ? 'stopped' : 'failed to start'));
      };
      w.postMessage(init);
    });
  }));
  const terminate = async () => {
    stopping = true;
    for (const w of workers) w.terminate();
  };
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await terminate();
    throw failed.reason;
  }
  return { terminate };
};

/** Bound t (0..parts) of [lo, hi) cut into `parts` pieces of whole `grain`s (units = ceil((hi − lo) / grain)). */
function splitBound(lo: number, hi: number, units: number, parts: number, grain: number, t: number): number {
  return Math.min(hi, lo + Math.floor((t * units) / parts) * grain);
}

/** [lo, hi) cut into `parts` contiguous pieces on multiples of `grain` (from lo), as even as the grain allows. */
export function splitRange(lo: number, hi: number, parts: number, grain: number): Array<[number, number]> {
  const units = Math.ceil((hi - lo) / grain);
  const out: Array<[number, number]> = [];
  for (let t = 0; t < parts; t++) out.push([splitBound(lo, hi, units, parts, grain, t), splitBound(lo, hi, units, parts, grain, t + 1)]);
  return out;
}

/** Whether this thread may block in Atomics.wait (not a browser's main thread). */
function blockingAllowed(ctl: Int32Array): boolean {
  try {
    Atomics.wait(ctl, CTRL.FN, 0x7fffffff, 0); // value differs: returns 'not-equal' at once
    return true;
  } catch {
    return false;
  }
}

export interface PoolOptions {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  /** the caller's instance of module (runs the caller's chunks) */
  exports: Record<string, unknown>;
  /** byte offset of a CTRL.BYTES block in memory, 64-byte aligned */
  ctrl: number;
  /** scratch area of thread i (thread 0 = the caller); its length is the thread count */
  scratch: number[];
  /** kernel export names; a job's FN is an index into this list */
  names: string[];
  spawn: Spawn;
  /** Atomics.load polls before sleeping, on both sides */
  spin?: number;
}

/**
 * Workers 1..threads−1 sharing one memory with the caller (thread 0). One job at a time; jobs
 * are issued by the thread that created the pool.
 */
export class ThreadPool {
  readonly threads: number;
  /** jobs run so far (tests check that a call really went through the pool) */
  jobs = 0;
  /** chunks handed out so far, and how many of them the calling thread ran itself */
  chunks = 0;
  callerChunks = 0;
  private group: WorkerGroup | null = null;
  private readonly r: ChunkRunner;
  private readonly canBlock: boolean;
  private readonly spin: number;
  private seq = 0;
  private closed = false;

  private constructor(o: PoolOptions) {
    this.threads = o.scratch.length;
    this.r = chunkRunner(o.memory, o.ctrl, o.exports, o.names, o.scratch[0]!, 0);
    this.canBlock = blockingAllowed(this.r.ctl);
    this.spin = o.spin ?? 20000;
  }

  /** Starts threads − 1 workers (threads = scratch.length) and resolves when all are ready. */
  static async start(o: PoolOptions): Promise<ThreadPool> {
    const n = o.scratch.length;
    if (n < 2 || n > MAX_THREADS) throw new Error(`ThreadPool: ${n} threads (2..${MAX_THREADS})`);
    if (o.ctrl % 64 !== 0) throw new Error('ThreadPool: the control block must be 64-byte aligned');
    new Uint8Array(o.memory.buffer, o.ctrl, CTRL.BYTES).fill(0);
    const pool = new ThreadPool(o);
    const inits = Array.from({ length: n - 1 }, (_, i): WorkerInit => (
      { module: o.module, memory: o.memory, ctrl: o.ctrl, scratch: o.scratch[i + 1]!, thread: i + 1, names: o.names, spin: pool.spin }));
    try {
      pool.group = await o.spawn(WASM_WORKER_SOURCE, inits);
    } catch (e) {
      pool.closed = true;
      throw e instanceof Error ? e : new Error(String(e));
    }
    return pool;
  }

  /** Throws deathError() once a worker thread stopped (every later kernel call fails the same way). */
  assertAlive(): void {
    const why = deathReason(this.r);
    if (why !== null) throw deathError(why);
  }

  /** Tests: terminates worker `thread` after `afterMs`, as a kill during a kernel call would (Node). */
  killWorker(thread: number, afterMs: number): void {
    if (!this.group?.kill) throw new Error('ThreadPool.killWorker: not available in this environment');
    this.group.kill(thread, afterMs);
  }

  /**
   * Runs export `fn` (an index into names) with `args` once per chunk, the chunk's [lo, hi) in
   * args[rangePos], args[rangePos + 1] and the running thread's scratch area in args[scratchPos]
   * (−1: none). Returns when every chunk has run; throws the first chunk's error, if any.
   * callerWorks false leaves every chunk to the workers (tests of the worker side).
   */
  run(fn: number, args: readonly number[], rangePos: number, scratchPos: number, chunks: ReadonlyArray<readonly [number, number]>, callerWorks = true): void {
    this.check(args.length, chunks.length);
    const f64 = this.r.f64;
    for (let c = 0; c < chunks.length; c++) {
      const ch = chunks[c]!;
      f64[CTRL.CHUNKS_F64 + 2 * c] = ch[0];
      f64[CTRL.CHUNKS_F64 + 2 * c + 1] = ch[1];
    }
    this.dispatch(fn, args, rangePos, scratchPos, chunks.length, callerWorks);
  }

  /**
   * run() over args' own range [args[rangePos], args[rangePos + 1]) cut into `parts` chunks as
   * splitRange cuts it, the bounds written straight into the control block (the hot path: no
   * array per call).
   */
  runSplit(fn: number, args: readonly number[], rangePos: number, scratchPos: number, parts: number, grain: number, callerWorks = true): void {
    this.check(args.length, parts);
    const f64 = this.r.f64;
    const lo = args[rangePos]!, hi = args[rangePos + 1]!, units = Math.ceil((hi - lo) / grain);
    for (let t = 0; t < parts; t++) {
      f64[CTRL.CHUNKS_F64 + 2 * t] = splitBound(lo, hi, units, parts, grain, t);
      f64[CTRL.CHUNKS_F64 + 2 * t + 1] = splitBound(lo, hi, units, parts, grain, t + 1);
    }
    this.dispatch(fn, args, rangePos, scratchPos, parts, callerWorks);
  }

  private check(nargs: number, chunks: number): void {
    if (this.closed) throw new Error('wasm thread pool used after destroy()');
    this.assertAlive();
    if (nargs > CTRL.MAX_ARGS) throw new Error(`ThreadPool.run: ${nargs} arguments (max ${CTRL.MAX_ARGS})`);
    if (!(chunks >= 1 && chunks <= CTRL.MAX_CHUNKS)) throw new Error(`ThreadPool.run: ${chunks} chunks (1..${CTRL.MAX_CHUNKS})`);
  }

  /** Publishes the job whose chunk bounds are already in the control block, takes part, joins. */
  private dispatch(fn: number, args: readonly number[], rangePos: number, scratchPos: number, n: number, callerWorks: boolean): void {
    const { ctl, claim, f64 } = this.r;
    for (let i = 0; i < args.length; i++) f64[CTRL.ARGS_F64 + i] = args[i]!;
    ctl[CTRL.FN] = fn;
    ctl[CTRL.NARGS] = args.length;
    ctl[CTRL.RANGE_POS] = rangePos;
    ctl[CTRL.SCRATCH_POS] = scratchPos;
    Atomics.store(ctl, CTRL.DONE, 0);
    this.jobs++;
    this.seq = (this.seq + 1) >>> 0;
    Atomics.store(claim, CTRL.CLAIM_U64, (BigInt(this.seq) << 32n) | (BigInt(n) << 16n));
    Atomics.store(ctl, CTRL.SEQ, this.seq | 0);
    Atomics.notify(ctl, CTRL.SEQ);
    this.chunks += n;
    if (callerWorks) this.callerChunks += claimChunks(this.r, this.seq);
    this.join(n);
    const bad = Atomics.load(ctl, CTRL.ERROR);
    if (bad !== 0) {
      const msg = this.r.msg, end = msg.indexOf(0);
      const text = new TextDecoder().decode(msg.slice(0, end < 0 ? CTRL.ERRMSG_BYTES : end));
      Atomics.store(ctl, CTRL.ERROR, 0);
      throw new Error(bad === 1 ? `wasm kernel (calling thread) ${text}` : `wasm worker thread ${bad - 1}: ${text}`);
    }
  }

  /**
   * Waits until all n chunks are done: polls, then sleeps where this thread may block; a browser
   * main thread keeps polling (it may not block). A worker that stopped holding a chunk never
   * counts it: markDead bumps DONE past n and wakes this thread, which throws.
   */
  private join(n: number): void {
    const ctl = this.r.ctl;
    let d = Atomics.load(ctl, CTRL.DONE);
    for (let i = 0; d !== n && i < this.spin; i++) d = Atomics.load(ctl, CTRL.DONE);
    while (d !== n) {
      this.assertAlive();
      if (this.canBlock) Atomics.wait(ctl, CTRL.DONE, d);
      d = Atomics.load(ctl, CTRL.DONE);
    }
  }

  /** Tells the workers to leave their loops, then terminates them. Idempotent. */
  async destroy(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const ctl = this.r.ctl;
    Atomics.store(ctl, CTRL.FN, CTRL.FN_EXIT);
    this.seq = (this.seq + 1) >>> 0;
    Atomics.store(ctl, CTRL.SEQ, this.seq | 0);
    Atomics.notify(ctl, CTRL.SEQ);
    await this.group?.terminate();
    this.group = null;
  }
}

/** The one sentence a kernel call throws once a worker thread stopped (STYLE.md §7). */
function deathError(reason: string): WebqloraError {
  return new WebqloraError(`a WASM worker thread stopped (${reason}); the work in progress was abandoned and this backend can run no further kernels (run again; --threads 1 runs without worker threads)`, 1);
}
