// The normalized configuration of a Llama-family decoder, whatever file it came from.
// Dimension legend used across src/ (STYLE.md §4):
//   B batch, T time (sequence), C hidden size, H query heads, KVH key/value heads, D head dim,
//   F MLP (intermediate) size, V vocabulary, L layers, R LoRA rank, S quantization block size.

/** The HF class name ("LlamaForCausalLM", …); the family's switches are in `variant`. */
export type Architecture = string;

export interface ModelConfig {
  architecture: Architecture;
  /** C */
  hiddenSize: number;
  /** F */
  intermediateSize: number;
  /** L */
  numLayers: number;
  /** H */
  numHeads: number;
  /** KVH (grouped-query attention when < H) */
  numKVHeads: number;
  /** D (usually C / H; SmolLM-style configs may set it explicitly) */
  headDim: number;
  /** V */
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Llama-3 style rope scaling, or null. */
  ropeScaling: RopeScaling | null;
  /** lm_head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  attentionBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** dtype of the checkpoint's float tensors ('F32' | 'F16' | 'BF16'), as the file declares it. */
  torchDtype: 'F32' | 'F16' | 'BF16';
  /** How the family differs from plain Llama (families.ts); absent = plain Llama. */
  variant?: Variant;
  /** The config.json this came from, written back as it was by merge and quantize. */
  hfConfig?: Record<string, unknown> | null;
}

export interface RopeScaling {
  /**
   * llama3 / linear: transformers' rope types; factors: llama.cpp's per-dimension divisors of
   * the inverse frequencies (a GGUF's rope_freqs tensor, how it stores Llama 3 scaling).
   */
  ropeType: 'llama3' | 'linear' | 'factors';
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
  /** D/2 divisors (ropeType 'factors') */
  factors?: number[];
}

export type FamilyId = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gemma2' | 'gemma3' | 'phi3';

/**
 * What sets a model apart from plain Llama: the switches the one decoder (llama.ts) reads, never a
 * family name. Each family's fixed switches are in families.ts; io/hf-config.ts sets the rest
 * from a config.json.
 */
export interface Variant {
  family: FamilyId;
  /** Gemma RMSNorm: x̂ · (1 + w) (the weights are stored as w; loading adds the 1 in float32). */
  normPlusOne: boolean;
  /** Gemma: embedding rows × f32(√C) (not the tied lm_head). */
  embedScale: boolean;
  /**
   * Gemma 3: that scale belongs to the embedding module (transformers' scaled word embedding), so
   * what hooks the embedding's output — NEFTune's noise — comes after it; Gemma 2 scales in the
   * model's forward, after the hook.
   */
  embedScaleInModule: boolean;
  /** MLP gate activation: SwiGLU (silu) or GeGLU with tanh-GELU. */
  activation: 'silu' | 'gelu_tanh';
  /** Qwen3, Gemma 3: per-head RMSNorm of q and k (weights [D]) before RoPE. */
  qkNorm: boolean;
  /** Gemma 2/3: RMSNorm of the attention output and of the MLP output before each residual add. */
  sandwichNorms: boolean;
  /** Phi-3: q/k/v stored as one qkv_proj and gate/up as one gate_up_proj (split on load). */
  fused: boolean;
  /** Attention score scale; null = 1/√D. Gemma: query_pre_attn_scalar^(−1/2). */
  attnScale: number | null;
  /** Gemma 2 soft-caps (0 = none). */
  attnSoftcap: number;
  finalSoftcap: number;
  /** Sliding-window size (0 = none) and, per layer, whether the layer uses it. */
  slidingWindow: number;
  slidingLayers: boolean[];
  /** RoPE of the sliding layers when it differs from the global one (Gemma 3's local base). */
  ropeLocal: { theta: number; scaling: RopeScaling | null } | null;
}

export const LLAMA_VARIANT: Omit<Variant, 'slidingLayers'> = {
  family: 'llama', normPlusOne: false, embedScale: false, embedScaleInModule: false, activation: 'silu', qkNorm: false, sandwichNorms: false,
  fused: false, attnScale: null, attnSoftcap: 0, finalSoftcap: 0, slidingWindow: 0, ropeLocal: null,
};

/** The variant of a config (plain Llama when the config carries none). */
export function variantOf(c: ModelConfig): Variant {
  return c.variant ?? { ...LLAMA_VARIANT, slidingLayers: new Array<boolean>(c.numLayers).fill(false) };
}

/** The seven linear layers of a decoder block, by their HF module names. */
export const LINEAR_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LinearName = (typeof LINEAR_NAMES)[number];

/** Whether a linear layer carries a bias: q/k/v of attention-bias (Qwen2) models. */
export function hasBias(c: ModelConfig, lin: LinearName): boolean {
  return c.attentionBias && (lin === 'q_proj' || lin === 'k_proj' || lin === 'v_proj');
}

