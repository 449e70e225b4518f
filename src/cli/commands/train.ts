// webqlora train: QLoRA fine-tuning per DESIGN.md's contract. Library pieces: loadModel,
// loadTrainValid/batcherFor, LoraAdapters/loadAdapter, Trainer, saveCheckpoint/restoreCheckpoint,
// saveAdapter, evaluate. This file only wires flags, files and progress output.
import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { batcherFor, loadDataset, loadTrainValid, padIdFor, type Batcher, type Dataset, type FormatOption } from '../../data/index.ts';
import { evalBatches } from '../../data/batch.ts';
import { WebqloraError } from '../../errors.ts';
import { evaluate, type EvalResult } from '../../eval/evaluate.ts';
import { FileSource, NodeOutDir, removeStaleTemps } from '../../io/node.ts';
import { writeFileTo } from '../../io/source.ts';
import { SampleRng } from '../../generate/sample.ts';
import { checkLoraConfig, describeTargets, LoraAdapters, parseTargets, type LoraConfig } from '../../model/lora.ts';
import { saveAdapter } from '../../model/peft.ts';
import { readTrainerState, restoreCheckpoint, saveCheckpoint, type TrainerState } from '../../train/checkpoint.ts';
import { lossCurveSvg } from '../../train/svg.ts';
import { loadPreferenceDataset, loadPreferenceTrainValid, PreferenceBatcher, preferenceEvalBatches, type PreferenceDataset } from '../../data/preference.ts';
import { DEFAULT_BETA, evaluatePreference, isPreference, TRAIN_METHODS, type PreferenceMetrics, type TrainMethod } from '../../train/preference.ts';
import { logPreferenceDataset, rewardsText, validMetrics } from '../preference.ts';
import { Trainer, type OptimizerName, type StepRecord, type TrainOptions } from '../../train/trainer.ts';
import type { Schedule } from '../../train/schedule.ts';
import { bool, choice, given, num, optNum, required, str, type Command, type FlagTable, type Parsed, type Value } from '../args.ts';
import { adapterConfigAt, backendFrom, backendThreads, checkPaths, jsonLine, loadAdapterDir, loadModelFrom, quantFlags, withDir } from '../common.ts';
import { estimateTrainingMemory } from '../../model/memory.ts';
import type { ModelConfig } from '../../model/config.ts';
import { logDataset } from '../data.ts';
import {
  BACKEND, BATCH_SIZE, BLOCKSIZE, CHECKPOINTING, DATA, DEFAULT_EXAMPLE_OPTIONS, DEFAULT_LORA, DOUBLE_QUANT, FORMAT, JSON_OUT, LORA_R, MODEL,
  OPTIMIZER, PAGE_WEIGHTS, QUANT, SEQ_LEN, TARGET, THREADS, TOKENIZER, TRAIN_DEFAULTS, TRAIN_ON_PROMPT, VERBOSE,
} from '../flags.ts';
import { fmtDuration, fmtBytes, Progress, SmoothedLoss } from '../progress.ts';

