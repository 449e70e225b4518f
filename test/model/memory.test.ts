// The training-memory estimate (inspect) against what the WASM backend really allocates for the
// same run: model, adapters, optimizer and workspace. (Process RSS is compared in bench/, not
// here: timing and memory are measured, not asserted in tests.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { loadModel } from '../../src/model/load.ts';
import { syntheticSource } from '../../src/model/synthetic.ts';
import { DEFAULT_LORA, LoraAdapters } from '../../src/model/lora.ts';
import { estimateTrainingMemory } from '../../src/model/memory.ts';
import { Trainer, TRAIN_DEFAULTS } from '../../src/train/trainer.ts';

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

test.run();
