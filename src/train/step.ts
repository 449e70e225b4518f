// One micro-batch of training: forward, loss with its gradient, backward into the LoRA
// gradients. The loss of the whole accumulated batch is the mean over every scored token
// (DESIGN.md), so each micro-batch's logit gradient is scaled by 1 / (scored tokens of the
// whole accumulated batch), known on the host before the first micro-batch runs.
import type { Tensor } from '../backend/backend.ts';
import { checkDocStartValues } from '../backend/validate.ts';
import type { LlamaModel, Workspace } from '../model/llama.ts';
import type { LoraAdapters } from '../model/lora.ts';

export interface MicroBatch {
  /** i32 [B·T] token ids (right-padded) */
  ids: Int32Array;
  /** i32 [B·T] targets (row t scored against labels[t+1]; −100 = not scored) */
  targets: Int32Array;
  B: number;
  T: number;
  /** i32 [B·T] packed sequences (data/pack.ts): each position's in-row example start; absent: one sequence per row */
  docStart?: Int32Array;
}

/**
 * Runs one micro-batch and accumulates LoRA gradients (dA, dB += …). Per-row losses are added
 * into `lossAcc` (f32 [≥ B·T], rows with ignored targets add 0), so the caller reads one buffer
 * per optimizer step.
 */
export function forwardBackward(model: LlamaModel, ws: Workspace, lora: LoraAdapters, mb: MicroBatch, gradScale: number, seed: number | undefined, lossAcc: Tensor, neftuneAlpha = 0): void {
  forwardLoss(model, ws, lora, mb, seed, gradScale, neftuneAlpha);
  model.backend.add(lossAcc, ws.losses, mb.B * mb.T);
  model.backward(ws, mb.B, mb.T, lora, seed, mb.docStart ? ws.docStart : undefined);
}

/**
 * Forward and per-row losses into ws.losses. The ids are those `await model.stageInput(ws, ids, T)`
 * staged (the trainer, eval and preference tuning stage each micro-batch; a model with a streamed
 * embedding needs it), else uploaded here (LlamaModel.setInputIds). With `gradScale`, ws.dh is left
 * holding the gradient of the loss (scaled by it) w.r.t. the final normed hidden state, ready for
 * model.backward.
 */
export function forwardLoss(model: LlamaModel, ws: Workspace, lora: LoraAdapters | null, mb: MicroBatch, seed: number | undefined, gradScale?: number, neftuneAlpha = 0): void {
  const be = model.backend, R = mb.B * mb.T;
  model.setInputIds(ws, mb.ids.subarray(0, R), mb.T);
  if (mb.docStart) {
    if (ws.docStart.length < R) throw new Error('a packed micro-batch needs a workspace made with { packing: true }');
    // checked here, on the host, for every backend: WebGPU's kernels cannot see the values, and a
    // bad layout would read outside the RoPE tables and mix examples without a word
    checkDocStartValues(mb.docStart, R, mb.T, 'packed micro-batch');
    be.write(ws.docStart, mb.docStart.subarray(0, R));
  }
  model.forward(ws, mb.B, mb.T, { lora, seed, neftuneAlpha, docStart: mb.docStart ? ws.docStart : undefined });
  model.lossHead(ws, R, mb.targets, gradScale);
}

/** Number of scored rows (target ≠ −100) of a micro-batch. */
export function scoredTokens(mb: MicroBatch): number {
  let n = 0;
  for (let i = 0; i < mb.B * mb.T; i++) if (mb.targets[i] !== -100) n++;
  return n;
}
