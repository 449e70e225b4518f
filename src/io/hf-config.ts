// HF config.json ⇄ ModelConfig, in the transformers 4 layout (rope_theta / rope_scaling /
// rope_local_base_freq) or the transformers 5 one (rope_parameters, per layer type for Gemma 3).
// The families it knows, and their keys and fixed switches, are the table of model/families.ts.
//
// Rule: a config key that changes the computation is either implemented or refused with one
// sentence naming it; a key no family description knows is refused too (it might change the
// math), unless it is one of the generic keys every transformers config carries.
import { WebqloraError } from '../errors.ts';
import { variantOf, type ModelConfig, type RopeScaling, type Variant } from '../model/config.ts';
import { FAMILIES, familyNames, type Family } from '../model/families.ts';

/** Keys every family reads (the shapes, norms, RoPE, vocabulary) or that never change the math. */
const COMMON_KEYS = new Set([
  // read below
  'architectures', 'model_type', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads',
  'head_dim', 'vocab_size', 'max_position_embeddings', 'rms_norm_eps', 'rope_theta', 'rope_scaling', 'rope_parameters', 'tie_word_embeddings',
  'hidden_act', 'attention_dropout', 'bos_token_id', 'eos_token_id', 'pad_token_id', 'torch_dtype', 'dtype', 'quantization_config',
  // bookkeeping, generation defaults and loading hints of transformers' PretrainedConfig
  'transformers_version', 'use_cache', 'initializer_range', '_name_or_path', 'auto_map', 'tokenizer_class', 'id2label', 'label2id',
  'return_dict', 'output_hidden_states', 'output_attentions', 'torchscript', 'use_bfloat16', 'tf_legacy_loss', 'pruned_heads',
  'chunk_size_feed_forward', 'is_encoder_decoder', 'is_decoder', 'add_cross_attention', 'tie_encoder_decoder', 'problem_type',
  'task_specific_params', 'finetuning_task', 'prefix', 'sep_token_id', 'decoder_start_token_id', 'cross_attention_hidden_size',
  'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups', 'diversity_penalty', 'temperature',
  'top_k', 'top_p', 'typical_p', 'repetition_penalty', 'length_penalty', 'no_repeat_ngram_size', 'encoder_no_repeat_ngram_size',
  'bad_words_ids', 'num_return_sequences', 'output_scores', 'return_dict_in_generate', 'forced_bos_token_id', 'forced_eos_token_id',
  'remove_invalid_values', 'exponential_decay_length_penalty', 'suppress_tokens', 'begin_suppress_tokens', '_attn_implementation',
  '_attn_implementation_autoset', '_commit_hash', 'use_return_dict',
]);

/** The family of a config.json, by "architectures" (or "model_type" when that is absent). */
function familyOf(j: Record<string, unknown>, fail: (m: string) => never): Family {
  const known = FAMILIES.flatMap((f) => f.architectures).join(', ');
  if (j.architectures !== undefined && j.architectures !== null) {
    const archs = j.architectures;
    if (!Array.isArray(archs) || archs.length === 0 || !archs.every((a) => typeof a === 'string')) return fail('"architectures" must be a non-empty list of names.');
    const f = FAMILIES.find((x) => (archs as string[]).some((a) => x.architectures.includes(a)));
    if (!f) return fail(`architecture ${(archs as string[]).join(', ')} is not supported (expected one of ${known}).`);
    return f;
  }
  if (j.model_type !== undefined && j.model_type !== null) {
    const f = FAMILIES.find((x) => x.modelType === j.model_type);
    if (!f) return fail(`model_type ${JSON.stringify(j.model_type)} is not supported (expected one of ${FAMILIES.map((x) => JSON.stringify(x.modelType)).join(', ')}).`);
    return f;
  }
  return fail('missing "architectures".');
}

/**
 * Normalizes an HF config.json of any supported family, in the transformers 4 layout
 * (rope_theta / rope_scaling / rope_local_base_freq) or the transformers 5 one
 * (rope_parameters, per layer type for Gemma 3). `fileName` prefixes every message.
 */
