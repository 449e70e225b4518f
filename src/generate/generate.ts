// Autoregressive generation with a KV cache: the prompt is prefilled in chunks, then one token
// per step; one readback (the last row's logits) per generated token.
import { WebqloraError } from '../errors.ts';
import type { LlamaModel } from '../model/llama.ts';
import { Workspace } from '../model/llama.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { SampleRng, sampleToken, type SampleOptions } from './sample.ts';

export interface GenerateOptions extends Partial<SampleOptions> {
  maxNewTokens?: number;
  seed?: number;
  /** Stop after emitting one of these ids (default: the model's EOS ids). */
  stopIds?: number[];
  adapters?: LoraAdapters | null;
  /** Called with each new id as soon as it is sampled (for streaming text). */
  onToken?: (id: number) => void;
  /** Prompt tokens per prefill forward (default 128). */
  prefillChunk?: number;
}

export interface GenerateResult {
  outputIds: number[];
  /** why generation ended */
  stop: 'eos' | 'length' | 'context';
}

export async function generate(model: LlamaModel, promptIds: number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
  const c = model.config, be = model.backend;
  if (promptIds.length === 0) throw new WebqloraError('the prompt is empty (give --prompt text or --prompt-ids).');
  for (const id of promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new WebqloraError(`prompt token id ${id} is outside the vocabulary [0, ${c.vocabSize}).`);
  }
  const maxNew = opts.maxNewTokens ?? 128;
  const capacity = model.maxPositions;
  if (promptIds.length >= capacity) throw new WebqloraError(`the prompt has ${promptIds.length} tokens; the model's context holds ${capacity}.`);
  const total = Math.min(promptIds.length + maxNew, capacity);
  const chunk = Math.max(1, Math.min(opts.prefillChunk ?? 128, promptIds.length));
  const lora = opts.adapters ?? null;
  const ws = new Workspace(be, c, { batch: 1, seqLen: chunk, training: false, checkpointing: false, loraRank: lora?.maxRank ?? 0, kvCache: total, dora: lora?.useDora ?? false });
  const stop = new Set(opts.stopIds ?? c.eosTokenIds);
  const sample = { temperature: opts.temperature ?? 0, topP: opts.topP ?? 1 };
  const rng = new SampleRng(opts.seed ?? 0);
  const out: number[] = [];
  try {
    let pos = 0, lastT = 0;
    for (let s = 0; s < promptIds.length; s += chunk) {
      const ids = promptIds.slice(s, s + chunk);
      await model.stageInput(ws, Int32Array.from(ids));
      model.forward(ws, 1, ids.length, { pos0: pos, lora });
      pos += ids.length;
      lastT = ids.length;
    }
    let reason: GenerateResult['stop'] = 'length';
    for (;;) {
      model.headLastRow(ws, lastT - 1);
      const logits = (await be.read(ws.lastLogits)) as Float32Array;
      const next = sampleToken(logits, sample, rng);
      out.push(next);
      opts.onToken?.(next);
      if (stop.has(next)) { reason = 'eos'; break; }
      if (out.length >= maxNew) break;
      if (pos >= total) { reason = 'context'; break; }
      await model.stageInput(ws, Int32Array.from([next]));
      model.forward(ws, 1, 1, { pos0: pos, lora });
      pos += 1;
      lastT = 1;
    }
    return { outputIds: out, stop: reason };
  } finally {
    ws.free();
  }
}
