// webqlora train: QLoRA fine-tuning per DESIGN.md's contract. Library pieces: loadModel,
// loadTrainValid/batcherFor, LoraAdapters/loadAdapter, Trainer, saveCheckpoint/restoreCheckpoint,
// saveAdapter, evaluate. This file only wires flags, files and progress output.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { batcherFor, DEFAULT_EXAMPLE_OPTIONS, loadTrainValid, padIdFor } from '../../data/index.ts';
import { evalBatches } from '../../data/batch.ts';
import { WebqloraError } from '../../errors.ts';
import { evaluate } from '../../eval/evaluate.ts';
import { FileSource, NodeOutDir, removeStaleTemps } from '../../io/node.ts';
import { writeFileTo } from '../../io/source.ts';
import { SampleRng } from '../../generate/sample.ts';
import { checkLoraConfig, DEFAULT_LORA, describeTargets, LoraAdapters, parseTargets, type LoraConfig } from '../../model/lora.ts';
import { saveAdapter } from '../../model/peft.ts';
import { readTrainerState, restoreCheckpoint, saveCheckpoint, type TrainerState } from '../../train/checkpoint.ts';
import { lossCurveSvg } from '../../train/svg.ts';
import { Trainer, TRAIN_DEFAULTS, type OptimizerName, type StepRecord, type TrainOptions } from '../../train/trainer.ts';
import type { Schedule } from '../../train/schedule.ts';
import { bool, choice, num, parseFlags, required, str, type Parsed } from '../args.ts';
import { adapterConfigAt, backendFrom, backendThreads, jsonLine, loadAdapterDir, loadModelFrom, MODEL_FLAGS, quantFlags, withDir } from '../common.ts';
import { estimateTrainingMemory } from '../../model/memory.ts';
import { describeDataset, FORMATS } from '../data.ts';
import { fmtDuration, fmtBytes, Progress } from '../progress.ts';
import type { Command } from './index.ts';

const FLAGS = {
  ...MODEL_FLAGS,
  data: { type: 'string' }, valid: { type: 'string' }, out: { type: 'string' }, format: { type: 'string' },
  'lora-r': { type: 'string' }, 'lora-alpha': { type: 'string' }, 'lora-dropout': { type: 'string' }, target: { type: 'string' },
  'use-rslora': { type: 'boolean' }, 'init-adapter': { type: 'string' }, optimizer: { type: 'string' }, lr: { type: 'string' },
  schedule: { type: 'string' }, 'warmup-ratio': { type: 'string' }, 'max-grad-norm': { type: 'string' }, 'weight-decay': { type: 'string' },
  'batch-size': { type: 'string' }, 'grad-accum': { type: 'string' }, 'seq-len': { type: 'string' }, steps: { type: 'string' },
  epochs: { type: 'string' }, checkpointing: { type: 'boolean' }, 'save-every': { type: 'string' }, resume: { type: 'boolean' },
  'train-on-prompt': { type: 'boolean' }, seed: { type: 'string' },
  'source-max-len': { type: 'string' }, 'target-max-len': { type: 'string' },
} as const;

export const trainCommand: Command = {
  summary: 'QLoRA fine-tuning: a 4-bit base model, float32 LoRA adapters, PEFT output',
  async run(argv) {
    const p = parseFlags('train', argv, FLAGS);
    const res = await train(p);
    return res;
  },
};

/** Finds the newest checkpoint-N directory in `out` that has a trainer_state.json. */
async function latestCheckpoint(out: string): Promise<string | null> {
  let names: string[];
  try {
    names = await readdir(out);
  } catch {
    return null;
  }
  const steps = names.map((n) => /^checkpoint-(\d+)$/.exec(n)).filter((m): m is RegExpExecArray => !!m).map((m) => Number(m[1])).sort((a, b) => b - a);
  for (const s of steps) {
    const ok = await stat(join(out, `checkpoint-${s}`, 'trainer_state.json')).then(() => true, () => false);
    if (ok) return join(out, `checkpoint-${s}`);
  }
  return null;
}

function trainOptionsFrom(p: Parsed): Omit<TrainOptions, 'totalSteps'> {
  const cmd = 'train';
  const d = TRAIN_DEFAULTS;
  return {
    optimizer: choice<OptimizerName>(cmd, p, 'optimizer', ['adamw', 'paged-adamw', 'sgd'], d.optimizer),
    lr: num(cmd, p, 'lr', d.lr, { min: 0 }),
    schedule: choice<Schedule>(cmd, p, 'schedule', ['constant', 'cosine', 'linear'], d.schedule),
    warmupRatio: num(cmd, p, 'warmup-ratio', d.warmupRatio, { min: 0, max: 1 }),
    maxGradNorm: num(cmd, p, 'max-grad-norm', d.maxGradNorm, { min: 0 }),
    weightDecay: num(cmd, p, 'weight-decay', d.weightDecay, { min: 0 }),
    beta1: d.beta1, beta2: d.beta2, eps: d.eps,
    batchSize: num(cmd, p, 'batch-size', d.batchSize, { int: true, min: 1 }),
    gradAccum: num(cmd, p, 'grad-accum', d.gradAccum, { int: true, min: 1 }),
    seqLen: num(cmd, p, 'seq-len', d.seqLen, { int: true, min: 2 }),
    checkpointing: bool(p, 'checkpointing', d.checkpointing),
    seed: num(cmd, p, 'seed', d.seed, { int: true, min: 0 }),
  };
}

