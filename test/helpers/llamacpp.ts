// llama.cpp itself as the reference client, through node-llama-cpp 3.21.1 (its prebuilt CPU
// binary; ~730 MB with the CUDA/Vulkan builds npm pulls in), installed by scripts/setup.sh into
// .llamacpp/ and never by the root `npm ci`. Outside CI a machine without it skips the tests that
// need it; with CI=true that is a failure (as test/webgpu/gpu.ts does for WebGPU).
//
// node-llama-cpp exposes no raw logits: `LlamaContextSequence.controlledEvaluate` with
// `generateNext.probabilities` returns, per position, the softmax of the logits computed in f32
// by its addon (AddonContext.cpp SampleToken, greedy chain = all V candidates, logits untouched).
// So what this gives is ln p = logits − logsumexp(logits) per row: the logits up to a per-row
// shift, which is all that decoding, loss and perplexity see.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO } from './index.ts';

export const LLAMACPP_DIR = join(REPO, '.llamacpp');
const ENTRY = join(LLAMACPP_DIR, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
export const MISSING = `node-llama-cpp is not installed in ${LLAMACPP_DIR} (run \`bash scripts/setup.sh\`)`;

// The few node-llama-cpp 3.21.1 shapes used here (typed locally: the package may be absent).
interface NlcLlama { loadModel(o: { modelPath: string; gpuLayers?: number }): Promise<NlcModel>; dispose(): Promise<void> }
interface NlcModel {
  readonly trainContextSize: number;
  tokenize(text: string, specialTokens?: boolean): number[];
  detokenize(tokens: readonly number[], specialTokens?: boolean): string;
  createContext(o: Record<string, unknown>): Promise<NlcContext>;
  dispose(): Promise<void>;
}
interface NlcContext { readonly contextSize: number; getSequence(): NlcSequence; dispose(): Promise<void> }
type NlcEvalItem = number | [number, { generateNext?: { probabilities?: boolean; token?: boolean; options?: { temperature?: number } } }];
interface NlcSequence {
  controlledEvaluate(input: NlcEvalItem[]): Promise<Array<undefined | { next: { token?: number | null; probabilities?: Map<number, number> } }>>;
  evaluate(tokens: number[], o: { temperature?: number; yieldEogToken?: boolean }): AsyncGenerator<number, void, unknown>;
  dispose(): void;
  clearHistory(): Promise<void>;
}

let llamaPromise: Promise<NlcLlama | null> | null = null;

/**
 * The llama.cpp runtime (CPU prebuilt, no GPU, never built from source), or null (the caller
 * skips; a one-line note says why) unless CI=true, where a missing package throws.
 */
export function testLlamaCpp(): Promise<NlcLlama | null> {
  llamaPromise ??= (async () => {
    if (!existsSync(ENTRY)) {
      if (process.env.CI === 'true') throw new Error(`${MISSING}: CI requires it`);
      console.log(`  skip: ${MISSING}`);
      return null;
    }
    const nlc = await import(pathToFileURL(ENTRY).href);
    // getLlama forks a child to try the prebuilt binary; it would inherit `--import tsx` and spend
    // ~2 s loading it for nothing.
    const execArgv = process.execArgv;
    process.execArgv = [];
    try {
      return (await nlc.getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false })) as NlcLlama;
    } finally {
      process.execArgv = execArgv;
    }
  })();
  return llamaPromise;
}

export interface LlamaCppLoadOptions {
  /** LoRA adapters in llama.cpp's GGUF form (convert_lora_to_gguf.py), applied at `scale` (default 1). */
  adapters?: { filePath: string; scale?: number }[];
  /** Positions the context holds (llama.cpp rounds up to 256); default 256. */
  contextSize?: number;
  /** CPU threads; default 1 (ggml splits rows, not sums, over threads: same results at 1 and 2). */
  threads?: number;
}

/** One GGUF model in llama.cpp with a context computed in f32 end to end. */
export class LlamaCppModel {
  private seq: NlcSequence | null = null;
  private constructor(readonly model: NlcModel, private readonly ctx: NlcContext) {}

  /** The context's one sequence, emptied (a disposed sequence is not handed out again in 3.21.1). */
  private async fresh(): Promise<NlcSequence> {
    if (!this.seq) this.seq = this.ctx.getSequence();
    else await this.seq.clearHistory();
    return this.seq;
  }

  static async load(llama: NlcLlama, modelPath: string, opts: LlamaCppLoadOptions = {}): Promise<LlamaCppModel> {
    const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
    const n = opts.contextSize ?? 256;
    const ctx = await model.createContext({
      contextSize: n,
      batchSize: n,
      sequences: 1,
      threads: opts.threads ?? 1,
      // The KV cache defaults to F16 (stories260K: ln p off by 1.6e-2 from webqlora's f32); an F32
      // cache without flash attention (which converts Q to the cache's type) keeps llama.cpp in f32.
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
      ...(opts.adapters ? { lora: { adapters: opts.adapters } } : {}),
    });
    return new LlamaCppModel(model, ctx);
  }

  /** Ids of `text` in the model's own vocabulary, no BOS (llama.cpp `llama_tokenize`, add_special off). */
  tokenize(text: string): number[] {
    return this.model.tokenize(text, false);
  }

  /**
   * ln p(next | ids[0..t]) for every position t: f64 (T, V), row t = logits_t − logsumexp(logits_t),
   * from llama.cpp's f32 softmax. Entries whose f32 probability is below the normal range
   * (logit more than ~87 under the row's max) are −Infinity or imprecise.
   */
  async logProbs(ids: readonly number[], V: number): Promise<Float64Array> {
    const seq = await this.fresh();
    const out = await seq.controlledEvaluate(ids.map((t) => [t, { generateNext: { probabilities: true, options: { temperature: 0 } } }]));
    const lp = new Float64Array(ids.length * V).fill(-Infinity);
    for (let t = 0; t < ids.length; t++) {
      const probs = out[t]?.next.probabilities;
      if (!probs) throw new Error(`llama.cpp returned no probabilities for position ${t}`);
      for (const [id, p] of probs) lp[t * V + id] = Math.log(p);
    }
    return lp;
  }

  /** n greedy (temperature 0, no penalties) ids after `promptIds`; EOS does not stop it. */
  async greedy(promptIds: readonly number[], n: number): Promise<number[]> {
    const seq = await this.fresh();
    const ids: number[] = [];
    for await (const id of seq.evaluate([...promptIds], { temperature: 0, yieldEogToken: true })) {
      ids.push(id);
      if (ids.length === n) break;
    }
    return ids;
  }

  async dispose(): Promise<void> {
    this.seq?.dispose();
    await this.ctx.dispose();
    await this.model.dispose();
  }
}
