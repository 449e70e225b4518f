// The per-step cost rules of STYLE.md's traps: after the first training step of a repeated
// sequence (forward, loss, backward into LoRA gradients, clipping norm, AdamW, zeroing), later
// steps create no pipeline, no bind group and no buffer, and reach the queue only a few times
// per step (the writes of the batch and the one readback of the loss), never once per kernel.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
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
  const ws = new Workspace(be, TINY, { batch: B, seqLen: T, training: true, checkpointing: true, loraRank: 2 });
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

test.run();
