// The Node-only part of the WASM thread pool: worker_threads and the core count. Loaded lazily
// by pool.ts, and only in Node (the browser bundle drops the import at build time).
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { Spawn, WorkerHandle } from './pool.ts';

export function nodeCores(): number {
  return Math.max(1, availableParallelism());
}

/**
 * A worker_threads Worker running the embedded worker source (`eval`: no file to locate next to
 * the bundle). Unref'd: an idle pool never keeps the process alive, even if destroy() is
 * forgotten; destroy() terminates it.
 */
export const spawnNodeWorker: Spawn = (source, init, name, onFail) => {
  // import(), not require: eval'd code is a CommonJS script or, when the process runs with
  // --input-type=module, an ES module; dynamic import works in both (the init message waits in
  // the port until the listener is attached)
  const code = `${source}\nimport('node:worker_threads').then(({ parentPort }) => webqloraWorker.main((m) => parentPort.postMessage(m), (f) => parentPort.once('message', f)));\n`;
  const w = new Worker(code, { eval: true, name });
  return new Promise<WorkerHandle>((resolve, reject) => {
    let ready = false, done = false;
    const fail = (e: Error) => {
      if (done) return;
      if (ready) onFail(e); else reject(e);
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
        });
      } else if (m.type === 'error') fail(new Error(`wasm worker ${name}: ${m.message}`));
    });
    w.on('error', (e) => fail(new Error(`wasm worker ${name}: ${e.message}`)));
    w.on('exit', (code) => fail(new Error(`wasm worker ${name} exited (code ${code})`)));
    w.postMessage(init);
  });
};
