// The training loop: gradient accumulation over micro-batches, global-norm clipping, AdamW /
// paged AdamW / SGD, LR schedule, and exact checkpoint state. One host readback per optimizer
// step (the accumulated loss and the squared gradient norm).
import type { Backend, Tensor } from '../backend/backend.ts';
import { deriveSeed } from '../backend/rng.ts';
import { WebqloraError } from '../errors.ts';
import type { LlamaModel } from '../model/llama.ts';
import { Workspace } from '../model/llama.ts';
import type { LoraAdapters, LoraParam } from '../model/lora.ts';
import { DEFAULT_BETA, isPreference, PreferenceObjective, type PreferenceMetrics, type TrainMethod } from './preference.ts';
import { lrAt, warmupSteps, type Schedule } from './schedule.ts';
import { forwardBackward, scoredTokens, type MicroBatch } from './step.ts';

export type OptimizerName = 'adamw' | 'paged-adamw' | 'sgd';

export interface TrainOptions {
  optimizer: OptimizerName;
  lr: number;
  schedule: Schedule;
  warmupRatio: number;
  /** 0 disables clipping */
  maxGradNorm: number;
  /** NEFTune noise alpha on the input embeddings during training (0: off; TRL's neftune_noise_alpha). */
  neftuneAlpha: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  batchSize: number;
  gradAccum: number;
  seqLen: number;
  /** optimizer steps of the whole run */
  totalSteps: number;
  checkpointing: boolean;
  seed: number;
  /** sample packing: micro-batches may carry docStart (data/pack.ts); absent in checkpoints before it (false) */
  packing?: boolean;
  /**
   * Settings outside the trainer that decide what it trains on — the CLI's data and quantization
   * flags by name (format, train-on-prompt, source-/target-max-len, quant, double-quant,
   * blocksize) — kept in checkpoints so that a resumed run uses them again. Absent in older ones.
   */
  kept?: Record<string, string | number | boolean>;
  /** sft (default), or preference tuning on micro-batches of pairs: dpo, orpo (preference.ts) */
  method?: TrainMethod;
  /** DPO's β, ORPO's λ (TRL's `beta` of both; default 0.1) */
  beta?: number;
}

/** QLoRA paper defaults (QLORA_SPEC §6-7) — lr 2e-4, constant, clip 0.3, wd 0 — with plain AdamW (paged-adamw is opt-in). */
export const TRAIN_DEFAULTS: Omit<TrainOptions, 'totalSteps'> = {
  optimizer: 'adamw', lr: 2e-4, schedule: 'constant', warmupRatio: 0.03, maxGradNorm: 0.3, weightDecay: 0,
  beta1: 0.9, beta2: 0.999, eps: 1e-8, batchSize: 1, gradAccum: 1, seqLen: 512, checkpointing: false, seed: 0, neftuneAlpha: 0,
};

/** Where micro-batches come from; its state goes into checkpoints so a resume continues exactly. */
export interface MicroBatchSource {
  next(): MicroBatch;
  state(): unknown;
  restore(state: unknown): void;
}

export interface StepRecord extends Partial<PreferenceMetrics> {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  /** tokens in this step's micro-batches (B·T summed) and scored (predicted) tokens */
  tokens: number;
  scored: number;
  tokens_per_s: number;
  seconds: number;
}

/** Optimizer state that can be saved and restored exactly (float32 arrays by name). */
interface Optimizer {
  update(params: LoraParam[], lr: number, step: number, gradScale: number): Promise<void>;
  exportState(): Promise<Map<string, Float32Array>>;
  importState(state: Map<string, Float32Array>): void;
  free(): void;
}

class AdamW implements Optimizer {
  private readonly m = new Map<Tensor, Tensor>();
  private readonly v = new Map<Tensor, Tensor>();
  constructor(private readonly be: Backend, params: LoraParam[], private readonly o: TrainOptions) {
    for (const { value: t } of params) {
      {
        const m = be.alloc('f32', t.length, `${t.label}.exp_avg`), v = be.alloc('f32', t.length, `${t.label}.exp_avg_sq`);
        be.fill(m, 0);
        be.fill(v, 0);
        this.m.set(t, m);
        this.v.set(t, v);
      }
    }
  }
  async update(params: LoraParam[], lr: number, step: number, gradScale: number): Promise<void> {
    const hp = { lr, beta1: this.o.beta1, beta2: this.o.beta2, eps: this.o.eps, weightDecay: this.o.weightDecay, step, gradScale };
    for (const { value: t, grad: g } of params) this.be.adamwStep(t, g, this.m.get(t)!, this.v.get(t)!, t.length, hp);
  }
  async exportState(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const [t, m] of this.m) {
      out.set(`${t.label}.exp_avg`, (await this.be.read(m)) as Float32Array);
      out.set(`${t.label}.exp_avg_sq`, (await this.be.read(this.v.get(t)!)) as Float32Array);
    }
    return out;
  }
  importState(state: Map<string, Float32Array>): void {
    for (const [t, m] of this.m) {
      this.be.write(m, need(state, `${t.label}.exp_avg`, t.length));
      this.be.write(this.v.get(t)!, need(state, `${t.label}.exp_avg_sq`, t.length));
    }
  }
  free(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) this.be.free(t);
  }
}

