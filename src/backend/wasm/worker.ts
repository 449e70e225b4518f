// The body of one WASM kernel worker (a Node worker_threads Worker or a browser Web Worker), and
// the chunk loop the calling thread runs too. scripts/build.mjs compiles this file on its own into
// a string (src/generated/wasm-worker.ts); the pool starts it from that string (Node: `eval`;
// browsers: a Blob URL), so the same dist bundle works with no bundler configuration. It imports
// nothing and touches neither Node nor DOM APIs: the launcher appends one line that calls
// `webqloraWorker.main(post, onInit)` with the environment's message functions.
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

/**
 * Control block layout (bytes from its start). Int32 words: SEQ (job number), FN (kernel index,
 * −1 = exit), NARGS, RANGE_POS and SCRATCH_POS (argument slots the chunk bounds and the scratch
 * pointer go into), DONE (chunks finished), ERROR (0, or 1 + the thread whose chunk failed first).
 * CLAIM: one unsigned 64-bit word (job number << 32 | chunk count << 16 | next chunk), taken by
 * compare-exchange; unsigned so a job number ≥ 2³¹ keeps its tag (a signed word would read
 * back negative and never match). Then the f64 arguments, the chunk bounds [lo, hi) as f64
 * pairs, and the error message (UTF-8).
 */
export const CTRL = {
  SEQ: 0, FN: 1, NARGS: 2, RANGE_POS: 3, SCRATCH_POS: 4, DONE: 5, ERROR: 6,
  CLAIM_U64: 4, // BigUint64 index of CLAIM (byte 32)
  ARGS_F64: 8, MAX_ARGS: 32, // f64 index of argument 0 (byte 64)
  CHUNKS_F64: 40, MAX_CHUNKS: 128, // f64 index of chunk 0's lo (byte 320)
  ERRMSG_BYTE: 2368, ERRMSG_BYTES: 512,
  BYTES: 2880,
  FN_EXIT: -1,
} as const;

/** Views of one control block, and the thread's own kernel instance. */
export interface ChunkRunner {
  ctl: Int32Array;
  claim: BigUint64Array;
  f64: Float64Array;
  msg: Uint8Array;
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
    fns: names.map((n) => (typeof exports[n] === 'function' ? (exports[n] as (...a: number[]) => unknown) : null)),
    names, scratch, thread, args: [],
  };
}

/**
 * Takes chunks of job `seq` until none is left and runs each; returns how many it ran. Safe to
 * call late: a claim succeeds only while CLAIM still names job `seq`, and the job's arguments
 * cannot change while a claimed chunk is unfinished (the caller publishes the next job only after
 * DONE reached the chunk count), so they are read after the first claim. A chunk that throws is
 * counted as done and its message kept (the first failure wins).
 */
export function claimChunks(r: ChunkRunner, seq: number): number {
  const { ctl, claim, f64, args } = r;
  const tag = BigInt(seq >>> 0);
  let ran = 0, fn: ((...a: number[]) => unknown) | null = null, fnIndex = 0, rp = 0;
  for (;;) {
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

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
