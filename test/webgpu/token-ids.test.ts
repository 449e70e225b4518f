// Input token ids outside the vocabulary are refused on the host, before upload, with one
// sentence naming the id, its row (sequence, position) and the vocabulary size (issue 13, item 14).
// WebGPU's embedding cannot check ids (they are on the GPU): an id ≥ V gave a NaN loss; WASM's
// wrapper caught it only as an internal error. The check sits in forwardLoss (src/train/step.ts),
// which training (Trainer → forwardBackward) and eval (evaluate) both go through; generate()
// checks its prompt.
// Runs on WASM always and on WebGPU (Dawn) when it is available (test/webgpu/gpu.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import type { LlamaModel } from '../../src/model/llama.ts';
import { evaluate } from '../../src/eval/evaluate.ts';
import { generate } from '../../src/generate/generate.ts';
import { Trainer, TRAIN_DEFAULTS } from '../../src/train/trainer.ts';
import type { MicroBatch } from '../../src/train/step.ts';
import { Rng, STORIES_GGUF } from '../helpers/index.ts';
import { testWebGpu } from './gpu.ts';

const B = 2, T = 16, V = 512; // stories260K: vocabulary of 512

/** A valid batch: random ids, each row scored on its next token, the last position not scored. */
function goodBatch(seed: number): MicroBatch {
  const rng = new Rng(seed);
  const ids = Int32Array.from({ length: B * T }, () => 3 + rng.int(V - 3));
  const targets = Int32Array.from(ids, (_, r) => (r % T === T - 1 ? -100 : ids[r + 1]!));
  return { ids, targets, B, T };
}

/** goodBatch with ids[row] = id, at a row whose target is −100, so only the input check can see it. */
function badBatch(row: number, id: number): MicroBatch {
  const mb = goodBatch(1);
  mb.ids[row] = id;
  mb.targets[row] = -100;
  if (row > 0) mb.targets[row - 1] = -100;
  return mb;
}

const sentence = (id: number, row: number) => new RegExp(`^input token id ${id} \\(row ${row} of the batch: sequence ${Math.floor(row / T)}, position ${row % T}\\) is outside the model's vocabulary of ${V} tokens \\(does the tokenizer belong to this model\\?\\)\\.$`);

async function rejects(p: Promise<unknown>, re: RegExp, what: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.is((e as Error).name, 'WebqloraError', `${what}: ${(e as Error).message}`);
    assert.match((e as Error).message, re, what);
    return;
  }
  assert.unreachable(`${what}: no error`);
}

async function load(be: Backend): Promise<LlamaModel> {
  const src = await openModelPath(STORIES_GGUF);
  try {
    return await loadModel(src, be, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: T });
  } finally {
    await src.close();
  }
}

const backends: Array<[string, () => Promise<Backend | null>]> = [
  ['wasm', () => createWasmBackend({ threads: 2 })],
  ['webgpu', () => testWebGpu()],
];

for (const [name, make] of backends) {
  test(`${name}: eval and a training step refuse an input id ≥ V or < 0 with one sentence; a good batch afterwards is unaffected`, async () => {
    const be = await make();
    if (!be) return; // no WebGPU here (with CI=true testWebGpu throws instead)
    try {
      const model = await load(be);
      const opts = { maxBatch: B, maxSeqLen: T };
      const before = await evaluate(model, [goodBatch(2)], opts);
      assert.ok(Number.isFinite(before.loss), `${name}: loss ${before.loss}`);
      assert.is(model.config.vocabSize, V);

      await rejects(evaluate(model, [badBatch(T + 1, V)], opts), sentence(V, T + 1), `${name} eval, id = V`);
      await rejects(evaluate(model, [goodBatch(3), badBatch(0, 70000)], opts), sentence(70000, 0), `${name} eval, second batch`);
      await rejects(evaluate(model, [badBatch(T - 1, -1)], opts), sentence(-1, T - 1), `${name} eval, id −1 at the last position`);

      const lora = new LoraAdapters(be, model.config, { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj'], useRslora: false }, true);
      lora.initPeft(() => 0.5);
      const mbs = [badBatch(5, V + 7)];
      const data = { next: () => mbs[0]!, state: () => 0, restore: () => {} };
      const trainer = new Trainer(model, lora, data, { ...TRAIN_DEFAULTS, batchSize: B, seqLen: T, totalSteps: 2 });
      await rejects(trainer.trainStep(), sentence(V + 7, 5), `${name} training step`);
      assert.is(trainer.step, 0, 'the refused step is not counted');
      trainer.free();
      lora.free();

      // nothing was uploaded: the same good batch gives the same loss, bit for bit
      const after = await evaluate(model, [goodBatch(2)], opts);
      assert.ok(Object.is(after.loss, before.loss), `${name}: loss ${before.loss} before, ${after.loss} after the refused batches`);

      await rejects(generate(model, [1, V]), /^prompt token id 512 is outside the vocabulary \[0, 512\)\.$/, `${name} generate`);
      model.free();
    } finally {
      await be.destroy();
    }
  });
}

test.run();
