// Preference tuning: DPO (Rafailov et al.) and ORPO (Hong et al.) on micro-batches of pairs, TRL's
// losses (DPOTrainer loss_type "sigmoid", ORPOTrainer) without a second model held — the QLoRA way:
// DPO's reference is the same base with the adapter switched off (forward with lora = null).
//
// A micro-batch holds P pairs as B = 2P rows, the chosen sides first (data/preference.ts). For a
// sequence s, logp_s = Σ over its scored (response) tokens of log p(token) = −Σ CE_row, from the
// per-row losses lossHead leaves in ws.losses. Per pair i (β = `beta`, λ = `beta` for ORPO):
//   DPO   z = β·((logp_c − ref_c) − (logp_r − ref_r)),  L_i = −log σ(z)
//   ORPO  ā = logp / tokens (length-normalised),  lo = (ā_c − log(1 − e^ā_c)) − (ā_r − log(1 − e^ā_r)),
//         L_i = −λ·log σ(lo); plus NLL = Σ CE over every chosen token / chosen tokens (TRL's mean
//         cross-entropy over the chosen half of the batch)
// The step's loss is the mean of L_i over every pair of the accumulated step (+ NLL over every
// chosen token of the step, ORPO), as our SFT loss is the mean over the step's scored tokens, so
// the trainer draws the step's micro-batches first and the totals are known before the first
// backward. (With --grad-accum > 1 TRL instead averages each micro-batch's mean: the same for
// DPO unless a micro-batch is short, different for ORPO's NLL when token counts differ.) Each micro-batch runs:
//   [DPO] reference forward + lossHead (lora = null, no gradient) → read the per-row losses
//   policy forward + lossHead (no gradient) → read the per-row losses
//   on the host, float64: dL/dCE of every row (one value per sequence, see pairTerms)
//   lossHead again with those per-row gradient scales → model.backward (the LoRA gradients)
// The second lossHead recomputes only the head: the decoder's activations are the policy forward's.
import { WebqloraError } from '../errors.ts';
import type { LlamaModel } from '../model/llama.ts';
import { Workspace } from '../model/llama.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { forwardLoss, type MicroBatch } from './step.ts';

export type TrainMethod = 'sft' | 'dpo' | 'orpo';
export type PreferenceMethod = 'dpo' | 'orpo';
export const TRAIN_METHODS: readonly TrainMethod[] = ['sft', 'dpo', 'orpo'];
/** TRL's DPOConfig.beta and ORPOConfig.beta (ORPO's λ) defaults. */
export const DEFAULT_BETA = 0.1;

export function isPreference(method: TrainMethod | undefined): method is PreferenceMethod {
  return method === 'dpo' || method === 'orpo';
}

/** A micro-batch of `pairs` pairs: B = 2·pairs rows, chosen rows first (data/preference.ts). */
export type PairBatch = MicroBatch & { pairs: number };

/** What one pair's sequences scored (float64 sums of the per-row log-probabilities). */
export interface PairStats {
  /** Σ log p over the response tokens, policy (with the adapter) */
  chosen: number;
  rejected: number;
  /** the same with the adapter off (DPO; NaN for ORPO) */
  refChosen: number;
  refRejected: number;
  /** scored tokens of each response */
  nChosen: number;
  nRejected: number;
}

/**
 * One pair's loss term and its derivatives w.r.t. the summed cross-entropy of each sequence
 * (dL_i/dCE_row is the same for every scored row of a sequence, since logp = −Σ CE).
 */
export interface PairTerms {
  /** DPO: −log σ(z); ORPO: −λ·log σ(lo) (the NLL is added over the step, not per pair) */
  loss: number;
  /** dL_i/dCE_row for each row of the chosen and of the rejected response */
  gChosen: number;
  gRejected: number;
  /** TRL's rewards: DPO β·(logp − ref); ORPO β·ā */
  rewardChosen: number;
  rewardRejected: number;
  /** ORPO: the log-odds ratio lo and log σ(lo) (NaN for DPO) */
  logOdds: number;
  logSigmoidOdds: number;
}

