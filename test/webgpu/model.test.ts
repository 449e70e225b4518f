// Model level: stories260K (assets/stories260K.gguf) on WebGPU against WASM, with the base in f32
// and in NF4 + double quant. Eval loss must agree to 1e-4 relative and the LoRA gradients of one
// training step (dropout on, every linear layer adapted) to 1e-3 of each gradient's largest
// magnitude. Both backends run f32 kernels; the difference is summation order, exp/log ulps and
// multiply-add contraction, accumulated through 5 layers forward and back.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { Workspace, type LlamaModel } from '../../src/model/llama.ts';
import { evaluate } from '../../src/eval/evaluate.ts';
import { forwardBackward, scoredTokens } from '../../src/train/step.ts';
import { LINEAR_NAMES } from '../../src/model/config.ts';
import { Rng, STORIES_GGUF } from '../helpers/index.ts';
import { tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import type { MicroBatch } from '../../src/train/step.ts';
import { testWebGpu } from './gpu.ts';

const B = 2, T = 32;

const TEXT = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her mom. '
  + 'One day, she saw a big red ball under a tree. Lily ran to the ball and picked it up. She was very happy. '
  + 'Then a little dog came and wanted to play too. Lily threw the ball and the dog ran after it. They played all day long. '
  + 'At night, Lily went home and told her mom about the dog. Her mom smiled and gave her a big hug.';

/** B rows of T tokens of TEXT (row b starts b·T tokens in), each row scored on its next token. */
function batch(ids: number[], start: number): MicroBatch {
  const m: MicroBatch = { ids: new Int32Array(B * T), targets: new Int32Array(B * T), B, T };
  for (let r = 0; r < B * T; r++) {
    m.ids[r] = ids[start + r]!;
    m.targets[r] = r % T === T - 1 ? -100 : ids[start + r + 1]!;
  }
  m.targets[T + 1] = -100; // an ignored position
  return m;
}

async function load(be: Backend, quant: 'none' | 'nf4'): Promise<{ model: LlamaModel; ids: number[] }> {
  const src = await openModelPath(STORIES_GGUF);
  try {
    const ids = tokenizerFromVocab(src.vocab!).encode(TEXT);
    assert.ok(ids.length > 2 * B * T, `the test text has ${ids.length} tokens, ${2 * B * T + 1} needed`);
    return { model: await loadModel(src, be, { quant, doubleQuant: true, blocksize: 64, maxPositions: T }), ids };
  } finally {
    await src.close();
  }
}

interface Run { loss: number; grads: Float32Array[]; labels: string[] }

async function run(be: Backend, quant: 'none' | 'nf4'): Promise<Run> {
  const { model, ids } = await load(be, quant);
  const c = model.config;
  const batches = [batch(ids, 0), batch(ids, B * T)];
  const ev = await evaluate(model, batches, { maxBatch: B, maxSeqLen: T });

  // one training step's LoRA gradients (random A and B: PEFT's B = 0 would make every dA zero)
  const lora = new LoraAdapters(be, c, { r: 4, alpha: 8, dropout: 0.1, targets: [...LINEAR_NAMES], useRslora: false }, true);
  const init = new Rng(7);
  for (const p of lora.pairs) {
    be.write(p.A, init.f32(p.A.length, 0.2));
    be.write(p.B, init.f32(p.B.length, 0.2));
  }
  lora.zeroGrads();
  const ws = new Workspace(be, c, { batch: B, seqLen: T, training: true, checkpointing: false, loraRank: 4, loraDropout: 0.1 });
  const lossAcc = be.alloc('f32', B * T, 'lossAcc');
  be.fill(lossAcc, 0);
  const mb = batches[0]!;
  forwardBackward(model, ws, lora, mb, 1 / scoredTokens(mb), 99, lossAcc);
  const grads: Float32Array[] = [], labels: string[] = [];
  for (const p of lora.pairs) {
    grads.push((await be.read(p.dA)) as Float32Array, (await be.read(p.dB)) as Float32Array);
    labels.push(p.dA.label, p.dB.label);
  }
  be.free(lossAcc);
  ws.free();
  lora.free();
  model.free();
  return { loss: ev.loss, grads, labels };
}

for (const quant of ['none', 'nf4'] as const) {
  test(`stories260K (${quant === 'none' ? 'f32' : 'nf4 + dq'}): eval loss and LoRA gradients on webgpu == wasm`, async () => {
    const gpu = await testWebGpu();
    if (!gpu) return;
    const wasm = await createWasmBackend();
    try {
      const t0 = performance.now();
      const want = await run(wasm, quant);
      const t1 = performance.now();
      const got = await run(gpu, quant);
      const t2 = performance.now();
      const rel = Math.abs(got.loss - want.loss) / Math.abs(want.loss);
      let worst = 0, worstAt = '';
      got.grads.forEach((g, i) => {
        const w = want.grads[i]!;
        let scale = 0, err = 0;
        for (let j = 0; j < w.length; j++) { scale = Math.max(scale, Math.abs(w[j]!)); err = Math.max(err, Math.abs(g[j]! - w[j]!)); }
        assert.ok(scale > 0, `${want.labels[i]}: zero gradient (a useless comparison)`);
        const r = err / scale;
        if (r > worst) { worst = r; worstAt = want.labels[i]!; }
        assert.ok(r <= 1e-3, `${want.labels[i]}: max |webgpu − wasm| = ${err} is ${r.toExponential(2)} of max |grad| ${scale}`);
      });
      if (process.env.WEBQLORA_TEST_VERBOSE) {
        console.log(`  ${quant}: eval loss wasm ${want.loss} webgpu ${got.loss} (rel ${rel.toExponential(2)}); worst gradient ${worst.toExponential(2)} (${worstAt}); wasm ${((t1 - t0) / 1000).toFixed(1)}s webgpu ${((t2 - t1) / 1000).toFixed(1)}s`);
      }
      assert.ok(rel <= 1e-4, `eval loss: webgpu ${got.loss}, wasm ${want.loss} (relative difference ${rel})`);
    } finally {
      await gpu.destroy();
      await wasm.destroy();
    }
  });
}

test.run();
