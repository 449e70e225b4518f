// The model families, one description each: HF class names and model_type, the config.json keys
// each understands (io/hf-config.ts reads a config with them), and the switches of `Variant`
// (config.ts) it sets, read by the one decoder in llama.ts.
//
// A family is data, not code paths. This is the one place to look when adding a family
// (STYLE.md: llama.cpp's per-architecture tables, not `if (family === …)` chains through the
// model); its GGUF names are in io/gguf-arch.ts.
import { variantOf, type FamilyId, type ModelConfig, type Variant } from './config.ts';

export interface Family {
  id: FamilyId;
  /** HF class names (config "architectures") and model_type. */
  architectures: string[];
  modelType: string;
  /** q/k/v biases: always (Qwen2), never, or from "attention_bias" (refused when true: o_proj would carry one too). */
  qkvBias: 'always' | 'never';
  /** Which layers slide when the config has no layer_types. */
  defaultSliding: 'none' | 'all' | 'alternate' | 'pattern' | 'qwen2';
  switches: Pick<Variant, 'normPlusOne' | 'embedScale' | 'embedScaleInModule' | 'qkNorm' | 'sandwichNorms' | 'fused'>;
  /** Config keys of this family beyond the ones every family shares (COMMON_KEYS). */
  keys: string[];
}

const PLAIN = { normPlusOne: false, embedScale: false, embedScaleInModule: false, qkNorm: false, sandwichNorms: false, fused: false };
const GEMMA_KEYS = ['hidden_activation', 'query_pre_attn_scalar', 'attn_logit_softcapping', 'final_logit_softcapping', 'sliding_window', 'layer_types', 'cache_implementation', 'use_bidirectional_attention', 'attention_bias'];

export const FAMILIES: readonly Family[] = [
  { id: 'llama', architectures: ['LlamaForCausalLM'], modelType: 'llama', qkvBias: 'never', defaultSliding: 'none', switches: PLAIN,
    keys: ['attention_bias', 'mlp_bias', 'pretraining_tp', 'rope_interleaved', 'is_llama_config'] },
  { id: 'mistral', architectures: ['MistralForCausalLM'], modelType: 'mistral', qkvBias: 'never', defaultSliding: 'all', switches: PLAIN,
    keys: ['sliding_window'] },
  { id: 'qwen2', architectures: ['Qwen2ForCausalLM'], modelType: 'qwen2', qkvBias: 'always', defaultSliding: 'qwen2', switches: PLAIN,
    keys: ['sliding_window', 'use_sliding_window', 'max_window_layers', 'layer_types', 'use_mrope'] },
  { id: 'qwen3', architectures: ['Qwen3ForCausalLM'], modelType: 'qwen3', qkvBias: 'never', defaultSliding: 'qwen2', switches: { ...PLAIN, qkNorm: true },
    keys: ['sliding_window', 'use_sliding_window', 'max_window_layers', 'layer_types', 'attention_bias'] },
  { id: 'gemma2', architectures: ['Gemma2ForCausalLM'], modelType: 'gemma2', qkvBias: 'never', defaultSliding: 'alternate',
    switches: { ...PLAIN, normPlusOne: true, embedScale: true, sandwichNorms: true }, keys: GEMMA_KEYS },
  { id: 'gemma3', architectures: ['Gemma3ForCausalLM'], modelType: 'gemma3_text', qkvBias: 'never', defaultSliding: 'pattern',
    switches: { ...PLAIN, normPlusOne: true, embedScale: true, embedScaleInModule: true, sandwichNorms: true, qkNorm: true },
    keys: [...GEMMA_KEYS, 'sliding_window_pattern', '_sliding_window_pattern', 'rope_local_base_freq'] },
  { id: 'phi3', architectures: ['Phi3ForCausalLM'], modelType: 'phi3', qkvBias: 'never', defaultSliding: 'all', switches: { ...PLAIN, fused: true },
    keys: ['sliding_window', 'embd_pdrop', 'resid_pdrop', 'original_max_position_embeddings', 'partial_rotary_factor', 'attention_bias'] },
];

export function familyById(id: FamilyId): Family {
  return FAMILIES.find((f) => f.id === id)!;
}

/** HF class name and model_type of a config's family. */
export function familyNames(c: ModelConfig): { architecture: string; modelType: string } {
  const f = familyById(variantOf(c).family);
  return { architecture: f.architectures[0]!, modelType: f.modelType };
}