const softplus = (x: number) => (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x)));
const sigmoid = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

/** The loss term of one pair and its gradient (see the file comment), in float64. */
export function pairTerms(method: PreferenceMethod, beta: number, s: PairStats): PairTerms {
  if (method === 'dpo') {
    const dc = s.chosen - s.refChosen, dr = s.rejected - s.refRejected;
    const z = beta * (dc - dr);
    // d(−log σ(z))/dz = −σ(−z); dz/dlogp_c = β, dz/dlogp_r = −β; dlogp/dCE_row = −1
    const g = beta * sigmoid(-z);
    return { loss: softplus(-z), gChosen: g, gRejected: -g, rewardChosen: beta * dc, rewardRejected: beta * dr, logOdds: NaN, logSigmoidOdds: NaN };
  }
  // ā < 0 always (a probability below 1); a response the model is already certain of (ā rounds to
  // 0 in float32) would make log(1 − e^ā) infinite, so ā is held just below 0
  const ac = Math.min(s.chosen / s.nChosen, -1e-7), ar = Math.min(s.rejected / s.nRejected, -1e-7);
  const oc = -Math.expm1(ac), or = -Math.expm1(ar); // 1 − e^ā, exact near 0
  const lo = ac - Math.log(oc) - (ar - Math.log(or));
  // d(ā − log(1 − e^ā))/dā = 1 / (1 − e^ā); dā/dCE_row = −1/n; d(−λ log σ(lo))/dlo = −λ·σ(−lo)
  const g = beta * sigmoid(-lo);
  return {
    loss: beta * softplus(-lo), gChosen: g / (oc * s.nChosen), gRejected: -g / (or * s.nRejected),
    rewardChosen: beta * ac, rewardRejected: beta * ar, logOdds: lo, logSigmoidOdds: -softplus(-lo),
  };
}

/** TRL's logged metrics (same keys), means over the step's pairs. */
export interface PreferenceMetrics {
  'rewards/chosen': number;
  'rewards/rejected': number;
  /** mean of reward_c − reward_r (DPO: β·(Δc − Δr)) */
  'rewards/margins': number;
  /** share of pairs with reward_c > reward_r */
  'rewards/accuracies': number;
  /** mean logp of the chosen / rejected responses (ORPO: length-normalised, as TRL logs them) */
  'logps/chosen': number;
  'logps/rejected': number;
  /** ORPO: mean log σ(lo), mean lo, and the chosen NLL */
  log_odds_ratio?: number;
  log_odds_chosen?: number;
  nll_loss?: number;
}

/** Sums over pairs that become the loss and the metrics. */
class Tally {
  pairs = 0; chosenTokens = 0; pairLoss = 0; nll = 0;
  rc = 0; rr = 0; acc = 0; lc = 0; lr = 0; lso = 0; lo = 0;

  add(method: PreferenceMethod, s: PairStats, t: PairTerms): void {
    this.pairs++;
    this.chosenTokens += s.nChosen;
    this.pairLoss += t.loss;
    this.nll -= s.chosen;
    this.rc += t.rewardChosen;
    this.rr += t.rewardRejected;
    if (t.rewardChosen > t.rewardRejected) this.acc++;
    this.lc += method === 'orpo' ? s.chosen / s.nChosen : s.chosen;
    this.lr += method === 'orpo' ? s.rejected / s.nRejected : s.rejected;
    this.lso += t.logSigmoidOdds;
    this.lo += t.logOdds;
  }

