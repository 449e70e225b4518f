// The body of one WASM kernel worker (a Node worker_threads Worker or a browser Web Worker), the
// chunk loop the calling thread runs too, and (Node) the watchdog thread that starts the kernel
// workers and reports their death. scripts/build.mjs compiles this file on its own into a string
// (src/generated/wasm-worker.ts); the pool starts it from that string (Node: `eval`; browsers: a
// Blob URL), so the same dist bundle works with no bundler configuration. It imports nothing and
// touches neither Node nor DOM APIs: the launcher appends one line that calls
// `webqloraWorker.main(post, onInit)` (or `webqloraWorker.watch(port, spawn)`) with the
// environment's message and worker functions.
//
// After the init message a worker never returns to its event loop: it instantiates the kernel
// module over the shared memory, says 'ready', then sleeps on the control block and takes chunks
// of each job (claimChunks) until told to exit. pool.ts describes the protocol.

/** What the pool sends once. Everything else arrives through the control block. */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** byte offset of the control block in memory */
  ctrl: number;
  /** this worker's scratch area */
  scratch: number;
  /** thread index (the caller is 0, workers 1..) */
  thread: number;
  /** kernel export names, indexed by the job's FN word */
  names: string[];
  /** Atomics.load polls before sleeping in Atomics.wait (keeps back-to-back jobs cheap) */
  spin: number;
}

/** The started workers of one pool, whatever the environment. */
export interface WorkerGroup {
  /** ends every worker (after the pool told them to leave their loops) */
  terminate(): Promise<void>;
  /** tests: terminates worker `thread` (1..) after `afterMs`, as if killed during a kernel call (Node only) */
  kill?(thread: number, afterMs: number): void;
}

/**
 * Starts one worker per init from `source` (the worker bundle; the launcher adds its start line),
 * resolves once all report 'ready' (rejects, with none left running, if one fails to start), and
 * from then on reports a worker that stops with markDead on the init's control block.
 */
export type Spawn = (source: string, inits: WorkerInit[]) => Promise<WorkerGroup>;

/**
 * Control block layout (bytes from its start). Int32 words: SEQ (job number), FN (kernel index,
 * −1 = exit), NARGS, RANGE_POS and SCRATCH_POS (argument slots the chunk bounds and the scratch
 * pointer go into), DONE (chunks finished), ERROR (0, or 1 + the thread whose chunk failed first),
 * DEAD (0; 1 once a worker thread stopped, its reason in the death message; −1 while that is
 * being written). CLAIM: one unsigned 64-bit word (job number << 32 | chunk count << 16 | next
 * chunk), taken by compare-exchange; unsigned so a job number ≥ 2³¹ keeps its tag (a signed word
 * would read back negative and never match). Then the f64 arguments, the chunk bounds [lo, hi) as
 * f64 pairs, the error message and the death message (UTF-8).
 */
export const CTRL = {
  SEQ: 0, FN: 1, NARGS: 2, RANGE_POS: 3, SCRATCH_POS: 4, DONE: 5, ERROR: 6, DEAD: 7,
  CLAIM_U64: 4, // BigUint64 index of CLAIM (byte 32)
  ARGS_F64: 8, MAX_ARGS: 32, // f64 index of argument 0 (byte 64)
  CHUNKS_F64: 40, MAX_CHUNKS: 128, // f64 index of chunk 0's lo (byte 320)
  ERRMSG_BYTE: 2368, ERRMSG_BYTES: 512,
  DEATHMSG_BYTE: 2880, DEATHMSG_BYTES: 256,
  BYTES: 3136,
  FN_EXIT: -1,
  /** added to DONE by markDead: DONE then matches no chunk count, nor the value a caller is about to sleep on */
  DONE_DEAD: 1 << 20,
} as const;

/** Views of one control block, and the thread's own kernel instance. */
export interface ChunkRunner {
  ctl: Int32Array;
  claim: BigUint64Array;
  f64: Float64Array;
  msg: Uint8Array;
  deathMsg: Uint8Array;
  fns: Array<((...a: number[]) => unknown) | null>;
  names: string[];
  scratch: number;
  thread: number;
  /** reused argument array */
  args: number[];
}

