// Quantize on load, one tensor at a time: each linear weight of the blocks is read as float32,
// quantized (NF4/FP4/Int4, optionally double-quantized), made resident in the backend, and its
// float copy dropped before the next tensor is read. bnb 4-bit checkpoints are used as stored
// (never re-quantized). Embeddings, norms and lm_head stay in the checkpoint's precision, as
// transformers + bitsandbytes keep them (QLORA_SPEC §4.3).
import { WebqloraError } from '../errors.ts';
import type { Backend, QuantUpload, Tensor } from '../backend/backend.ts';
import { toHalfBits } from '../num.ts';
import type { WeightSource } from '../io/weights.ts';
import { checkBlocksize, quantize4bit, sliceQuantRows } from '../quant/quantize.ts';
import type { Quant4Tensor, QuantMode } from '../quant/types.ts';
import { blockNormNames, expectedTensors, hasBias, LINEAR_NAMES, linearShape, linearSource, variantOf, type LinearName } from './config.ts';
import { LayerPager, LlamaModel, StreamedEmbedding, type BlockWeights, type LinearLayer, type LinearWeight } from './llama.ts';

export interface LoadOptions {
  /** How linear layers are held: 4-bit type, or none (f32). Default nf4. */
  quant?: QuantMode;
  /** Double quantization of the absmax (default true, the QLoRA setting). */
  doubleQuant?: boolean;
  /** Quantization block size (default 64). */
  blocksize?: number;
  /** Longest sequence the model will run (sizes the RoPE tables). */
  maxPositions?: number;
  /**
   * Keep the blocks' linear weights in host memory and page them into one resident set of
   * slots, a layer at a time (models larger than kernel memory). Default false. An untied input
   * embedding is then not held either where the format reads row slices (HF safetensors,
   * synthetic): its rows are read from `src` per forward (StreamedEmbedding), and the model
   * keeps `src` open until it is freed — the caller must not close it (see ownsSource).
   */
  pageWeights?: boolean;
  /**
   * Called once the float32 copies of the [V, C] tables are dropped, before the linear weights
   * fill memory: Node passes a garbage-collection hook (nodeGc in src/io/node.ts) so those
   * copies (hundreds of MB for large vocabularies) are not still resident at the load's peak.
   */
  collect?: () => void;
  /** Called after each tensor: done, total, tensor name. */
  onProgress?: (done: number, total: number, name: string) => void;
}

/** RoPE tables are built for at most this many positions. */
export const MAX_POSITIONS = 1 << 16;

/** Whether a loaded model keeps reading its weight source (a streamed embedding): then the model, not the caller, closes it (when freed). */
export function ownsSource(model: LlamaModel): boolean {
  return model.embed instanceof StreamedEmbedding;
}

