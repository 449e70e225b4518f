// The per-step cost rules of STYLE.md's traps: after the first training step of a repeated
// sequence (forward, loss, backward into LoRA gradients, clipping norm, AdamW, zeroing), later
// steps create no pipeline, no bind group and no buffer, and reach the queue only a few times
// per step (the writes of the batch and the one readback of the loss), never once per kernel.
// And the caches stay bounded when buffers come and go: freed buffers take their bind groups
// (and every reference to them) along, large readback staging buffers are not kept.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
import { STAGING_KEEP_BYTES, type View } from '../../src/backend/webgpu/runtime.ts';
import { loadModel } from '../../src/model/load.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { Workspace } from '../../src/model/llama.ts';
import { forwardBackward, scoredTokens } from '../../src/train/step.ts';
import { LINEAR_NAMES } from '../../src/model/config.ts';
import { Rng } from '../helpers/index.ts';
import { TINY, randomBatch } from '../model/tiny.ts';
import { testWebGpu } from './gpu.ts';

test('a repeated training step creates no pipelines, bind groups or buffers after the first', async () => {
  const be = await testWebGpu();
  if (!be) return;
  const stats = webgpuInternals(be).stats;
  const model = await loadModel(syntheticFromConfig(TINY, 3), be, { quant: 'nf4', doubleQuant: true, blocksize: 32 });
  const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0.1, targets: [...LINEAR_NAMES], useRslora: false }, true);
  const rng = new Rng(5);
  lora.initPeft(() => rng.next());
  const B = 2, T = 6;
  const ws = new Workspace(be, TINY, { batch: B, seqLen: T, training: true, checkpointing: true, loraRank: 2, loraDropout: 0.1 });
  const m = lora.pairs.flatMap((p) => [be.alloc('f32', p.A.length, 'mA'), be.alloc('f32', p.B.length, 'mB')]);
  const v = lora.pairs.flatMap((p) => [be.alloc('f32', p.A.length, 'vA'), be.alloc('f32', p.B.length, 'vB')]);
  for (const t of [...m, ...v]) be.fill(t, 0);
  const lossAcc = be.alloc('f32', B * T, 'lossAcc'), norm = be.alloc('f32', 1, 'norm');
  const losses: number[] = [];
  const step = async (s: number) => {
    lora.zeroGrads();
    be.fill(lossAcc, 0);
    const mb = randomBatch(rng, B, T, TINY.vocabSize);
    forwardBackward(model, ws, lora, mb, 1 / scoredTokens(mb), 1000 + s, lossAcc);
    lora.pairs.forEach((p, i) => {
      be.sumSquares(norm, p.dA, p.dA.length, i > 0);
      be.sumSquares(norm, p.dB, p.dB.length, true);
    });
    lora.pairs.forEach((p, i) => {
      be.adamwStep(p.A, p.dA, m[2 * i]!, v[2 * i]!, p.A.length, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: s, gradScale: 1 });
      be.adamwStep(p.B, p.dB, m[2 * i + 1]!, v[2 * i + 1]!, p.B.length, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: s, gradScale: 1 });
    });
    const l = (await be.read(lossAcc)) as Float32Array;
    losses.push(l.reduce((a, b) => a + b, 0));
  };
  let t0 = performance.now();
  await step(1);
  if (process.env.WEBQLORA_TEST_VERBOSE) console.log(`  step 1: ${(performance.now() - t0).toFixed(0)} ms, ${stats.pipelines} pipelines`);
  t0 = performance.now();
  const after1 = { ...stats };
  for (let s = 2; s <= 4; s++) await step(s);
  if (process.env.WEBQLORA_TEST_VERBOSE) console.log(`  steps 2-4: ${((performance.now() - t0) / 3).toFixed(0)} ms each`);
  assert.is(stats.pipelines, after1.pipelines, 'pipelines created after the first step');
  assert.is(stats.bindGroups, after1.bindGroups, 'bind groups created after the first step');
  assert.is(stats.buffers, after1.buffers, 'buffers created after the first step');
  const perStep = (stats.submits - after1.submits) / 3, dispatches = (stats.dispatches - after1.dispatches) / 3;
  assert.ok(dispatches > 100, `only ${dispatches} dispatches per step?`);
  assert.ok(perStep <= 4, `${perStep} submits per step for ${dispatches} dispatches`);
  assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
  await be.destroy();
});

