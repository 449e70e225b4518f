// llama2.c legacy checkpoint (karpathy/llama2.c run.c `read_checkpoint`, export.py `legacy_export`).
//
// Layout: 7 × int32 header { dim C, hidden_dim F, n_layers L, n_heads H, n_kv_heads KVH,
// vocab_size V (negative: an unshared classifier follows), seq_len }, then float32 tensors, each
// stacked over layers where per-layer, every matrix [out, in] row-major:
//   token_embedding_table [V, C] | rms_att_weight [L, C] | wq [L, H·D, C] | wk [L, KVH·D, C] |
//   wv [L, KVH·D, C] | wo [L, C, H·D] | rms_ffn_weight [L, C] | w1 [L, F, C] (gate) |
//   w2 [L, C, F] (down) | w3 [L, F, C] (up) | rms_final_weight [C] |
//   freq_cis_real [seq_len, D/2] | freq_cis_imag [seq_len, D/2] (unused, skipped) | wcls [V, C] if unshared
// with D = C / H. q/k rows are in the interleaved RoPE order, like GGUF.
import { WebqloraError } from '../errors.ts';
import { toFloat32 } from './dtype.ts';
import { rotateHalfQK } from './gguf.ts';
import type { ByteSource } from './source.ts';
import type { TensorRef, WeightSource } from './weights.ts';
import { expectedTensors, type ModelConfig } from '../model/config.ts';
import type { Quant4Tensor } from '../quant/types.ts';

const HEADER_BYTES = 28;
/** export.py `version1_export` and later start with this magic ("ak42"); only the legacy layout is read here. */
const V1_MAGIC = 0x616b3432;
/** No real model comes near these; a header beyond them is corrupt (or not a llama2.c file). */
const MAX_DIM = 1 << 17, MAX_LAYERS = 4096, MAX_VOCAB = 1 << 24, MAX_SEQ = 1 << 24;

class Llama2cWeights implements WeightSource {
  readonly format = 'llama2c' as const;
  readonly vocab = null;
  private closed = false;
  constructor(
    private readonly src: ByteSource,
    readonly config: ModelConfig,
    readonly tensors: TensorRef[],
    /** HF name → [byte offset, float count] */
    private readonly where: Map<string, [number, number]>,
  ) {}
  get name(): string { return this.src.name; }

  async readFloat(name: string): Promise<Float32Array> {
    const loc = this.where.get(name);
    if (this.closed) throw new WebqloraError(`${this.src.name}: the model was closed before reading ${name}.`);
    if (!loc) throw new WebqloraError(`${this.src.name}: no tensor named "${name}".`);
    const w = toFloat32(await this.src.read(loc[0], loc[1] * 4), 'F32', `${this.src.name}: ${name}`);
    return rotateHalfQK(name, w, this.config);
  }

  async readQuant(_name: string): Promise<Quant4Tensor | null> {
    return null;
  }

