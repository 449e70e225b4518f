// DoRA beyond the PEFT fixtures' logits and gradients (those are in archs.test.ts, test/webgpu/archs.test.ts and
// test/cli/sgd-step.test.ts; finite differences in gradcheck.test.ts):
//   - a fresh adapter with PEFT's initialisation (m = ‖W‖_row of the dequantized NF4 base) leaves
//     the model's logits unchanged,
//   - WASM equals the reference on a QDoRA forward and backward with dropout, checkpointing on,
//   - merging folds the magnitude in: the merged float model computes base + adapter (QDoRA),
//     and merging PEFT's DoRA fixtures gives transformers + PEFT's logits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { Workspace, type LlamaModel } from '../../src/model/llama.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters, type LoraConfig } from '../../src/model/lora.ts';
import { mergeAdapter } from '../../src/model/merge.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { forwardBackward, scoredTokens } from '../../src/train/step.ts';
import { batchLogits } from '../helpers/logits.ts';
import { assertClose, loadAdapterAt, Rng } from '../helpers/index.ts';
import { assertLogitsLikeTransformers, DORA as DORA_DIR, DORA_FAMILIES, readReference } from './archs.ts';
import { randomBatch, TINY } from './tiny.ts';

const DORA: LoraConfig = { r: 2, alpha: 4, dropout: 0.1, targets: 'all-linear', useRslora: false, useDora: true };
const QUANT = { quant: 'nf4', doubleQuant: true, blocksize: 32 } as const;

/** Random A, B and magnitudes around 1 (B = 0 would hide most of the adapter). */
async function randomDora(be: Backend, rng: Rng): Promise<LoraAdapters> {
  const lora = new LoraAdapters(be, TINY, DORA, true);
  for (const p of lora.pairs) {
    be.write(p.A, rng.f32(p.A.length, 0.4));
    be.write(p.B, rng.f32(p.B.length, 0.4));
    be.write(p.dora!.m, rng.f32(p.N, 0.5).map((x) => 2 + x));
    p.dora!.mReady = true;
  }
  return lora;
}

test('a fresh DoRA adapter (PEFT init at the first forward: m = row norms of the dequantized base) leaves the logits unchanged', async () => {
  const be = await createWasmBackend({ threads: 1 });
  try {
    const model = await loadModel(syntheticFromConfig(TINY, 7), be, QUANT);
    const lora = new LoraAdapters(be, TINY, DORA, true);
    const rng = new Rng(3);
    lora.initPeft(() => rng.next()); // as a library user (the browser page) makes a fresh adapter
    const mb = randomBatch(rng, 2, 6, TINY.vocabSize);
    const base = await batchLogits(model, mb), adapted = await batchLogits(model, mb, lora);
    assertClose(adapted, base, { atol: 1e-5, rtol: 1e-5, what: 'logits with a fresh DoRA adapter' });
    // the magnitudes are real row norms, not a placeholder: changing one changes the output
    const p = lora.pairs[lora.pairs.length - 1]!, m = (await be.read(p.dora!.m)) as Float32Array;
    assert.ok(m.every((x) => x > 0.01), 'magnitudes are the (positive) row norms');
    be.write(p.dora!.m, m.map((x) => 2 * x));
    const moved = await batchLogits(model, mb, lora);
    assert.ok(moved.some((x, i) => Math.abs(x - base[i]!) > 1e-3), 'doubling a magnitude changes the logits');
    lora.free();
    model.free();
  } finally {
    await be.destroy();
  }
});

/** Loss, and every gradient (A, B, m of each pair) of one micro-batch. */
async function grads(be: Backend, checkpointing: boolean): Promise<{ loss: number; g: Float32Array[] }> {
  const model = await loadModel(syntheticFromConfig(TINY, 7), be, QUANT);
  const rng = new Rng(5);
  const lora = await randomDora(be, rng);
  lora.zeroGrads();
  const mb = randomBatch(rng, 2, 6, TINY.vocabSize);
  const ws = new Workspace(be, TINY, { batch: 2, seqLen: 6, training: true, checkpointing, loraRank: 2, loraDropout: DORA.dropout, dora: true });
  const acc = be.alloc('f32', 12, 'loss');
  be.fill(acc, 0);
  forwardBackward(model, ws, lora, mb, 1 / scoredTokens(mb), 99, acc);
  const loss = ((await be.read(acc)) as Float32Array).reduce((a, b) => a + b, 0) / scoredTokens(mb);
  const g: Float32Array[] = [];
  for (const p of lora.params) g.push((await be.read(p.grad)) as Float32Array);
  be.free(acc);
  ws.free();
  lora.free();
  model.free();
  return { loss, g };
}

