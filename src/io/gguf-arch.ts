// GGUF model layouts, one table per llama.cpp architecture: tensor names (gguf-py's
// MODEL_TENSOR names as llama.cpp's converter writes them for that architecture), the
// metadata keys of the hyper-parameters, and the two places where GGUF stores a weight
// differently from the HF checkpoint:
//   - llama (and only llama) keeps q/k rows in the interleaved RoPE order (the converter's
//     `permute`); qwen2/qwen3/gemma2/gemma3/phi3 use NeoX (rotate-half) RoPE and are unpermuted;
//   - Gemma stores RMSNorm weights as 1 + w (the converter adds the 1; llama.cpp multiplies by
//     the stored weight).
// Reading goes GGUF metadata → an HF config.json object → configFromHf, so a GGUF model gets
// exactly the validation and family switches of an HF one; writing goes ModelConfig → metadata.
import { WebqloraError } from '../errors.ts';
import { variantOf, type FamilyId, type ModelConfig } from '../model/config.ts';
import { familyNames } from '../model/families.ts';
import { configFromHf } from './hf-config.ts';

export type GgufArchName = 'llama' | 'qwen2' | 'qwen3' | 'gemma2' | 'gemma3' | 'phi3';

export interface GgufArch {
  name: GgufArchName;
  /** the HF family a file of this architecture is read as */
  family: FamilyId;
  /** q/k rows stored interleaved (llama.cpp's LLAMA_ROPE_TYPE_NORM) */
  permuteQK: boolean;
  /** norm weights stored as 1 + w */
  normShift: boolean;
  /** HF block part → GGUF block part, beyond the common ones */
  block: Record<string, string>;
}

const COMMON_BLOCK: Record<string, string> = {
  'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
  'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down', 'input_layernorm': 'attn_norm',
};
const LLAMA_NORMS = { post_attention_layernorm: 'ffn_norm' };
const GEMMA_NORMS = { post_attention_layernorm: 'post_attention_norm', pre_feedforward_layernorm: 'ffn_norm', post_feedforward_layernorm: 'post_ffw_norm' };
const QK_NORMS = { 'self_attn.q_norm': 'attn_q_norm', 'self_attn.k_norm': 'attn_k_norm' };

export const GGUF_ARCHS: readonly GgufArch[] = [
  { name: 'llama', family: 'llama', permuteQK: true, normShift: false, block: LLAMA_NORMS },
  { name: 'qwen2', family: 'qwen2', permuteQK: false, normShift: false, block: LLAMA_NORMS },
  { name: 'qwen3', family: 'qwen3', permuteQK: false, normShift: false, block: { ...LLAMA_NORMS, ...QK_NORMS } },
  { name: 'gemma2', family: 'gemma2', permuteQK: false, normShift: true, block: GEMMA_NORMS },
  { name: 'gemma3', family: 'gemma3', permuteQK: false, normShift: true, block: { ...GEMMA_NORMS, ...QK_NORMS } },
  { name: 'phi3', family: 'phi3', permuteQK: false, normShift: false, block: { ...LLAMA_NORMS, 'self_attn.qkv_proj': 'attn_qkv', 'mlp.gate_up_proj': 'ffn_up' } },
];

export function ggufArch(name: string, file: string): GgufArch {
  const a = GGUF_ARCHS.find((x) => x.name === name);
  if (!a) throw new WebqloraError(`${file}: architecture "${name}" is not supported (expected one of ${GGUF_ARCHS.map((x) => x.name).join(', ')}).`);
  return a;
}

/** The GGUF architecture a model is written as; refuses what llama.cpp would compute differently. */
export function ggufArchOf(c: ModelConfig, what: string): GgufArch {
  const v = variantOf(c);
  if (v.family === 'mistral') {
    // llama.cpp reads Mistral as "llama", which has no sliding window
    if (v.slidingWindow > 0) throw new WebqloraError(`${what}: llama.cpp's llama architecture has no sliding window, so a Mistral model with sliding_window ${v.slidingWindow} < its context would compute differently there; it cannot be written as GGUF.`);
    return GGUF_ARCHS[0]!;
  }
  const a = GGUF_ARCHS.find((x) => x.family === v.family)!;
  if ((a.name === 'qwen2' || a.name === 'qwen3') && v.slidingWindow > 0) throw new WebqloraError(`${what}: llama.cpp's ${a.name} architecture has no sliding window; this model uses one, so it cannot be written as GGUF.`);
  if (a.name === 'gemma2' && !v.slidingLayers.every((s, i) => s === (i % 2 === 0))) throw new WebqloraError(`${what}: llama.cpp's gemma2 architecture slides on even layers only; this model's layer types differ, so it cannot be written as GGUF.`);
  if (a.name === 'gemma3' && v.slidingWindow > 0 && !v.slidingLayers.every((s, i) => s === (i % 6 < 5))) throw new WebqloraError(`${what}: llama.cpp's gemma3 architecture slides on 5 of every 6 layers; this model's layer types differ, so it cannot be written as GGUF.`);
  if (a.name === 'gemma3' && v.ropeLocal && v.ropeLocal.theta !== 10000) throw new WebqloraError(`${what}: llama.cpp's gemma3 architecture fixes the local RoPE base at 10000; this model uses ${v.ropeLocal.theta}, so it cannot be written as GGUF.`);
  return a;
}