test('freeing buffers drops their bind groups everywhere: workspaces reallocated each round leave the caches the same size', async () => {
  const be = await testWebGpu();
  if (!be) return;
  const rt = webgpuInternals(be).runtime;
  const model = await loadModel(syntheticFromConfig(TINY, 4), be, { quant: 'nf4', doubleQuant: true, blocksize: 32 });
  const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0.1, targets: [...LINEAR_NAMES], useRslora: false }, true);
  const rng = new Rng(6);
  lora.initPeft(() => rng.next());
  const m = lora.pairs.map((p) => be.alloc('f32', p.A.length, 'mA')), v = lora.pairs.map((p) => be.alloc('f32', p.A.length, 'vA'));
  for (const t of [...m, ...v]) be.fill(t, 0);
  const lossAcc = be.alloc('f32', 2 * 6, 'lossAcc');
  const during: Array<ReturnType<typeof rt.bookkeeping>> = [], after: typeof during = [];
  for (let round = 1; round <= 4; round++) {
    // a fresh workspace each round, as a trainer does when it changes batch shape or restarts:
    // its buffers bind together with the long-lived weights, LoRA tensors and dummies
    const ws = new Workspace(be, TINY, { batch: 2, seqLen: 6, training: true, checkpointing: true, loraRank: 2, loraDropout: 0.1 });
    lora.zeroGrads();
    be.fill(lossAcc, 0);
    const mb = randomBatch(rng, 2, 6, TINY.vocabSize);
    forwardBackward(model, ws, lora, mb, 1 / scoredTokens(mb), 100 + round, lossAcc);
    // bind groups of long-lived tensors only: these stay cached
    lora.pairs.forEach((p, i) => be.adamwStep(p.A, p.dA, m[i]!, v[i]!, p.A.length, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: round, gradScale: 1 }));
    await be.read(lossAcc);
    during.push(rt.bookkeeping());
    ws.free();
    after.push(rt.bookkeeping());
  }
  const a0 = after[0]!, d0 = during[0]!;
  assert.ok(a0.bindGroups >= lora.pairs.length && d0.bindGroups > a0.bindGroups, `bind groups: ${d0.bindGroups} with the workspace, ${a0.bindGroups} after freeing it`);
  assert.ok(d0.bufferRefs > a0.bufferRefs, `buffer references: ${d0.bufferRefs} with the workspace, ${a0.bufferRefs} after freeing it`);
  for (let r = 1; r < after.length; r++) {
    assert.is(after[r]!.bindGroups, a0.bindGroups, `cached bind groups after round ${r + 1}`);
    assert.is(after[r]!.bufferRefs, a0.bufferRefs, `buffer → bind-group references after round ${r + 1}`);
    assert.is(during[r]!.bufferRefs, d0.bufferRefs, `buffer → bind-group references during round ${r + 1}`);
  }
  await be.destroy();
});