export function configFromHf(json: unknown, fileName: string): ModelConfig {
  const fail = (msg: string): never => { throw new WebqloraError(`${fileName}: ${msg}`); };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('expected a JSON object.');
  const j = json as Record<string, unknown>;
  const has = (k: string) => j[k] !== undefined && j[k] !== null;
  const fam = familyOf(j, fail);
  const name = fam.architectures[0]!;

  for (const k of Object.keys(j)) {
    if (!COMMON_KEYS.has(k) && !fam.keys.includes(k)) {
      fail(`key "${k}" is not known for ${name} models; it may change the computation, so webqlora refuses the config rather than ignore it.`);
    }
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
  /** A key whose only implemented value is `ok` (absent or null counts as ok). */
  const only = (k: string, ok: unknown, why: string) => {
    if (has(k) && j[k] !== ok) fail(`"${k}": ${JSON.stringify(j[k])} is not supported (${why}).`);
  };

  const hiddenSize = int('hidden_size');
  const intermediateSize = int('intermediate_size');
  const numLayers = int('num_hidden_layers');
  const numHeads = int('num_attention_heads');
  const numKVHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKVHeads !== 0) fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKVHeads}.`);
  if (!has('head_dim') && hiddenSize % numHeads !== 0) fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (set "head_dim").`);
  const headDim = int('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail(`"head_dim" ${headDim} must be even (RoPE rotates pairs).`);
  const vocabSize = int('vocab_size');
  const maxPositionEmbeddings = int('max_position_embeddings');
  const rmsNormEps = pos('rms_norm_eps', fam.id.startsWith('gemma') ? 1e-6 : undefined);
  const tieWordEmbeddings = flag('tie_word_embeddings', fam.id.startsWith('gemma'));

  // math switches that must keep their plain value
  only('mlp_bias', false, 'webqlora models have no MLP biases');
  only('attention_bias', false, 'an attention bias on q/k/v/o is not implemented for this family');
  only('attention_dropout', 0, 'attention dropout is not implemented');
  only('embd_pdrop', 0, 'embedding dropout is not implemented');
  only('resid_pdrop', 0, 'residual dropout is not implemented');
  only('rope_interleaved', false, 'only rotate-half RoPE is implemented');
  only('use_mrope', false, 'multimodal RoPE (Qwen2-VL) is not implemented');
  only('use_bidirectional_attention', false, 'only causal attention is implemented');
  only('partial_rotary_factor', 1, 'RoPE on part of each head is not implemented');
  if (has('pretraining_tp') && int('pretraining_tp') < 1) fail('"pretraining_tp" must be >= 1.');

  const act = fam.id.startsWith('gemma') ? 'hidden_activation' : 'hidden_act';
  if (fam.id.startsWith('gemma') && has('hidden_act') && !has('hidden_activation')) {
    // Gemma configs of transformers 4.3x carry only hidden_act; Gemma 2/3 compute gelu_pytorch_tanh
    only('hidden_act', 'gelu_pytorch_tanh', 'Gemma uses the tanh GELU');
  }
  const activation: Variant['activation'] = fam.id.startsWith('gemma') ? 'gelu_tanh' : 'silu';
  const wantAct = activation === 'silu' ? 'silu' : 'gelu_pytorch_tanh';
  if (has(act) && j[act] !== wantAct) fail(`${act} ${JSON.stringify(j[act])} is not supported (expected "${wantAct}").`);

  // ---- RoPE, in either layout --------------------------------------------------------------
  const parseRope = (r: Record<string, unknown>, where: string, thetaDefault: number | null): { theta: number; scaling: RopeScaling | null } => {
    const type = r.rope_type ?? r.type ?? 'default';
    const allowed: Record<string, string[]> = {
      default: [],
      linear: ['factor'],
      llama3: ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'],
    };
    if (typeof type !== 'string' || !(type in allowed)) {
      return fail(`${where} rope type ${JSON.stringify(type)} is not supported (expected "default", "linear" or "llama3"; yarn, longrope, dynamic and others change the rotation and are not implemented).`);
    }
    for (const k of Object.keys(r)) {
      if (['rope_type', 'type', 'rope_theta'].includes(k) || allowed[type]!.includes(k)) continue;
      if (k === 'partial_rotary_factor' && r[k] === 1) continue;
      if (k === 'partial_rotary_factor') fail(`${where}.partial_rotary_factor ${JSON.stringify(r[k])} is not supported (RoPE on part of each head is not implemented).`);
      // fields transformers keeps next to a default rope but that only other rope types read
      if (type === 'default' && k === 'original_max_position_embeddings') continue;
      fail(`${where}.${k} is not supported with rope type "${type}".`);
    }
    const num = (k: string): number => {
      const v = r[k];
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) return fail(`${where}.${k} must be a positive number, got ${JSON.stringify(v) ?? 'nothing'}.`);
      return v;
    };
    let theta: number;
    if (r.rope_theta !== undefined && r.rope_theta !== null) theta = num('rope_theta');
    else if (thetaDefault !== null) theta = thetaDefault;
    else return fail(`${where} has no rope_theta.`);
    let scaling: RopeScaling | null = null;
    if (type === 'llama3') {
      scaling = {
        ropeType: 'llama3', factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'),
        originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
      };
    } else if (type === 'linear') {
      scaling = { ropeType: 'linear', factor: num('factor') };
    }
    return { theta, scaling };
  };
  const obj = (k: string): Record<string, unknown> => {
    const v = j[k];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(`"${k}" must be an object or null.`);
    return v as Record<string, unknown>;
  };
  let rope: { theta: number; scaling: RopeScaling | null };
  let ropeLocal: { theta: number; scaling: RopeScaling | null } | null = null;
  if (has('rope_parameters')) {
    if (has('rope_scaling')) fail('has both "rope_parameters" and "rope_scaling"; keep one layout.');
    const rp = obj('rope_parameters');
    if ('full_attention' in rp || 'sliding_attention' in rp) {
      for (const k of Object.keys(rp)) if (k !== 'full_attention' && k !== 'sliding_attention') fail(`rope_parameters.${k} is not a layer type (expected full_attention and sliding_attention).`);
      const part = (k: string) => {
        const v = rp[k];
        if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(`rope_parameters.${k} must be an object.`);
        return parseRope(v as Record<string, unknown>, `rope_parameters.${k}`, null);
      };
      if (!rp.full_attention) fail('rope_parameters has no full_attention entry.');
      rope = part('full_attention');
      ropeLocal = rp.sliding_attention ? part('sliding_attention') : null;
    } else {
      rope = parseRope(rp, 'rope_parameters', has('rope_theta') ? pos('rope_theta') : 10000);
    }
  } else {
    const theta = pos('rope_theta', 10000);
    rope = has('rope_scaling') ? parseRope(obj('rope_scaling'), 'rope_scaling', theta) : { theta, scaling: null };
    if (has('rope_local_base_freq')) ropeLocal = { theta: pos('rope_local_base_freq'), scaling: null };
  }
  if (ropeLocal && fam.id !== 'gemma3') fail('a separate RoPE for sliding layers is only implemented for Gemma 3.');

  // ---- attention: window, scale, soft-caps --------------------------------------------------
  let slidingWindow = 0;
  const useSliding = fam.keys.includes('use_sliding_window') ? flag('use_sliding_window', false) : true;
  if (has('sliding_window') && fam.keys.includes('sliding_window')) slidingWindow = int('sliding_window');
  let slidingLayers: boolean[];
  if (has('layer_types')) {
    const lt = j.layer_types;
    if (!Array.isArray(lt) || lt.length !== numLayers) fail(`"layer_types" must list one type per layer (${numLayers}).`);
    slidingLayers = (lt as unknown[]).map((t, i) => {
      if (t === 'full_attention') return false;
      if (t === 'sliding_attention') return true;
      return fail(`layer_types[${i}] ${JSON.stringify(t)} is not supported (expected "full_attention" or "sliding_attention").`);
    });
  } else {
    const d = fam.defaultSliding;
    const pattern = has('sliding_window_pattern') ? int('sliding_window_pattern') : has('_sliding_window_pattern') ? int('_sliding_window_pattern') : 6;
    const mwl = has('max_window_layers') ? int('max_window_layers', undefined, 0) : numLayers;
    slidingLayers = Array.from({ length: numLayers }, (_, i) =>
      d === 'all' ? true : d === 'alternate' ? i % 2 === 0 : d === 'pattern' ? (i + 1) % pattern !== 0 : d === 'qwen2' ? useSliding && i >= mwl : false);
  }
  if (fam.defaultSliding === 'qwen2' && !useSliding) slidingLayers = slidingLayers.map(() => false);
  if (slidingWindow === 0) {
    if (slidingLayers.some(Boolean) && fam.defaultSliding !== 'all') fail('"layer_types" has sliding layers but "sliding_window" is not set.');
    slidingLayers = slidingLayers.map(() => false);
  }
  // a window at least as long as the context never masks anything
  if (slidingWindow >= maxPositionEmbeddings) { slidingWindow = 0; slidingLayers = slidingLayers.map(() => false); }
  if (!slidingLayers.some(Boolean)) slidingWindow = 0;
  if (!slidingLayers.some(Boolean)) ropeLocal = null;

  let attnScale: number | null = null;
  if (fam.keys.includes('query_pre_attn_scalar')) attnScale = Math.pow(pos('query_pre_attn_scalar', headDim), -0.5);
  const cap = (k: string) => (fam.keys.includes(k) && has(k) ? pos(k) : 0);
  const attnSoftcap = cap('attn_logit_softcapping');
  const finalSoftcap = cap('final_logit_softcapping');

  const attentionBias = fam.qkvBias === 'always';

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
    const n = typeof dt === 'string' ? dt.replace(/^torch\./, '') : '';
    const map: Record<string, ModelConfig['torchDtype']> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };
    if (!map[n]) return fail(`torch_dtype ${JSON.stringify(dt)} is not supported (expected "float32", "float16" or "bfloat16").`);
    torchDtype = map[n]!;
  }

  const variant: Variant = {
    family: fam.id, ...fam.switches, activation, attnScale, attnSoftcap, finalSoftcap, slidingWindow, slidingLayers, ropeLocal,
  };
  return {
    architecture: name, hiddenSize, intermediateSize, numLayers, numHeads, numKVHeads, headDim, vocabSize,
    maxPositionEmbeddings, rmsNormEps, ropeTheta: rope.theta, ropeScaling: rope.scaling, tieWordEmbeddings, attentionBias,
    bosTokenId, eosTokenIds, torchDtype, variant, hfConfig: { ...j },
  };
}

