// bench/train: load a model with NF4 + double quantization and run training steps (or decode
// tokens), reporting tokens/s, achieved GFLOP/s (bench/flops.ts), peak RSS and backend memory.
// Run one configuration per process so peak RSS belongs to it alone:
//   node --import tsx bench/train.ts --model synthetic:stories15M --batch 4 --seq 256 --steps 4
//     [--threads N] [--dropout P] [--lora-r R] [--dora] [--checkpointing] [--page-weights] [--decode 64]
//     [--backend wasm|webgpu] [--profile] [--json]
// --dora: PEFT's DoRA adapters; tokens/s only (bench/flops.ts counts no DoRA work, so no GFLOP/s).
// --profile with --data is refused (the profile step runs on random full rows).
//     [--data FILE --tokenizer DIR [--packing] [--dump-batches OUT.json]]
// The first step is a warm-up (JIT, first touch of memory, shader compiles). WASM: tokens/s of the
// median later step (a shared machine slows single steps). WebGPU: a step only enqueues most of
// its work, so tokens/s is the later steps' wall time ending in a flush.
// --profile (WASM only): one more step after the timed ones, every Backend call timed
// (bench/profile.ts), printed as a table of kernel families; WebGPU is refused (see there).
// Without --page-weights, base layers are paged when the run would not fit the backend, by the
// same decision as the CLI (memory.ts autoPageReason).
// --data FILE --tokenizer DIR: real examples (batched as the CLI does: grouped order, seed 0;
// --packing packs them into rows of --seq) instead of random full rows. One warm-up step, then
// one epoch's worth of micro-batches timed (--steps ignored); reports the positions (B·T) and
// the example tokens of a whole epoch, hence the share of padding, and both per second.
// --dump-batches OUT.json: the micro-batches the run consumed, in order (the warm-up's first), as
// {"vocab_size", "batches": [{"B", "T", "ids", "targets", "tokens"}]}, for bench/torch_lora.py
// --batches to run the yardstick on the very same token batches.
import type { Backend } from '../src/backend/backend.ts';
import { createBackend } from '../src/backend/index.ts';
import { enableRelaxedSimd } from '../src/backend/wasm/node-flags.ts';
import { wasmBackendInfo } from '../src/backend/wasm/index.ts';
import { createWebGpuBackend, describeAdapter } from '../src/backend/webgpu/index.ts';
import { dawnGpu } from '../src/backend/webgpu/dawn.ts';
import { nodeGc } from '../src/io/node.ts';
import { openModelPath } from '../src/io/node-model.ts';
import { loadModel } from '../src/model/load.ts';
import { LoraAdapters, DEFAULT_LORA } from '../src/model/lora.ts';
import { autoPageReason, backendCapacity, estimateTrainingMemory } from '../src/model/memory.ts';
import { Trainer, TRAIN_DEFAULTS, type MicroBatchSource } from '../src/train/trainer.ts';
import { batcherFor, loadDataset, type Batch, type Batcher } from '../src/data/index.ts';
import { FileSource } from '../src/io/node.ts';
import { loadTokenizerPath } from '../src/cli/common.ts';
import { generate } from '../src/generate/generate.ts';
import { SampleRng } from '../src/generate/sample.ts';
import type { MicroBatch } from '../src/train/step.ts';
import { trainStepFlops, type StepFlops } from './flops.ts';
import { KernelProfile } from './profile.ts';
import { printTable } from './util.ts';
import { writeFileSync } from 'node:fs';

export interface TrainBenchResult {
  model: string; seq: number; batch: number; checkpointing: boolean; pageWeights: boolean; threads: number; loraRank: number; loraDropout: number; dora: boolean;
  /** why the layers were paged without --page-weights (null: not paged by itself) */
  autoPaged: string | null;
  loadSeconds: number; loadPeakRssBytes: number; stepSeconds: number[]; trainTokensPerS: number | null;
  decodeTokensPerS: number | null; peakRssBytes: number; backendPeakBytes: number; backend: string;
  /** the WASM kernel build that ran (simd-mt, relaxed-mt, …) and whether it has relaxed SIMD; null on WebGPU */
  wasmVariant: string | null; relaxedSimd: boolean | null;
  /** the WebGPU adapter ("lavapipe", a GPU's name) and whether it is a CPU emulation; null on WASM */
  adapter: { name: string; cpu: boolean; info: Record<string, string> } | null;
  /** FLOPs of one step counted from its GEMMs (bench/flops.ts), and what trainTokensPerS achieves */
  stepFlops: StepFlops; trainGflops: number | null;
  /** --profile: one step's time per kernel family (WASM) */
  profile: ReturnType<KernelProfile['table']> & { stepSeconds: number } | null;
  /** --data: the real examples' run (trainTokensPerS is then positions/s and trainGflops null) */
  data: DataBenchResult | null;
}

