// A tiny Llama config and helpers shared by the model tests.
import type { ModelConfig } from '../../src/model/config.ts';
import { Rng } from '../helpers/index.ts';
import type { MicroBatch } from '../../src/train/step.ts';

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
