// Every model family against transformers 5.18 + PEFT 0.21 (test/fixtures/archs/, README there;
// and test/fixtures/dora/, the same with PEFT's DoRA adapters, magnitudes included):
// tiny random-weight models written by transformers, their float32 logits with and without a
// PEFT LoRA adapter, the loss and the gradient of every adapter tensor. For each family, on the
// WASM backend with the base kept in float32 (--quant none, as transformers computes):
//   - logits with and without the adapter (atol 2e-4 + rtol 1e-4 on logits of magnitude ≤ 15),
//   - perplexity with and without the adapter to 1e-4 relative,
//   - the LoRA gradient of every PEFT tensor to 1e-3 of its norm (‖g − g_peft‖ ≤ 1e-3·‖g_peft‖),
//   - the adapter saved back has PEFT's names, shapes and values.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadAdapterAt } from '../helpers/index.ts';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { FileSource, NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { loadModel } from '../../src/model/load.ts';
import { saveAdapter } from '../../src/model/peft.ts';
import { peftKey } from '../../src/model/lora.ts';
import { Workspace } from '../../src/model/llama.ts';
import { evaluate } from '../../src/eval/evaluate.ts';
import { forwardBackward, scoredTokens } from '../../src/train/step.ts';
import { assertLogitsLikeTransformers, ORACLES, peftGrad, perplexity64, readReference, type Reference } from './archs.ts';
import { batchLogits } from '../helpers/logits.ts';

function relNorm(a: Float32Array, b: Float32Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) { d += (a[i]! - b[i]!) ** 2; n += b[i]! ** 2; }
  return Math.sqrt(d / Math.max(n, 1e-30));
}

/** Logits of the batch (softcap applied as the model applies it), through the model's head. */
async function logitsOf(be: Backend, dir: string, ref: Reference, withAdapter: boolean): Promise<{ logits: Float32Array; ppl: number }> {
  const src = await openModelPath(dir);
  const model = await loadModel(src, be, { quant: 'none', maxPositions: ref.batch.T });
  await src.close();
  const lora = withAdapter ? await loadAdapterAt(join(dir, 'adapter'), be, model.config) : null;
  const { B, T } = ref.batch;
  const logits = await batchLogits(model, ref.batch, lora);
  const ev = await evaluate(model, [ref.batch], { maxBatch: B, maxSeqLen: T, adapters: lora });
  lora?.free();
  model.free();
  return { logits, ppl: ev.perplexity };
}

let wasm: Backend;
test.before(async () => { wasm = await createWasmBackend(); });
test.after(async () => { await wasm.destroy(); });

for (const [fam, dir] of ORACLES) {
  test(`${fam}: logits and perplexity with and without the adapter equal transformers'`, async () => {
    const ref = await readReference(dir);
    const V = ref.baseLogits.length / (ref.batch.B * ref.batch.T);
    for (const [withAdapter, want] of [[false, ref.baseLogits], [true, ref.loraLogits]] as const) {
      const got = await logitsOf(wasm, dir, ref, withAdapter);
      const what = `${fam} ${withAdapter ? 'lora' : 'base'}`;
      assertLogitsLikeTransformers(got.logits, want, what);
      const pplWant = perplexity64(want, ref.batch.targets, V);
      assert.ok(Math.abs(got.ppl / pplWant - 1) <= 1e-4, `${what}: perplexity ${got.ppl}, transformers ${pplWant}`);
    }
  });

  test(`${fam}: LoRA gradients equal PEFT's; the adapter saves back under PEFT's names`, async () => {
    const ref = await readReference(dir);
    const src = await openModelPath(dir);
    const model = await loadModel(src, wasm, { quant: 'none', maxPositions: ref.batch.T });
    await src.close();
    const lora = await loadAdapterAt(join(dir, 'adapter'), wasm, model.config, { withGrads: true, dropout: 0 });
    const { B, T } = ref.batch;
    const ws = new Workspace(wasm, model.config, { batch: B, seqLen: T, training: true, checkpointing: false, loraRank: lora.maxRank, dora: lora.useDora });
    const lossAcc = wasm.alloc('f32', B * T, 'loss');
    wasm.fill(lossAcc, 0);
    lora.zeroGrads();
    forwardBackward(model, ws, lora, ref.batch, 1 / scoredTokens(ref.batch), undefined, lossAcc);
    const losses = (await wasm.read(lossAcc)) as Float32Array;
    const loss = losses.reduce((a, b) => a + b, 0) / scoredTokens(ref.batch);
    assert.ok(Math.abs(loss / ref.loss - 1) <= 1e-4, `${fam}: loss ${loss}, transformers ${ref.loss}`);
    let checked = 0;
    for (const m of lora.modules) {
      const gA = (await wasm.read(m.dA)) as Float32Array;
      const gB = new Float32Array(m.N * m.r);
      for (const p of m.parts) gB.set((await wasm.read(p.dB)) as Float32Array, p.row0 * m.r);
      const grads: Array<[string, Float32Array]> = [[peftKey(m.path, 'A'), gA], [peftKey(m.path, 'B'), gB]];
      if (lora.useDora) {
        const gm = new Float32Array(m.N);
        for (const p of m.parts) gm.set((await wasm.read(p.dora!.dm)) as Float32Array, p.row0);
        grads.push([peftKey(m.path, 'magnitude'), gm]);
      }
      for (const [key, g] of grads) {
        const want = peftGrad(ref, key);
        assert.ok(want, `${fam}: no PEFT gradient for ${key}`);
        const e = relNorm(g, want!);
        assert.ok(e <= 1e-3, `${fam}: ${key}: gradient off by ${e.toExponential(2)} of its norm`);
        checked++;
      }
    }
    assert.is(checked, ref.grads.size, `${fam}: every PEFT gradient is checked`);
    // saved back: the same tensors as PEFT's file
    const out = mkdtempSync(join(tmpdir(), 'webqlora-archs-'));
    await saveAdapter(lora, new NodeOutDir(out), dir);
    const fm = await FileSource.open(join(out, 'adapter_model.safetensors')), ft = await FileSource.open(join(dir, 'adapter', 'adapter_model.safetensors'));
    const mine = await openSafetensors(fm), theirs = await openSafetensors(ft);
    assert.equal([...mine.tensors.keys()].sort(), [...theirs.tensors.keys()].sort());
    for (const k of theirs.tensors.keys()) {
      assert.equal(mine.info(k).shape, theirs.info(k).shape, k);
      assert.equal(await mine.readFloat(k), await theirs.readFloat(k), k);
    }
    await fm.close();
    await ft.close();
    rmSync(out, { recursive: true, force: true });
    wasm.free(lossAcc);
    ws.free();
    lora.free();
    model.free();
  });
}

test.run();