/**
 * AdamW whose moments live in host memory and are streamed through two backend scratch buffers
 * one tensor at a time (the paged optimizer of QLoRA §3, done explicitly: WebGPU and WASM have
 * no unified memory). Costs two uploads and two readbacks per tensor per step.
 */
class PagedAdamW implements Optimizer {
  private readonly m = new Map<Tensor, Float32Array>();
  private readonly v = new Map<Tensor, Float32Array>();
  private readonly sm: Tensor;
  private readonly sv: Tensor;
  constructor(private readonly be: Backend, params: LoraParam[], private readonly o: TrainOptions) {
    let max = 1;
    for (const { value: t } of params) {
      {
        this.m.set(t, new Float32Array(t.length));
        this.v.set(t, new Float32Array(t.length));
        max = Math.max(max, t.length);
      }
    }
    this.sm = be.alloc('f32', max, 'paged.exp_avg');
    this.sv = be.alloc('f32', max, 'paged.exp_avg_sq');
  }
  async update(params: LoraParam[], lr: number, step: number, gradScale: number): Promise<void> {
    const hp = { lr, beta1: this.o.beta1, beta2: this.o.beta2, eps: this.o.eps, weightDecay: this.o.weightDecay, step, gradScale };
    for (const { value: t, grad: g } of params) {
      {
        const m = this.m.get(t)!, v = this.v.get(t)!;
        this.be.write(this.sm, m);
        this.be.write(this.sv, v);
        this.be.adamwStep(t, g, this.sm, this.sv, t.length, hp);
        const [nm, nv] = await Promise.all([this.be.read(this.sm, 0, t.length), this.be.read(this.sv, 0, t.length)]);
        m.set(nm as Float32Array);
        v.set(nv as Float32Array);
      }
    }
  }
  async exportState(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const [t, m] of this.m) {
      out.set(`${t.label}.exp_avg`, m.slice());
      out.set(`${t.label}.exp_avg_sq`, this.v.get(t)!.slice());
    }
    return out;
  }
  importState(state: Map<string, Float32Array>): void {
    for (const [t, m] of this.m) {
      m.set(need(state, `${t.label}.exp_avg`, t.length));
      this.v.get(t)!.set(need(state, `${t.label}.exp_avg_sq`, t.length));
    }
  }
  free(): void {
    this.be.free(this.sm);
    this.be.free(this.sv);
  }
}

class Sgd implements Optimizer {
  constructor(private readonly be: Backend) {}
  async update(params: LoraParam[], lr: number, _step: number, gradScale: number): Promise<void> {
    for (const { value: t, grad: g } of params) this.be.sgdStep(t, g, t.length, lr, gradScale);
  }
  async exportState(): Promise<Map<string, Float32Array>> { return new Map(); }
  importState(): void {}
  free(): void {}
}

function need(state: Map<string, Float32Array>, key: string, n: number): Float32Array {
  const v = state.get(key);
  if (!v || v.length !== n) throw new WebqloraError(`optimizer state: ${key} is missing or has the wrong size (expected ${n} values).`);
  return v;
}

export class Trainer {
  /** optimizer steps completed */
  step = 0;
  readonly ws: Workspace;
  private readonly opt: Optimizer;
  private readonly lossAcc: Tensor;
  private readonly normSq: Tensor;
  private readonly warmup: number;
  private readonly preference: PreferenceObjective | null;

