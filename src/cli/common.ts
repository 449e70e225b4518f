// What every model-loading command shares: the model flags, opening the model and its
// tokenizer, choosing the backend, loading with a progress line.
import { stat, readFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import type { Backend } from '../backend/backend.ts';
import { createBackend, type BackendChoice } from '../backend/index.ts';
import { wasmBackendInfo } from '../backend/wasm/index.ts';
import { dawnGpu } from '../backend/webgpu/dawn.ts';
import { WebqloraError } from '../errors.ts';
import { FileSource, fsReason, NodeDirSource, nodeGc } from '../io/node.ts';
import { openModelPath } from '../io/node-model.ts';
import type { WeightSource } from '../io/weights.ts';
import type { LlamaModel } from '../model/llama.ts';
import type { ModelConfig } from '../model/config.ts';
import type { LoraAdapters, LoraConfig } from '../model/lora.ts';
import { autoPageReason, backendCapacity, type BackendCapacity, type MemoryEstimate } from '../model/memory.ts';
import { ADAPTER_CONFIG, loadAdapter, parseAdapterConfig } from '../model/peft.ts';
import { ggufAdapterConfig, readGgufAdapter } from '../model/gguf-adapter.ts';
import { readGguf } from '../io/gguf.ts';
import { loadModel, MAX_POSITIONS, ownsSource } from '../model/load.ts';
import type { QuantMode } from '../quant/types.ts';
import { loadTokenizerFromDir, tokenizerFromJson, tokenizerFromLlama2cBin, tokenizerFromGguf, tokenizerFromSentencePiece, tokenizerFromVocab } from '../tokenizer/load.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { bool, choice, given, optNum, required, str, type Parsed } from './args.ts';
import { fmtBytes, Progress } from './progress.ts';

export { MODEL_FLAGS } from './flags.ts';

export interface QuantFlags {
  quant: QuantMode;
  doubleQuant: boolean;
  blocksize: number;
}

export function quantFlags(p: Parsed): QuantFlags {
  return {
    quant: choice<QuantMode>(p, 'quant'),
    doubleQuant: bool(p, 'double-quant'),
    blocksize: Number(choice(p, 'blocksize')),
  };
}

export async function backendFrom(p: Parsed, progress: Progress): Promise<Backend> {
  const prefer = choice<BackendChoice>(p, 'backend');
  const threads = optNum(p, 'threads');
  if (threads !== undefined && prefer === 'webgpu') throw new WebqloraError('--threads sets the WASM backend\'s threads and does nothing with --backend webgpu (drop one of them).');
  // Dawn (the optional `webgpu` package) is loaded only when WebGPU may be chosen (for auto, only
  // when there is a real GPU); what it prints while it looks for adapters (limit warnings) is
  // shown only with --verbose
  const quiet = !(p.flags.verbose && bool(p, 'verbose'));
  const gpu = prefer === 'wasm' ? null : await dawnGpu({ quiet, probeFirst: prefer === 'auto' });
  const backend = await createBackend({ prefer, threads, gpu, onInfo: (m) => progress.log(m) });
  if (threads !== undefined && backend.name === 'webgpu') progress.log(`--threads ${threads} is unused: auto chose WebGPU (give --backend wasm to run on ${threads} threads)`);
  return backend;
}

/** --seq-len of train and eval when not given: 512, or the model's context when that is shorter. */
export const DEFAULT_SEQ_LEN = 512;

/** The positions a model runs (its context; RoPE tables stop at MAX_POSITIONS). */
export function contextOf(c: ModelConfig): number {
  return Math.min(c.maxPositionEmbeddings, MAX_POSITIONS);
}

export function defaultSeqLen(c: ModelConfig): number {
  return Math.min(DEFAULT_SEQ_LEN, contextOf(c));
}

/** What a command loads the model for: its sequence length and the memory of its run. */
export interface RunPlan {
  /** train, eval: --seq-len, or null for defaultSeqLen; generate: absent (the whole context) */
  seqLen?: number | null;
  /**
   * Backend memory of the run on this model (seqLen resolved; undefined for generate), with or
   * without paged layers: decides whether layers are paged when --page-weights is not given.
   */
  memory: (c: ModelConfig, seqLen: number | undefined, pageWeights: boolean) => MemoryEstimate;
  /** the backend's limit; default backendCapacity(backend) (tests give a small one) */
  capacity?: BackendCapacity | null;
}

/** Threads of the WASM backend (its per-thread scratch is part of a run's memory), else 1. */
export function backendThreads(backend: Backend): number {
  return backend.name === 'wasm' ? wasmBackendInfo(backend).threads : 1;
}

/**
 * Loads the model given by --model with the quantization flags (showing progress) and its
 * tokenizer. The sequence length (the plan's, or its default) is checked against the model's
 * context before any weight is read; base layers are paged when --page-weights says so or when
 * the run would not fit the backend otherwise (said in one line). The model file is closed
 * before this returns, whatever happens — except where the model streams its input embedding
 * from it (paged, untied, a format that reads rows): then model.free() closes it.
 */
export async function loadModelFrom(p: Parsed, backend: Backend, progress: Progress, plan?: RunPlan): Promise<{ model: LlamaModel; tok: Tokenizer | null; spec: string; seqLen: number | undefined }> {
  const spec = required(p, 'model');
  const q = quantFlags(p);
  const source = await openModelPath(spec);
  let kept = false;
  try {
    const context = contextOf(source.config);
    const seqLen = plan?.seqLen === undefined ? undefined : plan.seqLen ?? defaultSeqLen(source.config);
    if (seqLen !== undefined && seqLen > context) throw new WebqloraError(`--seq-len ${seqLen} exceeds the model's context of ${context} positions.`);
    let pageWeights = bool(p, 'page-weights');
    if (!pageWeights && plan) {
      const why = autoPageReason(plan.memory(source.config, seqLen, false), plan.capacity !== undefined ? plan.capacity : backendCapacity(backend));
      if (why && given(p, 'page-weights')) throw new WebqloraError(`--no-page-weights: ${why.replace(/^[^:]*: /, '')} (drop --no-page-weights to page base layers from host memory).`);
      if (why) {
        pageWeights = true;
        progress.log(why);
      }
    }
    const t0 = performance.now();
    const model = await loadModel(source, backend, {
      quant: q.quant, doubleQuant: q.doubleQuant, blocksize: q.blocksize, maxPositions: seqLen, pageWeights, collect: nodeGc,
      onProgress: (done, total, name) => progress.update(`loading ${basename(spec)} [${done}/${total}] ${name}`),
    });
    const mem = backend.memory();
    const qdesc = model.quant.mode === 'none' ? 'f32' : `${model.quant.mode}${model.quant.doubleQuant ? '+dq' : ''} bs${model.quant.blocksize}`;
    const paged = model.pager ? `, base layers paged from ${fmtBytes(model.pager.hostBytes)} of host memory` : '';
    progress.done(`loaded ${spec} (${source.format}, ${qdesc}) in ${((performance.now() - t0) / 1000).toFixed(1)}s, ${fmtBytes(mem.liveBytes)} in ${backend.name} memory${paged}`);
    const found = await tokenizerFor(p, spec, source);
    if (!found.tok) progress.log(`no tokenizer: ${found.why}; text needs --tokenizer PATH (tokenizer.json, tokenizer.model or a .gguf vocabulary)`);
    // a streamed embedding reads its rows from the file per batch: the model closes it when freed
    kept = ownsSource(model);
    return { model, tok: found.tok, spec, seqLen };
  } finally {
    if (!kept) await source.close();
  }
}

/** The files a model directory's tokenizer is read from, in order (tokenizer/load.ts). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer.model'] as const;

/**
 * --tokenizer PATH, else the model directory's tokenizer, else the model file's own vocabulary;
 * without one, `why` says where it looked.
 */
export async function tokenizerFor(p: Parsed, spec: string, source: WeightSource): Promise<{ tok: Tokenizer | null; why: string }> {
  const explicit = str(p, 'tokenizer');
  if (explicit) return { tok: await loadTokenizerPath(explicit), why: '' };
  const st = spec.startsWith('synthetic:') ? null : await stat(spec).catch(() => null);
  if (st?.isDirectory()) {
    const t = await withDir(spec, loadTokenizerFromDir);
    if (t) return { tok: t, why: '' };
  }
  if (source.vocab) return { tok: tokenizerFromVocab(source.vocab), why: '' };
  if (spec.startsWith('synthetic:')) return { tok: null, why: `${spec} is a synthetic model, which has none` };
  if (st?.isDirectory()) return { tok: null, why: `${spec} has neither ${TOKENIZER_FILES.join(' nor ')}` };
  return { tok: null, why: `${spec} carries no vocabulary` };
}

export async function loadTokenizerPath(path: string): Promise<Tokenizer> {
  const st = await stat(path).catch((e) => { throw new WebqloraError(`${path}: ${fsReason(e)}.`); });
  if (st.isDirectory()) {
    const dir = new NodeDirSource(path);
    try {
      const t = await loadTokenizerFromDir(dir);
      if (!t) throw new WebqloraError(`${path}: no tokenizer.json or tokenizer.model in this directory.`);
      return t;
    } finally {
      await dir.close();
    }
  }
  const ext = extname(path);
  if (ext === '.json') return tokenizerFromJson(await readFile(path, 'utf8'), null, path);
  if (ext === '.model') return tokenizerFromSentencePiece(new Uint8Array(await readFile(path)), null, path);
  if (ext === '.bin') return tokenizerFromLlama2cBin(new Uint8Array(await readFile(path)), path);
  if (ext === '.gguf') {
    // only the metadata: the vocabulary (and chat template) of any GGUF, a vocab-only one too
    const file = await FileSource.open(path);
    try {
      return await tokenizerFromGguf(file);
    } finally {
      await file.close();
    }
  }
  throw new WebqloraError(`${path}: unknown tokenizer file (expected tokenizer.json, a SentencePiece .model, a llama2.c tokenizer.bin or a .gguf with a vocabulary).`);
}

/**
 * The path flags (--adapter, --tokenizer, …) name something that exists: checked before the model
 * loads, so a typo costs no load time.
 */
export async function checkPaths(p: Parsed, names: string[]): Promise<void> {
  for (const n of names) {
    const v = str(p, n);
    if (v === undefined || (n === 'valid' && v === 'none')) continue;
    await stat(v).catch((e) => { throw new WebqloraError(`${v}: ${fsReason(e)} (--${n}).`); });
  }
}

/** Runs `fn` on a directory and closes every file it opened, whatever happens. */
export async function withDir<T>(path: string, fn: (dir: NodeDirSource) => Promise<T>): Promise<T> {
  const dir = new NodeDirSource(path);
  try {
    return await fn(dir);
  } finally {
    await dir.close();
  }
}

/**
 * The LoRA settings of an adapter (a PEFT directory's adapter_config.json, or a llama.cpp LoRA
 * `.gguf`'s header and tensor shapes, which need the model's config), read before the model's
 * weights load: they size the run's memory. null when they cannot be read, which loading the
 * adapter then reports.
 */
export async function adapterConfigAt(path: string): Promise<(c: ModelConfig) => LoraConfig | null> {
  if (extname(path).toLowerCase() === '.gguf') {
    const f = await FileSource.open(path).catch(() => null);
    const file = f ? await readGguf(f).catch(() => null).finally(() => f.close()) : null;
    return (c) => {
      try {
        return file ? ggufAdapterConfig(file, path, c) : null;
      } catch {
        return null;
      }
    };
  }
  const file = join(path, ADAPTER_CONFIG);
  const config = await readFile(file, 'utf8').then((t) => parseAdapterConfig(t, file)).catch(() => null);
  return () => config;
}

/** A PEFT adapter directory, or a llama.cpp LoRA adapter `.gguf`, loaded onto the backend. */
export async function loadAdapterDir(path: string, backend: Backend, config: ModelConfig, opts: { withGrads?: boolean; dropout?: number } = {}): Promise<LoraAdapters> {
  if (extname(path).toLowerCase() === '.gguf') {
    const f = await FileSource.open(path);
    try {
      return await readGgufAdapter(f, backend, config, opts);
    } finally {
      await f.close();
    }
  }
  return withDir(path, (dir) => loadAdapter(dir, backend, config, opts));
}

export function jsonLine(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