/** HF module path of a block's (logical) linear layer. */
export function linearModule(layer: number, lin: LinearName): string {
  const group = lin === 'gate_proj' || lin === 'up_proj' || lin === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${group}.${lin}`;
}

/** HF parameter name of a block's linear layer weight (unfused layout). */
export function linearWeightName(layer: number, lin: LinearName): string {
  return `${linearModule(layer, lin)}.weight`;
}

/** [out, in] of each linear layer. */
export function linearShape(c: ModelConfig, lin: LinearName): [number, number] {
  const C = c.hiddenSize, F = c.intermediateSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim;
  switch (lin) {
    case 'q_proj': return [qd, C];
    case 'k_proj': case 'v_proj': return [kvd, C];
    case 'o_proj': return [C, qd];
    case 'gate_proj': case 'up_proj': return [F, C];
    case 'down_proj': return [C, F];
  }
}

/**
 * The stored module that holds a logical linear layer: its own (most families) or a fused one
 * (Phi-3's qkv_proj = [q; k; v] and gate_up_proj = [gate; up], stacked by rows). `module` is the
 * name PEFT targets and saves adapters under; rows [row0, row0 + N) of its weight are this layer.
 */
export interface LinearSource {
  /** PEFT/HF module short name (q_proj, qkv_proj, …) */
  module: string;
  /** full module path, e.g. model.layers.0.self_attn.qkv_proj */
  path: string;
  row0: number;
  /** out features of the whole stored module */
  rows: number;
}

export function linearSource(c: ModelConfig, layer: number, lin: LinearName): LinearSource {
  const [N] = linearShape(c, lin);
  if (variantOf(c).fused) {
    const qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, F = c.intermediateSize;
    const fused = (module: string, group: string, row0: number, rows: number): LinearSource => ({ module, path: `model.layers.${layer}.${group}.${module}`, row0, rows });
    switch (lin) {
      case 'q_proj': return fused('qkv_proj', 'self_attn', 0, qd + 2 * kvd);
      case 'k_proj': return fused('qkv_proj', 'self_attn', qd, qd + 2 * kvd);
      case 'v_proj': return fused('qkv_proj', 'self_attn', qd + kvd, qd + 2 * kvd);
      case 'gate_proj': return fused('gate_up_proj', 'mlp', 0, 2 * F);
      case 'up_proj': return fused('gate_up_proj', 'mlp', F, 2 * F);
      default: break;
    }
  }
  return { module: lin, path: linearModule(layer, lin), row0: 0, rows: N };
}

/** Norm weights of a block, by role: HF name (null when the family has no such norm). */
export interface BlockNormNames {
  /** before attention */
  attnIn: string;
  /** after attention, before the residual add (Gemma) */
  attnOut: string | null;
  /** before the MLP */
  mlpIn: string;
  /** after the MLP, before the residual add (Gemma) */
  mlpOut: string | null;
  /** per-head q/k norms [D] (Qwen3, Gemma 3) */
  q: string | null;
  k: string | null;
}

export function blockNormNames(c: ModelConfig, l: number): BlockNormNames {
  const v = variantOf(c), p = `model.layers.${l}`;
  // Gemma's "post_attention_layernorm" is the norm of the attention output; Llama's is the pre-MLP norm
  return {
    attnIn: `${p}.input_layernorm.weight`,
    attnOut: v.sandwichNorms ? `${p}.post_attention_layernorm.weight` : null,
    mlpIn: v.sandwichNorms ? `${p}.pre_feedforward_layernorm.weight` : `${p}.post_attention_layernorm.weight`,
    mlpOut: v.sandwichNorms ? `${p}.post_feedforward_layernorm.weight` : null,
    q: v.qkNorm ? `${p}.self_attn.q_norm.weight` : null,
    k: v.qkNorm ? `${p}.self_attn.k_norm.weight` : null,
  };
}

/** Every parameter the model expects, with its HF name and shape, in the family's layout. */
export function expectedTensors(c: ModelConfig): Array<{ name: string; shape: number[] }> {
  const out: Array<{ name: string; shape: number[] }> = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, c.hiddenSize] }];
  for (let l = 0; l < c.numLayers; l++) {
    const norms = blockNormNames(c, l);
    out.push({ name: norms.attnIn, shape: [c.hiddenSize] });
    if (norms.q) out.push({ name: norms.q, shape: [c.headDim] }, { name: norms.k!, shape: [c.headDim] });
    const seen = new Set<string>();
    for (const lin of LINEAR_NAMES) {
      const src = linearSource(c, l, lin);
      if (seen.has(src.path)) continue;
      seen.add(src.path);
      out.push({ name: `${src.path}.weight`, shape: [src.rows, linearShape(c, lin)[1]] });
      if (hasBias(c, lin)) out.push({ name: `${src.path}.bias`, shape: [src.rows] });
    }
    if (norms.attnOut) out.push({ name: norms.attnOut, shape: [c.hiddenSize] });
    out.push({ name: norms.mlpIn, shape: [c.hiddenSize] });
    if (norms.mlpOut) out.push({ name: norms.mlpOut, shape: [c.hiddenSize] });
  }
  out.push({ name: 'model.norm.weight', shape: [c.hiddenSize] });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, c.hiddenSize] });
  return out;
}

/** Parameter count of the base model. */
export function paramCount(c: ModelConfig): number {
  return expectedTensors(c).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
}