  constructor(readonly model: LlamaModel, readonly lora: LoraAdapters, readonly data: MicroBatchSource, readonly o: TrainOptions) {
    const be = model.backend;
    this.preference = isPreference(o.method) ? new PreferenceObjective(model, o.method, o.beta ?? DEFAULT_BETA) : null;
    if (o.packing && this.preference) throw new WebqloraError('sample packing is for SFT examples: preference pairs are not packed (drop --packing).');
    // a preference micro-batch of batchSize pairs runs 2·batchSize rows
    this.ws = new Workspace(be, model.config, { batch: o.batchSize * (this.preference ? 2 : 1), seqLen: o.seqLen, training: true, checkpointing: o.checkpointing, loraRank: lora.maxRank, loraDropout: lora.config.dropout, dora: lora.useDora, packing: o.packing ?? false, preference: this.preference !== null });
    this.opt = o.optimizer === 'sgd' ? new Sgd(be) : o.optimizer === 'paged-adamw' ? new PagedAdamW(be, lora.params, o) : new AdamW(be, lora.params, o);
    // per-row losses [B·T] followed by the squared gradient norm: one readback per step
    this.lossAcc = be.alloc('f32', o.batchSize * o.seqLen + 1, 'lossAcc');
    this.normSq = be.alloc('f32', 1, 'gradNormSq');
    this.warmup = warmupSteps(o.totalSteps, o.warmupRatio);
  }

  lrAt(step: number): number {
    return lrAt(step, this.o.totalSteps, this.o.lr, this.o.schedule, this.warmup);
  }

  /** One optimizer step over gradAccum micro-batches; returns that step's loss before the update. */
  async trainStep(): Promise<StepRecord> {
    const be = this.model.backend, o = this.o;
    const t0 = performance.now();
    const mbs: MicroBatch[] = [];
    for (let i = 0; i < o.gradAccum; i++) mbs.push(this.data.next());
    const scored = mbs.reduce((s, mb) => s + scoredTokens(mb), 0);
    const tokens = mbs.reduce((s, mb) => s + mb.B * mb.T, 0);
    const lr = this.lrAt(this.step);
    this.lora.zeroGrads();
    be.fill(this.lossAcc, 0);
    let pref: { loss: number; metrics: PreferenceMetrics } | null = null;
    // micro-batch i's seed for LoRA dropout and NEFTune noise; none when neither is on
    const alpha = o.neftuneAlpha ?? 0;
    const seedOf = (i: number) => (this.lora.config.dropout > 0 || alpha > 0 ? deriveSeed(o.seed, this.step, i) : undefined);
    if (scored > 0 && this.preference) {
      pref = await this.preference.accumulate(this.ws, this.lora, mbs, seedOf, alpha);
    } else if (scored > 0) {
      for (let i = 0; i < mbs.length; i++) {
        const mb = mbs[i]!;
        await this.model.stageInput(this.ws, mb.ids.subarray(0, mb.B * mb.T), mb.T);
        forwardBackward(this.model, this.ws, this.lora, mb, 1 / scored, seedOf(i), this.lossAcc, alpha);
      }
    }
    let first = true;
    for (const p of this.lora.params) {
      be.sumSquares(this.normSq, p.grad, p.grad.length, !first);
      first = false;
    }
    const R = o.batchSize * o.seqLen;
    be.copy(this.lossAcc, R, this.normSq, 0, 1);
    const stats = (await be.read(this.lossAcc)) as Float32Array;
    const gn2 = stats[R]!;
    let lossSum = 0;
    for (let i = 0; i < R; i++) lossSum += stats[i]!;
    const loss = pref ? pref.loss : scored > 0 ? lossSum / scored : NaN;
    const gradNorm = Math.sqrt(gn2);
    if (scored > 0 && (!Number.isFinite(loss) || !Number.isFinite(gradNorm))) {
      throw new WebqloraError(`step ${this.step + 1}: the loss or the gradient is not finite (loss ${loss}, gradient norm ${gradNorm}); lower --lr or check the data.`);
    }
    const clip = o.maxGradNorm > 0 ? Math.min(1, o.maxGradNorm / (gradNorm + 1e-6)) : 1;
    // the update is enqueued; the next step's readback orders it (no extra host sync here)
    if (scored > 0) await this.opt.update(this.lora.params, lr, this.step + 1, clip);
    this.step++;
    const seconds = (performance.now() - t0) / 1000;
    return { step: this.step, loss, lr, grad_norm: gradNorm, tokens, scored, tokens_per_s: tokens / seconds, seconds, ...pref?.metrics };
  }

  exportOptimizer(): Promise<Map<string, Float32Array>> {
    return this.opt.exportState();
  }

  importOptimizer(state: Map<string, Float32Array>): void {
    this.opt.importState(state);
  }

  free(): void {
    this.ws.free();
    this.opt.free();
    this.model.backend.free(this.lossAcc);
    this.model.backend.free(this.normSq);
  }
}
