// Layer paging: a model whose base layers stay in host memory and are refilled into one set of
// slots (and whose input embedding rows are streamed from the source, TINY being untied) gives
// bit-identical losses and LoRA gradients to the resident model (WASM backend), for 4-bit and f32
// bases, with and without checkpointing; generation is identical too.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { loadModel } from '../../src/model/load.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { Workspace } from '../../src/model/llama.ts';
import { generate } from '../../src/generate/generate.ts';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { TINY, microBatchGrads, randomBatch } from './tiny.ts';

for (const quant of ['nf4', 'none'] as const) {
  for (const checkpointing of [false, true]) {
    test(`paged ${quant} base == resident base (checkpointing ${checkpointing})`, async () => {
      const be = await createWasmBackend();
      const src = syntheticFromConfig(TINY, 3);
      const results = [];
      for (const pageWeights of [false, true]) {
        const model = await loadModel(src, be, { quant, blocksize: 32, pageWeights });
        assert.is(model.pager !== null, pageWeights);
        const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0.1, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora: false }, true);
        const mb = randomBatch(new Rng(4), 2, 6, TINY.vocabSize);
        const ws = new Workspace(be, TINY, { batch: 2, seqLen: 6, training: true, checkpointing, loraRank: 2, loraDropout: 0.1 });
        const { loss, grads } = await microBatchGrads(model, ws, lora, mb);
        const gen = await generate(model, [1, 5, 9], { maxNewTokens: 6, adapters: lora });
        results.push({ loss, grads, gen: gen.outputIds });
        ws.free(); lora.free(); model.free();
      }
      const [a, b] = results as [typeof results[0], typeof results[0]];
      assertBitsEqual(b.loss, a.loss, 'losses');
      a.grads.forEach((g, i) => assertBitsEqual(b.grads[i]!, g, `gradient ${i}`));
      assert.equal(b.gen, a.gen);
      assert.is(be.memory().liveBytes > 0, true);
    });
  }
}

test('paged QDoRA == resident QDoRA: PEFT init at the first forward, norms refreshed per linear, checkpointed backward', async () => {
  const be = await createWasmBackend();
  const src = syntheticFromConfig(TINY, 5);
  const results = [];
  for (const pageWeights of [false, true]) {
    const model = await loadModel(src, be, { quant: 'nf4', blocksize: 32, pageWeights });
    const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0.1, targets: 'all-linear', useRslora: false, useDora: true }, true);
    const mb = randomBatch(new Rng(4), 2, 6, TINY.vocabSize);
    const ws = new Workspace(be, TINY, { batch: 2, seqLen: 6, training: true, checkpointing: true, loraRank: 2, loraDropout: 0.1, dora: true });
    results.push(await microBatchGrads(model, ws, lora, mb));
    ws.free(); lora.free(); model.free();
  }
  const [a, b] = results as [typeof results[0], typeof results[0]];
  assertBitsEqual(b.loss, a.loss, 'losses');
  a.grads.forEach((g, i) => assertBitsEqual(b.grads[i]!, g, `gradient ${i}`));
  await be.destroy();
});

test('paging keeps only one layer of base weights in backend memory', async () => {
  const be = await createWasmBackend();
  const cfg = { ...TINY, numLayers: 6 };
  const resident = await loadModel(syntheticFromConfig(cfg, 1), be, { quant: 'none' });
  const full = be.memory().liveBytes;
  resident.free();
  const base = be.memory().liveBytes;
  const paged = await loadModel(syntheticFromConfig(cfg, 1), be, { quant: 'none', pageWeights: true });
  const pagedBytes = be.memory().liveBytes - base;
  const linear = (16 * 16 * 2 + 8 * 16 * 2 + 24 * 16 * 3) * 4; // one layer's seven f32 weights
  assert.ok(full - base - pagedBytes >= 5 * linear - 1, `paged model holds ${pagedBytes} B vs ${full - base} B resident`);
  assert.ok(paged.pager!.hostBytes >= 6 * linear);
  paged.free();
});

test.run();
