// NEFTune (--neftune-alpha; Jain et al. 2023, TRL's neftune_noise_alpha): during training only,
// uniform noise in [−m, m), m = alpha / √(T·C), is added to the embedding module's output, where
// TRL's hook adds it (before Gemma 2's √C normalizer, after Gemma 3's, whose embedding module
// scales). Checked: the layer-0 input of a noisy forward differs from the clean one by at most m
// (·√C for Gemma 2) and by about m/√3 in
// RMS; evaluation (no seed) is untouched; training with it runs and its loss falls.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { Workspace } from '../../src/model/llama.ts';
import { Trainer, TRAIN_DEFAULTS } from '../../src/train/trainer.ts';
import { ARCHS, readReference } from './archs.ts';

let wasmP: Promise<Backend> | null = null;
const wasm = () => (wasmP ??= createWasmBackend());
test.after(async () => { await (await wasmP)?.destroy(); });

for (const fam of ['llama3', 'gemma2', 'gemma3']) {
  test(`${fam}: the noise is uniform of magnitude alpha/√(T·C) on the embeddings, training only`, async () => {
    const be = await wasm(), dir = join(ARCHS, fam), ref = await readReference(dir);
    const src = await openModelPath(dir);
    const model = await loadModel(src, be, { quant: 'none', maxPositions: 24 });
    await src.close();
    const { B, T } = ref.batch, C = model.config.hiddenSize, alpha = 5;
    const ws = new Workspace(be, model.config, { batch: B, seqLen: T, training: true, checkpointing: false, loraRank: 0 });
    be.write(ws.ids, ref.batch.ids);
    const x0 = async (opts: { seed?: number; neftuneAlpha?: number }) => {
      model.forward(ws, B, T, opts);
      return ((await be.read(ws.layerIn(0))) as Float32Array).slice();
    };
    const clean = await x0({}), evalNoise = await x0({ neftuneAlpha: alpha }), noisy = await x0({ seed: 3, neftuneAlpha: alpha });
    assert.equal(evalNoise, clean, 'no seed (evaluation): no noise');
    const m = (alpha / Math.sqrt(T * C)) * (fam === 'gemma2' ? Math.sqrt(C) : 1);
    let worst = 0, sq = 0;
    for (let i = 0; i < clean.length; i++) { const d = noisy[i]! - clean[i]!; worst = Math.max(worst, Math.abs(d)); sq += d * d; }
    const rms = Math.sqrt(sq / clean.length);
    assert.ok(worst <= m * (1 + 1e-5) + 1e-6, `${fam}: |noise| up to ${worst}, bound ${m}`);
    assert.ok(Math.abs(rms / (m / Math.sqrt(3)) - 1) < 0.05, `${fam}: RMS noise ${rms}, uniform's ${m / Math.sqrt(3)}`);
    ws.free();
    model.free();
  });
}

test('training with NEFTune: the loss falls, and differs from training without it', async () => {
  const be = await wasm(), dir = join(ARCHS, 'qwen2'), ref = await readReference(dir);
  const src = await openModelPath(dir);
  const model = await loadModel(src, be, { quant: 'nf4', maxPositions: 24 });
  await src.close();
  const run = async (neftuneAlpha: number) => {
    const lora = new LoraAdapters(be, model.config, { r: 4, alpha: 8, dropout: 0, targets: 'all-linear', useRslora: false }, true);
    let s = 1;
    lora.initPeft(() => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32));
    const trainer = new Trainer(model, lora, { next: () => ref.batch, state: () => null, restore: () => {} }, { ...TRAIN_DEFAULTS, batchSize: 2, seqLen: 24, totalSteps: 8, lr: 5e-3, warmupRatio: 0, neftuneAlpha });
    const losses: number[] = [];
    for (let i = 0; i < 8; i++) losses.push((await trainer.trainStep()).loss);
    trainer.free();
    lora.free();
    return losses;
  };
  const plain = await run(0), noisy = await run(5);
  assert.ok(noisy[7]! < 0.9 * noisy[0]!, `loss with NEFTune: ${noisy.join(' → ')}`);
  assert.ok(noisy.some((l, i) => l !== plain[i]), 'the noise changes training');
  model.free();
});

test.run();
