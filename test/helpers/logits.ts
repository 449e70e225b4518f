// Every row's logits of a batch, as the model's generation head gives them (final soft-cap
// applied), and their float64 log-softmax: what the transformers and llama.cpp comparisons read.
import type { LlamaModel } from '../../src/model/llama.ts';
import { Workspace } from '../../src/model/llama.ts';
import type { LoraAdapters } from '../../src/model/lora.ts';
import { forwardLoss, type MicroBatch } from '../../src/train/step.ts';

/** Logits [B·T, V] of a micro-batch (or of one sequence of ids) after a forward with `lora`. */
export async function batchLogits(model: LlamaModel, batch: MicroBatch | number[], lora: LoraAdapters | null = null): Promise<Float32Array> {
  const mb: MicroBatch = Array.isArray(batch) ? { ids: Int32Array.from(batch), targets: new Int32Array(batch.length).fill(-100), B: 1, T: batch.length } : batch;
  const be = model.backend, R = mb.B * mb.T, V = model.config.vocabSize;
  const ws = new Workspace(be, model.config, { batch: mb.B, seqLen: mb.T, training: false, checkpointing: false, loraRank: lora?.maxRank ?? 0, dora: lora?.useDora ?? false });
  try {
    forwardLoss(model, ws, lora, mb, undefined);
    const out = new Float32Array(R * V);
    for (let r = 0; r < R; r++) {
      model.headLastRow(ws, r);
      out.set((await be.read(ws.lastLogits)) as Float32Array, r * V);
    }
    return out;
  } finally {
    ws.free();
  }
}

/** float64 ln softmax of each row of logits [rows, V]. */
export function logSoftmaxRows(l: Float32Array, V: number): Float64Array {
  const out = new Float64Array(l.length);
  for (let o = 0; o < l.length; o += V) {
    let mx = -Infinity, z = 0;
    for (let j = 0; j < V; j++) mx = Math.max(mx, l[o + j]!);
    for (let j = 0; j < V; j++) z += Math.exp(l[o + j]! - mx);
    const lse = mx + Math.log(z);
    for (let j = 0; j < V; j++) out[o + j] = l[o + j]! - lse;
  }
  return out;
}
