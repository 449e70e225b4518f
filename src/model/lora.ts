// LoRA adapters (Hu et al.; QLoRA §4; PEFT src/peft/tuners/lora/layer.py semantics).
// A linear layer y = x·Wᵀ gains y += s · (dropout(x)·Aᵀ)·Bᵀ with A [r, K], B [N, r] in float32,
// s = alpha / r (rsLoRA: alpha / √r). PEFT's default init: A ~ Kaiming-uniform(a = √5), which is
// U(−1/√K, 1/√K), and B = 0, so a fresh adapter is a no-op.
//
// Adapters live on PEFT's modules (`LoraModule`): the model's own linear layers, or a fused
// stored module (Phi-3's qkv_proj, gate_up_proj) that holds several of the decoder's logical
// linears. A fused module keeps one A and its B split by rows into one part per logical linear
// (`LoraPair`), so the decoder sees every linear alike; saving joins the parts again.
// Which modules carry an adapter, and with which rank and alpha, follows PEFT's LoraConfig:
// target_modules (short names, full paths, "all-linear" or a regex), layers_to_transform,
// rank_pattern and alpha_pattern.
import { WebqloraError } from '../errors.ts';
import { LINEAR_NAMES, linearShape, linearSource, type LinearName, type ModelConfig } from './config.ts';
import type { Backend, Tensor } from '../backend/backend.ts';

export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  /**
   * PEFT target_modules: a list of module names or full module paths (a module matches when its
   * path equals the entry or ends with "." + entry), "all-linear", or any other string = a regular
   * expression that must match the whole module path.
   */
  targets: readonly string[] | string;
  useRslora: boolean;
  /**
   * DoRA (Liu et al. 2024; PEFT's use_dora): each adapted linear also has a trainable magnitude
   * m [out] and computes y = bias + (m / ‖W + s·B·A‖_row) ⊙ (x·Wᵀ + s·x·Aᵀ·Bᵀ), the row norm
   * treated as a constant in the backward as PEFT does (on a 4-bit base: of the dequantized W).
   */
  useDora?: boolean;
  /** Only these layer indices get adapters (null: every layer). */
  layersToTransform?: number[] | null;
  /** Per-module rank and alpha overrides: key = regex matched against the end of the module path. */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
}

/** QLoRA paper defaults (QLORA_SPEC §7.1) adapted to a CLI default rank: r 16, alpha 32, all linear layers. */
export const DEFAULT_LORA: LoraConfig = { r: 16, alpha: 32, dropout: 0.05, targets: 'all-linear', useRslora: false };

/**
 * The one check of a LoRA configuration, wherever it comes from (flags, an adapter_config.json,
 * a checkpoint): r ≥ 1, alpha > 0, 0 ≤ dropout < 1, at least one target. `where` names the source.
 */
