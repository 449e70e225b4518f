// FLOPs of one LoRA training step, counted from the GEMMs it runs (not 6·params·tokens: the base
// is frozen, so it has no weight gradient, and the LoRA and attention terms are not proportional to
// the parameter count). A multiply-add is 2 FLOPs. Legend: B batch, T time, R = B·T rows, C, F, H,
// KVH, D, V as in the config, r the LoRA rank, L layers.
//   base linear [N, K]:  forward x·Wᵀ 2·R·N·K  + input gradient dY·W 2·R·N·K
//   its LoRA (A [r, K], B [N, r]): forward x·Aᵀ, (xA)·Bᵀ; backward dB = dYᵀ·xA, d(xA) = dY·B,
//                        dA = d(xA)ᵀ·x, dx += d(xA)·A: 6·R·r·(N + K)
//   attention, causal:   pairs = B·H·T(T+1)/2 (query, key) pairs; forward Q·Kᵀ and P·V 4·D·pairs;
//                        backward recomputes Q·Kᵀ, then dV, dP, dQ, dK: 10·D·pairs
//   lm_head [V, C]:      forward 2·S·V·C + input gradient 2·S·V·C (frozen: no weight gradient)
//                        over the S scored rows: webqlora skips rows whose target is ignored
//                        (bench/train.ts's batches score B·(T−1) rows; the PyTorch yardstick
//                        computes all R rows' logits, its own extra work)
// Gradient checkpointing adds one more forward of every layer. Elementwise work (norms, RoPE,
// SwiGLU, softmax, the optimizer) is left out: it is O(R·C) or O(params), not a GEMM.
import type { ModelConfig } from '../src/model/config.ts';

export interface StepFlops { base: number; lora: number; attention: number; head: number; recompute: number; total: number }

/** The seven linear layers of a Llama block as [N, K] = [out, in]. */
export function linearShapes(c: ModelConfig): Array<[string, number, number]> {
  const qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim;
  return [
    ['q_proj', qd, c.hiddenSize], ['k_proj', kvd, c.hiddenSize], ['v_proj', kvd, c.hiddenSize], ['o_proj', c.hiddenSize, qd],
    ['gate_proj', c.intermediateSize, c.hiddenSize], ['up_proj', c.intermediateSize, c.hiddenSize], ['down_proj', c.hiddenSize, c.intermediateSize],
  ];
}

/** Causal (query, key) pairs of one head of one sequence of T tokens. */
export const causalPairs = (T: number): number => (T * (T + 1)) / 2;

/** @param scoredRows S, the rows with a target (default B·(T−1): every position but the last) */
export function trainStepFlops(c: ModelConfig, B: number, T: number, r: number, checkpointing = false, scoredRows = B * (T - 1)): StepFlops {
  const R = B * T;
  let baseFwd = 0, loraFwd = 0, lora = 0;
  for (const [, N, K] of linearShapes(c)) {
    baseFwd += 2 * R * N * K;
    loraFwd += 2 * R * r * (N + K);
    lora += 6 * R * r * (N + K);
  }
  const pairs = B * c.numHeads * causalPairs(T);
  const attFwd = 4 * c.headDim * pairs;
  const L = c.numLayers;
  const out = {
    base: L * 2 * baseFwd,
    lora: L * lora,
    attention: L * (attFwd + 10 * c.headDim * pairs),
    head: 4 * scoredRows * c.vocabSize * c.hiddenSize,
    recompute: checkpointing ? L * (baseFwd + loraFwd + attFwd) : 0,
    total: 0,
  };
  out.total = out.base + out.lora + out.attention + out.head + out.recompute;
  return out;
}
