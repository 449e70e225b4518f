// The streamed input embedding of a paged, untied model (StreamedEmbedding, model/llama.ts): its
// rows are read from the weight file per forward instead of holding the [V, C] table. On real
// safetensors files in f32, f16 and bf16 (the table's rounding is the resident load's), the
// losses, LoRA gradients and generated ids are bit-identical to the resident table's, on WASM and
// on WebGPU; the table is not in backend memory; a forward on ids that were not staged is refused;
// tied models and formats without row reads keep the table resident.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { openHfDir } from '../../src/io/hf.ts';
import { MapDirSource } from '../../src/io/source.ts';
import { loadModel, ownsSource } from '../../src/model/load.ts';
import { StreamedEmbedding, Workspace } from '../../src/model/llama.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { generate } from '../../src/generate/generate.ts';
import { forwardLoss } from '../../src/train/step.ts';
import { WebqloraError } from '../../src/errors.ts';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { synthHfFiles, tinyHfConfig } from '../helpers/synth-hf.ts';
import { testWebGpu } from '../webgpu/gpu.ts';
import { microBatchGrads, randomBatch, TINY } from './tiny.ts';

async function hfDir(dtype: string, over: Record<string, unknown> = {}) {
  const { files } = await synthHfFiles(tinyHfConfig({ torch_dtype: dtype, ...over }), 11);
  return new MapDirSource('tiny', files);
}

/** One training micro-batch and a generation, paged or resident, on a fresh load of `dir`. */
async function run(be: Backend, dir: MapDirSource, pageWeights: boolean) {
  const src = await openHfDir(dir);
  const c = src.config;
  const model = await loadModel(src, be, { quant: 'nf4', blocksize: 32, pageWeights });
  const streamed = model.embed instanceof StreamedEmbedding;
  const lora = new LoraAdapters(be, c, { r: 2, alpha: 4, dropout: 0.1, targets: 'all-linear', useRslora: false }, true);
  // ids with repeats and runs of consecutive ids (read as one row slice)
  const mb = randomBatch(new Rng(4), 2, 7, c.vocabSize);
  mb.ids.set([3, 4, 5, 3, 39, 0, 5], 0);
  const ws = new Workspace(be, c, { batch: 2, seqLen: 7, training: true, checkpointing: true, loraRank: 2, loraDropout: 0.1 });
  const { loss, grads } = await microBatchGrads(model, ws, lora, mb);
  const gen = await generate(model, [1, 5, 9, 5], { maxNewTokens: 5, adapters: lora, prefillChunk: 3 });
  const bytes = be.memory().liveBytes;
  ws.free(); lora.free();
  const owns = ownsSource(model);
  model.free();
  if (!owns) await src.close();
  return { streamed, loss, grads, gen: gen.outputIds, bytes };
}

for (const dtype of ['float32', 'float16', 'bfloat16']) {
  test(`streamed embedding (paged, ${dtype} safetensors) == resident table: losses, gradients, generation; the table is not held`, async () => {
    const be = await createWasmBackend();
    const dir = await hfDir(dtype);
    const a = await run(be, dir, false), b = await run(be, dir, true);
    assert.is(a.streamed, false);
    assert.is(b.streamed, true);
    assertBitsEqual(b.loss, a.loss, 'losses');
    a.grads.forEach((g, i) => assertBitsEqual(b.grads[i]!, g, `gradient ${i}`));
    assert.equal(b.gen, a.gen);
    const tableBytes = 40 * 16 * (dtype === 'float32' ? 4 : 2);
    // paged: one slot per linear shape instead of two layers, and no [V, C] input table
    assert.ok(a.bytes - b.bytes >= tableBytes, `resident ${a.bytes} B, paged ${b.bytes} B`);
    await be.destroy();
  });
}

test('streamed embedding on WebGPU == resident table on WebGPU (bf16)', async () => {
  const be = await testWebGpu();
  assert.ok(be, 'WebGPU adapter');
  const dir = await hfDir('bfloat16');
  const a = await run(be!, dir, false), b = await run(be!, dir, true);
  assert.is(b.streamed, true);
  assertBitsEqual(b.loss, a.loss, 'losses');
  a.grads.forEach((g, i) => assertBitsEqual(b.grads[i]!, g, `gradient ${i}`));
  assert.equal(b.gen, a.gen);
  await be!.destroy();
});

test('a forward on ids or a workspace that were not staged is refused; out-of-vocabulary ids are a user error', async () => {
  const be = await createWasmBackend();
  const model = await loadModel(syntheticFromConfig(TINY, 2), be, { quant: 'nf4', blocksize: 32, pageWeights: true });
  assert.ok(model.embed instanceof StreamedEmbedding);
  const ws = new Workspace(be, TINY, { batch: 1, seqLen: 4, training: false, checkpointing: false, loraRank: 0 });
  const mb = { ids: Int32Array.from([1, 2, 3, 4]), targets: Int32Array.from([2, 3, 4, -100]), B: 1, T: 4 };
  assert.throws(() => forwardLoss(model, ws, null, mb, undefined), /stageInput/);
  await model.stageInput(ws, Int32Array.from([1, 2, 3, 5]));
  assert.throws(() => forwardLoss(model, ws, null, mb, undefined), /stageInput/, 'staged ids of another batch');
  await model.stageInput(ws, mb.ids);
  forwardLoss(model, ws, null, mb, undefined);
  // the staging table holds one workspace's rows: a forward on another is refused
  const ws2 = new Workspace(be, TINY, { batch: 1, seqLen: 4, training: false, checkpointing: false, loraRank: 0 });
  assert.throws(() => model.forward(ws2, 1, 4), /stageInput/);
  ws2.free();
  let err: unknown = null;
  await model.stageInput(ws, Int32Array.from([1, 2, 37, 4])).catch((e) => { err = e; });
  assert.ok(err instanceof WebqloraError && /37.*vocabulary of 37/.test(err.message), String(err));
  ws.free(); model.free();
  await be.destroy();
});

test('tied embeddings stay resident when paged (the lm_head needs the whole table)', async () => {
  const be = await createWasmBackend();
  const src = await openHfDir(await hfDir('float32', { tie_word_embeddings: true }));
  const model = await loadModel(src, be, { quant: 'nf4', blocksize: 32, pageWeights: true });
  assert.ok(model.pager !== null);
  assert.is(model.embed instanceof StreamedEmbedding, false);
  assert.is(ownsSource(model), false);
  model.free();
  await src.close();
  await be.destroy();
});

test('synthetic row reads equal the whole-tensor read (any rows can be streamed)', async () => {
  const src = syntheticFromConfig(TINY, 6);
  const whole = await src.readFloat('model.embed_tokens.weight');
  const C = TINY.hiddenSize;
  for (const [r0, n] of [[0, 1], [5, 3], [36, 1], [0, 37]] as const) {
    assertBitsEqual(await src.readFloatRows!('model.embed_tokens.weight', r0, n), whole.subarray(r0 * C, (r0 + n) * C), `rows ${r0}+${n}`);
  }
});

test.run();
