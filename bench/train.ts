// bench/train: load a model with NF4 + double quantization and run training steps (or decode
// tokens), reporting tokens/s, peak RSS and backend memory. Run one configuration per process
// so peak RSS belongs to it alone:
//   node --import tsx bench/train.ts --model synthetic:stories15M --seq 256 --steps 3 [--checkpointing] [--page-weights] [--decode 64] [--json]
// Without --page-weights, base layers are paged when the run would not fit the backend, by the
// same decision as the CLI (memory.ts autoPageReason).
import { createBackend } from '../src/backend/index.ts';
import { wasmBackendInfo } from '../src/backend/wasm/index.ts';
import { nodeGc, openModelPath } from '../src/io/node.ts';
import { loadModel } from '../src/model/load.ts';
import { LoraAdapters, DEFAULT_LORA } from '../src/model/lora.ts';
import { autoPageReason, backendCapacity, estimateTrainingMemory } from '../src/model/memory.ts';
import { Trainer, TRAIN_DEFAULTS, type MicroBatchSource } from '../src/train/trainer.ts';
import { generate } from '../src/generate/generate.ts';
import { SampleRng } from '../src/generate/sample.ts';
import type { MicroBatch } from '../src/train/step.ts';

export interface TrainBenchResult {
  model: string; seq: number; batch: number; checkpointing: boolean; pageWeights: boolean; threads: number; loraRank: number;
  /** why the layers were paged without --page-weights (null: not paged by itself) */
  autoPaged: string | null;
  loadSeconds: number; loadPeakRssBytes: number; stepSeconds: number[]; trainTokensPerS: number | null;
  decodeTokensPerS: number | null; peakRssBytes: number; backendPeakBytes: number; backend: string;
}

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
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

export async function benchTrain(o: { model: string; seq: number; batch: number; steps: number; checkpointing: boolean; pageWeights: boolean; threads?: number; decode?: number; loraRank?: number }): Promise<TrainBenchResult> {
  const backend = await createBackend({ prefer: 'wasm', threads: o.threads });
  const src = await openModelPath(o.model);
  const r = o.loraRank ?? DEFAULT_LORA.r;
  const threads = wasmBackendInfo(backend).threads;
  const autoPaged = o.pageWeights ? null : autoPageReason(estimateTrainingMemory(src.config, {
    quant: 'nf4', doubleQuant: true, blocksize: 64, lora: { ...DEFAULT_LORA, r, alpha: 2 * r }, batch: o.batch, seqLen: o.seq,
    checkpointing: o.checkpointing, pageWeights: false, optimizer: TRAIN_DEFAULTS.optimizer, threads,
  }), backendCapacity(backend));
  const pageWeights = o.pageWeights || autoPaged !== null;
  const t0 = performance.now();
  const model = await loadModel(src, backend, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: Math.max(o.seq, (o.decode ?? 0) + 8), pageWeights, collect: nodeGc });
  const loadSeconds = (performance.now() - t0) / 1000;
  const loadPeakRssBytes = peakRss();
  const lora = new LoraAdapters(backend, model.config, { ...DEFAULT_LORA, r, alpha: 2 * r }, o.steps > 0);
  const rng = new SampleRng(2);
  lora.initPeft(() => rng.next());
  const stepSeconds: number[] = [];
  let trainTokensPerS: number | null = null;
  if (o.steps > 0) {
    const trainer = new Trainer(model, lora, new RandomBatches(o.batch, o.seq, model.config.vocabSize), {
      ...TRAIN_DEFAULTS, batchSize: o.batch, seqLen: o.seq, totalSteps: o.steps, checkpointing: o.checkpointing, warmupRatio: 0,
    });
    for (let s = 0; s < o.steps; s++) stepSeconds.push((await trainer.trainStep()).seconds);
    // the first step includes one-time costs (JIT, first touch of memory): report the rest
    const timed = stepSeconds.length > 1 ? stepSeconds.slice(1) : stepSeconds;
    trainTokensPerS = (o.batch * o.seq) / (timed.reduce((a, b) => a + b, 0) / timed.length);
    trainer.free();
  }
  let decodeTokensPerS: number | null = null;
  if (o.decode) {
    const t1 = performance.now();
    const res = await generate(model, [1], { maxNewTokens: o.decode, stopIds: [] });
    decodeTokensPerS = res.outputIds.length / ((performance.now() - t1) / 1000);
  }
  const out: TrainBenchResult = {
    model: o.model, seq: o.seq, batch: o.batch, checkpointing: o.checkpointing, pageWeights, autoPaged, threads, loraRank: r,
    loadSeconds, loadPeakRssBytes, stepSeconds, trainTokensPerS, decodeTokensPerS, peakRssBytes: peakRss(), backendPeakBytes: backend.memory().peakBytes, backend: backend.name,
  };
  await src.close();
  await backend.destroy();
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const res = await benchTrain({
    model: arg('model', 'synthetic:stories15M')!, seq: Number(arg('seq', '256')), batch: Number(arg('batch', '1')), steps: Number(arg('steps', '3')),
    checkpointing: flag('checkpointing'), pageWeights: flag('page-weights'), threads: arg('threads') ? Number(arg('threads')) : undefined,
    decode: arg('decode') ? Number(arg('decode')) : undefined, loraRank: arg('lora-r') ? Number(arg('lora-r')) : undefined,
  });
  if (flag('json')) console.log(JSON.stringify(res));
  else console.log(res);
  process.exit(0);
}
