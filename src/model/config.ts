// The normalized configuration of a Llama-family decoder, whatever file it came from.
// Dimension legend used across src/ (STYLE.md §4):
//   B batch, T time (sequence), C hidden size, H query heads, KVH key/value heads, D head dim,
//   F MLP (intermediate) size, V vocabulary, L layers, R LoRA rank, S quantization block size.

export type Architecture = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM';
export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'];

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
}

export interface RopeScaling {
  ropeType: 'llama3' | 'linear';
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

/** The seven linear layers of a decoder block, by their HF module names. */
export const LINEAR_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LinearName = (typeof LINEAR_NAMES)[number];

/** HF parameter name of a block's linear layer weight. */
export function linearWeightName(layer: number, lin: LinearName): string {
  const group = lin === 'gate_proj' || lin === 'up_proj' || lin === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${group}.${lin}.weight`;
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

/** Every parameter the model expects, with its HF name and shape. */
export function expectedTensors(c: ModelConfig): Array<{ name: string; shape: number[] }> {
  const out: Array<{ name: string; shape: number[] }> = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, c.hiddenSize] }];
  for (let l = 0; l < c.numLayers; l++) {
    out.push({ name: `model.layers.${l}.input_layernorm.weight`, shape: [c.hiddenSize] });
    for (const lin of LINEAR_NAMES) {
      out.push({ name: linearWeightName(l, lin), shape: linearShape(c, lin) });
      if (c.attentionBias && (lin === 'q_proj' || lin === 'k_proj' || lin === 'v_proj')) {
        out.push({ name: linearWeightName(l, lin).replace(/weight$/, 'bias'), shape: [linearShape(c, lin)[0]] });
      }
    }
    out.push({ name: `model.layers.${l}.post_attention_layernorm.weight`, shape: [c.hiddenSize] });
  }
  out.push({ name: 'model.norm.weight', shape: [c.hiddenSize] });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, c.hiddenSize] });
  return out;
}

/** Parameter count of the base model. */
export function paramCount(c: ModelConfig): number {
  return expectedTensors(c).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
}
