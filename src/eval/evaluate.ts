// Evaluation loss and perplexity: exp(mean negative log-likelihood of every predicted token),
// the mean taken over all scored tokens of all batches (HF shift: row t predicts labels[t+1]).
import type { LlamaModel } from '../model/llama.ts';
import { Workspace } from '../model/llama.ts';
import type { LoraAdapters } from '../model/lora.ts';

export interface EvalBatch {
  /** i32 [B·T] token ids, right-padded */
  ids: Int32Array;
  /** i32 [B·T] target of each row (−100 = not scored) */
  targets: Int32Array;
  B: number;
  T: number;
}

export interface EvalResult {
  loss: number;
  perplexity: number;
  /** scored tokens */
  tokens: number;
}

export async function evaluate(
  model: LlamaModel,
  batches: Iterable<EvalBatch>,
  opts: { maxBatch: number; maxSeqLen: number; adapters?: LoraAdapters | null; onBatch?: (done: number, tokens: number) => void },
): Promise<EvalResult> {
  const be = model.backend, c = model.config;
  const lora = opts.adapters ?? null;
  const ws = new Workspace(be, c, { batch: opts.maxBatch, seqLen: opts.maxSeqLen, training: false, checkpointing: false, loraRank: lora?.config.r ?? 0 });
  let sum = 0, tokens = 0, n = 0;
  try {
    for (const b of batches) {
      const R = b.B * b.T;
      be.write(ws.ids, b.ids.subarray(0, R));
      be.write(ws.targets, b.targets.subarray(0, R));
      model.forward(ws, b.B, b.T, { lora });
      model.head(ws, R);
      be.crossEntropy(ws.losses, ws.logits, ws.targets, R, c.vocabSize);
      const losses = (await be.read(ws.losses, 0, R)) as Float32Array;
      for (let r = 0; r < R; r++) {
        if (b.targets[r] !== -100) { sum += losses[r]!; tokens++; }
      }
      opts.onBatch?.(++n, tokens);
    }
  } finally {
    ws.free();
  }
  const loss = tokens > 0 ? sum / tokens : NaN;
  return { loss, perplexity: Math.exp(loss), tokens };
}