export async function loadModel(src: WeightSource, backend: Backend, opts: LoadOptions = {}): Promise<LlamaModel> {
  const c = src.config;
  const mode = opts.quant ?? 'nf4';
  const blocksize = opts.blocksize ?? 64;
  const doubleQuant = opts.doubleQuant ?? true;
  if (mode !== 'none') checkBlocksize(blocksize);
  const paging = opts.pageWeights ?? false;
  const maxPositions = Math.min(opts.maxPositions ?? c.maxPositionEmbeddings, c.maxPositionEmbeddings, MAX_POSITIONS);
  const variant = variantOf(c);
  const total = expectedTensors(c).length;
  let done = 0;
  const progress = (name: string) => opts.onProgress?.(++done, total, name);

  // one host buffer for every linear weight read as float32 (each is quantized and dropped at
  // once), so a load does not leave a float32 copy of every weight behind for the GC
  let widest = 0;
  for (const name of LINEAR_NAMES) { const src = linearSource(c, 0, name); widest = Math.max(widest, src.rows * linearShape(c, name)[1]); }
  let scratch = mode !== 'none' ? new Float32Array(widest) : null;
  const readLinear = (wname: string, n: number) => src.readFloat(wname, scratch ? scratch.subarray(0, n) : undefined);
  const allocated: Tensor[] = [];
  const quantized: ReturnType<Backend['uploadQuant']>[] = [];
  const host: Array<Record<LinearName, QuantUpload | Float32Array>> = [];
  const slots = {} as Record<LinearName, LinearWeight>;
  // every linear shares one slot of the largest linear's size (per quant layout, normally one):
  // the pager refills it, with the linear's shape, just before each use
  const slotOf = new Map<string, LinearWeight>();
  const fp = new Fingerprint();
  let largest = 0;
  for (const name of LINEAR_NAMES) { const [N, K] = linearShape(c, name); largest = Math.max(largest, N * K); }
  /** A norm weight; Gemma's x̂·(1 + w) is folded in here, in float32 as transformers computes it. */
  const normTensor = async (name: string, label: string): Promise<Tensor> => {
    const v = await src.readFloat(name);
    if (name === 'model.norm.weight') fp.add(bytesOf(v));
    if (variant.normPlusOne) for (let i = 0; i < v.length; i++) v[i] = Math.fround(1 + v[i]!);
    const t = backend.alloc('f32', v.length, label);
    allocated.push(t);
    backend.write(t, v);
    progress(name);
    return t;
  };
  // the [V, C] tables stay in the checkpoint's precision
  const tableType = c.torchDtype === 'F16' ? 'f16' : c.torchDtype === 'BF16' ? 'bf16' : 'f32';
  const tableTensor = async (name: string, label: string): Promise<Tensor> => {
    const half = tableType === 'f32' ? null : tableType;
    const [V, C] = [c.vocabSize, c.hiddenSize];
    const t = backend.alloc(tableType, V * C, label);
    allocated.push(t);
    // row slices of ~4 MiB of float32 where the format can read them, so a [V, C] table never
    // exists whole in float32 next to its half copy (Llama 3's 128K × 2048 would be 1 GB)
    const step = src.readFloatRows ? Math.max(1, Math.floor((1 << 20) / C)) : V;
    const buf = src.readFloatRows ? new Float32Array(step * C) : null;
    const slice = half ? new Uint16Array(Math.min(step * C, 1 << 20)) : null;
    for (let r0 = 0; r0 < V; r0 += step) {
      const rows = Math.min(step, V - r0), n = rows * C;
      const v = src.readFloatRows ? await src.readFloatRows(name, r0, rows, buf!.subarray(0, n)) : await src.readFloat(name);
      if (!half) { backend.write(t, v, r0 * C); continue; }
      // whole-tensor reads convert in slices too, so no second full-size host copy exists
      for (let s0 = 0; s0 < n; s0 += slice!.length) {
        const m = Math.min(slice!.length, n - s0);
        toHalfBits(v.subarray(s0, s0 + m), half, slice!);
        backend.write(t, m === slice!.length ? slice! : slice!.subarray(0, m), r0 * C + s0);
      }
    }
    progress(name);
    return t;
  };

  try {
    const streamed = paging && !c.tieWordEmbeddings && src.readFloatRows !== undefined;
    const embed = streamed
      ? new StreamedEmbedding(backend, src, 'model.embed_tokens.weight', tableType, c.vocabSize, c.hiddenSize)
      : await tableTensor('model.embed_tokens.weight', 'embed_tokens');
    if (streamed) progress('model.embed_tokens.weight');
    const lmHead = embed instanceof StreamedEmbedding ? await tableTensor('lm_head.weight', 'lm_head') : c.tieWordEmbeddings ? embed : await tableTensor('lm_head.weight', 'lm_head');
    opts.collect?.();
    const finalNorm = await normTensor('model.norm.weight', 'norm');
    // the fields that shape the computation (not config.json's raw text, nor the token ids)
    const { hfConfig: _raw, bosTokenId: _bos, eosTokenIds: _eos, ...math } = c;
    fp.add(new TextEncoder().encode(JSON.stringify(math)));
    const blocks: BlockWeights[] = [];
    for (let l = 0; l < c.numLayers; l++) {
      const nn = blockNormNames(c, l);
      const optNorm = (name: string | null, label: string) => (name ? normTensor(name, `layers.${l}.${label}`) : Promise.resolve(null));
      const inNorm = await normTensor(nn.attnIn, `layers.${l}.input_layernorm`);
      const postNorm = await normTensor(nn.mlpIn, `layers.${l}.mlp_norm`);
      const attnOutNorm = await optNorm(nn.attnOut, 'attn_out_norm');
      const mlpOutNorm = await optNorm(nn.mlpOut, 'mlp_out_norm');
      const qNorm = await optNorm(nn.q, 'q_norm');
      const kNorm = await optNorm(nn.k, 'k_norm');
      const lin = {} as Record<LinearName, LinearLayer>;
      const hostLayer = {} as Record<LinearName, QuantUpload | Float32Array>;
      // the stored module last read: a fused one (Phi-3) serves several logical linears
      let cached = null as { path: string; q: Quant4Tensor | null; f: Float32Array | null; bias: Float32Array | null } | null;
      for (const name of LINEAR_NAMES) {
        const ls = linearSource(c, l, name);
        const wname = `${ls.path}.weight`;
        const [N, K] = linearShape(c, name);
        const whole = ls.rows === N;
        const label = `layers.${l}.${name}`;
        if (cached?.path !== ls.path) {
          cached = { path: ls.path, q: null, f: null, bias: null };
          if (mode !== 'none') {
            const stored = src.format === 'bnb-4bit' ? await src.readQuant(wname) : null;
            cached.q = stored ?? (await quantize4bit(await readLinear(wname, ls.rows * K), { quantType: mode as Exclude<QuantMode, 'none'>, blocksize, doubleQuant, shape: [ls.rows, K] }));
          } else {
            cached.f = await src.readFloat(wname);
          }
          if (hasBias(c, name)) cached.bias = await src.readFloat(`${ls.path}.bias`);
          if (l === 0 && name === LINEAR_NAMES[0]) {
            // the base's first linear weight as it is held: its 4-bit codes and scales (or values)
            const q = cached.q;
            for (const part of q ? [q.packed, q.absmax, q.dq?.codes, q.dq?.nestedAbsmax] : [cached.f]) if (part) fp.add(bytesOf(part));
          }
          progress(wname);
        }
        let layer: LinearLayer;
        if (mode !== 'none') {
          if (!whole && (ls.row0 * K) % cached.q!.blocksize !== 0) {
            throw new WebqloraError(`${wname}: the fused module is quantized whole (as bitsandbytes does) and split by rows, but its split at row ${ls.row0} falls inside a block of ${cached.q!.blocksize} values; use a blocksize that divides ${ls.row0 * K} (the default 64 does).`);
          }
          const q = whole ? cached.q! : sliceQuantRows(cached.q!, ls.row0, N);
          const up: QuantUpload = { N, K, blocksize: q.blocksize, quantType: q.quantType, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label };
          if (paging) {
            hostLayer[name] = up;
            const key = `${up.quantType} ${up.blocksize} ${up.dq?.nestedBlocksize ?? 0}`;
            if (!slots[name] && !slotOf.has(key)) {
              const w = backend.uploadQuant(emptyUpload(up, largest));
              quantized.push(w);
              slotOf.set(key, { kind: 'q4', w });
            }
            slots[name] ??= slotOf.get(key)!;
            layer = { name, N, K, weight: slots[name], bias: null };
          } else {
            const w = backend.uploadQuant(up);
            quantized.push(w);
            layer = { name, N, K, weight: { kind: 'q4', w }, bias: null };
          }
        } else {
          const v = whole ? cached.f! : cached.f!.slice(ls.row0 * K, (ls.row0 + N) * K);
          if (paging) {
            hostLayer[name] = v;
            const key = 'f32';
            if (!slots[name] && !slotOf.has(key)) {
              const t = backend.alloc('f32', largest, 'paged linear');
              allocated.push(t);
              slotOf.set(key, { kind: 'f32', w: t });
            }
            slots[name] ??= slotOf.get(key)!;
            layer = { name, N, K, weight: slots[name], bias: null };
          } else {
            const t = backend.alloc('f32', N * K, label);
            allocated.push(t);
            backend.write(t, v);
            layer = { name, N, K, weight: { kind: 'f32', w: t }, bias: null };
          }
        }
        if (cached.bias) {
          const t = backend.alloc('f32', N, `${label}.bias`);
          allocated.push(t);
          backend.write(t, cached.bias.subarray(ls.row0, ls.row0 + N));
          layer.bias = t;
        }
        lin[name] = layer;
      }
      blocks.push({ inNorm, postNorm, attnOutNorm, mlpOutNorm, qNorm, kNorm, lin });
      if (paging) host.push(hostLayer);
    }
    // the float32 scratch (the widest linear weight: 180 MB for a 7B MLP) is garbage from here on;
    // collect it now so the training step's peak does not sit on top of it
    scratch = null;
    opts.collect?.();
    const effective = quantized.length > 0
      ? { mode: quantized[0]!.quantType, doubleQuant: quantized[0]!.doubleQuant, blocksize: quantized[0]!.blocksize }
      : { mode: 'none' as const, doubleQuant: false, blocksize };
    const model = new LlamaModel(backend, c, embed, lmHead, finalNorm, blocks, effective, maxPositions);
    model.fingerprint = fp.hex();
    if (paging) model.pager = new LayerPager(backend, slots, host);
    return model;
  } catch (e) {
    for (const t of allocated) backend.free(t);
    for (const w of quantized) backend.freeQuant(w);
    throw e;
  }
}

