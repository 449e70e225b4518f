// A WASM worker thread that dies during a kernel call (terminated, out of memory) must not hang
// the caller (issue 13, item 13): the call in progress throws one sentence, so does every later
// call, destroy() still ends the pool and Node exits; a training step fails the same way and a
// checkpoint written before it stays byte for byte as it was.
//
// Each case runs in a child process under a timeout: a hang would block this process's only
// thread inside the kernel call, where no test timer could fire. The worker is killed by the
// watchdog thread that started it (ThreadPool.killWorker), at a point well inside the call.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { REPO } from '../helpers/index.ts';

const SENTENCE = /^a WASM worker thread stopped \(webqlora-wasm-1: exited with code 1\); the work in progress was abandoned and this backend can run no further kernels \(run again; --threads 1 runs without worker threads\)$/;
/** how long a child may take before the test calls it a hang */
const CHILD_TIMEOUT_MS = 120_000;

function child(body: string): Record<string, unknown> {
  const code = `
    import { createWasmBackend, wasmInternals } from ${JSON.stringify(`${REPO}/src/backend/wasm/index.ts`)};
    const out = {};
    const caught = async (f) => { try { await f(); return null; } catch (e) { return { name: e.name, message: e.message, exitCode: e.exitCode }; } };
    ${body}
    console.log(JSON.stringify(out));`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: REPO, encoding: 'utf8', timeout: CHILD_TIMEOUT_MS });
  assert.is(r.signal, null, `the child was killed after ${Date.now() - t0} ms: a hang (stderr: ${r.stderr})`);
  assert.is(r.status, 0, `child exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

function assertDeath(e: unknown, what: string): void {
  const err = e as { name: string; message: string; exitCode: number } | null;
  assert.ok(err, `${what}: did not throw`);
  assert.is(err!.name, 'WebqloraError', `${what}: ${err!.name}: ${err!.message}`);
  assert.match(err!.message, SENTENCE, what);
  assert.is(err!.exitCode, 1, `${what}: exit code`);
}

// A GEMM sized to take ~1.5 s on this machine, measured first; the kill lands a quarter in.
const BIG_MATMUL = `
  const be = await createWasmBackend({ threads: 2 });
  const I = wasmInternals(be), pool = I.pool;
  const M = 512, N = 1024;
  let K = 512, ms = 0;
  const mk = (K) => { const a = be.alloc('f32', M * K, 'a'), b = be.alloc('f32', K * N, 'b'), o = be.alloc('f32', M * N, 'o'); be.fill(a, 0.5); be.fill(b, 0.25); return { a, b, o }; };
  let t = mk(K);
  for (;;) {
    const t0 = performance.now();
    be.matmul(t.o, t.a, t.b, M, N, K, { transB: true });
    ms = performance.now() - t0;
    if (ms >= 1000 || K >= 1 << 15) break;
    be.free(t.a); be.free(t.b); be.free(t.o);
    K = Math.min(1 << 15, K * Math.max(2, Math.ceil(1500 / Math.max(ms, 1))));
    t = mk(K);
  }
  out.fullMs = ms;
  out.killAfterMs = Math.round(ms / 4);`;

test('a worker killed during a matmul: the call throws the sentence promptly; later calls too; destroy and exit work', () => {
  const r = child(`${BIG_MATMUL}
    const jobs = pool.jobs;
    pool.killWorker(1, out.killAfterMs);
    const t0 = performance.now();
    out.during = await caught(() => be.matmul(t.o, t.a, t.b, M, N, K, { transB: true }));
    out.elapsedMs = performance.now() - t0;
    out.later = [await caught(() => be.fill(t.o, 1)), await caught(() => be.read(t.o)), await caught(() => be.matmul(t.o, t.a, t.b, 4, 4, 4))];
    out.jobsAfter = pool.jobs - jobs;
    await be.destroy();
    out.destroyed = true;`);
  assertDeath(r.during, 'the matmul in progress');
  for (const [i, e] of (r.later as unknown[]).entries()) assertDeath(e, `call ${i} after the death`);
  assert.is(r.jobsAfter, 1, 'no job is issued after the death');
  assert.ok(r.destroyed);
  // the caller finishes at most the chunk it is running: well under the full call after the kill
  const full = r.fullMs as number, elapsed = r.elapsedMs as number, kill = r.killAfterMs as number;
  assert.ok(elapsed >= kill * 0.5, `threw after ${elapsed.toFixed(0)} ms, before the kill at ${kill} ms`);
  assert.ok(elapsed < kill + full, `threw after ${elapsed.toFixed(0)} ms (kill at ${kill} ms, a whole call takes ${full.toFixed(0)} ms)`);
});

test('a worker killed while it holds every chunk (the caller takes none): the join wakes and throws', () => {
  const r = child(`${BIG_MATMUL}
    // the matmul's own argument list (index.ts): columns [0, N) in args 15..16, scratch in 12
    const args = [I.ptr(t.o), I.ptr(t.a), I.ptr(t.b), M, N, K, 0, 1, 0, 1, 0, 0, I.scratch(0), 0, M, 0, N];
    const parts = Array.from({ length: 8 }, (_, c) => [c * N / 8, (c + 1) * N / 8]);
    pool.killWorker(1, out.killAfterMs);
    const t0 = performance.now();
    out.during = await caught(() => I.par('matmul', args, 1, { by: 'cols', grain: 8, chunks: parts, callerWorks: false }));
    out.elapsedMs = performance.now() - t0;
    out.later = await caught(() => I.par('matmul', args, 1, { by: 'cols', grain: 8, chunks: parts, callerWorks: true }));
    await be.destroy();`);
  assertDeath(r.during, 'the workers-only job in progress');
  assertDeath(r.later, 'the next job');
  assert.ok((r.elapsedMs as number) < (r.killAfterMs as number) + 2 * (r.fullMs as number), `threw after ${(r.elapsedMs as number).toFixed(0)} ms`);
});

test('a worker killed during a training step: the step rejects, nothing more is saved, the earlier checkpoint is intact', () => {
  const r = child(`
    const { createHash } = await import('node:crypto');
    const { mkdtempSync, readdirSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { syntheticFromConfig } = await import(${JSON.stringify(`${REPO}/src/model/synthetic.ts`)});
    const { loadModel } = await import(${JSON.stringify(`${REPO}/src/model/load.ts`)});
    const { LoraAdapters } = await import(${JSON.stringify(`${REPO}/src/model/lora.ts`)});
    const { Trainer, TRAIN_DEFAULTS } = await import(${JSON.stringify(`${REPO}/src/train/trainer.ts`)});
    const { saveCheckpoint } = await import(${JSON.stringify(`${REPO}/src/train/checkpoint.ts`)});
    const { NodeOutDir } = await import(${JSON.stringify(`${REPO}/src/io/node.ts`)});
    const cfg = { architecture: 'LlamaForCausalLM', hiddenSize: 256, intermediateSize: 704, numLayers: 4, numHeads: 8, numKVHeads: 4, headDim: 32,
      vocabSize: 4000, maxPositionEmbeddings: 256, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: true,
      attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32' };
    const be = await createWasmBackend({ threads: 2 });
    const pool = wasmInternals(be).pool;
    const B = 4, T = 256;
    let s = 1;
    const ids = Int32Array.from({ length: B * T }, () => (s = (s * 1103515245 + 12345) >>> 0) % cfg.vocabSize);
    const mb = { ids, targets: Int32Array.from(ids, (_, i) => (i % T === T - 1 ? -100 : ids[i + 1])), B, T };
    const model = await loadModel(syntheticFromConfig(cfg, 5), be, { quant: 'nf4', doubleQuant: true, blocksize: 64 });
    const lora = new LoraAdapters(be, model.config, { r: 8, alpha: 16, dropout: 0, targets: ['q_proj', 'v_proj', 'down_proj'], useRslora: false }, true);
    lora.initPeft(() => 0.5);
    const data = { next: () => mb, state: () => 0, restore: () => {} };
    const trainer = new Trainer(model, lora, data, { ...TRAIN_DEFAULTS, batchSize: B, seqLen: T, totalSteps: 10 });
    const t0 = performance.now();
    await trainer.trainStep();
    out.stepMs = performance.now() - t0;
    const runDir = mkdtempSync(join(tmpdir(), 'webqlora-death-'));
    await saveCheckpoint(new NodeOutDir(runDir), trainer, [], 'synthetic');
    const snapshot = () => Object.fromEntries(readdirSync(runDir, { recursive: true }).sort().map((f) => {
      try { return [f, createHash('sha256').update(readFileSync(join(runDir, f))).digest('hex')]; } catch { return [f, 'dir']; }
    }));
    const before = snapshot();
    pool.killWorker(1, Math.round(out.stepMs / 3));
    out.during = await caught(() => trainer.trainStep());
    out.step = trainer.step;
    // a caller that ignores the error still cannot write the half-done step
    out.save = await caught(() => saveCheckpoint(new NodeOutDir(runDir), trainer, [], 'synthetic'));
    out.unchanged = JSON.stringify(snapshot()) === JSON.stringify(before);
    out.files = Object.keys(before);
    await be.destroy();`);
  assertDeath(r.during, 'the training step in progress');
  assert.is(r.step, 1, 'the failed step is not counted');
  assertDeath(r.save, 'saving a checkpoint after the death');
  assert.ok((r.files as string[]).includes('checkpoint-1/trainer_state.json'), `checkpoint written: ${JSON.stringify(r.files)}`);
  assert.ok(r.unchanged, 'the checkpoint directory changed after the failed step');
});

test.run();
