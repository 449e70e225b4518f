// The demo, as a library function so the Node CLI and the browser page run the same thing:
// fine-tune stories260K (NF4 + double quant, LoRA on every linear layer) on the demo stories
// and show greedy generations before and after.
import type { Backend } from '../backend/backend.ts';
import { batcherFor, loadDataset } from '../data/index.ts';
import { MemorySource } from '../io/source.ts';
import type { WeightSource } from '../io/weights.ts';
import { generate } from '../generate/generate.ts';
import { SampleRng } from '../generate/sample.ts';
import type { LlamaModel } from '../model/llama.ts';
import { loadModel } from '../model/load.ts';
import { DEFAULT_LORA, LoraAdapters } from '../model/lora.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { Trainer, TRAIN_DEFAULTS, type StepRecord } from '../train/trainer.ts';
import { demoJsonl } from './data.ts';

export const DEMO_PROMPTS = ['Once upon a time', 'One day, a little'];

export interface DemoOptions {
  steps?: number;
  onStep?: (rec: StepRecord, total: number) => void;
  onLog?: (line: string) => void;
}

export interface DemoResult {
  before: string[];
  after: string[];
  firstLoss: number;
  lastLoss: number;
  model: LlamaModel;
  lora: LoraAdapters;
}

export async function runDemo(source: WeightSource, tok: Tokenizer, backend: Backend, opts: DemoOptions = {}): Promise<DemoResult> {
  const log = opts.onLog ?? (() => {});
  const steps = opts.steps ?? 80;
  const model = await loadModel(source, backend, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: 256 });
  const ds = await loadDataset(new MemorySource('demo-stories.jsonl', demoJsonl(256)), { tokenizer: tok, vocabSize: model.config.vocabSize, maxLen: 256 });
  log(`demo data: ${ds.examples.length} stories about Captain Whiskers, the pirate cat (${ds.tokens} tokens)`);
  const show = async (lora: LoraAdapters | null) => {
    const out: string[] = [];
    for (const p of DEMO_PROMPTS) {
      const ids = tok.encode(p);
      const r = await generate(model, ids, { maxNewTokens: 80, adapters: lora });
      out.push(tok.decode([...ids, ...r.outputIds]).replace(/\n/g, ' '));
    }
    return out;
  };
  const before = await show(null);
  const lora = new LoraAdapters(backend, model.config, { ...DEFAULT_LORA }, true);
  const rng = new SampleRng(1);
  lora.initPeft(() => rng.next());
  const batcher = batcherFor(ds, tok, { batchSize: 8, order: 'grouped', seed: 0 });
  const trainer = new Trainer(model, lora, batcher, { ...TRAIN_DEFAULTS, lr: 3e-3, warmupRatio: 0, batchSize: 8, seqLen: 256, totalSteps: steps, seed: 0 });
  let firstLoss = NaN, lastLoss = NaN;
  for (let s = 0; s < steps; s++) {
    const rec = await trainer.trainStep();
    if (s === 0) firstLoss = rec.loss;
    lastLoss = rec.loss;
    opts.onStep?.(rec, steps);
  }
  trainer.free();
  const after = await show(lora);
  return { before, after, firstLoss, lastLoss, model, lora };
}