  /** Ends use of this source; `src` stays open (its opener owns it, see io/open.ts). */
  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * Opens a llama2.c legacy `.bin` checkpoint. The file size must be exactly what the header
 * implies. No vocabulary is stored in these files (llama2.c keeps it in tokenizer.bin).
 * The caller keeps ownership of `src` (close it after the WeightSource).
 */
export async function openLlama2c(src: ByteSource): Promise<WeightSource> {
  const bad = (msg: string) => new WebqloraError(`${src.name}: ${msg}`);
  if (src.size < HEADER_BYTES) throw bad(`the file is too small to be a llama2.c checkpoint (${src.size} bytes, the header alone is ${HEADER_BYTES}).`);
  const hb = await src.read(0, HEADER_BYTES);
  const dv = new DataView(hb.buffer, hb.byteOffset, HEADER_BYTES);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(4 * i, true));
  if (dv.getUint32(0, true) === V1_MAGIC) {
    throw bad(`this is a llama2.c version ${dv.getInt32(4, true)} export, only the legacy (version 0) layout is supported (re-export with export.py --version 0).`);
  }
  const [C, F, L, H, KVH, vocabField, seqLen] = h as [number, number, number, number, number, number, number];
  const shared = vocabField > 0;
  const V = Math.abs(vocabField);
  const header = `header (dim ${C}, hidden_dim ${F}, n_layers ${L}, n_heads ${H}, n_kv_heads ${KVH}, vocab_size ${vocabField}, seq_len ${seqLen})`;
  const inRange = (x: number, max: number) => x > 0 && x <= max;
  if (!(inRange(C, MAX_DIM) && inRange(F, MAX_DIM) && inRange(L, MAX_LAYERS) && inRange(H, MAX_DIM) && inRange(KVH, MAX_DIM) && inRange(V, MAX_VOCAB) && inRange(seqLen, MAX_SEQ))) {
    throw bad(`implausible ${header}: every value must be positive and of a sane size (is this a llama2.c .bin file?).`);
  }
  if (C % H !== 0) throw bad(`${header}: dim ${C} is not a multiple of n_heads ${H}.`);
  if (H % KVH !== 0) throw bad(`${header}: n_heads ${H} is not a multiple of n_kv_heads ${KVH}.`);
  const D = C / H;
  if (D % 2 !== 0) throw bad(`${header}: the head dimension ${D} is odd, RoPE needs it even.`);

  const config: ModelConfig = {
    architecture: 'LlamaForCausalLM',
    hiddenSize: C,
    intermediateSize: F,
    numLayers: L,
    numHeads: H,
    numKVHeads: KVH,
    headDim: D,
    vocabSize: V,
    maxPositionEmbeddings: seqLen,
    rmsNormEps: 1e-5, // run.c rmsnorm: 1e-5f
    ropeTheta: 10000, // run.c: powf(10000.0f, head_dim / (float)head_size)
    ropeScaling: null,
    tieWordEmbeddings: shared,
    attentionBias: false,
    bosTokenId: 1, // llama2.c tokenizer: 1 = BOS, 2 = EOS (run.c generate)
    eosTokenIds: [2],
    torchDtype: 'F32',
  };

  // Byte offsets in run.c's order, with the count of floats of each layer's slice.
  const where = new Map<string, [number, number]>();
  let off = HEADER_BYTES;
  const single = (name: string, n: number) => { where.set(name, [off, n]); off += 4 * n; };
  const stacked = (part: string, n: number) => {
    for (let l = 0; l < L; l++) where.set(`model.layers.${l}.${part}.weight`, [off + 4 * n * l, n]);
    off += 4 * n * L;
  };
  single('model.embed_tokens.weight', V * C);
  stacked('input_layernorm', C);
  stacked('self_attn.q_proj', H * D * C);
  stacked('self_attn.k_proj', KVH * D * C);
  stacked('self_attn.v_proj', KVH * D * C);
  stacked('self_attn.o_proj', C * H * D);
  stacked('post_attention_layernorm', C);
  stacked('mlp.gate_proj', F * C);
  stacked('mlp.down_proj', C * F);
  stacked('mlp.up_proj', F * C);
  single('model.norm.weight', C);
  off += 2 * 4 * seqLen * (D / 2); // freq_cis_real, freq_cis_imag
  if (!shared) single('lm_head.weight', V * C);

  if (off !== src.size) {
    const other = shared ? off + 4 * V * C : off - 4 * V * C;
    const hint = other === src.size
      ? ` (the size fits ${shared ? 'an unshared' : 'a shared'} classifier: the sign of vocab_size is wrong)`
      : off > src.size ? ' (is the file truncated?)' : ' (is this a llama2.c legacy .bin file?)';
    throw bad(`${header} implies ${off} bytes, the file has ${src.size}${hint}.`);
  }

  const tensors: TensorRef[] = expectedTensors(config).map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape }));
  return new Llama2cWeights(src, config, tensors, where);
}
