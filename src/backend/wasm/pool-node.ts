// The Node-only part of the WASM thread pool: worker_threads and the core count. Loaded lazily
// by pool.ts, and only in Node (the browser bundle drops the import at build time).
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { markDead, type Spawn, type WatchCommand } from './worker.ts';

export function nodeCores(): number {
  return Math.max(1, availableParallelism());
}

// Both scripts are the embedded worker source plus one start line, run with `eval` (no file to
// locate next to the bundle). import(), not require: eval'd code is a CommonJS script or, when
// the process runs with --input-type=module, an ES module; dynamic import works in both (a
// message waits in the port until the listener is attached).
const KERNEL_START = "import('node:worker_threads').then(({ parentPort }) => webqloraWorker.main((m) => parentPort.postMessage(m), (f) => parentPort.once('message', f)));";
const WATCH_START = "import('node:worker_threads').then(({ parentPort, Worker }) => webqloraWorker.watch(parentPort, (code, name) => new Worker(code, { eval: true, name })));";

/**
 * The kernel workers, started by a watchdog thread (worker.ts `watch`) that sees their exit
 * while this thread is inside a kernel call. Unref'd once ready: an idle pool never keeps the
 * process alive, even if destroy() is forgotten; terminate() ends the watchdog and with it the
 * workers it started.
 */
export const spawnNodeWorkers: Spawn = (source, inits) => {
  const w = new Worker(`${source}\n${WATCH_START}\n`, { eval: true, name: 'webqlora-wasm-watchdog' });
  const post = (m: WatchCommand) => w.postMessage(m);
  const memory = inits[0]!.memory, ctrl = inits[0]!.ctrl;
  return new Promise((resolve, reject) => {
    let ready = false, done = false;
    const fail = (why: string) => {
      if (done) return;
      if (ready) markDead(memory, ctrl, why); // seen here only between kernel calls: the next one throws
      else {
        done = true;
        void w.terminate();
        reject(new Error(why));
      }
    };
    w.on('message', (m: { type: string; message?: string }) => {
      if (m.type === 'ready' && !ready) {
        ready = true;
        w.unref();
        resolve({
          terminate: async () => {
            done = true;
            await w.terminate();
          },
          kill: (thread, afterMs) => post({ type: 'kill', thread, afterMs }),
        });
      } else if (m.type === 'error') fail(m.message ?? 'a wasm worker failed to start');
    });
    w.on('error', (e) => fail(`wasm worker watchdog: ${e.message}`));
    w.on('exit', (code) => fail(`wasm worker watchdog exited (code ${code})`));
    post({ type: 'start', code: `${source}\n${KERNEL_START}\n`, inits });
  });
};