export function chunkRunner(memory: WebAssembly.Memory, ctrl: number, exports: Record<string, unknown>, names: string[], scratch: number, thread: number): ChunkRunner {
  // A shared buffer is never detached by memory.grow, and the block lies below any growth, so
  // these views stay valid for the life of the pool.
  const buf = memory.buffer;
  return {
    ctl: new Int32Array(buf, ctrl, 8),
    claim: new BigUint64Array(buf, ctrl, CTRL.CLAIM_U64 + 1),
    f64: new Float64Array(buf, ctrl, CTRL.ERRMSG_BYTE / 8),
    msg: new Uint8Array(buf, ctrl + CTRL.ERRMSG_BYTE, CTRL.ERRMSG_BYTES),
    deathMsg: new Uint8Array(buf, ctrl + CTRL.DEATHMSG_BYTE, CTRL.DEATHMSG_BYTES),
    fns: names.map((n) => (typeof exports[n] === 'function' ? (exports[n] as (...a: number[]) => unknown) : null)),
    names, scratch, thread, args: [],
  };
}

/**
 * Takes chunks of job `seq` until none is left and runs each; returns how many it ran. Safe to
 * call late: a claim succeeds only while CLAIM still names job `seq`, and the job's arguments
 * cannot change while a claimed chunk is unfinished (the caller publishes the next job only after
 * DONE reached the chunk count), so they are read after the first claim. A chunk that throws is
 * counted as done and its message kept (the first failure wins). Once a thread stopped (DEAD) the
 * job is abandoned: no further chunk is taken, so the caller learns of it after its current chunk.
 */