const D = TRAIN_DEFAULTS;
const FLAGS: FlagTable = {
  model: MODEL, tokenizer: TOKENIZER, quant: QUANT, 'double-quant': DOUBLE_QUANT, blocksize: BLOCKSIZE,
  data: DATA,
  valid: {
    kind: 'string', arg: 'FILE', group: 'data', defaultText: '10% of --data held out',
    help: "validation data, in the training data's format; none: no validation",
  },
  format: FORMAT, 'seq-len': SEQ_LEN, 'train-on-prompt': TRAIN_ON_PROMPT,
  'source-max-len': { kind: 'int', arg: 'N', min: 1, default: DEFAULT_EXAMPLE_OPTIONS.sourceMaxLen, group: 'data', help: 'alpaca and completion records: keep the first N prompt tokens' },
  'target-max-len': { kind: 'int', arg: 'N', min: 1, default: DEFAULT_EXAMPLE_OPTIONS.targetMaxLen, group: 'data', help: 'alpaca and completion records: keep the first N response tokens' },
  packing: {
    kind: 'bool', group: 'data',
    help: 'sample packing: join short examples into rows of --seq-len tokens; positions restart and attention stops at each example (validation stays unpacked)',
  },
  'lora-r': LORA_R,
  'lora-alpha': { kind: 'number', arg: 'X', above: 0, default: DEFAULT_LORA.alpha, group: 'LoRA', help: 'LoRA alpha: updates are scaled by alpha / r' },
  'lora-dropout': { kind: 'number', arg: 'P', min: 0, max: 0.99, default: DEFAULT_LORA.dropout, group: 'LoRA', help: "dropout on the adapters' input" },
  target: TARGET,
  'use-rslora': { kind: 'bool', group: 'LoRA', help: 'rank-stabilized LoRA: scale by alpha / √r' },
  'use-dora': { kind: 'bool', group: 'LoRA', help: "DoRA: a trainable magnitude per output feature over the normalised adapted weight (PEFT's use_dora; QDoRA on a 4-bit base)" },
  'init-adapter': {
    kind: 'string', arg: 'DIR', group: 'LoRA',
    help: 'start from this adapter (PEFT directory or llama.cpp .gguf), with its r, alpha and target modules',
  },
  optimizer: OPTIMIZER,
  method: {
    kind: 'choice', choices: TRAIN_METHODS, default: 'sft', group: 'optimization',
    help: 'sft: supervised; dpo, orpo: preference tuning on {"prompt","chosen","rejected"} pairs (DPO\'s reference is the base without the adapter)',
  },
  beta: { kind: 'number', arg: 'X', above: 0, default: DEFAULT_BETA, group: 'optimization', help: "DPO's β (higher keeps the model closer to the reference), ORPO's λ (weight of the odds-ratio term); TRL's beta of both" },
  lr: { kind: 'number', arg: 'X', min: 0, default: D.lr, group: 'optimization', help: 'peak learning rate' },
  schedule: { kind: 'choice', choices: ['constant', 'cosine', 'linear'], default: D.schedule, group: 'optimization', help: 'learning-rate schedule after the warmup' },
  'warmup-ratio': { kind: 'number', arg: 'X', min: 0, max: 1, default: D.warmupRatio, group: 'optimization', help: 'share of the steps over which the learning rate rises linearly' },
  'max-grad-norm': { kind: 'number', arg: 'X', min: 0, default: D.maxGradNorm, group: 'optimization', help: 'clip the gradient to this global norm (0: no clipping)' },
  'neftune-alpha': { kind: 'number', arg: 'X', min: 0, default: D.neftuneAlpha, group: 'optimization', help: 'NEFTune: uniform noise of magnitude X/sqrt(seq·hidden) on the input embeddings while training (0: off; TRL uses 5)' },
  'weight-decay': { kind: 'number', arg: 'X', min: 0, default: D.weightDecay, group: 'optimization', help: 'AdamW decoupled weight decay' },
  'batch-size': BATCH_SIZE,
  'grad-accum': { kind: 'int', arg: 'N', min: 1, default: D.gradAccum, group: 'optimization', help: 'micro-batches per optimizer step' },
  steps: { kind: 'int', arg: 'N', min: 1, group: 'optimization', defaultText: 'from --epochs', help: 'optimizer steps' },
  epochs: { kind: 'number', arg: 'X', above: 0, default: 1, group: 'optimization', help: 'passes over the training data, when --steps is not given' },
  seed: { kind: 'int', arg: 'N', min: 0, default: D.seed, group: 'optimization', help: 'seeds the adapter initialisation, dropout, data order and validation split' },
  checkpointing: CHECKPOINTING, 'page-weights': PAGE_WEIGHTS,
  backend: BACKEND, threads: THREADS,
  out: { kind: 'string', arg: 'DIR', group: 'output', required: true, help: 'where the adapter, loss.svg, train_results.json and checkpoint-N/ go' },
  'save-every': { kind: 'int', arg: 'N', min: 0, default: 0, group: 'output', help: 'write checkpoint-N/ every N steps (0: only the final adapter)' },
  resume: { kind: 'bool', group: 'output', help: 'continue from the newest complete checkpoint in --out, bit for bit, with its settings, data and quantization flags (another value, or another base model, is refused)' },
  'eval-every': { kind: 'int', arg: 'N', min: 0, default: 0, group: 'output', help: 'validation loss every N steps, also drawn in loss.svg (0: only at the end)' },
  json: JSON_OUT, verbose: VERBOSE,
};