test('dispatch: one pipeline per specialization in any constant order; params over a zeroed slot; unknown names throw', async () => {
  const be = await testWebGpu();
  if (!be) return;
  const { runtime: rt, stats } = webgpuInternals(be);
  // M = N = K = 0: the kernel touches no memory (every binding is a dummy)
  const p0 = stats.pipelines;
  rt.dispatch('gemm', 'matmul', { TRANS_A: 0, TRANS_B: 1, ELEM_TYPE: 2 }, {}, {}, [1, 1]);
  rt.dispatch('gemm', 'matmul', { ELEM_TYPE: 2, TRANS_A: 0, TRANS_B: 1 }, {}, {}, [1, 1]);
  rt.dispatch('gemm', 'matmul', { TRANS_B: 1, ELEM_TYPE: 2, TRANS_A: 0 }, {}, {}, [1, 1]);
  assert.is(stats.pipelines, p0 + 1, 'the same constants in another order made another pipeline');
  assert.throws(() => rt.dispatch('gemm', 'matmul', { TRANS_C: 1 }, {}, {}, [1, 1]), /no override TRANS_C/);

  const o = rt.createBuf(16, 'o'), x = rt.createBuf(16, 'x');
  rt.writeBuffer(o, 0, new Uint8Array(Float32Array.of(1, 2, 3, 4).buffer));
  rt.writeBuffer(x, 0, new Uint8Array(Float32Array.of(10, 20, 30, 40).buffer));
  const views = { o: rt.view(o, 0, 16, 'o'), x: rt.view(x, 0, 16, 'x') };
  const add = (params: Record<string, number>, v: Record<string, View> = views) => rt.dispatch('elementwise', 'add', { IN_PLACE: 0 }, v, params, rt.grid1d(4));
  add({ n: 4, alpha: 1 }); // o = 11 22 33 44
  // alpha is written before the unknown name is met: the slot must not keep it
  assert.throws(() => add({ n: 4, alpha: 5, bogus: 1 }), /Params has no field bogus/);
  add({ n: 4 }); // alpha unnamed: 0
  assert.equal([...new Float32Array(await rt.read(o, 0, 16))], [11, 22, 33, 44], 'a failed dispatch left its params in the slot');
  add({ n: 4 }); // slot 0 again after the read's submit: alpha 1 of the first dispatch must be gone
  assert.equal([...new Float32Array(await rt.read(o, 0, 16))], [11, 22, 33, 44], 'a submitted slot was not cleared');
  add({ n: 2, alpha: -1 });
  assert.equal([...new Float32Array(await rt.read(o, 0, 16))], [1, 2, 33, 44]);
  // binding names are checked on cache hits too (this group is cached); aliasing on a miss
  assert.throws(() => add({ n: 4 }, { ...views, bogus: views.x }), /has no binding bogus/);
  assert.throws(() => add({ n: 4 }, { o: views.o, x: views.o }), /o and x are the same buffer/);
  rt.destroyBuf(o);
  rt.destroyBuf(x);
  await be.destroy();
});

test('readback: staging buffers are reused up to STAGING_KEEP_BYTES, larger ones are not kept', async () => {
  const be = await testWebGpu();
  if (!be) return;
  const rt = webgpuInternals(be).runtime;
  const small = be.alloc('f32', 1000, 'small');
  be.fill(small, 1.5);
  for (let i = 0; i < 3; i++) assert.is(((await be.read(small)) as Float32Array)[999], 1.5);
  const staging = () => { const k = rt.bookkeeping(); return { staging: k.staging, stagingBytes: k.stagingBytes }; };
  const kept = staging();
  assert.is(kept.staging, 1, 'sequential small reads share one staging buffer');
  // one element more than fits the cap: its staging buffer (a power of two above it) is destroyed
  const n = STAGING_KEEP_BYTES / 4 + 1;
  const big = be.alloc('f32', n, 'big');
  be.fill(big, 2.5);
  const got = (await be.read(big)) as Float32Array;
  assert.is(got.length, n);
  assert.ok(got[0] === 2.5 && got[n - 1] === 2.5, 'big read contents');
  assert.equal(staging(), kept, 'a staging buffer larger than the cap was kept');
  be.free(big);
  assert.is(((await be.read(small, 3, 2)) as Float32Array)[1], 1.5);
  assert.equal(staging(), kept, 'the small staging buffer is still reused');
  await be.destroy();
});

test.run();