  result(method: PreferenceMethod): { loss: number; metrics: PreferenceMetrics } {
    const P = this.pairs;
    const m: PreferenceMetrics = {
      'rewards/chosen': this.rc / P, 'rewards/rejected': this.rr / P, 'rewards/margins': (this.rc - this.rr) / P, 'rewards/accuracies': this.acc / P,
      'logps/chosen': this.lc / P, 'logps/rejected': this.lr / P,
    };
    let loss = this.pairLoss / P;
    if (method === 'orpo') {
      const nll = this.nll / this.chosenTokens;
      loss += nll;
      Object.assign(m, { log_odds_ratio: this.lso / P, log_odds_chosen: this.lo / P, nll_loss: nll });
    }
    return { loss, metrics: m };
  }
}

function pairBatch(mb: MicroBatch): PairBatch {
  const pb = mb as Partial<PairBatch>;
  if (!(typeof pb.pairs === 'number' && mb.B === 2 * pb.pairs)) throw new Error('preference tuning needs micro-batches of pairs (data/preference.ts PreferenceBatcher)');
  // a pair's rows are whole sequences: a packed micro-batch would need docStart in every pass
  if (mb.docStart) throw new Error('preference tuning takes unpacked micro-batches of pairs (docStart given)');
  return mb as PairBatch;
}

/** Per pair: [Σ CE of the chosen rows, of the rejected rows] in float64, and the scored counts. */
function sequenceSums(losses: Float32Array | Int32Array | Uint8Array | Uint16Array, mb: PairBatch): { ce: Float64Array; n: Int32Array } {
  const ce = new Float64Array(mb.B), n = new Int32Array(mb.B);
  for (let b = 0; b < mb.B; b++) {
    for (let t = 0; t < mb.T; t++) {
      const r = b * mb.T + t;
      if (mb.targets[r] === -100) continue;
      ce[b]! += losses[r]!;
      n[b]!++;
    }
  }
  return { ce, n };
}

function statsOf(mb: PairBatch, pol: { ce: Float64Array; n: Int32Array }, ref: { ce: Float64Array } | null, i: number): PairStats {
  const P = mb.pairs;
  return {
    chosen: -pol.ce[i]!, rejected: -pol.ce[P + i]!,
    refChosen: ref ? -ref.ce[i]! : NaN, refRejected: ref ? -ref.ce[P + i]! : NaN,
    nChosen: pol.n[i]!, nRejected: pol.n[P + i]!,
  };
}

function scoredOf(mb: PairBatch, chosenOnly: boolean): number {
  let n = 0;
  const end = (chosenOnly ? mb.pairs : mb.B) * mb.T;
  for (let r = 0; r < end; r++) if (mb.targets[r] !== -100) n++;
  return n;
}

/**
 * The per-sequence sums of a pair micro-batch's per-row losses, with the adapter (`pol`) and, for
 * DPO, without it (`ref`): the frozen base as TRL's separate reference model runs it, in eval mode
 * — no NEFTune noise, no LoRA dropout (the adapter is off). The reference losses wait in
 * ws.refLosses next to the policy's, so one readback serves both passes. The policy forward's
 * activations stay in ws for the backward.
 */
async function sequenceLogps(model: LlamaModel, ws: Workspace, lora: LoraAdapters | null, mb: PairBatch, method: PreferenceMethod, seed: number | undefined, neftuneAlpha: number): Promise<{ pol: { ce: Float64Array; n: Int32Array }; ref: { ce: Float64Array } | null }> {
  const be = model.backend, R = mb.B * mb.T;
  if (ws.refLosses.length < 2 * R) throw new Error('preference tuning needs a workspace made with { preference: true }');
  await model.stageInput(ws, mb.ids.subarray(0, R), mb.T);
  if (method === 'dpo') {
    forwardLoss(model, ws, null, mb, undefined);
    be.copy(ws.refLosses, 0, ws.losses, 0, R);
  }
  forwardLoss(model, ws, lora, mb, seed, undefined, neftuneAlpha);
  be.copy(ws.refLosses, R, ws.losses, 0, R);
  const both = (await be.read(ws.refLosses, 0, 2 * R)) as Float32Array;
  return { pol: sequenceSums(both.subarray(R), mb), ref: method === 'dpo' ? sequenceSums(both.subarray(0, R), mb) : null };
}