/** The flags --init-adapter takes from the adapter instead. */
const ADAPTER_SHAPE_FLAGS = ['lora-r', 'lora-alpha', 'target', 'use-rslora', 'use-dora'];

export const trainCommand: Command = {
  summary: 'QLoRA fine-tuning: a 4-bit base model, float32 LoRA adapters, PEFT output',
  flags: FLAGS,
  example: 'webqlora train --model TinyLlama-1.1B-Chat --data train.jsonl --out run --epochs 2 --lr 2e-4 --save-every 100',
  run: train,
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
  return {
    optimizer: choice<OptimizerName>(p, 'optimizer'),
    lr: num(p, 'lr'),
    schedule: choice<Schedule>(p, 'schedule'),
    warmupRatio: num(p, 'warmup-ratio'),
    maxGradNorm: num(p, 'max-grad-norm'),
    weightDecay: num(p, 'weight-decay'),
    beta1: D.beta1, beta2: D.beta2, eps: D.eps,
    batchSize: num(p, 'batch-size'),
    gradAccum: num(p, 'grad-accum'),
    seqLen: optNum(p, 'seq-len') ?? D.seqLen,
    checkpointing: bool(p, 'checkpointing'),
    seed: num(p, 'seed'),
    neftuneAlpha: num(p, 'neftune-alpha'),
    packing: bool(p, 'packing'),
    method: choice<TrainMethod>(p, 'method'),
    beta: num(p, 'beta'),
    kept: {
      format: choice(p, 'format'), 'train-on-prompt': bool(p, 'train-on-prompt'), 'source-max-len': num(p, 'source-max-len'),
      'target-max-len': num(p, 'target-max-len'), quant: choice(p, 'quant'), 'double-quant': bool(p, 'double-quant'), blocksize: choice(p, 'blocksize'),
    },
  };
}

/** What a checkpoint fixes, by the flag that would set it. */
const RESUMED: Array<[string, (s: TrainerState) => unknown]> = [
  ['lr', (s) => s.options.lr], ['schedule', (s) => s.options.schedule], ['warmup-ratio', (s) => s.options.warmupRatio],
  ['max-grad-norm', (s) => s.options.maxGradNorm], ['neftune-alpha', (s) => s.options.neftuneAlpha ?? 0], ['weight-decay', (s) => s.options.weightDecay], ['optimizer', (s) => s.options.optimizer],
  ['batch-size', (s) => s.options.batchSize], ['grad-accum', (s) => s.options.gradAccum], ['seq-len', (s) => s.options.seqLen],
  ['seed', (s) => s.options.seed], ['checkpointing', (s) => s.options.checkpointing], ['steps', (s) => s.options.totalSteps], ['packing', (s) => s.options.packing ?? false],
  ['method', (s) => s.options.method ?? 'sft'], ['beta', (s) => s.options.beta ?? DEFAULT_BETA],
  ['lora-r', (s) => s.lora.r], ['lora-alpha', (s) => s.lora.alpha], ['lora-dropout', (s) => s.lora.dropout], ['use-rslora', (s) => s.lora.useRslora], ['use-dora', (s) => s.lora.useDora ?? false],
];

/**
 * A resumed run keeps its checkpoint's settings: a flag that asks for another value is refused,
 * and the kept data and quantization flags not given take the checkpoint's values.
 */
function checkResumeFlags(p: Parsed, state: TrainerState, dir: string): void {
  const kept = Object.entries(state.options.kept ?? {}).map(([flag, was]): [string, (s: TrainerState) => unknown] => [flag, () => was]);
  for (const [flag, get] of [...RESUMED, ...kept]) {
    const v = p.values.get(flag), was = get(state);
    if (v !== undefined && v !== was) throw new WebqloraError(`--${flag} ${String(v)} differs from ${dir}'s ${String(was)}: a resumed run keeps its checkpoint's settings (drop --${flag}, or train into a new --out).`);
  }
  p.resumed = new Map(Object.entries(state.options.kept ?? {}) as Array<[string, Value]>);
}

/** One line on what --packing made of the training set: rows, and the padding left. */
function logPacking(ds: Dataset, b: Batcher, seqLen: number, progress: Progress): void {
  const rows = b.packedRows!.length, tokens = b.packedRows!.reduce((s, r) => s + r.reduce((t, i) => t + Math.min(ds.examples[i]!.inputIds.length, seqLen), 0), 0);
  progress.log(`packing: ${ds.examples.length} examples in ${rows} rows of ≤ ${seqLen} tokens (${(100 * tokens / (rows * seqLen)).toFixed(1)}% filled)`);
}