export interface DataBenchResult {
  file: string; packing: boolean; examples: number;
  /** one epoch: micro-batches, positions B·T summed, example tokens in them, padding share 1 − tokens/positions */
  epochBatches: number; epochPositions: number; epochTokens: number; padding: number;
  /** the timed steps (one epoch's worth after the warm-up): seconds, positions/s, example tokens/s */
  timedSteps: number; seconds: number; positionsPerS: number; tokensPerS: number;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

/**
 * The backend to bench: WASM with `threads`, or WebGPU through Dawn on the high-performance
 * adapter (an error that says why when there is none), with what that adapter is.
 */
async function benchBackend(kind: 'wasm' | 'webgpu', threads?: number): Promise<{ be: Backend; adapter: TrainBenchResult['adapter'] }> {
  if (kind === 'wasm') return { be: await createBackend({ prefer: 'wasm', threads }), adapter: null };
  const gpu = await dawnGpu({ quiet: true });
  if (!gpu) throw new Error('--backend webgpu: the optional `webgpu` package (Dawn) is not installed (npm ci installs it).');
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('--backend webgpu: Dawn found no WebGPU adapter (no Vulkan driver for a GPU, nor lavapipe).');
  const ai = (adapter as { info?: GPUAdapterInfo }).info;
  const info: Record<string, string> = {};
  for (const k of ['vendor', 'architecture', 'device', 'description'] as const) if (ai?.[k]) info[k] = ai[k];
  return { be: await createWebGpuBackend({ gpu, adapter }), adapter: { ...describeAdapter(adapter), info } };
}

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
// as the Node entry points do (src/node.ts, the CLI): relaxed SIMD on unless --simd128 asks for the
// plain build (what engines without relaxed SIMD run)
if (!flag('simd128')) enableRelaxedSimd();
const peakRss = () => process.resourceUsage().maxRSS * 1024;

/** Random tokens, a full batch of scored targets: the cost of a real batch of the same shape. */
export class RandomBatches implements MicroBatchSource {
  private rng = new SampleRng(1);
  constructor(private readonly B: number, private readonly T: number, private readonly V: number) {}
  next(): MicroBatch {
    const n = this.B * this.T, ids = new Int32Array(n), targets = new Int32Array(n);
    for (let i = 0; i < n; i++) ids[i] = Math.floor(this.rng.next() * this.V);
    for (let i = 0; i < n; i++) targets[i] = (i + 1) % this.T === 0 ? -100 : ids[i + 1]!;
    return { ids, targets, B: this.B, T: this.T };
  }
  state(): unknown { return null; }
  restore(): void {}
}

export interface TrainBenchOptions {
  model: string; seq: number; batch: number; steps: number; checkpointing: boolean; pageWeights: boolean;
  threads?: number; decode?: number; loraRank?: number; loraDropout?: number; backend?: 'wasm' | 'webgpu'; profile?: boolean;
  /** DoRA adapters (PEFT's use_dora) instead of LoRA */
  dora?: boolean;
  /** real examples (a dataset file and the tokenizer directory), packed or not */
  data?: string; tokenizer?: string; packing?: boolean;
  /** --data: write the consumed micro-batches here (bench/torch_lora.py --batches) */
  dumpBatches?: string;
}

/** Example tokens in a batch (its positions minus the padding). */
const tokensOf = (b: Batch, lengths: number[], seq: number) => b.indices.reduce((s, i) => s + Math.min(lengths[i]!, seq), 0);

/** --data: the batcher of the run and one epoch's positions and example tokens (from a twin batcher). */
async function dataBatcher(o: TrainBenchOptions, vocabSize: number): Promise<{ batcher: Batcher; lengths: number[]; epoch: Pick<DataBenchResult, 'examples' | 'epochBatches' | 'epochPositions' | 'epochTokens'> }> {
  if (!o.tokenizer) throw new Error('--data needs --tokenizer DIR (a directory with tokenizer.json or tokenizer.model)');
  const tok = await loadTokenizerPath(o.tokenizer);
  const src = await FileSource.open(o.data!);
  const ds = await loadDataset(src, { tokenizer: tok, vocabSize, maxLen: o.seq }).finally(() => src.close());
  const make = () => batcherFor(ds, tok, { batchSize: o.batch, order: 'grouped', seed: 0, packing: o.packing ? o.seq : 0 });
  const lengths = ds.examples.map((e) => e.inputIds.length);
  const twin = make();
  let epochPositions = 0, epochTokens = 0;
  for (let i = 0; i < twin.batchesPerEpoch; i++) {
    const b = twin.next();
    epochPositions += b.B * b.T;
    epochTokens += tokensOf(b, lengths, o.seq);
  }
  return { batcher: make(), lengths, epoch: { examples: ds.examples.length, epochBatches: twin.batchesPerEpoch, epochPositions, epochTokens } };
}

export async function benchTrain(o: TrainBenchOptions): Promise<TrainBenchResult> {
  const { be: raw, adapter } = await benchBackend(o.backend ?? 'wasm', o.threads);
  const src = await openModelPath(o.model);
  // the profiler's proxy before loading: it refuses WebGPU before any work
  if (o.profile && o.data) throw new Error('--profile times one step of random full rows: drop --data (or --profile)');
  const prof = o.profile ? new KernelProfile(src.config.vocabSize) : null;
  const backend = prof ? prof.wrap(raw) : raw;
  const r = o.loraRank ?? DEFAULT_LORA.r;
  const lcfg = { ...DEFAULT_LORA, r, alpha: 2 * r, dropout: o.loraDropout ?? DEFAULT_LORA.dropout, useDora: o.dora ?? false };
  const wasmInfo = raw.name === 'wasm' ? wasmBackendInfo(raw) : null;
  const threads = wasmInfo?.threads ?? 0;
  const autoPaged = o.pageWeights ? null : autoPageReason(estimateTrainingMemory(src.config, {
    quant: 'nf4', doubleQuant: true, blocksize: 64, lora: lcfg, batch: o.batch, seqLen: o.seq,
    checkpointing: o.checkpointing, pageWeights: false, optimizer: TRAIN_DEFAULTS.optimizer, threads: Math.max(1, threads),
  }), backendCapacity(raw));
  const pageWeights = o.pageWeights || autoPaged !== null;
  const t0 = performance.now();
  const model = await loadModel(src, backend, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: Math.max(o.seq, (o.decode ?? 0) + 8), pageWeights, collect: nodeGc });
  const loadSeconds = (performance.now() - t0) / 1000;
  const loadPeakRssBytes = peakRss();
  const lora = new LoraAdapters(backend, model.config, lcfg, o.steps > 0);
  const rng = new SampleRng(2);
  lora.initPeft(() => rng.next());
  const stepSeconds: number[] = [];
  let trainTokensPerS: number | null = null, profile: TrainBenchResult['profile'] = null;
  const stepFlops = trainStepFlops(model.config, o.batch, o.seq, r, o.checkpointing);
  let data: DataBenchResult | null = null;
  if (o.data) {
    const { batcher, lengths, epoch } = await dataBatcher(o, model.config.vocabSize);
    let positions = 0, tokens = 0, counting = false;
    const consumed: Array<{ B: number; T: number; ids: number[]; targets: number[]; tokens: number }> = [];
    const source: MicroBatchSource = {
      next: () => {
        const b = batcher.next();
        if (counting) { positions += b.B * b.T; tokens += tokensOf(b, lengths, o.seq); }
        if (o.dumpBatches) {
          if (b.docStart) throw new Error('--dump-batches: packed batches carry per-example attention, which bench/torch_lora.py does not run');
          consumed.push({ B: b.B, T: b.T, ids: Array.from(b.ids), targets: Array.from(b.targets), tokens: tokensOf(b, lengths, o.seq) });
        }
        return b;
      },
      state: () => batcher.state(),
      restore: (st) => batcher.restore(st),
    };
    const trainer = new Trainer(model, lora, source, {
      ...TRAIN_DEFAULTS, batchSize: o.batch, seqLen: o.seq, totalSteps: 1 + epoch.epochBatches, checkpointing: o.checkpointing, warmupRatio: 0, packing: o.packing ?? false,
    });
    stepSeconds.push((await trainer.trainStep()).seconds); // warm-up
    await backend.flush();
    counting = true;
    const t = performance.now();
    for (let s = 0; s < epoch.epochBatches; s++) stepSeconds.push((await trainer.trainStep()).seconds);
    await backend.flush();
    const seconds = (performance.now() - t) / 1000;
    trainer.free();
    if (o.dumpBatches) writeFileSync(o.dumpBatches, JSON.stringify({ vocab_size: model.config.vocabSize, batches: consumed }));
    data = {
      file: o.data, packing: o.packing ?? false, ...epoch, padding: 1 - epoch.epochTokens / epoch.epochPositions,
      timedSteps: epoch.epochBatches, seconds, positionsPerS: positions / seconds, tokensPerS: tokens / seconds,
    };
    trainTokensPerS = data.positionsPerS;
  } else if (o.steps > 0) {
    const trainer = new Trainer(model, lora, new RandomBatches(o.batch, o.seq, model.config.vocabSize), {
      ...TRAIN_DEFAULTS, batchSize: o.batch, seqLen: o.seq, totalSteps: o.steps + (prof ? 1 : 0), checkpointing: o.checkpointing, warmupRatio: 0,
    });
    let tWarm = 0;
    for (let s = 0; s < o.steps; s++) {
      stepSeconds.push((await trainer.trainStep()).seconds);
      if (s === 0) tWarm = performance.now();
    }
    await backend.flush();
    // the first step includes one-time costs (JIT, first touch of memory, pipeline compiles): report the rest
    if (o.steps === 1) trainTokensPerS = (o.batch * o.seq) / stepSeconds[0]!;
    else if (raw.name === 'webgpu') trainTokensPerS = (o.batch * o.seq * (o.steps - 1)) / ((performance.now() - tWarm) / 1000);
    else trainTokensPerS = (o.batch * o.seq) / median(stepSeconds.slice(1));
    if (prof) {
      prof.recording = true;
      const t = performance.now();
      await trainer.trainStep();
      const sec = (performance.now() - t) / 1000;
      prof.recording = false;
      profile = { ...prof.table(sec), stepSeconds: sec };
    }
    trainer.free();
  }
  let decodeTokensPerS: number | null = null;
  if (o.decode) {
    const t1 = performance.now();
    const res = await generate(model, [1], { maxNewTokens: o.decode, stopIds: [] });
    decodeTokensPerS = res.outputIds.length / ((performance.now() - t1) / 1000);
  }
  const out: TrainBenchResult = {
    model: o.model, seq: o.seq, batch: o.batch, checkpointing: o.checkpointing, pageWeights, autoPaged, threads, loraRank: r, loraDropout: lcfg.dropout, dora: lcfg.useDora,
    loadSeconds, loadPeakRssBytes, stepSeconds, trainTokensPerS, decodeTokensPerS, peakRssBytes: peakRss(), backendPeakBytes: backend.memory().peakBytes, backend: raw.name,
    wasmVariant: wasmInfo?.variant ?? null, relaxedSimd: wasmInfo?.relaxedSimd ?? null, adapter, stepFlops,
    trainGflops: trainTokensPerS === null || data || o.dora ? null : (stepFlops.total * trainTokensPerS) / (o.batch * o.seq) / 1e9, profile, data,
  };
  await src.close();
  await raw.destroy();
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const backend = arg('backend', 'wasm');
  if (backend !== 'wasm' && backend !== 'webgpu') throw new Error(`--backend ${backend}: expected wasm or webgpu`);
  const res = await benchTrain({
    model: arg('model', 'synthetic:stories15M')!, seq: Number(arg('seq', '256')), batch: Number(arg('batch', '1')), steps: Number(arg('steps', '3')),
    checkpointing: flag('checkpointing'), pageWeights: flag('page-weights'), threads: arg('threads') ? Number(arg('threads')) : undefined,
    decode: arg('decode') ? Number(arg('decode')) : undefined, loraRank: arg('lora-r') ? Number(arg('lora-r')) : undefined,
    loraDropout: arg('dropout') ? Number(arg('dropout')) : undefined, backend, profile: flag('profile'),
    data: arg('data'), tokenizer: arg('tokenizer'), packing: flag('packing'), dumpBatches: arg('dump-batches'), dora: flag('dora'),
  });
  if (flag('json')) console.log(JSON.stringify(res));
  else {
    const { profile, ...rest } = res;
    console.log(rest);
    if (profile) {
      printTable(`profile: one step of ${res.model}, B ${res.batch}, T ${res.seq}, ${res.backend} ${res.threads} thread(s), LoRA r ${res.loraRank} dropout ${res.loraDropout}; wall time inside each Backend call`,
        profile.header, profile.rows);
      console.log(`FLOPs counted from the calls ${(profile.kernelFlops / 1e9).toFixed(2)} G; bench/flops.ts's count of the step ${(res.stepFlops.total / 1e9).toFixed(2)} G`);
    }
  }
  process.exit(0);
}
