// The training-memory estimate (inspect) against what the WASM backend really allocates for the
// same run: model, adapters, optimizer and workspace. (Process RSS is compared in bench/, not
// here: timing and memory are measured, not asserted in tests.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { loadModel } from '../../src/model/load.ts';
import { expectedTensors } from '../../src/model/config.ts';
import { configFromHf } from '../../src/io/hf-config.ts';
import { Workspace } from '../../src/model/llama.ts';
import { syntheticFromConfig, syntheticSource } from '../../src/model/synthetic.ts';
import { DEFAULT_LORA, LoraAdapters } from '../../src/model/lora.ts';
import { autoPageReason, backendCapacity, estimateInferenceMemory, estimateTrainingMemory, weightParts, WASM32_CAPACITY } from '../../src/model/memory.ts';
import { Trainer, TRAIN_DEFAULTS } from '../../src/train/trainer.ts';
import { FIXTURES } from '../helpers/index.ts';

for (const [quant, checkpointing, pageWeights, optimizer] of [['nf4', false, false, 'adamw'], ['nf4', true, true, 'paged-adamw'], ['none', true, false, 'sgd']] as const) {
  test(`backend bytes predicted within 1%: ${quant}, checkpointing ${checkpointing}, paging ${pageWeights}, ${optimizer}`, async () => {
    const be = await createWasmBackend();
    const base = be.memory().liveBytes; // kernel scratch
    const src = syntheticSource('synthetic:stories260K');
    const seqLen = 96, batch = 3;
    const model = await loadModel(src, be, { quant, doubleQuant: true, blocksize: 64, maxPositions: seqLen, pageWeights });
    const lora = new LoraAdapters(be, src.config, DEFAULT_LORA, true);
    const noData = { next: () => { throw new Error('unused'); }, state: () => null, restore: () => {} };
    const trainer = new Trainer(model, lora, noData, { ...TRAIN_DEFAULTS, optimizer, batchSize: batch, seqLen, totalSteps: 1, checkpointing });
    const actual = be.memory().liveBytes - base;
    const est = estimateTrainingMemory(src.config, { quant, doubleQuant: true, blocksize: 64, lora: DEFAULT_LORA, batch, seqLen, checkpointing, pageWeights, optimizer });
    const predicted = est.backendBytes - est.parts.scratch!;
    assert.ok(Math.abs(predicted - actual) <= 0.01 * actual, `predicted ${predicted} B, allocated ${actual} B`);
    if (pageWeights) assert.is(est.hostBytes > 0, true);
    trainer.free();
    await be.destroy();
  });
}

const fixtureConfig = (fam: string) => configFromHf(JSON.parse(readFileSync(join(FIXTURES, 'archs', fam, 'config.json'), 'utf8')), `${fam}/config.json`);

test('norms count every 1-D tensor of the family (sandwich and q/k norms, biases)', () => {
  const q = { quant: 'nf4' as const, doubleQuant: true, blocksize: 64 };
  for (const fam of ['llama3', 'qwen2', 'qwen3', 'gemma2', 'gemma3', 'phi3']) {
    const c = fixtureConfig(fam);
    const oneD = expectedTensors(c).filter((t) => t.shape.length === 1).reduce((s, t) => s + 4 * t.shape[0]!, 0);
    assert.is(weightParts(c, q).norms, oneD, fam);
  }
  // Gemma 3: four [C] norms and two [D] norms per block, and the final norm
  const g = fixtureConfig('gemma3');
  assert.is(weightParts(g, q).norms, 4 * (g.numLayers * (4 * g.hiddenSize + 2 * g.headDim) + g.hiddenSize));
});

