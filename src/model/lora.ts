// LoRA adapters (Hu et al.; QLoRA §4; PEFT src/peft/tuners/lora/layer.py semantics).
// A linear layer y = x·Wᵀ gains y += s · (dropout(x)·Aᵀ)·Bᵀ with A [r, K], B [N, r] in float32,
// s = alpha / r (rsLoRA: alpha / √r). PEFT's default init: A ~ Kaiming-uniform(a = √5), which is
// U(−1/√K, 1/√K), and B = 0, so a fresh adapter is a no-op.
import { WebqloraError } from '../errors.ts';
import { LINEAR_NAMES, linearShape, linearWeightName, type LinearName, type ModelConfig } from './config.ts';
import type { Backend, Tensor } from '../backend/backend.ts';

export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  /** Which of the seven linear layers carry an adapter. */
  targets: LinearName[];
  useRslora: boolean;
}

/** QLoRA paper defaults (QLORA_SPEC §7.1) adapted to a CLI default rank: r 16, alpha 32, all linear layers. */
export const DEFAULT_LORA: LoraConfig = { r: 16, alpha: 32, dropout: 0.05, targets: [...LINEAR_NAMES], useRslora: false };

/**
 * The one check of a LoRA configuration, wherever it comes from (flags, an adapter_config.json,
 * a checkpoint): r ≥ 1, alpha > 0, 0 ≤ dropout < 1, at least one target. `where` names the source.
 */
export function checkLoraConfig(c: LoraConfig, where: string): void {
  if (!(Number.isInteger(c.r) && c.r >= 1)) throw new WebqloraError(`${where}: LoRA rank r must be a positive integer, got ${c.r}.`);
  if (!(Number.isFinite(c.alpha) && c.alpha > 0)) throw new WebqloraError(`${where}: lora_alpha must be a positive number, got ${c.alpha}.`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new WebqloraError(`${where}: lora_dropout must be in [0, 1), got ${c.dropout}.`);
  if (c.targets.length === 0) throw new WebqloraError(`${where}: no target modules.`);
}

export function loraScaling(c: LoraConfig): number {
  return c.useRslora ? c.alpha / Math.sqrt(c.r) : c.alpha / c.r;
}

/** Parses `--target`: "all-linear" or a comma list of module names. */
export function parseTargets(spec: string): LinearName[] {
  if (spec === 'all-linear' || spec === 'all') return [...LINEAR_NAMES];
  const names = spec.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(LINEAR_NAMES as readonly string[]).includes(n)) {
      throw new WebqloraError(`--target: unknown module '${n}' (expected all-linear or a comma list of ${LINEAR_NAMES.join(', ')}).`);
    }
  }
  if (names.length === 0) throw new WebqloraError('--target: no module named (expected all-linear or a comma list of module names).');
  return [...new Set(names)] as LinearName[];
}

/** One adapter pair with its gradients. */
export interface LoraPair {
  layer: number;
  name: LinearName;
  /** out and in features of the adapted layer */
  N: number;
  K: number;
  /** A [r, K], B [N, r] */
  A: Tensor;
  B: Tensor;
  /** gradients, same shapes; accumulate over micro-batches, zeroed by the trainer */
  dA: Tensor;
  dB: Tensor;
}

/** All adapters of a model, in a fixed order: layer by layer, modules in LINEAR_NAMES order. */
export class LoraAdapters {
  readonly pairs: LoraPair[] = [];
  private readonly byKey = new Map<string, LoraPair>();
  readonly scaling: number;

  constructor(readonly backend: Backend, readonly model: ModelConfig, readonly config: LoraConfig, withGrads: boolean) {
    checkLoraConfig(config, 'LoRA');
    this.scaling = loraScaling(config);
    const r = config.r;
    for (let l = 0; l < model.numLayers; l++) {
      for (const name of LINEAR_NAMES) {
        if (!config.targets.includes(name)) continue;
        const [N, K] = linearShape(model, name);
        const label = `layers.${l}.${name}`;
        const pair: LoraPair = {
          layer: l, name, N, K,
          A: backend.alloc('f32', r * K, `${label}.lora_A`),
          B: backend.alloc('f32', N * r, `${label}.lora_B`),
          dA: withGrads ? backend.alloc('f32', r * K, `${label}.lora_A.grad`) : NO_GRAD,
          dB: withGrads ? backend.alloc('f32', N * r, `${label}.lora_B.grad`) : NO_GRAD,
        };
        this.pairs.push(pair);
        this.byKey.set(`${l}.${name}`, pair);
      }
    }
  }

  get(layer: number, name: LinearName): LoraPair | null {
    return this.byKey.get(`${layer}.${name}`) ?? null;
  }

  /** Trainable parameter count. */
  get paramCount(): number {
    return this.pairs.reduce((s, p) => s + this.config.r * (p.K + p.N), 0);
  }

  /** PEFT initialisation from a seeded generator: A ~ U(−1/√K, 1/√K), B = 0. */
  initPeft(rand: () => number): void {
    for (const p of this.pairs) {
      const bound = 1 / Math.sqrt(p.K);
      const a = new Float32Array(this.config.r * p.K);
      for (let i = 0; i < a.length; i++) a[i] = (2 * rand() - 1) * bound;
      this.backend.write(p.A, a);
      this.backend.fill(p.B, 0);
    }
  }

  zeroGrads(): void {
    for (const p of this.pairs) {
      this.backend.fill(p.dA, 0);
      this.backend.fill(p.dB, 0);
    }
  }

  free(): void {
    for (const p of this.pairs) {
      for (const t of [p.A, p.B, p.dA, p.dB]) if (t !== NO_GRAD) this.backend.free(t);
    }
  }
}

/** Placeholder for adapters loaded for inference only (no gradient buffers). */
const NO_GRAD: Tensor = { type: 'f32', length: 0, label: 'no-grad' };

/** PEFT key of an adapter tensor (adapter name "default" stripped, as PEFT saves it). */
export function peftKey(layer: number, name: LinearName, which: 'A' | 'B'): string {
  return `base_model.model.${linearWeightName(layer, name).replace(/weight$/, `lora_${which}.weight`)}`;
}