/** GGUF tensor name of an HF tensor name, or null when the architecture has no such tensor. */
export function hfToGgufTensor(a: GgufArch, hf: string): string | null {
  const top: Record<string, string> = { 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
  if (top[hf]) return top[hf]!;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hf);
  if (!m) return null;
  const part = a.block[m[2]!] ?? COMMON_BLOCK[m[2]!];
  return part ? `blk.${m[1]}.${part}.${m[3]}` : null;
}

/** HF name → GGUF name for every tensor a config expects (the inverse gives the reader's map). */
export function ggufNames(a: GgufArch, hfNames: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const hf of hfNames) {
    const g = hfToGgufTensor(a, hf);
    if (!g) throw new Error(`no GGUF name for ${hf} in architecture ${a.name}`);
    out.set(hf, g);
  }
  return out;
}

/** A metadata reader over a GGUF's key/value map, naming the file in its errors. */
export interface MetaReader {
  has(key: string): boolean;
  int(key: string, def?: number): number;
  float(key: string, def?: number): number;
  str(key: string, def?: string): string;
}

/**
 * The HF config.json a GGUF's metadata stands for (then read by configFromHf). llama.cpp's
 * fixed per-architecture choices become explicit keys: Gemma 2 slides on even layers, Gemma 3
 * on 5 layers of 6 with a local RoPE base of 10000; Gemma's attention scale is 1/√head_dim
 * except for the 27B shapes (46 and 62 layers), where llama.cpp uses 1/√(hidden/heads).
 */
export function ggufToHfConfig(a: GgufArch, md: MetaReader, extra: { vocabSize: number; tied: boolean; bos: number | null; eos: number | null }, file: string): ModelConfig {
  const k = (s: string) => `${a.name}.${s}`;
  const C = md.int(k('embedding_length')), H = md.int(k('attention.head_count'));
  const keyLength = md.has(k('attention.key_length'));
  const D = keyLength ? md.int(k('attention.key_length')) : C / H;
  if (!Number.isInteger(D) || D % 2 !== 0) throw new WebqloraError(`${file}: the head dimension ${keyLength ? `${k('attention.key_length')} ${D}` : `${C}/${H}`} is not an even integer (RoPE needs it even).`);
  const KVH = md.int(k('attention.head_count_kv'), H);
  if (H % KVH !== 0) throw new WebqloraError(`${file}: ${k('attention.head_count')} ${H} is not a multiple of head_count_kv ${KVH}.`);
  if (md.has(k('attention.value_length')) && md.int(k('attention.value_length')) !== D) throw new WebqloraError(`${file}: ${k('attention.value_length')} differs from the key length ${D}, which is not supported.`);
  if (md.has(k('rope.dimension_count')) && md.int(k('rope.dimension_count')) !== D) throw new WebqloraError(`${file}: ${k('rope.dimension_count')} ${md.int(k('rope.dimension_count'))} is not the head dimension ${D} (RoPE on part of each head is not implemented).`);
  const L = md.int(k('block_count'));
  const names = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', gemma2: 'Gemma2ForCausalLM', gemma3: 'Gemma3ForCausalLM', phi3: 'Phi3ForCausalLM' };
  const hf: Record<string, unknown> = {
    architectures: [names[a.name]],
    hidden_size: C,
    intermediate_size: md.int(k('feed_forward_length')),
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KVH,
    head_dim: D,
    vocab_size: extra.vocabSize,
    max_position_embeddings: md.int(k('context_length'), 2048),
    rms_norm_eps: md.float(k('attention.layer_norm_rms_epsilon'), 1e-5),
    rope_theta: md.float(k('rope.freq_base'), 10000),
    tie_word_embeddings: extra.tied,
    bos_token_id: extra.bos,
    eos_token_id: extra.eos,
  };
  const scaling = md.str(k('rope.scaling.type'), 'none');
  if (scaling === 'linear') hf.rope_scaling = { rope_type: 'linear', factor: md.float(k('rope.scaling.factor')) };
  else if (scaling !== 'none') throw new WebqloraError(`${file}: ${k('rope.scaling.type')} "${scaling}" is not supported (only linear).`);
  const window = md.has(k('attention.sliding_window')) ? md.int(k('attention.sliding_window')) : 0;
  if (a.name === 'gemma2' || a.name === 'gemma3') {
    const big = a.name === 'gemma2' ? L === 46 : L === 62;
    hf.query_pre_attn_scalar = big ? C / H : D;
    if (window > 0) {
      hf.sliding_window = window;
      hf.layer_types = Array.from({ length: L }, (_, i) => ((a.name === 'gemma2' ? i % 2 === 0 : i % 6 < 5) ? 'sliding_attention' : 'full_attention'));
    }
    if (a.name === 'gemma2') {
      if (md.has(k('attn_logit_softcapping'))) hf.attn_logit_softcapping = md.float(k('attn_logit_softcapping'));
      if (md.has(k('final_logit_softcapping'))) hf.final_logit_softcapping = md.float(k('final_logit_softcapping'));
    } else {
      hf.rope_local_base_freq = 10000;
    }
  } else if (window > 0) {
    if (a.name !== 'phi3') throw new WebqloraError(`${file}: ${k('attention.sliding_window')} is set, but llama.cpp's ${a.name} architecture has no sliding window.`);
    hf.sliding_window = window;
  }
  return configFromHf(hf, file);
}