test('QDoRA forward and backward with dropout: WASM (1 and 2 threads) equals the reference', async () => {
  const ref = createReferenceBackend();
  for (const checkpointing of [false, true]) {
    const want = await grads(ref, checkpointing);
    for (const threads of [1, 2]) {
      const be = await createWasmBackend({ threads });
      try {
        const got = await grads(be, checkpointing);
        assert.ok(Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss), `loss ${got.loss} vs ${want.loss}`);
        assert.is(got.g.length, want.g.length);
        for (let i = 0; i < want.g.length; i++) {
          let d = 0, n = 0;
          for (let j = 0; j < want.g[i]!.length; j++) { d += (got.g[i]![j]! - want.g[i]![j]!) ** 2; n += want.g[i]![j]! ** 2; }
          assert.ok(Math.sqrt(d / Math.max(n, 1e-30)) <= 1e-4, `gradient ${i} (threads ${threads}, checkpointing ${checkpointing}) off by ${Math.sqrt(d / n).toExponential(2)}`);
        }
      } finally {
        await be.destroy();
      }
    }
  }
});

test('merge folds the magnitude in: the merged f32 model computes base + DoRA adapter', async () => {
  const be = await createWasmBackend({ threads: 1 });
  const out = mkdtempSync(join(tmpdir(), 'webqlora-dora-merge-'));
  let merged: LlamaModel | null = null;
  try {
    const src = syntheticFromConfig(TINY, 7);
    const model = await loadModel(src, be, QUANT);
    const rng = new Rng(8);
    const lora = await randomDora(be, rng);
    const mb = randomBatch(rng, 2, 6, TINY.vocabSize);
    const want = await batchLogits(model, mb, lora);
    await mergeAdapter(syntheticFromConfig(TINY, 7), lora, be, new NodeOutDir(out), { dtype: 'F32', ...QUANT });
    const dir = await openModelPath(out);
    merged = await loadModel(dir, be, { quant: 'none' });
    await dir.close();
    const got = await batchLogits(merged, mb);
    assertClose(got, want, { atol: 2e-4, rtol: 1e-4, what: 'merged model logits vs base + DoRA adapter' });
    const plain = await batchLogits(model, mb);
    assert.ok(plain.some((x, i) => Math.abs(x - want[i]!) > 1e-2), 'the adapter changes the logits (the test can fail)');
    lora.free();
    model.free();
  } finally {
    merged?.free();
    rmSync(out, { recursive: true, force: true });
    await be.destroy();
  }
});

test("merging PEFT's DoRA adapters: the merged f32 model's logits are transformers + PEFT's", async () => {
  const be = await createWasmBackend({ threads: 1 });
  try {
    for (const fam of DORA_FAMILIES) {
      const dir = join(DORA_DIR, fam), ref = await readReference(dir), out = mkdtempSync(join(tmpdir(), `webqlora-dora-merge-${fam}-`));
      try {
        const src = await openModelPath(dir);
        const model = await loadModel(src, be, { quant: 'none', maxPositions: ref.batch.T });
        const lora = await loadAdapterAt(join(dir, 'adapter'), be, model.config);
        await mergeAdapter(src, lora, be, new NodeOutDir(out), { dtype: 'F32', quant: 'none', doubleQuant: false, blocksize: 64 });
        await src.close();
        const merged = await openModelPath(out);
        const mm = await loadModel(merged, be, { quant: 'none', maxPositions: ref.batch.T });
        await merged.close();
        assertLogitsLikeTransformers(await batchLogits(mm, ref.batch), ref.loraLogits, `dora/${fam} merged`);
        mm.free();
        lora.free();
        model.free();
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    }
  } finally {
    await be.destroy();
  }
});

test.run();
