// Every model family on WebGPU (Dawn + lavapipe here) against transformers 5.18 + PEFT 0.21
// (test/fixtures/archs/, and the DoRA adapters of test/fixtures/dora/): perplexity with and without the PEFT adapter to 1e-4 relative, and
// the LoRA gradient of every PEFT tensor to 1e-3 of its norm — the same bars as the WASM run in
// test/model/archs.test.ts. Base in float32 (--quant none), as transformers computes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadAdapterAt } from '../helpers/index.ts';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { loadModel } from '../../src/model/load.ts';
import { Workspace } from '../../src/model/llama.ts';
import { evaluate } from '../../src/eval/evaluate.ts';
import { forwardBackward, scoredTokens } from '../../src/train/step.ts';
import { ORACLES, peftGrad, perplexity64, readReference } from '../model/archs.ts';
import { peftKey } from '../../src/model/lora.ts';
import { testWebGpu } from './gpu.ts';

// created inside the tests, not in test.before: uvu 0.5 swallows a hook's error (CI must fail)
let gpuP: Promise<Backend | null> | null = null;
const device = () => (gpuP ??= testWebGpu());
test.after(async () => { await (await gpuP)?.destroy(); });

for (const [fam, dir] of ORACLES) {
  test(`${fam} on WebGPU: perplexity and LoRA gradients equal transformers' and PEFT's`, async () => {
    const gpu = await device();
    if (!gpu) return;
    const be = gpu, ref = await readReference(dir);
    const { B, T } = ref.batch, V = ref.baseLogits.length / (B * T);
    const src = await openModelPath(dir);
    const model = await loadModel(src, be, { quant: 'none', maxPositions: T });
    await src.close();
    const lora = await loadAdapterAt(join(dir, 'adapter'), be, model.config, { withGrads: true, dropout: 0 });
    for (const [adapters, logits] of [[null, ref.baseLogits], [lora, ref.loraLogits]] as const) {
      const ev = await evaluate(model, [ref.batch], { maxBatch: B, maxSeqLen: T, adapters });
      const want = perplexity64(logits, ref.batch.targets, V);
      assert.ok(Math.abs(ev.perplexity / want - 1) <= 1e-4, `${fam}${adapters ? ' + adapter' : ''}: perplexity ${ev.perplexity}, transformers ${want}`);
    }
    const ws = new Workspace(be, model.config, { batch: B, seqLen: T, training: true, checkpointing: false, loraRank: lora.maxRank, dora: lora.useDora });
    const lossAcc = be.alloc('f32', B * T, 'loss');
    be.fill(lossAcc, 0);
    lora.zeroGrads();
    forwardBackward(model, ws, lora, ref.batch, 1 / scoredTokens(ref.batch), undefined, lossAcc);
    for (const m of lora.modules) {
      const gB = new Float32Array(m.N * m.r);
      for (const p of m.parts) gB.set((await be.read(p.dB)) as Float32Array, p.row0 * m.r);
      const grads: Array<[string, Float32Array]> = [[peftKey(m.path, 'A'), (await be.read(m.dA)) as Float32Array], [peftKey(m.path, 'B'), gB]];
      if (lora.useDora) {
        const gm = new Float32Array(m.N);
        for (const p of m.parts) gm.set((await be.read(p.dora!.dm)) as Float32Array, p.row0);
        grads.push([peftKey(m.path, 'magnitude'), gm]);
      }
      for (const [key, g] of grads) {
        const want = peftGrad(ref, key)!;
        let d = 0, n = 0;
        for (let i = 0; i < want.length; i++) { d += (g[i]! - want[i]!) ** 2; n += want[i]! ** 2; }
        const e = Math.sqrt(d / n);
        assert.ok(e <= 1e-3, `${fam}: ${key}: gradient off by ${e.toExponential(2)} of its norm`);
      }
    }
    be.free(lossAcc);
    ws.free();
    lora.free();
    model.free();
  });
}

test.run();