/** A history record; steps with a validation during training carry its loss (kept in checkpoints). */
type HistoryRecord = StepRecord & { valid_loss?: number };

async function train(p: Parsed): Promise<number> {
  const json = bool(p, 'json');
  const out = required(p, 'out');
  const dataPath = required(p, 'data');
  const progress = new Progress(process.stderr, json);

  // Every flag is checked before anything is read: conflicts first.
  if (given(p, 'steps') && given(p, 'epochs')) throw new WebqloraError('give --steps or --epochs, not both.');
  const initAdapter = str(p, 'init-adapter');
  const clash = ADAPTER_SHAPE_FLAGS.filter((n) => given(p, n));
  if (initAdapter && clash.length) {
    throw new WebqloraError(`--init-adapter ${initAdapter} brings its own r, alpha and target modules, so ${clash.map((n) => `--${n}`).join(', ')} would be ignored: drop ${clash.length > 1 ? 'them' : 'it'}, or leave out --init-adapter to start a fresh adapter.`);
  }
  const validPath = str(p, 'valid');
  const noValid = validPath === 'none';
  const evalEvery = num(p, 'eval-every');
  if (noValid && evalEvery > 0) throw new WebqloraError('--eval-every needs validation data, and --valid none turns it off (give --valid FILE, or leave --valid out to hold out 10%).');

  // Resume: everything that shapes the run comes from the checkpoint.
  let resumeDir: string | null = null;
  let state: TrainerState | null = null;
  if (bool(p, 'resume')) {
    await removeStaleTemps(out);
    resumeDir = await latestCheckpoint(out);
    if (resumeDir) {
      state = await withDir(resumeDir, readTrainerState);
      checkResumeFlags(p, state, resumeDir);
      progress.log(`resuming from ${resumeDir} (step ${state.step})`);
    } else {
      progress.log(`no complete checkpoint in ${out}: starting from the beginning`);
    }
  } else if (await latestCheckpoint(out) || (await stat(join(out, 'adapter_model.safetensors')).then(() => true, () => false))) {
    throw new WebqloraError(`${out} already holds a training run (use --resume to continue it, or choose another --out).`);
  }

  const base = state ? state.options : { ...trainOptionsFrom(p), totalSteps: 0 };
  const prefMethod = isPreference(base.method) ? base.method : null;
  if (prefMethod) {
    if (p.values.get('packing') === true) throw new WebqloraError(`--packing joins SFT examples into full sequences and does not apply to --method ${prefMethod}, whose pairs must stay whole (drop --packing).`);
    const sftOnly = ['format', 'train-on-prompt', 'source-max-len', 'target-max-len'].filter((n) => given(p, n));
    if (sftOnly.length) throw new WebqloraError(`--method ${prefMethod} reads {"prompt", "chosen", "rejected"} pairs and scores the responses only, so ${sftOnly.map((n) => `--${n}`).join(', ')} would be ignored: drop ${sftOnly.length > 1 ? 'them' : 'it'}.`);
  } else if (given(p, 'beta')) {
    throw new WebqloraError(`--beta is DPO's β or ORPO's λ and needs --method dpo or --method orpo (this run is ${base.method ?? 'sft'}).`);
  }
  const flagDropout = given(p, 'lora-dropout') ? num(p, 'lora-dropout') : undefined;
  const freshLora: LoraConfig | null = state || initAdapter ? null : {
    r: num(p, 'lora-r'),
    alpha: num(p, 'lora-alpha'),
    dropout: flagDropout ?? DEFAULT_LORA.dropout,
    targets: parseTargets(str(p, 'target')!),
    useRslora: bool(p, 'use-rslora'),
    useDora: bool(p, 'use-dora'),
  };
  if (freshLora) checkLoraConfig(freshLora, 'webqlora train');
  const saveEvery = num(p, 'save-every');
  const dataOpts = {
    format: choice<FormatOption>(p, 'format'), trainOnPrompt: bool(p, 'train-on-prompt'), seed: base.seed, maxLen: base.seqLen,
    sourceMaxLen: num(p, 'source-max-len'), targetMaxLen: num(p, 'target-max-len'),
  };
  await checkPaths(p, ['init-adapter', 'tokenizer']);
  const trainSrc = await FileSource.open(dataPath);
  const validSrc = validPath && !noValid ? await FileSource.open(validPath).catch(async (e) => { await trainSrc.close(); throw e; }) : null;
  const closeData = async () => { await trainSrc.close(); await validSrc?.close(); };

  let backend;
  try {
    backend = await backendFrom(p, progress);
  } catch (e) {
    await closeData();
    throw e;
  }
  try {
    // --seq-len not given: min(512, the model's context), known once the model is open
    const seqLenFlag = state || given(p, 'seq-len') ? base.seqLen : null;
    const q = quantFlags(p), threads = backendThreads(backend);
    // the adapter's settings size the run; one that cannot be read is reported when it loads
    const initLoraOf = initAdapter ? await adapterConfigAt(initAdapter) : () => null;
    const runLora = (c: ModelConfig) => state?.lora ?? freshLora ?? initLoraOf(c) ?? DEFAULT_LORA;
    const loaded = await loadModelFrom(p, backend, progress, {
      seqLen: seqLenFlag,
      memory: (c, seqLen, pageWeights) => estimateTrainingMemory(c, {
        ...q, lora: runLora(c), batch: base.batchSize * (prefMethod ? 2 : 1), seqLen: seqLen!, checkpointing: base.checkpointing, pageWeights, optimizer: base.optimizer, threads, packing: base.packing, preference: prefMethod !== null,
      }),
    }).catch(async (e) => { await closeData(); throw e; });
    const { model, tok, spec } = loaded;
    base.seqLen = dataOpts.maxLen = loaded.seqLen!;
    const setOpts = { ...dataOpts, tokenizer: tok, vocabSize: model.config.vocabSize };
    let trainSet: Dataset | null = null, validSet: Dataset | null = null, validSource: 'file' | 'split' | 'none';
    // preference tuning reads pairs (data/preference.ts) where SFT reads examples
    let prefTrain: PreferenceDataset | null = null, prefValid: PreferenceDataset | null = null;
    if (prefMethod) {
      const prefOpts = { tokenizer: tok, vocabSize: model.config.vocabSize, maxLen: base.seqLen, seed: base.seed };
      if (noValid) {
        prefTrain = await loadPreferenceDataset(trainSrc, prefOpts).finally(closeData);
        validSource = 'none';
      } else ({ train: prefTrain, valid: prefValid, validSource } = await loadPreferenceTrainValid(trainSrc, validSrc, prefOpts).finally(closeData));
    } else if (noValid) {
      trainSet = await loadDataset(trainSrc, setOpts).finally(closeData);
      validSet = null;
      validSource = 'none';
    } else {
      ({ train: trainSet, valid: validSet, validSource } = await loadTrainValid(trainSrc, validSrc, setOpts).finally(closeData));
    }
    if (prefTrain) logPreferenceDataset(prefTrain, progress);
    else logDataset(trainSet!, progress);
    const unit = prefTrain ? 'pairs' : 'examples';
    const nTrain = prefTrain ? prefTrain.pairs.length : trainSet!.examples.length, nValid = prefValid?.pairs.length ?? validSet?.examples.length ?? 0;
    if (validSource === 'file') progress.log(`validation: ${nValid} ${unit} from ${validPath}`);
    else if (validSource === 'split') {
      progress.log(`validation: ${nValid} of ${nValid + nTrain} ${unit} held out of ${dataPath}, because --valid was not given (--valid none turns this off)`);
    } else if (noValid) progress.log('validation: none (--valid none)');
    else {
      if (evalEvery > 0) throw new WebqloraError(`--eval-every: ${dataPath} has too few ${unit} (${nTrain}) to hold any out; give --valid FILE.`);
      progress.log(`validation: none (${nTrain} ${unit} are too few to hold any out; give --valid FILE for one)`);
    }

    const batcher = prefTrain ? new PreferenceBatcher(prefTrain.pairs, { batchSize: base.batchSize, gradAccum: base.gradAccum, order: 'grouped', seed: base.seed, padId: padIdFor(tok) }) : batcherFor(trainSet!, tok, { batchSize: base.batchSize, gradAccum: base.gradAccum, order: 'grouped', seed: base.seed, packing: base.packing ? base.seqLen : 0 });
    if (base.packing && trainSet) logPacking(trainSet, batcher as Batcher, base.seqLen, progress);
    let totalSteps = base.totalSteps;
    if (!state) {
      const perEpoch = Math.ceil(batcher.batchesPerEpoch / base.gradAccum);
      totalSteps = optNum(p, 'steps') ?? Math.max(1, Math.round(num(p, 'epochs') * perEpoch));
    }
    const opts: TrainOptions = { ...base, totalSteps };

    // Adapters: from the checkpoint, from --init-adapter, or fresh with PEFT's initialisation.
    let lora: LoraAdapters;
    if (state) {
      lora = new LoraAdapters(backend, model.config, state.lora, true);
    } else if (initAdapter) {
      lora = await loadAdapterDir(initAdapter, backend, model.config, { withGrads: true, dropout: flagDropout });
      progress.log(`initial adapter ${initAdapter}: r ${lora.config.r}, alpha ${lora.config.alpha}, ${describeTargets(lora.config)}`);
      if (prefMethod === 'dpo') progress.log(`note: DPO's reference model is the base without any adapter, not ${initAdapter} (to use the SFT model as the reference, merge it into the base first)`);
    } else {
      lora = new LoraAdapters(backend, model.config, freshLora!, true);
      const rng = new SampleRng(opts.seed ^ 0x5eed);
      lora.initPeft(() => rng.next());
    }

    const trainer = new Trainer(model, lora, batcher, opts);
    const history: HistoryRecord[] = state ? [...state.history] : [];
    if (state && resumeDir) {
      const st = state;
      await withDir(resumeDir, (dir) => restoreCheckpoint(dir, trainer, st));
    }
    const runDir = new NodeOutDir(out);
    const baseName = spec;
    progress.log(`training ${lora.paramCount.toLocaleString('en-US')} LoRA parameters (r ${lora.config.r}, alpha ${lora.config.alpha}, ${lora.modules.length} modules) for ${totalSteps} steps, ${opts.batchSize}×${opts.gradAccum} sequences of ≤ ${opts.seqLen} tokens per step`);

    const validate = async (): Promise<EvalResult & { metrics?: PreferenceMetrics }> => {
      if (prefMethod) {
        // the same preference loss and rewards on the held-out pairs (no dropout); perplexity does not apply
        const count = Math.ceil(prefValid!.pairs.length / opts.batchSize);
        const r = await evaluatePreference(model, preferenceEvalBatches(prefValid!.pairs, { batchSize: opts.batchSize, padId: padIdFor(tok) }), {
          method: prefMethod, beta: opts.beta ?? DEFAULT_BETA, maxPairs: opts.batchSize, maxSeqLen: opts.seqLen, adapters: lora,
          onBatch: (done) => progress.update(`validation [${done}/${count}]`),
        });
        progress.done();
        return { loss: r.loss, perplexity: NaN, tokens: prefValid!.scored, metrics: r.metrics };
      }
      const count = Math.ceil(validSet!.examples.length / opts.batchSize);
      const r = await evaluate(model, evalBatches(validSet!.examples, { batchSize: opts.batchSize, padId: padIdFor(tok) }), {
        maxBatch: opts.batchSize, maxSeqLen: opts.seqLen, adapters: lora,
        onBatch: (done) => progress.update(`validation [${done}/${count}]`),
      });
      progress.done();
      return r;
    };

    // Ctrl-C: the step in flight finishes (with its checkpoint, if one is due), then the run stops;
    // a second Ctrl-C quits at once (every file is written whole or not at all).
    let stopRequested = false;
    const onSigint = () => {
      stopRequested = true;
      process.off('SIGINT', onSigint);
      if (process.stderr.isTTY && !json) progress.log('stopping after this step (Ctrl-C again to quit at once)');
    };
    process.on('SIGINT', onSigint);

    const t0 = performance.now();
    const startStep = trainer.step;
    const smoothed = new SmoothedLoss();
    for (const h of history) smoothed.add(h.loss);
    try {
      while (trainer.step < totalSteps && !stopRequested) {
        const rec: HistoryRecord = await trainer.trainStep();
        history.push(rec);
        const smooth = smoothed.add(rec.loss);
        const elapsed = (performance.now() - t0) / 1000;
        const rss = process.resourceUsage().maxRSS * 1024;
        if (json) jsonLine({ ...rec, smoothed_loss: smooth, elapsed_s: elapsed, peak_rss_bytes: rss, backend_bytes: backend.memory().peakBytes });
        else {
          const eta = (elapsed / (trainer.step - startStep)) * (totalSteps - trainer.step);
          progress.update(`step ${trainer.step}/${totalSteps} | loss ${rec.loss.toFixed(4)} (smoothed ${smooth.toFixed(4)})${rewardsText(rec)} | lr ${rec.lr.toExponential(2)} | ${rec.tokens_per_s.toFixed(0)} tok/s | peak RSS ${fmtBytes(rss)} | ${fmtDuration(elapsed)} elapsed, ETA ${fmtDuration(eta)}`, trainer.step === totalSteps);
        }
        if (evalEvery > 0 && trainer.step % evalEvery === 0 && trainer.step < totalSteps) {
          const v = await validate();
          rec.valid_loss = v.loss;
          if (json) jsonLine(v.metrics ? { step: trainer.step, valid_loss: v.loss, ...validMetrics(v.metrics) } : { step: trainer.step, valid_loss: v.loss, valid_perplexity: v.perplexity, valid_tokens: v.tokens });
          else if (v.metrics) progress.log(`step ${trainer.step}: validation loss ${v.loss.toFixed(4)}${rewardsText(v.metrics)}`);
          else progress.log(`step ${trainer.step}: validation loss ${v.loss.toFixed(4)}, perplexity ${v.perplexity.toFixed(3)}`);
        }
        if (saveEvery > 0 && trainer.step % saveEvery === 0 && trainer.step < totalSteps) await saveCheckpoint(runDir, trainer, history, baseName);
        // a turn of the event loop: a step on the WASM backend may settle without one, and a signal
        // (Ctrl-C) is only delivered in one
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      process.off('SIGINT', onSigint);
    }
    progress.done();

    if (stopRequested && trainer.step < totalSteps) {
      const ck = await latestCheckpoint(out);
      const where = ck ? `${basename(ck)} is complete; continue with --resume` : 'no checkpoint was written yet (--save-every N writes one every N steps), so --resume would start over';
      if (json) jsonLine({ stopped: true, step: trainer.step, checkpoint: ck });
      process.stderr.write(`stopped at step ${trainer.step}; ${where}\n`);
      trainer.free();
      return 130;
    }

    // Final outputs: adapter, validation, loss curve, trainer state.
    await saveAdapter(lora, runDir, baseName);
    let validResult: (EvalResult & { metrics?: PreferenceMetrics }) | null = null;
    if (validSet || prefValid) {
      validResult = await validate();
      const lastRec = history[history.length - 1];
      if (lastRec) lastRec.valid_loss = validResult.loss;
    }
    const trainPts = history.map((h) => ({ step: h.step, loss: h.loss }));
    const validPts = history.filter((h) => h.valid_loss !== undefined).map((h) => ({ step: h.step, loss: h.valid_loss! }));
    await writeFileTo(runDir, 'loss.svg', lossCurveSvg(trainPts, validPts, `webqlora train: ${spec}`));
    await writeFileTo(runDir, 'train_results.json', JSON.stringify({ steps: trainer.step, history, valid: validResult, options: opts, lora: lora.config, base_model: baseName }, null, 1) + '\n');
    const last = history[history.length - 1];
    const validPref = validResult?.metrics;
    if (json) jsonLine({ done: true, steps: trainer.step, final_loss: last?.loss ?? null, valid_loss: validResult?.loss ?? null, valid_perplexity: validResult?.perplexity ?? null, ...(validPref ? validMetrics(validPref) : {}), out });
    else {
      progress.log(`adapter written to ${out} (adapter_config.json, adapter_model.safetensors, loss.svg)`);
      if (validPref) progress.log(`validation loss ${validResult!.loss.toFixed(4)}${rewardsText(validPref)} over ${nValid} pairs`);
      else if (validResult) progress.log(`validation loss ${validResult.loss.toFixed(4)}, perplexity ${validResult.perplexity.toFixed(3)} over ${validResult.tokens} tokens`);
    }
    trainer.free();
    return 0;
  } finally {
    await backend.destroy();
  }
}
