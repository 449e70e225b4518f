// Evaluation loss and perplexity: exp(mean negative log-likelihood of every predicted token),
// the mean taken over all scored tokens of all batches (HF shift: row t predicts labels[t+1]).
// Losses accumulate in backend memory; the host reads them once at the end.
import type { LlamaModel } from '../model/llama.ts';
import { Workspace } from '../model/llama.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { forwardLoss, scoredTokens, type MicroBatch } from '../train/step.ts';

export interface EvalResult {
  loss: number;
  perplexity: number;
  /** scored tokens */
  tokens: number;
}

export async function evaluate(
  model: LlamaModel,
  batches: Iterable<MicroBatch>,
  opts: { maxBatch: number; maxSeqLen: number; adapters?: LoraAdapters | null; onBatch?: (done: number, tokens: number) => void },
): Promise<EvalResult> {
  const be = model.backend, c = model.config;
  const lora = opts.adapters ?? null;
  const ws = new Workspace(be, c, { batch: opts.maxBatch, seqLen: opts.maxSeqLen, training: false, checkpointing: false, loraRank: lora?.maxRank ?? 0, dora: lora?.useDora ?? false });
  const acc = be.alloc('f32', opts.maxBatch * opts.maxSeqLen, 'evalLosses');
  be.fill(acc, 0);
  let tokens = 0, n = 0;
  try {
    for (const b of batches) {
      await model.stageInput(ws, b.ids.subarray(0, b.B * b.T), b.T);
      forwardLoss(model, ws, lora, b, undefined);
      be.add(acc, ws.losses, b.B * b.T); // ignored rows add 0
      tokens += scoredTokens(b);
      opts.onBatch?.(++n, tokens);
    }
    const losses = (await be.read(acc)) as Float32Array;
    let sum = 0;
    for (let i = 0; i < losses.length; i++) sum += losses[i]!;
    const loss = tokens > 0 ? sum / tokens : NaN;
    return { loss, perplexity: Math.exp(loss), tokens };
  } finally {
    be.free(acc);
    ws.free();
  }
}
