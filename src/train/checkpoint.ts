// Checkpoints: `checkpoint-N/` holds the adapter (PEFT files), the optimizer moments
// (optimizer.safetensors, float32, exact) and trainer_state.json (step, data position, seed,
// options, loss history). Every file is written atomically and trainer_state.json last, so a
// checkpoint directory is complete exactly when its trainer_state.json exists; a resume restores
// every bit of state and continues identically.
import { WebqloraError } from '../errors.ts';
import { openSafetensors, writeSafetensors } from '../io/safetensors.ts';
import { readJson, writeFileTo, type DirSource, type OutDir } from '../io/source.ts';
import { describeTargets, resolveModules, type LoraConfig } from '../model/lora.ts';
import { openAdapter, readAdapterWeights, saveAdapter } from '../model/peft.ts';
import { DEFAULT_BETA } from './preference.ts';
import type { StepRecord, Trainer, TrainOptions } from './trainer.ts';

export const TRAINER_STATE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_VERSION = 1;

export interface TrainerState {
  version: number;
  step: number;
  data: unknown;
  options: TrainOptions;
  lora: LoraConfig;
  baseModel: string;
  /** LlamaModel.fingerprint of the base trained on (absent in older checkpoints) */
  baseFingerprint?: string;
  history: StepRecord[];
}

export function checkpointName(step: number): string {
  return `checkpoint-${step}`;
}

export async function saveCheckpoint(runDir: OutDir, trainer: Trainer, history: StepRecord[], baseModel: string): Promise<string> {
  const name = checkpointName(trainer.step);
  const dir = await runDir.sub(name);
  await saveAdapter(trainer.lora, dir, baseModel);
  const opt = await trainer.exportOptimizer();
  const entries = [...opt].map(([k, v]) => ({ name: k, dtype: 'F32' as const, shape: [v.length], data: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) }));
  await writeSafetensors(await dir.create(OPTIMIZER_FILE), entries, { format: 'pt' });
  const state: TrainerState = {
    version: STATE_VERSION, step: trainer.step, data: trainer.data.state(), options: trainer.o, lora: trainer.lora.config, baseModel,
    baseFingerprint: trainer.model.fingerprint || undefined, history,
  };
  await writeFileTo(dir, TRAINER_STATE, JSON.stringify(state, null, 1) + '\n');
  return name;
}

/** Reads trainer_state.json of a checkpoint directory. */
export async function readTrainerState(dir: DirSource): Promise<TrainerState> {
  const src = await dir.open(TRAINER_STATE);
  if (!src) throw new WebqloraError(`${dir.name}: no ${TRAINER_STATE} (the checkpoint is incomplete).`);
  const s = (await readJson(src)) as TrainerState | null;
  if (s?.version !== STATE_VERSION || !Number.isInteger(s.step) || !s.options || !s.lora) {
    throw new WebqloraError(`${src.name}: not a webqlora trainer state (version ${String(s?.version)}).`);
  }
  return s;
}

/** Restores adapter weights, optimizer moments and the data position into a fresh trainer. */
export async function restoreCheckpoint(dir: DirSource, trainer: Trainer, state: TrainerState): Promise<void> {
  // the base is part of the run: LoRA weights and moments trained on one base do not continue on another
  if (state.baseFingerprint && trainer.model.fingerprint && state.baseFingerprint !== trainer.model.fingerprint) {
    throw new WebqloraError(`${dir.name}: the checkpoint was trained on another base model (${state.baseModel}, fingerprint ${state.baseFingerprint}) than the one loaded (fingerprint ${trainer.model.fingerprint}); resume with the same --model and quantization, or train into a new --out.`);
  }
  // the objective is part of the run: a DPO checkpoint does not continue as SFT, nor with another β
  const method = (o: TrainOptions) => `${o.method ?? 'sft'}${o.method === 'dpo' || o.method === 'orpo' ? ` (beta ${o.beta ?? DEFAULT_BETA})` : ''}`;
  if (method(state.options) !== method(trainer.o)) throw new WebqloraError(`${dir.name}: the checkpoint was trained with --method ${method(state.options)}, not ${method(trainer.o)}; resume with the same method and beta.`);
  const { config, weights } = await openAdapter(dir);
  const mine = trainer.lora.config;
  const modules = (c: LoraConfig) => JSON.stringify(resolveModules(trainer.model.config, c, dir.name));
  const same = config.useRslora === mine.useRslora && (config.useDora ?? false) === (mine.useDora ?? false) && modules(config) === modules(mine);
  if (!same) throw new WebqloraError(`${dir.name}: the checkpoint's adapter (r ${config.r}, alpha ${config.alpha}, targets ${describeTargets(config)}) does not match this run's LoRA settings.`);
  await readAdapterWeights(weights, trainer.lora);
  const optSrc = await dir.open(OPTIMIZER_FILE);
  if (!optSrc) throw new WebqloraError(`${dir.name}: no ${OPTIMIZER_FILE}.`);
  const st = await openSafetensors(optSrc);
  const opt = new Map<string, Float32Array>();
  for (const k of st.tensors.keys()) opt.set(k, await st.readFloat(k));
  trainer.importOptimizer(opt);
  trainer.data.restore(state.data);
  trainer.step = state.step;
}