export function checkLoraConfig(c: LoraConfig, where: string): void {
  const rank = (r: number, what: string) => {
    if (!(Number.isInteger(r) && r >= 1)) throw new WebqloraError(`${where}: LoRA rank ${what} must be a positive integer, got ${r}.`);
  };
  const alpha = (a: number, what: string) => {
    if (!(Number.isFinite(a) && a > 0)) throw new WebqloraError(`${where}: ${what} must be a positive number, got ${a}.`);
  };
  rank(c.r, 'r');
  alpha(c.alpha, 'lora_alpha');
  for (const [k, v] of Object.entries(c.rankPattern ?? {})) rank(v, `rank_pattern["${k}"]`);
  for (const [k, v] of Object.entries(c.alphaPattern ?? {})) alpha(v, `alpha_pattern["${k}"]`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new WebqloraError(`${where}: lora_dropout must be in [0, 1), got ${c.dropout}.`);
  if (c.targets.length === 0) throw new WebqloraError(`${where}: no target modules.`);
  if (c.layersToTransform && !c.layersToTransform.every((l) => Number.isInteger(l) && l >= 0)) {
    throw new WebqloraError(`${where}: layers_to_transform must list layer indices, got ${JSON.stringify(c.layersToTransform)}.`);
  }
  if (typeof c.targets === 'string' && c.targets !== 'all-linear') pyRegex(c.targets, `${where}: target_modules`, true);
  for (const k of [...Object.keys(c.rankPattern ?? {}), ...Object.keys(c.alphaPattern ?? {})]) pyRegex(k, `${where}: pattern key`, false);
}

/** A Python `re` pattern as a JS RegExp (fullmatch, or PEFT's `(.*\.)?key$` for pattern keys). */
function pyRegex(src: string, what: string, full: boolean): RegExp {
  if (/\(\?P<|\(\?P=|\\[AZz]|\(\?[aiLmsux]+\)/.test(src)) throw new WebqloraError(`${what} ${JSON.stringify(src)} uses Python-only regex syntax.`);
  try {
    return new RegExp(full ? `^(?:${src})$` : `^(?:.*\\.)?(?:${src})$`);
  } catch {
    throw new WebqloraError(`${what} ${JSON.stringify(src)} is not a valid regular expression.`);
  }
}

/** target_modules in one line, for messages. */
export function describeTargets(c: LoraConfig): string {
  return typeof c.targets === 'string' ? c.targets : c.targets.join(',');
}

export function loraScaling(c: { alpha: number; r: number; useRslora: boolean }): number {
  return c.useRslora ? c.alpha / Math.sqrt(c.r) : c.alpha / c.r;
}

/** Parses `--target`: "all-linear" or a comma list of module names (checked against the model later). */
export function parseTargets(spec: string): readonly string[] | 'all-linear' {
  if (spec === 'all-linear' || spec === 'all') return 'all-linear';
  const names = [...new Set(spec.split(',').map((s) => s.trim()).filter(Boolean))];
  for (const n of names) {
    if (!/^[A-Za-z0-9_.]+$/.test(n)) throw new WebqloraError(`--target: '${n}' is not a module name (expected all-linear or a comma list such as ${LINEAR_NAMES.join(',')}).`);
    if (/(^|\.)(lm_head|embed_tokens)$/.test(n)) throw new WebqloraError(`--target: LoRA on '${n}' is not implemented (targets are linear layers such as ${LINEAR_NAMES.join(',')}).`);
  }
  if (names.length === 0) throw new WebqloraError('--target: no module named (expected all-linear or a comma list of module names).');
  return names;
}

/** One stored (PEFT) module of one layer with its adapter. */
export interface LoraModule {
  layer: number;
  /** PEFT short name (q_proj, qkv_proj, …) and full module path */
  module: string;
  path: string;
  /** in features; out features of the whole module */
  K: number;
  N: number;
  r: number;
  alpha: number;
  /** alpha / r (rsLoRA alpha / √r) */
  scaling: number;
  /** A [r, K] and its gradient (shared by the parts of a fused module) */
  A: Tensor;
  dA: Tensor;
  /** the logical linears it covers, in row order */
  parts: LoraPair[];
}

/**
 * DoRA's state of one adapted logical linear: the trainable magnitude m [N] and its gradient, the
 * frozen base rows' ‖W_j‖² (computed once, when its layer first runs), and per refresh
 * (LlamaModel.refreshDora, whenever A, B or m may have changed) g = m / ‖W + s·B·A‖_row and
 * invNorm = 1 / ‖W + s·B·A‖_row, all f32 [N].
 */
export interface DoraState {
  m: Tensor;
  dm: Tensor;
  wsq: Tensor;
  wsqReady: boolean;
  /**
   * false: m is not set yet and the next refresh sets PEFT's initial m = ‖W + s·B·A‖_row (a fresh
   * adapter then changes nothing). Reading an adapter sets it; so must code that writes m itself.
   */
  mReady: boolean;
  nsq: Tensor;
  g: Tensor;
  invNorm: Tensor;
}

/** The adapter as one logical linear layer sees it. */
export interface LoraPair {
  layer: number;
  name: LinearName;
  /** out and in features of this linear */
  N: number;
  K: number;
  r: number;
  scaling: number;
  /** A [r, K] (the module's), B [N, r] = rows [row0, row0 + N) of the module's B */
  A: Tensor;
  B: Tensor;
  dA: Tensor;
  dB: Tensor;
  row0: number;
  module: LoraModule;
  /** DoRA's magnitude and norms (null: plain LoRA) */
  dora: DoraState | null;
}

/** A trainable tensor and its gradient (optimizer, norm and checkpoint order). */
export interface LoraParam {
  value: Tensor;
  grad: Tensor;
}

/** The modules a LoRA config adapts on a model, with their ranks and alphas (PEFT's matching rules). */
export function resolveModules(model: ModelConfig, c: LoraConfig, where = 'LoRA'): Array<{ layer: number; module: string; path: string; r: number; alpha: number }> {
  const out: Array<{ layer: number; module: string; path: string; r: number; alpha: number }> = [];
  const names = new Set<string>();
  const matchedEntry = new Set<string>();
  const re = typeof c.targets === 'string' && c.targets !== 'all-linear' ? pyRegex(c.targets, `${where}: target_modules`, true) : null;
  const rankKeys = Object.entries(c.rankPattern ?? {}).map(([k, v]) => [pyRegex(k, where, false), v] as const);
  const alphaKeys = Object.entries(c.alphaPattern ?? {}).map(([k, v]) => [pyRegex(k, where, false), v] as const);
  if (c.layersToTransform) {
    const bad = c.layersToTransform.find((l) => l >= model.numLayers);
    if (bad !== undefined) throw new WebqloraError(`${where}: layers_to_transform names layer ${bad}, but the model has ${model.numLayers} layers.`);
  }
  for (let l = 0; l < model.numLayers; l++) {
    for (const lin of LINEAR_NAMES) {
      const src = linearSource(model, l, lin);
      if (src.row0 !== 0) continue; // a fused module is listed once, at its first part
      names.add(src.module);
      let hit: boolean;
      if (c.targets === 'all-linear') hit = true;
      else if (re) hit = re.test(src.path);
      else {
        hit = false;
        for (const t of c.targets as readonly string[]) {
          if (src.path === t || src.path.endsWith(`.${t}`)) { hit = true; matchedEntry.add(t); }
        }
      }
      if (!hit || (c.layersToTransform && !c.layersToTransform.includes(l))) continue;
      const r = rankKeys.find(([k]) => k.test(src.path))?.[1] ?? c.r;
      const alpha = alphaKeys.find(([k]) => k.test(src.path))?.[1] ?? c.alpha;
      out.push({ layer: l, module: src.module, path: src.path, r, alpha });
    }
  }
  if (Array.isArray(c.targets)) {
    const missing = (c.targets as readonly string[]).filter((t) => !matchedEntry.has(t));
    if (missing.length) {
      const m = missing[0]!;
      const why = /(^|\.)(embed_tokens|lm_head)$/.test(m) ? 'LoRA on the embedding or lm_head is not implemented' : `this model's linear modules are ${[...names].join(', ')}`;
      throw new WebqloraError(`${where}: target module ${JSON.stringify(m)} matches no linear layer (${why}).`);
    }
  }
  if (out.length === 0) throw new WebqloraError(`${where}: the target modules match no linear layer of this model (its modules: ${[...names].join(', ')}).`);
  return out;
}

/** All adapters of a model, in a fixed order: layer by layer, modules in LINEAR_NAMES order. */
export class LoraAdapters {
  readonly modules: LoraModule[] = [];
  /** every adapted logical linear */
  readonly pairs: LoraPair[] = [];
  /** every trainable tensor once (a fused module's A once, each B part) */
  readonly params: LoraParam[] = [];
  /** the largest rank of any module (workspace scratch is sized by it) */
  readonly maxRank: number;
  /** DoRA scratch for the row norms: V, Bᵀ [maxRank, max N], A·Aᵀ [maxRank²], identity per rank */
  readonly doraScratch: { V: Tensor; Bt: Tensor; G: Tensor; eye: Map<number, Tensor> } | null = null;
  private readonly byKey = new Map<string, LoraPair>();

  constructor(readonly backend: Backend, readonly model: ModelConfig, readonly config: LoraConfig, withGrads: boolean) {
    checkLoraConfig(config, 'LoRA');
    const grad = (n: number, label: string) => (withGrads ? backend.alloc('f32', n, label) : NO_GRAD);
    let maxRank = 0;
    for (const m of resolveModules(model, config)) {
      const lins = LINEAR_NAMES.filter((n) => linearSource(model, m.layer, n).path === m.path);
      const K = linearShape(model, lins[0]!)[1], r = m.r;
      const label = `layers.${m.layer}.${m.module}`;
      const mod: LoraModule = {
        ...m, K, N: linearSource(model, m.layer, lins[0]!).rows, scaling: loraScaling({ alpha: m.alpha, r, useRslora: config.useRslora }),
        A: backend.alloc('f32', r * K, `${label}.lora_A`), dA: grad(r * K, `${label}.lora_A.grad`), parts: [],
      };
      this.params.push({ value: mod.A, grad: mod.dA });
      for (const name of lins) {
        const N = linearShape(model, name)[0];
        // a fused module's B parts are labelled by their logical linear (optimizer state names)
        const bl = lins.length > 1 ? `layers.${m.layer}.${name}` : label;
        const dora: DoraState | null = config.useDora ? {
          m: backend.alloc('f32', N, `${bl}.lora_magnitude_vector`), dm: grad(N, `${bl}.lora_magnitude_vector.grad`), wsqReady: false, mReady: false,
          wsq: backend.alloc('f32', N, `${bl}.dora_wsq`), nsq: backend.alloc('f32', N, `${bl}.dora_nsq`),
          g: backend.alloc('f32', N, `${bl}.dora_g`), invNorm: backend.alloc('f32', N, `${bl}.dora_inv_norm`),
        } : null;
        const pair: LoraPair = {
          layer: m.layer, name, N, K, r, scaling: mod.scaling, A: mod.A, dA: mod.dA, row0: linearSource(model, m.layer, name).row0, module: mod,
          B: backend.alloc('f32', N * r, `${bl}.lora_B`), dB: grad(N * r, `${bl}.lora_B.grad`), dora,
        };
        mod.parts.push(pair);
        this.pairs.push(pair);
        this.params.push({ value: pair.B, grad: pair.dB });
        if (dora) this.params.push({ value: dora.m, grad: dora.dm });
        this.byKey.set(`${m.layer}.${name}`, pair);
      }
      this.modules.push(mod);
      maxRank = Math.max(maxRank, r);
    }
    this.maxRank = maxRank;
    if (config.useDora) {
      const maxN = Math.max(...this.pairs.map((p) => p.N));
      const eye = new Map<number, Tensor>();
      for (const r of new Set(this.pairs.map((p) => p.r))) {
        const t = backend.alloc('f32', r * r, `dora.eye${r}`), v = new Float32Array(r * r);
        for (let i = 0; i < r; i++) v[i * r + i] = 1;
        backend.write(t, v);
        eye.set(r, t);
      }
      this.doraScratch = { V: backend.alloc('f32', maxRank * maxN, 'dora.V'), Bt: backend.alloc('f32', maxRank * maxN, 'dora.Bt'), G: backend.alloc('f32', maxRank * maxRank, 'dora.AAt'), eye };
    }
  }

  get useDora(): boolean {
    return this.config.useDora === true;
  }

  get(layer: number, name: LinearName): LoraPair | null {
    return this.byKey.get(`${layer}.${name}`) ?? null;
  }

  /** Trainable parameter count. */
  get paramCount(): number {
    return this.modules.reduce((s, m) => s + m.r * (m.K + m.N) + (this.useDora ? m.N : 0), 0);
  }

  /**
   * PEFT initialisation from a seeded generator: A ~ U(−1/√K, 1/√K), B = 0. DoRA's magnitudes
   * (PEFT: ‖W + s·B·A‖_row = ‖W‖_row at B = 0) need the base weights: the first forward sets them
   * (DoraState.mReady).
   */
  initPeft(rand: () => number): void {
    // one host buffer for every A (write copies it): a 7B model's all-linear r16 A's are 73 MB,
    // which would otherwise be garbage still resident when the optimizer state fills memory
    const buf = new Float32Array(Math.max(0, ...this.modules.map((m) => m.r * m.K)));
    for (const m of this.modules) {
      const bound = 1 / Math.sqrt(m.K);
      const a = buf.subarray(0, m.r * m.K);
      for (let i = 0; i < a.length; i++) a[i] = (2 * rand() - 1) * bound;
      this.backend.write(m.A, a);
      for (const p of m.parts) {
        this.backend.fill(p.B, 0);
        if (p.dora) p.dora.mReady = false;
      }
    }
  }

  zeroGrads(): void {
    for (const p of this.params) this.backend.fill(p.grad, 0);
  }

  free(): void {
    for (const p of this.params) {
      for (const t of [p.value, p.grad]) if (t !== NO_GRAD) this.backend.free(t);
    }
    for (const p of this.pairs) if (p.dora) for (const t of [p.dora.wsq, p.dora.nsq, p.dora.g, p.dora.invNorm]) this.backend.free(t);
    const s = this.doraScratch;
    if (s) for (const t of [s.V, s.Bt, s.G, ...s.eye.values()]) this.backend.free(t);
  }
}

/** Placeholder for adapters loaded for inference only (no gradient buffers). */
const NO_GRAD: Tensor = { type: 'f32', length: 0, label: 'no-grad' };

/** PEFT key of a module's adapter tensor (adapter name "default" stripped, as PEFT saves it). */
export function peftKey(path: string, which: 'A' | 'B' | 'magnitude'): string {
  return which === 'magnitude' ? `base_model.model.${path}.lora_magnitude_vector` : `base_model.model.${path}.lora_${which}.weight`;
}
