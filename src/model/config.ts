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

/** Whether a linear layer carries a bias: q/k/v of attention-bias (Qwen2) models. */
export function hasBias(c: ModelConfig, lin: LinearName): boolean {
  return c.attentionBias && (lin === 'q_proj' || lin === 'k_proj' || lin === 'v_proj');
}

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
      if (hasBias(c, lin)) {
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

// ---------------------------------------------------------------------------------------------
// HF config.json ⇄ ModelConfig

import { WebqloraError } from '../errors.ts';

const MODEL_TYPE: Record<Architecture, string> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2' };

/**
 * Normalizes an HF config.json (transformers LlamaConfig / MistralConfig / Qwen2Config fields).
 * `fileName` prefixes every message. Throws WebqloraError naming the key on anything missing,
 * mistyped or unsupported.
 */
export function configFromHf(json: unknown, fileName: string): ModelConfig {
  const fail = (msg: string): never => { throw new WebqloraError(`${fileName}: ${msg}`); };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('expected a JSON object.');
  const j = json as Record<string, unknown>;
  const has = (k: string) => j[k] !== undefined && j[k] !== null;

  let architecture: Architecture | undefined;
  if (has('architectures')) {
    const archs = j.architectures;
    if (!Array.isArray(archs) || archs.length === 0 || !archs.every((a) => typeof a === 'string')) return fail('"architectures" must be a non-empty list of names.');
    const a = (archs as string[]).find((x) => (SUPPORTED_ARCHITECTURES as readonly string[]).includes(x));
    if (!a) return fail(`architecture ${(archs as string[]).join(', ')} is not supported (expected LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM).`);
    architecture = a as Architecture;
  } else if (has('model_type')) {
    const mt = j.model_type;
    architecture = (Object.keys(MODEL_TYPE) as Architecture[]).find((a) => MODEL_TYPE[a] === mt);
    if (!architecture) return fail(`model_type ${JSON.stringify(mt)} is not supported (expected "llama", "mistral" or "qwen2").`);
  } else {
    return fail('missing "architectures".');
  }

  const int = (k: string, def?: number, min = 1): number => {
    if (!has(k)) {
      if (def !== undefined) return def;
      return fail(`missing "${k}".`);
    }
    const v = j[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) return fail(`"${k}" must be an integer >= ${min}, got ${JSON.stringify(v)}.`);
    return v;
  };
  const pos = (k: string, def?: number): number => {
    if (!has(k)) {
      if (def !== undefined) return def;
      return fail(`missing "${k}".`);
    }
    const v = j[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) return fail(`"${k}" must be a positive number, got ${JSON.stringify(v)}.`);
    return v;
  };
  const flag = (k: string, def: boolean): boolean => {
    if (!has(k)) return def;
    if (typeof j[k] !== 'boolean') return fail(`"${k}" must be true or false, got ${JSON.stringify(j[k])}.`);
    return j[k] as boolean;
  };

  const hiddenSize = int('hidden_size');
  const intermediateSize = int('intermediate_size');
  const numLayers = int('num_hidden_layers');
  const numHeads = int('num_attention_heads');
  const numKVHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKVHeads !== 0) fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKVHeads}.`);
  if (!has('head_dim') && hiddenSize % numHeads !== 0) fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (set "head_dim").`);
  const headDim = int('head_dim', hiddenSize / numHeads);
  const vocabSize = int('vocab_size');
  const maxPositionEmbeddings = int('max_position_embeddings');
  const rmsNormEps = pos('rms_norm_eps');
  const ropeTheta = pos('rope_theta', 10000);
  const tieWordEmbeddings = flag('tie_word_embeddings', false);
  // Qwen2 always has q/k/v biases (Qwen2Attention); Llama makes them optional; Mistral has none.
  const attentionBias = architecture === 'Qwen2ForCausalLM' ? true : flag('attention_bias', false);
  if (flag('mlp_bias', false)) fail('"mlp_bias": true is not supported (webqlora models have no MLP biases).');
  if (has('hidden_act') && j.hidden_act !== 'silu') fail(`hidden_act ${JSON.stringify(j.hidden_act)} is not supported (expected "silu").`);

  let ropeScaling: RopeScaling | null = null;
  if (has('rope_scaling')) {
    const rs = j.rope_scaling;
    if (typeof rs !== 'object' || rs === null || Array.isArray(rs)) return fail('"rope_scaling" must be an object or null.');
    const r = rs as Record<string, unknown>;
    const type = r.rope_type ?? r.type;
    const num = (k: string): number => {
      const v = r[k];
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) return fail(`rope_scaling.${k} must be a positive number, got ${JSON.stringify(v) ?? 'nothing'}.`);
      return v;
    };
    if (type === 'llama3') {
      ropeScaling = {
        ropeType: 'llama3', factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'),
        originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
      };
    } else if (type === 'linear') {
      ropeScaling = { ropeType: 'linear', factor: num('factor') };
    } else if (type !== 'default') {
      return fail(`rope_scaling type ${JSON.stringify(type) ?? '(missing)'} is not supported (expected "llama3", "linear" or null).`);
    }
  }

  const tokenId = (k: string): number | null => {
    if (!has(k)) return null;
    const v = j[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return fail(`"${k}" must be a token id, got ${JSON.stringify(v)}.`);
    return v;
  };
  const bosTokenId = tokenId('bos_token_id');
  let eosTokenIds: number[] = [];
  if (Array.isArray(j.eos_token_id)) {
    if (!j.eos_token_id.every((v) => Number.isSafeInteger(v) && (v as number) >= 0)) fail(`"eos_token_id" must be a token id or a list of them, got ${JSON.stringify(j.eos_token_id)}.`);
    eosTokenIds = [...(j.eos_token_id as number[])];
  } else {
    const e = tokenId('eos_token_id');
    if (e !== null) eosTokenIds = [e];
  }

  // transformers v5 writes "dtype", v4 "torch_dtype".
  let torchDtype: ModelConfig['torchDtype'] = 'F32';
  const dt = has('torch_dtype') ? j.torch_dtype : has('dtype') ? j.dtype : undefined;
  if (dt !== undefined) {
    const name = typeof dt === 'string' ? dt.replace(/^torch\./, '') : '';
    const map: Record<string, ModelConfig['torchDtype']> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };
    if (!map[name]) return fail(`torch_dtype ${JSON.stringify(dt)} is not supported (expected "float32", "float16" or "bfloat16").`);
    torchDtype = map[name]!;
  }

  return {
    architecture, hiddenSize, intermediateSize, numLayers, numHeads, numKVHeads, headDim, vocabSize,
    maxPositionEmbeddings, rmsNormEps, ropeTheta, ropeScaling, tieWordEmbeddings, attentionBias,
    bosTokenId, eosTokenIds, torchDtype,
  };
}

/** An HF config.json object for a ModelConfig (for converted or quantized models). */
export function configToHf(c: ModelConfig): Record<string, unknown> {
  const torch = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[c.torchDtype];
  let ropeScaling: Record<string, unknown> | null = null;
  if (c.ropeScaling?.ropeType === 'llama3') {
    ropeScaling = {
      rope_type: 'llama3', factor: c.ropeScaling.factor, low_freq_factor: c.ropeScaling.lowFreqFactor,
      high_freq_factor: c.ropeScaling.highFreqFactor, original_max_position_embeddings: c.ropeScaling.originalMaxPositionEmbeddings,
    };
  } else if (c.ropeScaling) {
    ropeScaling = { rope_type: 'linear', factor: c.ropeScaling.factor };
  }
  const out: Record<string, unknown> = {
    architectures: [c.architecture],
    model_type: MODEL_TYPE[c.architecture],
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKVHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScaling,
    tie_word_embeddings: c.tieWordEmbeddings,
    hidden_act: 'silu',
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds.length === 0 ? null : [...c.eosTokenIds],
    torch_dtype: torch,
  };
  if (c.architecture === 'LlamaForCausalLM') {
    out.attention_bias = c.attentionBias;
    out.mlp_bias = false;
  }
  return out;
}
