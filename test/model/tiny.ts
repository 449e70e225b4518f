// A tiny Llama config and helpers shared by the model tests.
import type { ModelConfig } from '../../src/model/config.ts';
import { Rng } from '../helpers/index.ts';
import { forwardBackward, scoredTokens, type MicroBatch } from '../../src/train/step.ts';
import type { LlamaModel, Workspace } from '../../src/model/llama.ts';
import type { LoraAdapters } from '../../src/model/lora.ts';

/** 2 layers, GQA 4:2, odd-ish sizes: C 16, F 24, D 4, V 37. Every linear has ≥ 64 elements. */
export const TINY: ModelConfig = {
  architecture: 'LlamaForCausalLM', hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKVHeads: 2, headDim: 4,
  vocabSize: 37, maxPositionEmbeddings: 32, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: false,
  attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32',
};

/** B sequences of T tokens with a few ignored targets and one short (padded) sequence. */
export function randomBatch(rng: Rng, B: number, T: number, V: number): MicroBatch {
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const len = b === B - 1 && T > 2 ? T - 2 : T; // last sequence right-padded by 2
    for (let t = 0; t < T; t++) ids[b * T + t] = t < len ? rng.int(V) : 0;
    for (let t = 0; t < T; t++) targets[b * T + t] = t + 1 < len ? ids[b * T + t + 1]! : -100;
    if (T > 3) targets[b * T + 1] = -100; // a masked prompt position
  }
  return { ids, targets, B, T };
}

/**
 * One training micro-batch as the paged == resident comparisons run it: the adapters' A and B
 * drawn from Rng(9) (scale 0.3) and their gradients zeroed, `mb` staged, one forward and backward
 * (gradient scale 1 / scored tokens, dropout seed 77). Returns the per-token losses and every LoRA
 * parameter's gradient in `lora.params` order; the workspace and adapters stay the caller's.
 */
export async function microBatchGrads(model: LlamaModel, ws: Workspace, lora: LoraAdapters, mb: MicroBatch): Promise<{ loss: Float32Array; grads: Float32Array[] }> {
  const be = lora.backend;
  const rng = new Rng(9);
  for (const p of lora.pairs) { be.write(p.A, rng.f32(p.A.length, 0.3)); be.write(p.B, rng.f32(p.B.length, 0.3)); }
  lora.zeroGrads();
  const acc = be.alloc('f32', mb.B * mb.T, 'acc');
  be.fill(acc, 0);
  await model.stageInput(ws, mb.ids);
  forwardBackward(model, ws, lora, mb, 1 / scoredTokens(mb), 77, acc);
  const grads: Float32Array[] = [];
  for (const p of lora.params) grads.push((await be.read(p.grad)) as Float32Array);
  const loss = (await be.read(acc)) as Float32Array;
  be.free(acc);
  return { loss, grads };
}
