// `synthetic:NAME` models: the shapes of real models of every supported family with seeded
// random weights, generated one tensor at a time on request (no file on disk). For benchmarks
// and memory tests.
import { WebqloraError } from '../errors.ts';
import { checkRowRange, type TensorRef, type WeightSource } from '../io/weights.ts';
import { expectedTensors, variantOf, type ModelConfig } from './config.ts';
import { configFromHf } from '../io/hf-config.ts';

const base = {
  architecture: 'LlamaForCausalLM' as const,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  attentionBias: false,
  bosTokenId: 1,
  eosTokenIds: [2],
};

/**
 * The config.json of real checkpoints, as published on the Hugging Face Hub, read by the one
 * config reader (configFromHf) so that each shape gets its family's variant exactly as the real
 * model would. A key left out is named in a comment with the reason.
 */
const HF_CONFIGS: Record<string, Record<string, unknown>> = {
  // meta-llama/Llama-3.2-1B
  'llama-3.2-1b': {
    architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000, eos_token_id: 128001,
    head_dim: 64, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 8192, max_position_embeddings: 131072,
    mlp_bias: false, model_type: 'llama', num_attention_heads: 32, num_hidden_layers: 16, num_key_value_heads: 8, pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    rope_theta: 500000.0, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.45.0.dev0', use_cache: true, vocab_size: 128256,
  },
  // Qwen/Qwen2.5-0.5B
  'qwen2.5-0.5b': {
    architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151643, hidden_act: 'silu',
    hidden_size: 896, initializer_range: 0.02, intermediate_size: 4864, max_position_embeddings: 32768, max_window_layers: 24,
    model_type: 'qwen2', num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_theta: 1000000.0,
    sliding_window: 32768, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.40.1', use_cache: true,
    use_mrope: false, use_sliding_window: false, vocab_size: 151936,
  },
  // Qwen/Qwen3-0.6B
  'qwen3-0.6b': {
    architectures: ['Qwen3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645,
    head_dim: 128, hidden_act: 'silu', hidden_size: 1024, initializer_range: 0.02, intermediate_size: 3072, max_position_embeddings: 40960,
    max_window_layers: 28, model_type: 'qwen3', num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 8, rms_norm_eps: 1e-6,
    rope_scaling: null, rope_theta: 1000000, sliding_window: null, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.51.0', use_cache: true, use_sliding_window: false, vocab_size: 151936,
  },
  // google/gemma-3-1b-it (gemma3_text; tie_word_embeddings absent = tied, Gemma's default)
  'gemma-3-1b': {
    architectures: ['Gemma3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, attn_logit_softcapping: null, bos_token_id: 2,
    cache_implementation: 'hybrid', eos_token_id: [1, 106], final_logit_softcapping: null, head_dim: 256, hidden_activation: 'gelu_pytorch_tanh',
    hidden_size: 1152, initializer_range: 0.02, intermediate_size: 6912, max_position_embeddings: 32768, model_type: 'gemma3_text',
    num_attention_heads: 4, num_hidden_layers: 26, num_key_value_heads: 1, pad_token_id: 0, query_pre_attn_scalar: 256, rms_norm_eps: 1e-6,
    rope_local_base_freq: 10000, rope_scaling: null, rope_theta: 1000000, sliding_window: 512, sliding_window_pattern: 6,
    torch_dtype: 'bfloat16', transformers_version: '4.50.0.dev0', use_cache: true, vocab_size: 262144,
  },
  // HuggingFaceTB/SmolLM2-135M
  'smollm2-135m': {
    architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 0, eos_token_id: 0, hidden_act: 'silu',
    hidden_size: 576, initializer_range: 0.041666666666666664, intermediate_size: 1536, is_llama_config: true, max_position_embeddings: 8192,
    model_type: 'llama', num_attention_heads: 9, num_hidden_layers: 30, num_key_value_heads: 3, pretraining_tp: 1, rms_norm_eps: 1e-5,
    rope_interleaved: false, rope_scaling: null, rope_theta: 100000, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.40.1', use_cache: true, vocab_size: 49152,
  },
  // microsoft/Phi-3.5-mini-instruct. Left out: its "rope_scaling" {"type": "longrope", long_factor,
  // short_factor} (LongRoPE is not implemented and configFromHf refuses it; this shape runs plain
  // RoPE with theta 1e4, the same cost).
  'phi-3.5-mini': {
    _name_or_path: 'Phi-3.5-mini-instruct', architectures: ['Phi3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 1, embd_pdrop: 0.0,
    eos_token_id: 32000, hidden_act: 'silu', hidden_size: 3072, initializer_range: 0.02, intermediate_size: 8192,
    max_position_embeddings: 131072, model_type: 'phi3', num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32,
    original_max_position_embeddings: 4096, pad_token_id: 32000, resid_pdrop: 0.0, rms_norm_eps: 1e-5, rope_theta: 10000.0,
    sliding_window: 262144, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.43.3', use_cache: true,
    vocab_size: 32064,
  },
};

/** Shapes of well-known checkpoints: llama2.c tinyllamas, TinyLlama, Llama 2/3/3.2, Qwen2.5, Qwen3, Gemma 3, SmolLM2, Phi-3.5. */
export const SYNTHETIC_CONFIGS: Record<string, ModelConfig> = {
  'stories260K': { ...base, hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKVHeads: 4, headDim: 8, vocabSize: 512, maxPositionEmbeddings: 512, tieWordEmbeddings: true, torchDtype: 'F32' },
  'stories15M': { ...base, hiddenSize: 288, intermediateSize: 768, numLayers: 6, numHeads: 6, numKVHeads: 6, headDim: 48, vocabSize: 32000, maxPositionEmbeddings: 256, tieWordEmbeddings: true, torchDtype: 'F32' },
  'stories110M': { ...base, hiddenSize: 768, intermediateSize: 2048, numLayers: 12, numHeads: 12, numKVHeads: 12, headDim: 64, vocabSize: 32000, maxPositionEmbeddings: 1024, tieWordEmbeddings: true, torchDtype: 'F32' },
  'tinyllama-1.1b': { ...base, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKVHeads: 4, headDim: 64, vocabSize: 32000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false, torchDtype: 'BF16' },
  'llama-2-7b': { ...base, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKVHeads: 32, headDim: 128, vocabSize: 32000, maxPositionEmbeddings: 4096, tieWordEmbeddings: false, torchDtype: 'F16' },
  'llama-3-8b': { ...base, hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKVHeads: 8, headDim: 128, vocabSize: 128256, maxPositionEmbeddings: 8192, ropeTheta: 500000, tieWordEmbeddings: false, torchDtype: 'BF16', bosTokenId: 128000, eosTokenIds: [128001] },
  ...Object.fromEntries(Object.entries(HF_CONFIGS).map(([name, json]) => [name, configFromHf(json, `synthetic:${name}`)])),
};

export function isSynthetic(spec: string): boolean {
  return spec.startsWith('synthetic:');
}

/** The WeightSource of `synthetic:NAME` (seed 0 unless given). */
export function syntheticSource(spec: string, seed = 0): WeightSource {
  const name = spec.replace(/^synthetic:/, '');
  const config = SYNTHETIC_CONFIGS[name];
  if (!config) throw new WebqloraError(`${spec}: unknown synthetic model (expected one of ${Object.keys(SYNTHETIC_CONFIGS).map((n) => 'synthetic:' + n).join(', ')}).`);
  return syntheticFromConfig(config, seed, spec);
}

/** Seeded random weights in the shapes of any config (tests use tiny ones). */
export function syntheticFromConfig(config: ModelConfig, seed = 0, spec = 'synthetic:custom'): WeightSource {
  const tensors: TensorRef[] = expectedTensors(config).map((t) => ({ name: t.name, dtype: config.torchDtype, shape: t.shape }));
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const normPlusOne = variantOf(config).normPlusOne;
  // xorshift32 values of one seed into out
  const gen = (tname: string, s: number, out: Float32Array): void => {
    if (tname.endsWith('norm.weight')) {
      // RMSNorm gains near 1 (Gemma stores w of x̂·(1 + w): near 0)
      const one = normPlusOne ? 0 : 1;
      for (let i = 0; i < out.length; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; out[i] = one + ((s >>> 0) / 4294967296 - 0.5) * 0.1; }
    } else {
      // uniform with the standard deviation 0.02 of Llama's initializer_range
      const a = 0.02 * Math.sqrt(3) * 2;
      for (let i = 0; i < out.length; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; out[i] = ((s >>> 0) / 4294967296 - 0.5) * a; }
    }
  };
  const seedOf = (tname: string) => (hashName(tname) ^ Math.imul(seed + 1, 0x9e3779b9)) >>> 0 || 1;
  // a 2-D tensor's rows each have their own stream (seeded by tensor and row), so any rows can be
  // read alone — a streamed embedding reads a batch's token rows (model/llama.ts StreamedEmbedding)
  const genRows = (tname: string, cols: number, row0: number, out: Float32Array): void => {
    const base = seedOf(tname);
    for (let r = 0; r < out.length / cols; r++) gen(tname, mix32(base, row0 + r), out.subarray(r * cols, (r + 1) * cols));
  };
  return {
    format: 'synthetic',
    name: spec,
    config,
    tensors,
    vocab: null,
    async readFloat(tname: string, into?: Float32Array): Promise<Float32Array> {
      const t = byName.get(tname);
      if (!t) throw new WebqloraError(`${spec}: no tensor ${tname}.`);
      const n = t.shape.reduce((a, b) => a * b, 1);
      const out = into && into.length === n ? into : new Float32Array(n);
      // seeded by the tensor name: the same tensor is the same on every read
      if (t.shape.length === 2) genRows(tname, t.shape[1]!, 0, out);
      else gen(tname, seedOf(tname), out);
      return out;
    },
    async readFloatRows(tname: string, row0: number, rows: number, into?: Float32Array): Promise<Float32Array> {
      const t = byName.get(tname);
      if (!t || t.shape.length !== 2) throw new WebqloraError(`${spec}: no 2-D tensor ${tname}.`);
      checkRowRange(tname, t.shape, row0, rows);
      const cols = t.shape[1]!, out = into && into.length === rows * cols ? into : new Float32Array(rows * cols);
      genRows(tname, cols, row0, out);
      return out;
    },
    async readQuant(): Promise<null> {
      return null;
    },
    async close(): Promise<void> {},
  };
}

/** A nonzero xorshift seed from a tensor seed and a row (murmur3's finalizer). */
function mix32(seed: number, row: number): number {
  let h = (seed ^ Math.imul(row + 1, 0x9e3779b9)) >>> 0;
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0 || 1;
}

function hashName(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