export function claimChunks(r: ChunkRunner, seq: number): number {
  const { ctl, claim, f64, args } = r;
  const tag = BigInt(seq >>> 0);
  let ran = 0, fn: ((...a: number[]) => unknown) | null = null, fnIndex = 0, rp = 0;
  for (;;) {
    if (Atomics.load(ctl, CTRL.DEAD) !== 0) return ran;
    const cur = Atomics.load(claim, CTRL.CLAIM_U64);
    if (cur >> 32n !== tag) return ran;
    const n = Number((cur >> 16n) & 0xffffn), c = Number(cur & 0xffffn);
    if (c >= n) return ran;
    if (Atomics.compareExchange(claim, CTRL.CLAIM_U64, cur, cur + 1n) !== cur) continue;
    if (ran === 0) {
      fnIndex = ctl[CTRL.FN]!;
      fn = r.fns[fnIndex] ?? null;
      const na = ctl[CTRL.NARGS]!;
      args.length = na;
      for (let i = 0; i < na; i++) args[i] = f64[CTRL.ARGS_F64 + i]!;
      rp = ctl[CTRL.RANGE_POS]!;
      const sp = ctl[CTRL.SCRATCH_POS]!;
      if (sp >= 0) args[sp] = r.scratch;
    }
    ran++;
    try {
      if (!fn) throw new Error(`unknown kernel #${fnIndex}`);
      args[rp] = f64[CTRL.CHUNKS_F64 + 2 * c]!;
      args[rp + 1] = f64[CTRL.CHUNKS_F64 + 2 * c + 1]!;
      fn.apply(undefined, args);
    } catch (e) {
      if (Atomics.compareExchange(ctl, CTRL.ERROR, 0, r.thread + 1) === 0) {
        const bytes = new TextEncoder().encode(`${r.names[fnIndex] ?? `#${fnIndex}`}: ${errorText(e)}`).subarray(0, CTRL.ERRMSG_BYTES - 1);
        r.msg.fill(0);
        r.msg.set(bytes);
      }
    }
    if (Atomics.add(ctl, CTRL.DONE, 1) + 1 === n) Atomics.notify(ctl, CTRL.DONE);
  }
}

/**
 * Records that a worker thread stopped, for whoever waits on the control block: the first report
 * wins. Written by the thread that saw the worker's exit (Node: the watchdog; browsers: the page's
 * error handler), never by the dead thread. DONE changes, so a caller about to sleep on it returns
 * at once, and one asleep is woken.
 */
export function markDead(memory: WebAssembly.Memory, ctrl: number, reason: string): void {
  const buf = memory.buffer;
  const ctl = new Int32Array(buf, ctrl, 8);
  if (Atomics.compareExchange(ctl, CTRL.DEAD, 0, -1) !== 0) return;
  const msg = new Uint8Array(buf, ctrl + CTRL.DEATHMSG_BYTE, CTRL.DEATHMSG_BYTES);
  msg.fill(0);
  msg.set(new TextEncoder().encode(reason).subarray(0, CTRL.DEATHMSG_BYTES - 1));
  Atomics.store(ctl, CTRL.DEAD, 1);
  Atomics.add(ctl, CTRL.DONE, CTRL.DONE_DEAD);
  Atomics.notify(ctl, CTRL.DONE);
}

/** The reason markDead recorded, or null while every worker runs. */
export function deathReason(r: ChunkRunner): string | null {
  if (Atomics.load(r.ctl, CTRL.DEAD) <= 0) return null;
  const end = r.deathMsg.indexOf(0);
  return new TextDecoder().decode(r.deathMsg.slice(0, end < 0 ? CTRL.DEATHMSG_BYTES : end));
}

type Post = (msg: unknown) => void;

export function main(post: Post, onInit: (cb: (init: WorkerInit) => void) => void): void {
  onInit((init) => {
    start(init, post).catch((e) => post({ type: 'error', message: errorText(e) }));
  });
}

async function start(init: WorkerInit, post: Post): Promise<void> {
  const instance = await WebAssembly.instantiate(init.module, {
    env: { memory: init.memory, abort: () => { throw new Error('wasm kernel aborted'); } },
  });
  const r = chunkRunner(init.memory, init.ctrl, instance.exports as Record<string, unknown>, init.names, init.scratch, init.thread);
  const ctl = r.ctl;
  // read before saying ready: the pool issues no job until every worker is ready
  let seen = Atomics.load(ctl, CTRL.SEQ);
  post({ type: 'ready' });
  for (;;) {
    let s = Atomics.load(ctl, CTRL.SEQ);
    for (let i = 0; s === seen && i < init.spin; i++) s = Atomics.load(ctl, CTRL.SEQ);
    while (s === seen) {
      Atomics.wait(ctl, CTRL.SEQ, seen);
      s = Atomics.load(ctl, CTRL.SEQ);
    }
    seen = s;
    if (Atomics.load(ctl, CTRL.FN) === CTRL.FN_EXIT) break;
    claimChunks(r, s);
  }
  post({ type: 'exit' });
}

// ---- the watchdog (Node) -------------------------------------------------------------------
// A kernel call is synchronous: while it runs, the calling thread's event loop is stopped and
// would never deliver a worker's 'exit' event, so a worker that died holding a chunk (terminated,
// out of memory) would leave the caller waiting forever. The kernel workers are therefore started
// by this thread, which does nothing else: its event loop is always free to see an exit and
// markDead the control block, which wakes the caller.

/** What pool-node.ts sends the watchdog once. */
export interface WatchInit {
  type: 'start';
  /** the kernel worker script (the worker bundle and its start line) */
  code: string;
  inits: WorkerInit[];
}
/** Messages to the watchdog: 'start' once; 'kill' (tests) terminates a worker after a delay. */
export type WatchCommand = WatchInit | { type: 'kill'; thread: number; afterMs: number };

/** The part of a Node worker_threads Worker (and of its parentPort) the watchdog uses. */
interface NodeLikeWorker {
  on(event: string, f: (x: never) => void): unknown;
  postMessage(m: unknown): void;
  terminate(): Promise<number>;
}
interface NodeLikePort {
  on(event: 'message', f: (m: WatchCommand) => void): unknown;
  postMessage(m: unknown): void;
}

/**
 * Starts one kernel worker per init (spawn), tells the pool 'ready' once all are, or 'error' if one
 * fails to start; afterwards any exit the pool did not ask for (FN = exit) is a death: markDead.
 * The pool ends the workers by terminating this thread.
 */
export function watch(port: NodeLikePort, spawn: (code: string, name: string) => NodeLikeWorker): void {
  const workers: NodeLikeWorker[] = [];
  let started = 0, failed = false;
  port.on('message', (m) => {
    if (m.type === 'kill') {
      setTimeout(() => void workers[m.thread - 1]?.terminate(), m.afterMs);
    } else if (m.type === 'start') {
      for (const init of m.inits) {
        const name = `webqlora-wasm-${init.thread}`;
        const w = spawn(m.code, name);
        workers.push(w);
        let ready = false, why = '';
        const fail = (reason: string) => {
          if (failed || Atomics.load(new Int32Array(init.memory.buffer, init.ctrl, 8), CTRL.FN) === CTRL.FN_EXIT) return;
          if (!ready) {
            failed = true;
            port.postMessage({ type: 'error', message: `wasm worker ${name}: ${reason}` });
            return;
          }
          markDead(init.memory, init.ctrl, `${name}: ${reason}`);
        };
        w.on('message', (msg: { type: string; message?: string }) => {
          if (msg.type === 'ready' && !ready) {
            ready = true;
            if (++started === m.inits.length) port.postMessage({ type: 'ready' });
          } else if (msg.type === 'error') fail(msg.message ?? 'failed');
        });
        // 'error' (an uncaught exception, ERR_WORKER_OUT_OF_MEMORY) comes before 'exit': keep its reason
        w.on('error', (e: Error) => { why ||= errorText(e); });
        w.on('exit', (code: number) => fail(why || `exited with code ${code}`));
        w.postMessage(init);
      }
    }
  });
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
