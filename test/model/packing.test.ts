// Sample packing at the model level: a step over packed rows (data/pack.ts through the Batcher:
// several examples per row, positions restarting, attention blocked at example boundaries, a
// padding tail) gives the loss and the LoRA gradients of the same examples run unpacked (one
// right-padded batch), to 1e-5 — on the reference, WASM and WebGPU backends, with and without
// gradient checkpointing. The loss is the mean over the scored tokens of the accumulated batch
// in both. Dropout is off: its masks follow buffer positions, which packing moves.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../../src/backend/backend.ts';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { Batcher, type Example } from '../../src/data/index.ts';
import { loadModel } from '../../src/model/load.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { Workspace, type LlamaModel } from '../../src/model/llama.ts';
import { forwardBackward, forwardLoss, scoredTokens, type MicroBatch } from '../../src/train/step.ts';
import { Rng } from '../helpers/index.ts';
import { testWebGpu } from '../webgpu/gpu.ts';
import { TINY } from './tiny.ts';

const SEQ = 12;
/** example lengths: first-fit decreasing packs them as [7, 5], [6, 4, 2], [3, 1] + padding; batch 2 → two micro-batches */
const LENGTHS = [5, 3, 1, 7, 2, 4, 6];

/** Random examples; the first tokens of each are a prompt (labels −100). */
function examples(rng: Rng): Example[] {
  return LENGTHS.map((L) => {
    const inputIds = Array.from({ length: L }, () => 3 + rng.int(TINY.vocabSize - 3));
    const prompt = rng.int(Math.max(1, L - 1));
    return { inputIds, labels: inputIds.map((t, i) => (i < prompt ? -100 : t)) };
  });
}

interface StepResult { loss: number; grads: Float32Array[]; labels: string[] }

/** One accumulated step over `batches` (forwardBackward each, scaled by 1 / all scored tokens). */
async function step(be: Backend, model: LlamaModel, lora: LoraAdapters, batches: MicroBatch[], checkpointing: boolean, packing: boolean): Promise<StepResult> {
  const B = Math.max(...batches.map((b) => b.B)), T = Math.max(...batches.map((b) => b.T));
  const ws = new Workspace(be, TINY, { batch: B, seqLen: T, training: true, checkpointing, loraRank: lora.maxRank, packing });
  const lossAcc = be.alloc('f32', B * T, 'lossAcc');
  be.fill(lossAcc, 0);
  lora.zeroGrads();
  const scored = batches.reduce((s, b) => s + scoredTokens(b), 0);
  for (const mb of batches) forwardBackward(model, ws, lora, mb, 1 / scored, undefined, lossAcc);
  const losses = (await be.read(lossAcc)) as Float32Array;
  const grads: Float32Array[] = [], labels: string[] = [];
  for (const p of lora.pairs) {
    grads.push((await be.read(p.dA)) as Float32Array, (await be.read(p.dB)) as Float32Array);
    labels.push(p.dA.label, p.dB.label);
  }
  be.free(lossAcc);
  ws.free();
  return { loss: losses.reduce((a, b) => a + b, 0) / scored, grads, labels };
}

const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, x) => s + x * x, 0));

async function packedEqualsUnpacked(name: string, be: Backend): Promise<void> {
  const model = await loadModel(syntheticFromConfig(TINY, 5), be, { quant: 'nf4', doubleQuant: true, blocksize: 32, maxPositions: SEQ });
  const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0, targets: 'all-linear', useRslora: false }, true);
  const rng = new Rng(21);
  for (const p of lora.pairs) { // random A and B (PEFT's B = 0 would make every dA zero)
    be.write(p.A, rng.f32(p.A.length, 0.3));
    be.write(p.B, rng.f32(p.B.length, 0.3));
  }
  const ex = examples(rng);
  const unpacked = [new Batcher(ex, { batchSize: ex.length, order: 'sequential' }).next()];
  const pb = new Batcher(ex, { batchSize: 2, order: 'sequential', packing: SEQ, padId: 9 });
  assert.equal(pb.packedRows, [[3, 0], [6, 5, 4], [1, 2]], 'first-fit decreasing rows');
  const packed = [pb.next(), pb.next()];
  assert.ok(packed.every((b) => b.docStart) && packed[1]!.B === 1, 'two packed micro-batches, the last with one row');
  try {
    for (const checkpointing of [false, true]) {
      const want = await step(be, model, lora, unpacked, checkpointing, false);
      const got = await step(be, model, lora, packed, checkpointing, true);
      const what = `${name} checkpointing ${checkpointing}`;
      assert.ok(Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss), `${what}: packed loss ${got.loss}, unpacked ${want.loss}`);
      want.grads.forEach((g, i) => {
        const d = norm(g.map((x, j) => x - got.grads[i]![j]!)), n = norm(g);
        assert.ok(n > 0 && d <= 1e-5 * n, `${what}: ${want.labels[i]} differs by ${d} (norm ${n})`);
      });
    }
    // the equality is no accident: the same rows without docStart (examples seeing each other,
    // positions running on) give another loss, by more than ten times the tolerance above (the
    // synthetic weights are small, so attention moves the loss little)
    const naive = await step(be, model, lora, packed.map(({ docStart: _, ...b }) => b), false, false);
    const ref = await step(be, model, lora, unpacked, false, false);
    assert.ok(Math.abs(naive.loss - ref.loss) > 1e-4 * Math.abs(ref.loss), `${name}: packing without docStart should change the loss (${naive.loss} vs ${ref.loss})`);
  } finally {
    lora.free();
    model.free();
  }
}

test('packed == unpacked (loss and LoRA gradients, 1e-5): reference', async () => {
  await packedEqualsUnpacked('reference', createReferenceBackend());
});

test('packed == unpacked (loss and LoRA gradients, 1e-5): wasm', async () => {
  const be = await createWasmBackend();
  try { await packedEqualsUnpacked('wasm', be); } finally { await be.destroy(); }
});

test('packed == unpacked (loss and LoRA gradients, 1e-5): webgpu', async () => {
  const be = await testWebGpu();
  if (!be) return; // no WebGPU here (CI=true makes that a failure)
  try { await packedEqualsUnpacked('webgpu', be); } finally { await be.destroy(); }
});

test('a packed micro-batch with a bad docStart is refused before it reaches any backend (WebGPU cannot check the values)', async () => {
  const be = await testWebGpu();
  if (process.env.CI === 'true') assert.ok(be, 'WebGPU adapter');
  if (!be) return;
  try {
    const model = await loadModel(syntheticFromConfig(TINY, 5), be, { quant: 'nf4', doubleQuant: true, blocksize: 32, maxPositions: SEQ });
    const ws = new Workspace(be, TINY, { batch: 1, seqLen: 6, training: false, checkpointing: false, loraRank: 0, packing: true });
    const mb = { ids: Int32Array.of(3, 4, 5, 6, 7, 8), targets: new Int32Array(6).fill(-100), B: 1, T: 6, docStart: Int32Array.of(0, 0, 0, 3, 1, 1) };
    assert.throws(() => forwardLoss(model, ws, null, mb, undefined), /^packed micro-batch: docStart\[4\] = 1 at position 4 of its row: an example starts at 0 or where the previous one ends \(expected 4 or 3\)$/);
    ws.free(); model.free();
  } finally {
    await be.destroy();
  }
});

test.run();