/** Metadata of a model written as GGUF (the inverse of ggufToHfConfig; tokenizer keys are separate). */
export function ggufModelMetadata(a: GgufArch, c: ModelConfig): Array<[string, number | string, 'u32' | 'f32' | 'str']> {
  const v = variantOf(c), k = (s: string) => `${a.name}.${s}`;
  const out: Array<[string, number | string, 'u32' | 'f32' | 'str']> = [
    ['general.architecture', a.name, 'str'],
    ['general.name', familyNames(c).architecture, 'str'],
    [k('context_length'), c.maxPositionEmbeddings, 'u32'],
    [k('embedding_length'), c.hiddenSize, 'u32'],
    [k('block_count'), c.numLayers, 'u32'],
    [k('feed_forward_length'), c.intermediateSize, 'u32'],
    [k('attention.head_count'), c.numHeads, 'u32'],
    [k('attention.head_count_kv'), c.numKVHeads, 'u32'],
    [k('attention.key_length'), c.headDim, 'u32'],
    [k('attention.value_length'), c.headDim, 'u32'],
    [k('rope.dimension_count'), c.headDim, 'u32'],
    [k('attention.layer_norm_rms_epsilon'), c.rmsNormEps, 'f32'],
    [k('rope.freq_base'), c.ropeTheta, 'f32'],
  ];
  if (c.ropeScaling?.ropeType === 'linear') out.push([k('rope.scaling.type'), 'linear', 'str'], [k('rope.scaling.factor'), c.ropeScaling.factor, 'f32']);
  if (v.slidingWindow > 0) out.push([k('attention.sliding_window'), v.slidingWindow, 'u32']);
  if (a.name === 'gemma2') {
    if (v.attnSoftcap > 0) out.push([k('attn_logit_softcapping'), v.attnSoftcap, 'f32']);
    if (v.finalSoftcap > 0) out.push([k('final_logit_softcapping'), v.finalSoftcap, 'f32']);
  }
  return out;
}

/**
 * llama.cpp's per-dimension RoPE frequency divisors for Llama 3 rope scaling (the `rope_freqs`
 * tensor the converter writes): inv_freq_i / factor_i equals transformers' scaled inv_freq_i.
 */
export function llama3RopeFactors(c: ModelConfig): Float32Array | null {
  const s = c.ropeScaling;
  if (s?.ropeType !== 'llama3') return null;
  const D = c.headDim, half = D / 2, out = new Float32Array(half);
  const lowF = s.lowFreqFactor!, highF = s.highFreqFactor!, orig = s.originalMaxPositionEmbeddings!;
  const lowWavelen = orig / lowF, highWavelen = orig / highF;
  for (let i = 0; i < half; i++) {
    const freq = 1 / Math.pow(c.ropeTheta, (2 * i) / D), wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = (orig / wavelen - lowF) / (highF - lowF);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}