async function train(p: Parsed): Promise<number> {
  const cmd = 'train';
  const json = bool(p, 'json', false);
  const out = required(cmd, p, 'out');
  const dataPath = required(cmd, p, 'data');
  const progress = new Progress(process.stderr, json);

  // Resume: everything that shapes the run comes from the checkpoint.
  let resumeDir: string | null = null;
  let state: TrainerState | null = null;
  if (bool(p, 'resume', false)) {
    await removeStaleTemps(out);
    resumeDir = await latestCheckpoint(out);
    if (resumeDir) {
      state = await withDir(resumeDir, readTrainerState);
      progress.log(`resuming from ${resumeDir} (step ${state.step})`);
    } else {
      progress.log(`no complete checkpoint in ${out}: starting from the beginning`);
    }
  } else if (await latestCheckpoint(out) || (await stat(join(out, 'adapter_model.safetensors')).then(() => true, () => false))) {
    throw new WebqloraError(`${out} already holds a training run (use --resume to continue it, or choose another --out).`);
  }
  if (str(p, 'steps') !== undefined && str(p, 'epochs') !== undefined) throw new WebqloraError('webqlora train: give --steps or --epochs, not both.');

  // Every flag and input file is checked before the (possibly long) model load.
  const base = state ? state.options : { ...trainOptionsFrom(p), totalSteps: 0 };
  const initAdapter = str(p, 'init-adapter');
  const flagDropout = str(p, 'lora-dropout') !== undefined ? num(cmd, p, 'lora-dropout', 0, { min: 0, max: 0.99 }) : undefined;
  const freshLora: LoraConfig | null = state || initAdapter ? null : {
    r: num(cmd, p, 'lora-r', DEFAULT_LORA.r, { int: true, min: 1 }),
    alpha: num(cmd, p, 'lora-alpha', DEFAULT_LORA.alpha),
    dropout: flagDropout ?? DEFAULT_LORA.dropout,
    targets: parseTargets(str(p, 'target') ?? 'all-linear'),
    useRslora: bool(p, 'use-rslora', false),
  };
  if (freshLora) checkLoraConfig(freshLora, 'webqlora train');
  const saveEvery = num(cmd, p, 'save-every', 0, { int: true, min: 0 });
  const validPath = str(p, 'valid');
  const format = choice(cmd, p, 'format', FORMATS, 'auto');
  const dataOpts = {
    format, trainOnPrompt: bool(p, 'train-on-prompt', false), seed: base.seed, maxLen: base.seqLen,
    sourceMaxLen: num(cmd, p, 'source-max-len', DEFAULT_EXAMPLE_OPTIONS.sourceMaxLen, { int: true, min: 1 }),
    targetMaxLen: num(cmd, p, 'target-max-len', DEFAULT_EXAMPLE_OPTIONS.targetMaxLen, { int: true, min: 1 }),
  };
  const trainSrc = await FileSource.open(dataPath);
  const validSrc = validPath ? await FileSource.open(validPath).catch(async (e) => { await trainSrc.close(); throw e; }) : null;
  const closeData = async () => { await trainSrc.close(); await validSrc?.close(); };

  let backend;
  try {
    backend = await backendFrom(cmd, p, progress);
  } catch (e) {
    await closeData();
    throw e;
  }
  try {
    // --seq-len not given: min(512, the model's context), known once the model is open
    const seqLenFlag = state || str(p, 'seq-len') !== undefined ? base.seqLen : null;
    const q = quantFlags(cmd, p), threads = backendThreads(backend);
    // the adapter's settings size the run; one that cannot be read is reported when it loads
    const runLora = state?.lora ?? freshLora ?? (initAdapter ? await adapterConfigAt(initAdapter) : null) ?? DEFAULT_LORA;
    const loaded = await loadModelFrom(cmd, p, backend, progress, {
      seqLen: seqLenFlag,
      memory: (c, seqLen, pageWeights) => estimateTrainingMemory(c, {
        ...q, lora: runLora, batch: base.batchSize, seqLen: seqLen!, checkpointing: base.checkpointing, pageWeights, optimizer: base.optimizer, threads,
      }),
    }).catch(async (e) => { await closeData(); throw e; });
    const { model, tok, spec } = loaded;
    base.seqLen = dataOpts.maxLen = loaded.seqLen!;
    const { train: trainSet, valid: validSet, validSource } = await loadTrainValid(trainSrc, validSrc, {
      ...dataOpts, tokenizer: tok, vocabSize: model.config.vocabSize,
    }).finally(closeData);
    progress.log(describeDataset(trainSet));
    if (validSet) progress.log(`validation: ${validSet.examples.length} examples (${validSource === 'file' ? validPath : 'held out from the training data'})`);

    const batcher = batcherFor(trainSet, tok, { batchSize: base.batchSize, gradAccum: base.gradAccum, order: 'grouped', seed: base.seed });
    let totalSteps = base.totalSteps;
    if (!state) {
      const perEpoch = Math.ceil(batcher.batchesPerEpoch / base.gradAccum);
      totalSteps = str(p, 'steps') !== undefined ? num(cmd, p, 'steps', 1, { int: true, min: 1 }) : Math.max(1, Math.round(num(cmd, p, 'epochs', 1, { min: 0.001 }) * perEpoch));
    }
    const opts: TrainOptions = { ...base, totalSteps };

    // Adapters: from the checkpoint, from --init-adapter, or fresh with PEFT's initialisation.
    let lora: LoraAdapters;
    if (state) {
      lora = new LoraAdapters(backend, model.config, state.lora, true);
    } else if (initAdapter) {
      lora = await loadAdapterDir(initAdapter, backend, model.config, { withGrads: true, dropout: flagDropout });
      progress.log(`initial adapter ${initAdapter}: r ${lora.config.r}, alpha ${lora.config.alpha}, ${describeTargets(lora.config)}`);
    } else {
      lora = new LoraAdapters(backend, model.config, freshLora!, true);
      const rng = new SampleRng(opts.seed ^ 0x5eed);
      lora.initPeft(() => rng.next());
    }

    const trainer = new Trainer(model, lora, batcher, opts);
    const history: StepRecord[] = state ? [...state.history] : [];
    if (state && resumeDir) {
      const st = state;
      await withDir(resumeDir, (dir) => restoreCheckpoint(dir, trainer, st));
    }
    const runDir = new NodeOutDir(out);
    const baseName = spec;
    progress.log(`training ${lora.paramCount.toLocaleString('en-US')} LoRA parameters (r ${lora.config.r}, alpha ${lora.config.alpha}, ${lora.modules.length} modules) for ${totalSteps} steps, ${opts.batchSize}×${opts.gradAccum} sequences of ≤ ${opts.seqLen} tokens per step`);

    const t0 = performance.now();
    const startStep = trainer.step;
    while (trainer.step < totalSteps) {
      const rec = await trainer.trainStep();
      history.push(rec);
      const rss = process.resourceUsage().maxRSS * 1024;
      if (json) jsonLine({ ...rec, peak_rss_bytes: rss, backend_bytes: backend.memory().peakBytes });
      else {
        const elapsed = (performance.now() - t0) / 1000;
        const eta = (elapsed / (trainer.step - startStep)) * (totalSteps - trainer.step);
        progress.update(`step ${trainer.step}/${totalSteps} | loss ${rec.loss.toFixed(4)} | lr ${rec.lr.toExponential(2)} | ${rec.tokens_per_s.toFixed(0)} tok/s | peak RSS ${fmtBytes(rss)} | ETA ${fmtDuration(eta)}`, trainer.step === totalSteps);
      }
      if (saveEvery > 0 && trainer.step % saveEvery === 0 && trainer.step < totalSteps) await saveCheckpoint(runDir, trainer, history, baseName);
    }
    progress.done();

    // Final outputs: adapter, validation, loss curve, trainer state.
    await saveAdapter(lora, runDir, baseName);
    let validResult: { loss: number; perplexity: number; tokens: number } | null = null;
    if (validSet) {
      const ev = { count: Math.ceil(validSet.examples.length / opts.batchSize) };
      validResult = await evaluate(model, evalBatches(validSet.examples, { batchSize: opts.batchSize, padId: padIdFor(tok) }), {
        maxBatch: opts.batchSize, maxSeqLen: opts.seqLen, adapters: lora,
        onBatch: (done) => progress.update(`validation [${done}/${ev.count}]`),
      });
      progress.done();
    }
    const trainPts = history.map((h) => ({ step: h.step, loss: h.loss }));
    const validPts = validResult ? [{ step: trainer.step, loss: validResult.loss }] : [];
    await writeFileTo(runDir, 'loss.svg', lossCurveSvg(trainPts, validPts, `webqlora train: ${spec}`));
    await writeFileTo(runDir, 'train_results.json', JSON.stringify({ steps: trainer.step, history, valid: validResult, options: opts, lora: lora.config, base_model: baseName }, null, 1) + '\n');
    const last = history[history.length - 1];
    if (json) jsonLine({ done: true, steps: trainer.step, final_loss: last?.loss ?? null, valid_loss: validResult?.loss ?? null, valid_perplexity: validResult?.perplexity ?? null, out });
    else {
      progress.log(`adapter written to ${out} (adapter_config.json, adapter_model.safetensors, loss.svg)`);
      if (validResult) progress.log(`validation loss ${validResult.loss.toFixed(4)}, perplexity ${validResult.perplexity.toFixed(3)} over ${validResult.tokens} tokens`);
    }
    trainer.free();
    return 0;
  } finally {
    await backend.destroy();
  }
}