for (const fam of ['qwen2', 'gemma3', 'phi3']) {
  test(`backend bytes predicted within 1% for the ${fam} family: training, eval and generate`, async () => {
    const c = fixtureConfig(fam);
    const seqLen = 48, batch = 2;
    const lora = { ...DEFAULT_LORA, r: 4 };
    for (const run of ['train', 'eval', 'generate'] as const) {
      const be = await createWasmBackend();
      const base = be.memory().liveBytes;
      const maxPositions = run === 'generate' ? c.maxPositionEmbeddings : seqLen;
      const model = await loadModel(syntheticFromConfig(c), be, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions });
      let est;
      if (run === 'train') {
        const adapters = new LoraAdapters(be, c, lora, true);
        const noData = { next: () => { throw new Error('unused'); }, state: () => null, restore: () => {} };
        new Trainer(model, adapters, noData, { ...TRAIN_DEFAULTS, batchSize: batch, seqLen, totalSteps: 1, checkpointing: true });
        est = estimateTrainingMemory(c, { quant: 'nf4', doubleQuant: true, blocksize: 64, lora, batch, seqLen, checkpointing: true, pageWeights: false, optimizer: 'adamw' });
      } else if (run === 'eval') {
        const adapters = new LoraAdapters(be, c, lora, false);
        new Workspace(be, c, { batch, seqLen, training: false, checkpointing: false, loraRank: adapters.maxRank });
        be.alloc('f32', batch * seqLen, 'evalLosses'); // evaluate()'s accumulator
        est = estimateInferenceMemory(c, { quant: 'nf4', doubleQuant: true, blocksize: 64, lora, batch, seqLen, pageWeights: false });
      } else {
        new Workspace(be, c, { batch: 1, seqLen: 16, training: false, checkpointing: false, loraRank: 0, kvCache: 40 });
        est = estimateInferenceMemory(c, { quant: 'nf4', doubleQuant: true, blocksize: 64, lora: null, batch: 1, seqLen: 16, kvCache: 40, maxPositions, pageWeights: false });
      }
      const actual = be.memory().liveBytes - base;
      const predicted = est.backendBytes - est.parts.scratch!;
      assert.ok(Math.abs(predicted - actual) <= 0.01 * actual, `${run}: predicted ${predicted} B, allocated ${actual} B`);
      await be.destroy();
    }
  });
}

test('automatic paging: decided against the backend limit, one line naming both sizes', async () => {
  const c = fixtureConfig('llama3');
  const o = { quant: 'nf4' as const, doubleQuant: true, blocksize: 64, lora: DEFAULT_LORA, batch: 1, seqLen: 64, checkpointing: true, pageWeights: false, optimizer: 'adamw' as const };
  const unpaged = estimateTrainingMemory(c, o);
  // fits: no paging, whatever the limit's name
  assert.is(autoPageReason(unpaged, WASM32_CAPACITY), null);
  assert.is(autoPageReason(unpaged, null), null, 'no fixed limit (WebGPU, reference): never paged by itself');
  // a limit 1/64 above the need still pages: that 1/64 is kept free
  const tight = { bytes: Math.floor(unpaged.backendBytes * 1.01), what: 'a test limit' };
  const why = autoPageReason(unpaged, tight)!;
  assert.type(why, 'string');
  assert.not.match(why, /\n/);
  assert.match(why, /^paging base layers from host memory: with every layer resident the run needs \d+\.\d MiB of kernel memory, more than a test limit holds \(\d+\.\d MiB\)$/);
  assert.is(autoPageReason(unpaged, { bytes: unpaged.backendBytes * 2, what: 'a roomy limit' }), null);
  // the WASM backend's limit is its memory's maximum
  const be = await createWasmBackend({ threads: 1 });
  const cap = backendCapacity(be)!;
  assert.ok(cap.bytes >= 2 ** 29 && cap.bytes <= 2 ** 32, String(cap.bytes));
  await be.destroy();
  // a 7B model with every layer resident does not fit one wasm32 memory at seq 64; paged it does
  const seven = syntheticSource('synthetic:llama-2-7b').config;
  assert.type(autoPageReason(estimateTrainingMemory(seven, o), WASM32_CAPACITY), 'string');
  assert.is(autoPageReason(estimateTrainingMemory(seven, { ...o, pageWeights: true }), WASM32_CAPACITY), null);
});

test.run();