/**
 * An HF config.json object for a ModelConfig (merged, converted or quantized models). A config
 * read from an HF directory is written back as it was (the family's own layout, every key kept)
 * with the dtype updated; others are written in the transformers 4 layout, which transformers 5
 * reads too.
 */
export function configToHf(c: ModelConfig): Record<string, unknown> {
  const torch = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[c.torchDtype];
  if (c.hfConfig) {
    const out: Record<string, unknown> = { ...c.hfConfig, torch_dtype: torch };
    delete out.dtype;
    delete out.quantization_config;
    return out;
  }
  const v = variantOf(c);
  if (c.ropeScaling?.ropeType === 'factors') {
    throw new WebqloraError('this model\'s RoPE scaling is given as per-dimension factors (a GGUF rope_freqs tensor), which an HF config.json cannot express.');
  }
  const ropeJson = (s: RopeScaling | null): Record<string, unknown> | null => {
    if (s?.ropeType === 'llama3') {
      return {
        rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor,
        high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      };
    }
    return s ? { rope_type: 'linear', factor: s.factor } : null;
  };
  const names = familyNames(c);
  const out: Record<string, unknown> = {
    architectures: [names.architecture],
    model_type: names.modelType,
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
    rope_scaling: ropeJson(c.ropeScaling),
    tie_word_embeddings: c.tieWordEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds.length === 0 ? null : [...c.eosTokenIds],
    torch_dtype: torch,
  };
  if (v.activation === 'silu') out.hidden_act = 'silu';
  else out.hidden_activation = 'gelu_pytorch_tanh';
  if (v.family === 'llama') {
    out.attention_bias = false;
    out.mlp_bias = false;
  }
  if (v.slidingWindow > 0) {
    out.sliding_window = v.slidingWindow;
    if (v.family === 'qwen2' || v.family === 'qwen3') out.use_sliding_window = true;
    if (v.family !== 'mistral' && v.family !== 'phi3') out.layer_types = v.slidingLayers.map((s) => (s ? 'sliding_attention' : 'full_attention'));
  }
  if (v.attnScale !== null) out.query_pre_attn_scalar = Math.round(Math.pow(v.attnScale, -2));
  if (v.family === 'gemma2') {
    out.attn_logit_softcapping = v.attnSoftcap || null;
    out.final_logit_softcapping = v.finalSoftcap || null;
  }
  if (v.ropeLocal) out.rope_local_base_freq = v.ropeLocal.theta;
  return out;
}
