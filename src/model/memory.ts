// Memory of a training run, computed before it runs (`webqlora inspect --seq-len …`). The
// backend part is exact: the real Workspace, LoraAdapters and optimizer buffers are built on a
// CountingBackend. Host memory adds paged base layers and paged optimizer moments; the peak is
// the larger of the load phase (weights plus the largest tensor read as float32 in flight) and
// the step phase (everything resident), plus the runtime's own baseline.
import { CountingBackend } from '../backend/counting.ts';
import { quantBytesFor, type QuantMode } from '../quant/types.ts';
import { hasBias, LINEAR_NAMES, linearShape, type ModelConfig } from './config.ts';
import { Workspace } from './llama.ts';
import { LoraAdapters, type LoraConfig } from './lora.ts';

export interface TrainMemoryOptions {
  quant: QuantMode;
  doubleQuant: boolean;
  blocksize: number;
  lora: LoraConfig;
  batch: number;
  seqLen: number;
  checkpointing: boolean;
  pageWeights: boolean;
  optimizer: 'adamw' | 'paged-adamw' | 'sgd';
  /** WASM threads (1 MiB scratch each). */
  threads?: number;
}

export interface MemoryEstimate {
  /** backend (kernel) memory by part, bytes */
  parts: Record<string, number>;
  backendBytes: number;
  hostBytes: number;
  loadPeakBytes: number;
  stepPeakBytes: number;
  /** predicted peak resident set of the process */
  peakBytes: number;
}

/** Resident memory of a Node process running webqlora before any model is loaded (measured). */
export const RUNTIME_BASELINE_BYTES = 96 * 2 ** 20;

const BYTES = { F32: 4, F16: 2, BF16: 2 } as const;

/** Weight bytes as loadModel holds them, by part (tables in the checkpoint's precision). */
export function weightParts(c: ModelConfig, q: { quant: QuantMode; doubleQuant: boolean; blocksize: number }): { embeddings: number; norms: number; layer: number } {
  const tableBytes = c.vocabSize * c.hiddenSize * BYTES[c.torchDtype];
  let layer = 0, biases = 0;
  for (const name of LINEAR_NAMES) {
    const [N, K] = linearShape(c, name);
    layer += q.quant === 'none' ? 4 * N * K : quantBytesFor(N * K, q.blocksize, q.doubleQuant);
    if (hasBias(c, name)) biases += 4 * N;
  }
  return { embeddings: tableBytes * (c.tieWordEmbeddings ? 1 : 2), norms: 4 * c.hiddenSize * (2 * c.numLayers + 1) + biases * c.numLayers, layer };
}

export function estimateTrainingMemory(c: ModelConfig, o: TrainMemoryOptions): MemoryEstimate {
  const parts: Record<string, number> = {};
  const tableBytes = c.vocabSize * c.hiddenSize * BYTES[c.torchDtype];
  const w = weightParts(c, o);
  parts.embeddings = w.embeddings;
  parts.norms = w.norms;
  parts.rope = 4 * o.seqLen * c.headDim;
  const layerWeights = w.layer;
  parts.baseLayers = o.pageWeights ? layerWeights : layerWeights * c.numLayers;
  const hostWeights = o.pageWeights ? layerWeights * c.numLayers : 0;

  const cb = new CountingBackend();
  new LoraAdapters(cb, c, o.lora, true);
  parts.lora = cb.liveBytes;
  let hostOptimizer = 0;
  if (o.optimizer === 'adamw') parts.optimizer = parts.lora; // m and v: the size of A and B, twice = the size of A, B, dA, dB
  else if (o.optimizer === 'paged-adamw') {
    hostOptimizer = parts.lora;
    let maxT = 0;
    for (const name of o.lora.targets) { const [N, K] = linearShape(c, name); maxT = Math.max(maxT, o.lora.r * Math.max(N, K)); }
    parts.optimizer = 2 * 4 * maxT;
  } else parts.optimizer = 0;
  const before = cb.liveBytes;
  new Workspace(cb, c, { batch: o.batch, seqLen: o.seqLen, training: true, checkpointing: o.checkpointing, loraRank: o.lora.r });
  parts.activations = cb.liveBytes - before + 4 * (o.batch * o.seqLen + 2);
  parts.scratch = (o.threads ?? 1) * 2 ** 20;

  const backendBytes = Object.values(parts).reduce((a, b) => a + b, 0);
  const hostBytes = hostWeights + hostOptimizer;
  // Loading (load.ts order: embedding, lm_head, norms, then layer by layer) holds one tensor as
  // float32 at a time next to what is already loaded: a [V, C] table while it is converted to
  // half precision, later the widest linear weight on top of everything else.
  const tableInFlight = 4 * c.vocabSize * c.hiddenSize + (c.torchDtype === 'F32' ? 0 : tableBytes);
  let widest = 0;
  for (const name of LINEAR_NAMES) { const [N, K] = linearShape(c, name); widest = Math.max(widest, 4 * N * K); }
  const loadPeakBytes = Math.max(
    (c.tieWordEmbeddings ? 0 : tableBytes) + tableInFlight,
    parts.embeddings + parts.norms + parts.baseLayers + hostWeights + widest,
  );
  const stepPeakBytes = backendBytes + hostBytes;
  return { parts, backendBytes, hostBytes, loadPeakBytes, stepPeakBytes, peakBytes: RUNTIME_BASELINE_BYTES + Math.max(loadPeakBytes, stepPeakBytes) };
}