/**
 * A zero 4-bit weight of [1, n] of u's kind (type, blocksize, maps, nested blocksize): the paging
 * slot's first upload, sized for the largest linear; the pager writes each real weight, with its
 * own shape, before it is used.
 */
function emptyUpload(u: QuantUpload, n: number): QuantUpload {
  const nb = Math.ceil(n / u.blocksize);
  const dq = u.dq ? { ...u.dq, codes: new Uint8Array(nb), nestedAbsmax: new Float32Array(Math.ceil(nb / u.dq.nestedBlocksize)) } : null;
  return { N: 1, K: n, blocksize: u.blocksize, quantType: u.quantType, packed: new Uint8Array(Math.ceil(n / 2)), quantMap: u.quantMap, absmax: dq ? null : new Float32Array(nb), dq, label: 'paged linear' };
}

function bytesOf(a: Float32Array | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Two 32-bit hashes of everything added (FNV-1a, and FNV-1a with a shift mixed in, so the two
 * differ in every bit): LlamaModel.fingerprint,
 * which tells a checkpoint's base model from another (not a cryptographic hash).
 */
class Fingerprint {
  private h1 = 0x811c9dc5;
  private h2 = 0x5bd1e995;
  add(b: Uint8Array): void {
    let h1 = this.h1, h2 = this.h2;
    for (let i = 0; i < b.length; i++) {
      h1 = Math.imul(h1 ^ b[i]!, 0x01000193);
      h2 = Math.imul(h2 ^ b[i]!, 0x01000193) ^ (h2 >>> 15);
    }
    this.h1 = h1 >>> 0;
    this.h2 = h2 >>> 0;
  }
  hex(): string {
    return this.h1.toString(16).padStart(8, '0') + this.h2.toString(16).padStart(8, '0');
  }
}
