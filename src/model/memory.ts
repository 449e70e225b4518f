// Memory of a run, computed before it runs (`webqlora inspect --seq-len …`, and the automatic
// choice of layer paging). The backend part is exact: the real Workspace, LoraAdapters and
// optimizer buffers are built on a CountingBackend. Host memory adds paged base layers and paged
// optimizer moments; the peak is the larger of the load phase (weights plus the largest tensor
// read as float32 in flight) and the step phase (everything resident), plus the runtime's own
// baseline.
import type { Backend } from '../backend/backend.ts';
import { CountingBackend } from '../backend/counting.ts';
import { wasmInternals } from '../backend/wasm/index.ts';
import { quantBytesFor, type QuantMode } from '../quant/types.ts';
import { expectedTensors, LINEAR_NAMES, linearShape, linearSource, variantOf, type ModelConfig } from './config.ts';
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
  /** Sample packing (a docStart buffer of B·T rows). */
  packing?: boolean;
  /** Preference tuning (batch counts rows: 2 per pair; a [2·B·T] loss buffer). */
  preference?: boolean;
  /** The format reads [V, C] tables whole (GGUF, llama2.c) rather than in row slices (HF, synthetic). */
  wholeTables?: boolean;
}

/** An eval or generate run: no gradients, no optimizer. */
export interface InferenceMemoryOptions {
  quant: QuantMode;
  doubleQuant: boolean;
  blocksize: number;
  /** the adapter applied, if any */
  lora: LoraConfig | null;
  /** rows per forward (eval: batch × seq-len; generate: 1 × the prefill chunk) */
  batch: number;
  seqLen: number;
  /** generate: KV cache positions */
  kvCache?: number;
  /** RoPE table rows (default seqLen) */
  maxPositions?: number;
  pageWeights: boolean;
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

/**
 * Weight bytes as loadModel holds them, by part (tables in the checkpoint's precision). `norms`
 * is every 1-D tensor of the family in f32: the norms (two to four per block, q/k norms, the
 * final one) and the q/k/v biases. `slots`: the paged layers' one resident slot, of the largest
 * linear's size (load.ts).
 */
export function weightParts(c: ModelConfig, q: { quant: QuantMode; doubleQuant: boolean; blocksize: number }): { embeddings: number; norms: number; layer: number; slots: number } {
  const tableBytes = c.vocabSize * c.hiddenSize * BYTES[c.torchDtype];
  let layer = 0, slots = 0;
  for (const name of LINEAR_NAMES) {
    const [N, K] = linearShape(c, name);
    const b = q.quant === 'none' ? 4 * N * K : quantBytesFor(N * K, q.blocksize, q.doubleQuant);
    layer += b;
    slots = Math.max(slots, b);
  }
  const norms = expectedTensors(c).reduce((s, t) => s + (t.shape.length === 1 ? 4 * t.shape[0]! : 0), 0);
  return { embeddings: tableBytes * (c.tieWordEmbeddings ? 1 : 2), norms, layer, slots };
}

export function estimateTrainingMemory(c: ModelConfig, o: TrainMemoryOptions): MemoryEstimate {
  return estimate(c, o, o.seqLen, o.batch * o.seqLen, (cb) => {
    const adapters = new LoraAdapters(cb, c, o.lora, true);
    const parts: Record<string, number> = { lora: cb.liveBytes };
    let hostOptimizer = 0;
    // AdamW's m and v: twice the trainable values (DoRA's norm buffers are not optimizer state)
    const moments = 2 * 4 * adapters.params.reduce((n, p) => n + p.value.length, 0);
    if (o.optimizer === 'adamw') parts.optimizer = moments;
    else if (o.optimizer === 'paged-adamw') {
      hostOptimizer = moments;
      parts.optimizer = 2 * 4 * Math.max(...adapters.params.map((p) => p.value.length));
    } else parts.optimizer = 0;
    const before = cb.liveBytes;
    new Workspace(cb, c, { batch: o.batch, seqLen: o.seqLen, training: true, checkpointing: o.checkpointing, loraRank: adapters.maxRank, loraDropout: o.lora.dropout, dora: adapters.useDora, packing: o.packing, preference: o.preference });
    // + the trainer's loss accumulator
    parts.activations = cb.liveBytes - before + 4 * (o.batch * o.seqLen + 2);
    return { parts, hostOptimizer };
  });
}

/** The same estimate for eval (evaluate()) and generate (generate()): adapters without gradients. */
export function estimateInferenceMemory(c: ModelConfig, o: InferenceMemoryOptions): MemoryEstimate {
  return estimate(c, o, o.maxPositions ?? o.seqLen, o.batch * o.seqLen, (cb) => {
    const adapters = o.lora ? new LoraAdapters(cb, c, o.lora, false) : null;
    const parts: Record<string, number> = { lora: cb.liveBytes };
    const before = cb.liveBytes;
    new Workspace(cb, c, { batch: o.batch, seqLen: o.seqLen, training: false, checkpointing: false, loraRank: adapters?.maxRank ?? 0, kvCache: o.kvCache, dora: adapters?.useDora ?? false });
    // + evaluate()'s loss accumulator
    parts.activations = cb.liveBytes - before + (o.kvCache ? 0 : 4 * o.batch * o.seqLen);
    return { parts, hostOptimizer: 0 };
  });
}

function estimate(
  c: ModelConfig, o: { quant: QuantMode; doubleQuant: boolean; blocksize: number; pageWeights: boolean; threads?: number; wholeTables?: boolean }, positions: number, inputRows: number,
  run: (cb: CountingBackend) => { parts: Record<string, number>; hostOptimizer: number },
): MemoryEstimate {
  const parts: Record<string, number> = {};
  const tableBytes = c.vocabSize * c.hiddenSize * BYTES[c.torchDtype];
  const w = weightParts(c, o);
  // paged, untied, a format that reads rows: the input embedding is streamed (load.ts), only the
  // rows of one forward's distinct tokens are held
  const streamed = o.pageWeights && !c.tieWordEmbeddings && !o.wholeTables;
  parts.embeddings = streamed ? tableBytes + Math.min(inputRows, c.vocabSize) * c.hiddenSize * BYTES[c.torchDtype] : w.embeddings;
  parts.norms = w.norms;
  // cos and sin [P, D/2] f32, twice when sliding layers have their own base (Gemma 3)
  parts.rope = 4 * positions * c.headDim * (variantOf(c).ropeLocal ? 2 : 1);
  const layerWeights = w.layer;
  parts.baseLayers = o.pageWeights ? w.slots : layerWeights * c.numLayers;
  const hostWeights = o.pageWeights ? layerWeights * c.numLayers : 0;

  const r = run(new CountingBackend());
  Object.assign(parts, r.parts);
  parts.scratch = (o.threads ?? 1) * 2 ** 20;

  const backendBytes = Object.values(parts).reduce((a, b) => a + b, 0);
  const hostBytes = hostWeights + r.hostOptimizer;
  // Loading (load.ts order: embedding, lm_head, norms, then layer by layer) holds one tensor as
  // float32 at a time next to what is already loaded: a [V, C] table while it is converted (in
  // 4 MiB row slices where the format reads rows, HF and synthetic; whole from GGUF and
  // llama2.c), later the widest linear weight on top of everything else.
  const tableInFlight = o.wholeTables
    ? 4 * c.vocabSize * c.hiddenSize + (c.torchDtype === 'F32' ? 0 : tableBytes)
    : tableBytes + 8 * 2 ** 20;
  let widest = 0;
  for (const name of LINEAR_NAMES) { const ls = linearSource(c, 0, name); widest = Math.max(widest, 4 * ls.rows * linearShape(c, name)[1]); }
  const loadPeakBytes = Math.max(
    (c.tieWordEmbeddings || streamed ? 0 : tableBytes) + tableInFlight,
    parts.embeddings + parts.norms + parts.baseLayers + hostWeights + widest,
  );
  const stepPeakBytes = backendBytes + hostBytes;
  return { parts, backendBytes, hostBytes, loadPeakBytes, stepPeakBytes, peakBytes: RUNTIME_BASELINE_BYTES + Math.max(loadPeakBytes, stepPeakBytes) };
}

// ---- automatic layer paging ---------------------------------------------------------------

/** The most kernel memory a backend can hold, when it has a fixed limit. */
export interface BackendCapacity {
  bytes: number;
  /** what the limit is, for the message */
  what: string;
}

/**
 * The WASM backend: its memory's maximum (one wasm32 memory, 4 GiB; a shared memory may have
 * been given less, module.ts newMemory). WebGPU exposes no total, only per-buffer limits
 * (maxBufferSize, maxStorageBufferBindingSize), and paging changes no buffer's size (a paged
 * layer's slots have the shapes of one layer's weights), so there is nothing to decide on: null,
 * as for the reference backend (plain JS arrays).
 */
export function backendCapacity(be: Backend): BackendCapacity | null {
  if (be.name !== 'wasm') return null;
  const bytes = wasmInternals(be).kernels.maxPages * 65536;
  return bytes === WASM32_CAPACITY.bytes ? WASM32_CAPACITY : { bytes, what: "this engine's shared WebAssembly memory" };
}

/** The WASM backend's limit where the engine gives it a whole wasm32 memory (Node, most browsers). */
export const WASM32_CAPACITY: BackendCapacity = { bytes: 2 ** 32, what: 'one wasm32 memory' };

/**
 * Whether the base layers must be paged for a run to fit: its backend bytes with every layer
 * resident (`unpaged`, from estimateTrainingMemory / estimateInferenceMemory with pageWeights
 * false) against the capacity less 1/64 for what the estimate does not see (the kernels' static
 * data, allocator gaps). Returns the one line to tell the user, or null when it fits (or the
 * backend has no fixed limit).
 */
export function autoPageReason(unpaged: MemoryEstimate, cap: BackendCapacity | null): string | null {
  if (!cap) return null;
  const usable = cap.bytes - Math.ceil(cap.bytes / 64);
  if (unpaged.backendBytes <= usable) return null;
  return `paging base layers from host memory: with every layer resident the run needs ${gib(unpaged.backendBytes)} of kernel memory, more than ${cap.what} holds (${gib(cap.bytes)})`;
}

function gib(b: number): string {
  return b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`;
}