export class PreferenceObjective {
  private scales: Float32Array | null = null;

  constructor(readonly model: LlamaModel, readonly method: PreferenceMethod, readonly beta: number) {
    if (!(beta > 0 && Number.isFinite(beta))) throw new WebqloraError(`beta must be a number > 0, got ${beta}.`);
  }

  /**
   * Runs one optimizer step's micro-batches (all drawn before the first, so the step's totals are
   * known) and accumulates the LoRA gradients of the step's mean preference loss. `seedOf(i)` is
   * micro-batch i's dropout/NEFTune seed (as the trainer gives SFT micro-batches).
   */
  async accumulate(ws: Workspace, lora: LoraAdapters, mbs: MicroBatch[], seedOf: (i: number) => number | undefined, neftuneAlpha = 0): Promise<{ loss: number; metrics: PreferenceMetrics }> {
    const batches = mbs.map(pairBatch);
    const P = batches.reduce((s, mb) => s + mb.pairs, 0);
    const Nc = batches.reduce((s, mb) => s + scoredOf(mb, true), 0);
    const tally = new Tally();
    for (let k = 0; k < batches.length; k++) {
      const mb = batches[k]!, R = mb.B * mb.T, seed = seedOf(k);
      const { pol, ref } = await sequenceLogps(this.model, ws, lora, mb, this.method, seed, neftuneAlpha);
      if (!this.scales || this.scales.length < R) this.scales = new Float32Array(ws.R);
      const scales = this.scales;
      for (let i = 0; i < mb.pairs; i++) {
        const s = statsOf(mb, pol, ref, i);
        const t = pairTerms(this.method, this.beta, s);
        tally.add(this.method, s, t);
        // ORPO's NLL adds 1/Nc to every chosen row
        const gc = t.gChosen / P + (this.method === 'orpo' ? 1 / Nc : 0), gr = t.gRejected / P;
        scales.fill(gc, i * mb.T, (i + 1) * mb.T);
        scales.fill(gr, (mb.pairs + i) * mb.T, (mb.pairs + i + 1) * mb.T);
      }
      this.model.lossHead(ws, R, mb.targets, scales);
      this.model.backward(ws, mb.B, mb.T, lora, seed);
    }
    return tally.result(this.method);
  }
}

export interface PreferenceEvalResult {
  loss: number;
  metrics: PreferenceMetrics;
  pairs: number;
}

/**
 * The preference loss and TRL's metrics over a set of pair batches, without gradients or dropout
 * (validation). `adapters` null scores the base, whose DPO loss is log 2 and margins 0.
 */
export async function evaluatePreference(
  model: LlamaModel,
  batches: Iterable<MicroBatch>,
  opts: { method: PreferenceMethod; beta: number; maxPairs: number; maxSeqLen: number; adapters: LoraAdapters | null; onBatch?: (done: number) => void },
): Promise<PreferenceEvalResult> {
  const be = model.backend, lora = opts.adapters;
  const ws = new Workspace(be, model.config, {
    batch: 2 * opts.maxPairs, seqLen: opts.maxSeqLen, training: false, checkpointing: false, loraRank: lora?.maxRank ?? 0, dora: lora?.useDora ?? false, preference: true,
  });
  const tally = new Tally();
  let done = 0;
  try {
    for (const b of batches) {
      const mb = pairBatch(b);
      const { pol, ref } = await sequenceLogps(model, ws, lora, mb, opts.method, undefined, 0);
      for (let i = 0; i < mb.pairs; i++) {
        const s = statsOf(mb, pol, ref, i);
        tally.add(opts.method, s, pairTerms(opts.method, opts.beta, s));
      }
      opts.onBatch?.(++done);
    }
    return { ...tally.result(opts.method), pairs: tally.pairs };
  } finally {
    ws.free();
  }
}
