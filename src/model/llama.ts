// The Llama-family decoder, forward and backward written once against the Backend (the llm.c
// way: explicit backward, no autograd). Frozen base weights (4-bit or f32), float32 LoRA.
//
// Legend: B batch, T time, R = B·T rows, C hidden, H heads, KVH kv heads, D head dim,
// HD = H·D, KVD = KVH·D, F ffn, V vocab, r LoRA rank, L layers.
//
// One decoder layer (x is the residual stream [R, C]); [brackets] are the family switches of
// `Variant` (config.ts, set per family by families.ts), the only place families differ:
//   h1 = rmsnorm(x)·w_in                 (rstd1 kept; Gemma norms multiply by 1 + w, folded in at load)
//   q, k, v = h1·Wqᵀ, h1·Wkᵀ, h1·Wvᵀ     (+ bias for Qwen2; + LoRA)
//   [qkNorm] q, k = rmsnorm_per_head(q)·w_q, rmsnorm_per_head(k)·w_k
//   q, k = rope(q), rope(k)              (sliding layers may have their own RoPE base)
//   att = causal_gqa_attention(q, k, v)  (lse kept; [attnScale], [attnSoftcap], [window per layer])
//   o = att·Woᵀ ; [sandwichNorms] o = rmsnorm(o)·w_attn_out
//   x2 = x + o
//   h2 = rmsnorm(x2)·w_post              (rstd2 kept)
//   a = act(h2·Wgᵀ) ⊙ (h2·Wuᵀ)           (act = silu, or [gelu_tanh])
//   m = a·Wdᵀ ; [sandwichNorms] m = rmsnorm(m)·w_mlp_out
//   x' = x2 + m
// Embedding: x_0 = E[ids] ([embedScale] × f32(√C)).
// Head: logits = rmsnorm(x_L)·w_final·Eᵀ (E = lm_head, or the embedding when tied);
// [finalSoftcap] logits = cap·tanh(logits / cap), fused into the cross-entropy.
import type { AttentionShape, Backend, QuantUpload, QuantWeight, RopeTables, Tensor } from '../backend/backend.ts';
import { deriveSeed } from '../backend/rng.ts';
import { WebqloraError } from '../errors.ts';
import { LINEAR_NAMES, variantOf, type LinearName, type ModelConfig, type Variant } from './config.ts';
import type { WeightSource } from '../io/weights.ts';
import { toHalfBits } from '../num.ts';
import type { LoraAdapters, LoraPair } from './lora.ts';
import { quantBytes, type QuantMode } from '../quant/types.ts';

export type LinearWeight = { kind: 'q4'; w: QuantWeight } | { kind: 'f32'; w: Tensor };

/** A frozen linear layer W [N, K] with an optional bias [N]. */
export interface LinearLayer {
  name: LinearName;
  N: number;
  K: number;
  weight: LinearWeight;
  bias: Tensor | null;
}

export interface BlockWeights {
  /** f32 [C]: before attention */
  inNorm: Tensor;
  /** f32 [C]: before the MLP */
  postNorm: Tensor;
  /** f32 [C]: of the attention output and of the MLP output ([sandwichNorms]) */
  attnOutNorm: Tensor | null;
  mlpOutNorm: Tensor | null;
  /** f32 [D]: per-head q and k norms ([qkNorm]) */
  qNorm: Tensor | null;
  kNorm: Tensor | null;
  lin: Record<LinearName, LinearLayer>;
}

/** How the linear layers of the blocks are stored. */
export interface QuantSettings {
  mode: QuantMode;
  doubleQuant: boolean;
  blocksize: number;
}

/**
 * Layer paging: the blocks' linear weights stay in host memory and one resident slot of the
 * largest linear's size (per quant layout; a model has one) is refilled with a linear's weights,
 * and takes its shape (Backend.writeQuant), just before that linear runs. Every BlockWeights.lin
 * entry points at the shared slot. Refills are enqueued like any kernel, so work already enqueued
 * sees the previous contents.
 */
export class LayerPager {
  /** what each slot holds: layer · LINEAR_NAMES.length + the linear's index */
  private readonly held = new Map<LinearWeight, number>();
  constructor(
    private readonly backend: Backend,
    readonly slots: Record<LinearName, LinearWeight>,
    /** per layer: each linear's 4-bit upload (q4 slots) or float32 values (f32 slots) */
    readonly host: Array<Record<LinearName, QuantUpload | Float32Array>>,
  ) {}

  /** Makes linear `name` of layer l resident (in the one slot its kind shares); no-op where it is. */
  ensure(l: number, name: LinearName): void {
    const slot = this.slots[name], key = l * LINEAR_NAMES.length + LIN_INDEX[name];
    if (this.held.get(slot) === key) return;
    const src = this.host[l]![name];
    if (slot.kind === 'q4') this.backend.writeQuant(slot.w, src as QuantUpload);
    else this.backend.write(slot.w, src as Float32Array);
    this.held.set(slot, key);
  }

  /** Bytes held in host memory for all layers. */
  get hostBytes(): number {
    let b = 0;
    for (const layer of this.host) {
      for (const name of LINEAR_NAMES) {
        const u = layer[name];
        b += u instanceof Float32Array ? u.byteLength : quantBytes(u);
      }
    }
    return b;
  }
}

/**
 * The input embedding of a paged, untied model: instead of holding the [V, C] table in kernel
 * memory (262 MB for Llama 2 7B in f16, 1 GB for Llama 3 8B), each forward reads the rows of its
 * distinct tokens from the weight source (as llama.cpp's mmap touches only the rows it uses). The
 * rows go into a small staging table in the checkpoint's precision, rounded exactly as loadModel
 * rounds a resident table, and ws.ids holds each token's row in it, so the embedding kernel and
 * the result are those of the resident table. The source stays open until the model is freed.
 * loadModel makes one when layers are paged and the format reads row slices (HF safetensors,
 * synthetic); GGUF and llama2.c tables stay resident.
 */
/**
 * Input ids are checked on the host, before they are uploaded, as the user's mistake they are
 * (row r = sequence r / T, position r % T). WebGPU's embedding cannot check them (the ids are on
 * the GPU; the loss came out NaN) and WASM's only as an internal error. Targets are checked by
 * LlamaModel.lossHead; generate() checks its prompt itself and samples only ids below V.
 */
export function checkInputIds(ids: ArrayLike<number>, T: number, V: number): void {
  for (let r = 0; r < ids.length; r++) {
    const id = ids[r]!;
    if (!(id >= 0 && id < V)) {
      throw new WebqloraError(`input token id ${id} (row ${r} of the batch: sequence ${Math.floor(r / T)}, position ${r % T}) is outside the model's vocabulary of ${V} tokens (does the tokenizer belong to this model?).`);
    }
  }
}

export class StreamedEmbedding {
  private staging: Tensor | null = null;
  private stagingRows = 0;
  /** host copies of the staged rows (f32 as read, and their half bits), kept for the next batch */
  private host = new Float32Array(0);
  private bits = new Uint16Array(0);
  constructor(
    private readonly backend: Backend,
    readonly source: WeightSource,
    readonly name: string,
    readonly dtype: 'f32' | 'f16' | 'bf16',
    readonly V: number,
    readonly C: number,
  ) {}

  /** The staging table: rows of the last staged input's distinct tokens. */
  get table(): Tensor {
    if (!this.staging) throw new Error('the streamed embedding has no input staged (LlamaModel.stageInput)');
    return this.staging;
  }

  /** Reads the rows of ids' distinct tokens (ids checked by the caller) and writes ws.ids as rows of the table. */
  async stage(ws: Workspace, ids: Int32Array): Promise<void> {
    const R = ids.length, C = this.C;
    const distinct = [...new Set(ids)].sort((a, b) => a - b), U = distinct.length;
    if (U > this.stagingRows) {
      // grown to the largest input seen (batch × seq rows at most): a training run allocates once
      if (this.staging) this.backend.free(this.staging);
      this.staging = null;
      const rows = Math.max(U, Math.min(R, this.V));
      this.staging = this.backend.alloc(this.dtype, rows * C, `${this.name} (streamed rows)`);
      this.stagingRows = rows;
      this.host = new Float32Array(rows * C);
      if (this.dtype !== 'f32') this.bits = new Uint16Array(rows * C);
    }
    const local = new Map<number, number>();
    // runs of consecutive ids are read as one row slice, into one host buffer written at once
    for (let i = 0; i < U;) {
      let j = i + 1;
      while (j < U && distinct[j] === distinct[j - 1]! + 1) j++;
      const into = this.host.subarray(i * C, j * C);
      const rows = await this.source.readFloatRows!(this.name, distinct[i]!, j - i, into);
      if (rows !== into) into.set(rows);
      for (let k = i; k < j; k++) local.set(distinct[k]!, k);
      i = j;
    }
    if (this.dtype === 'f32') this.backend.write(this.staging!, this.host.subarray(0, U * C));
    else {
      // rounded as loadModel rounds a resident table
      toHalfBits(this.host.subarray(0, U * C), this.dtype, this.bits);
      this.backend.write(this.staging!, this.bits.subarray(0, U * C));
    }
    this.backend.write(ws.ids, Int32Array.from(ids, (id) => local.get(id)!));
  }

  free(): void {
    if (this.staging) this.backend.free(this.staging);
    this.staging = null;
    this.stagingRows = 0;
    void this.source.close().catch(() => {});
  }
}

export class LlamaModel {
  readonly rope: RopeTables;
  /** RoPE of the sliding layers when their base differs (Gemma 3); else the same tables */
  readonly ropeLocal: RopeTables;
  readonly variant: Variant;
  /** Set when base layers are paged from host memory (loadModel's pageWeights). */
  pager: LayerPager | null = null;
  /**
   * A hash of the base as loaded (config, final norm, the first linear weight as held), set by
   * loadModel: a checkpoint records it, and a resume on another base is refused.
   */
  fingerprint = '';
  /** what the last stageInput uploaded: its workspace and ids */
  private staged: { ws: Workspace; ids: Int32Array } | null = null;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    /** [V, C] f32/f16/bf16, or its rows read per forward (paged, untied models) */
    readonly embed: Tensor | StreamedEmbedding,
    /** [V, C]; the same tensor as embed when tied */
    readonly lmHead: Tensor,
    /** [C] */
    readonly finalNorm: Tensor,
    readonly blocks: BlockWeights[],
    readonly quant: QuantSettings,
    /** RoPE table rows (the longest sequence this model will run). */
    readonly maxPositions: number,
  ) {
    this.variant = variantOf(config);
    this.rope = buildRope(backend, config, maxPositions);
    const loc = this.variant.ropeLocal;
    this.ropeLocal = loc ? buildRope(backend, { ...config, ropeTheta: loc.theta, ropeScaling: loc.scaling }, maxPositions) : this.rope;
  }

  /** RoPE tables of layer l. */
  ropeOf(l: number): RopeTables {
    return this.variant.slidingLayers[l] ? this.ropeLocal : this.rope;
  }

  /** Frees every backend buffer of the model. */
  free(): void {
    const be = this.backend;
    if (this.embed instanceof StreamedEmbedding) this.embed.free();
    else be.free(this.embed);
    if (this.lmHead !== this.embed) be.free(this.lmHead);
    be.free(this.finalNorm);
    for (const t of new Set([this.rope.cos, this.rope.sin, this.ropeLocal.cos, this.ropeLocal.sin])) be.free(t);
    const freed = new Set<unknown>();
    for (const b of this.blocks) {
      for (const t of [b.inNorm, b.postNorm, b.attnOutNorm, b.mlpOutNorm, b.qNorm, b.kNorm]) if (t) be.free(t);
      for (const name of LINEAR_NAMES) {
        const lin = b.lin[name];
        if (!freed.has(lin.weight.w)) {
          freed.add(lin.weight.w); // paged layers share their slots
          if (lin.weight.kind === 'q4') be.freeQuant(lin.weight.w);
          else be.free(lin.weight.w);
        }
        if (lin.bias) be.free(lin.bias);
      }
    }
  }

  // ---- forward -------------------------------------------------------------------------

  /**
   * Uploads the input of the next forward: ids (R = B·T rows of sequences of T, host values) into
   * ws.ids, checked against the vocabulary; with a streamed embedding, first reads their rows from
   * the weight source. Training and eval stage each micro-batch; forwardLoss (train/step.ts) then
   * finds its ids staged, or uploads them itself where the table is resident.
   */
  async stageInput(ws: Workspace, ids: Int32Array, T = ids.length): Promise<void> {
    // nothing counts as staged until this one is complete (a read that fails leaves the table half-written)
    this.staged = null;
    checkInputIds(ids, T, this.config.vocabSize);
    if (this.embed instanceof StreamedEmbedding) await this.embed.stage(ws, ids);
    else this.backend.write(ws.ids, ids);
    this.staged = { ws, ids: ids.slice() };
  }

  /**
   * The ids of the next forward in ws.ids: nothing to do where stageInput staged exactly these;
   * otherwise uploaded (checked) for a resident table, refused for a streamed one.
   */
  setInputIds(ws: Workspace, ids: Int32Array, T = ids.length): void {
    const s = this.staged;
    if (s !== null && s.ws === ws && s.ids.length === ids.length && s.ids.every((v, i) => v === ids[i])) return;
    if (this.embed instanceof StreamedEmbedding) throw new Error('a model with a streamed embedding needs `await model.stageInput(ws, ids)` before each forward of new ids');
    checkInputIds(ids, T, this.config.vocabSize);
    this.backend.write(ws.ids, ids);
    this.staged = null;
  }

  /**
   * Runs the decoder over ws.ids (B sequences of T tokens, row r = b·T + t) and leaves the
   * final hidden state in ws.layerIn(L). With a KV cache (ws.kv), B must be 1 and the tokens
   * sit at positions pos0 .. pos0+T−1. `seed` enables LoRA dropout (training only). `docStart`
   * (i32 [B·T], normally ws.docStart; pos0 = 0): packed sequences, each row several examples
   * (AttentionShape.docStart) whose positions restart at 0 and which never attend to each other.
   */
  forward(ws: Workspace, B: number, T: number, opts: { pos0?: number; seed?: number; lora?: LoraAdapters | null; neftuneAlpha?: number; docStart?: Tensor } = {}): void {
    const c = this.config, be = this.backend, R = B * T;
    ws.checkRows(B, T);
    // LoRA dropout runs at the workspace's rate (its buffer is sized for it): a workspace made for
    // another rate than the adapter's would train with it, or without any, and say nothing
    const p = opts.lora?.config.dropout ?? 0;
    if (opts.seed !== undefined && opts.lora && p !== ws.dropout) throw new Error(`the workspace was made for LoRA dropout ${ws.dropout}, the adapter's is ${p} (Workspace option loraDropout)`);
    // NEFTune (Jain et al.; TRL's hook on the embedding module): training only, uniform noise of
    // magnitude alpha / √(T·C) on the embedding module's output: before Gemma 2's √C normalizer,
    // after Gemma 3's (its embedding module scales)
    const alpha = opts.neftuneAlpha ?? 0;
    const noise = (x: Tensor) => {
      if (alpha > 0 && opts.seed !== undefined) be.addUniformNoise(x, R * c.hiddenSize, alpha / Math.sqrt(T * c.hiddenSize), deriveSeed(opts.seed, c.numLayers, LINEAR_NAMES.length));
    };
    if (this.embed instanceof StreamedEmbedding && this.staged?.ws !== ws) throw new Error('a model with a streamed embedding needs `await model.stageInput(ws, ids)` before each forward of new ids (none was staged for this workspace)');
    const table = this.embed instanceof StreamedEmbedding ? this.embed.table : this.embed;
    if (this.variant.embedScale) {
      // Gemma: x_0 = E[ids] · f32(√C), as r(0 + r(√C·e)) through the scratch row buffer
      const tmp = ws.acts(0).h1;
      be.embedding(tmp, table, ws.ids, R, c.hiddenSize);
      if (!this.variant.embedScaleInModule) noise(tmp);
      be.fill(ws.layerIn(0), 0, 0, R * c.hiddenSize);
      be.add(ws.layerIn(0), tmp, R * c.hiddenSize, Math.fround(Math.sqrt(c.hiddenSize)));
      if (this.variant.embedScaleInModule) noise(ws.layerIn(0));
    } else {
      be.embedding(ws.layerIn(0), table, ws.ids, R, c.hiddenSize);
      noise(ws.layerIn(0));
    }
    // DoRA's norms follow A, B and m: refreshed by every forward except a KV-cache continuation
    // (a decode step runs on the adapter its prefill refreshed); the backward's recomputation
    // (checkpointing) uses them as they are
    this.doraRefresh = (opts.lora?.useDora ?? false) && (opts.pos0 ?? 0) === 0;
    try {
      for (let l = 0; l < c.numLayers; l++) this.layerForward(ws, l, B, T, opts.pos0 ?? 0, opts.lora ?? null, opts.seed, opts.docStart);
    } finally {
      this.doraRefresh = false;
    }
  }

  /** Set by forward() while its layers refresh DoRA's norms (see there). */
  private doraRefresh = false;

  /**
   * DoRA's norms of one adapted linear (its weight resident): nsq_j = ‖W_j + s·(B·A)_j‖², expanded as
   * ‖W_j‖² + Σ_i Bᵀ[i, j]·(2s·(A·Wᵀ)[i, j] + s²·(A·Aᵀ·Bᵀ)[i, j]) so that W (4-bit or f32) is
   * only read through its GEMM (‖W_j‖² once); then g = m / √nsq and invNorm = 1 / √nsq.
   */
  private refreshDora(pair: LoraPair, lin: LinearLayer, lora: LoraAdapters): void {
    const be = this.backend, sc = lora.doraScratch!, d = pair.dora!, { N, K, r } = pair, s = pair.scaling;
    if (!d.wsqReady) {
      if (lin.weight.kind === 'q4') be.qRowSumSquares(d.wsq, lin.weight.w);
      else be.rowSumSquares(d.wsq, lin.weight.w, N, K);
      d.wsqReady = true;
    }
    // V = 2s·A·Wᵀ + s²·(A·Aᵀ)·Bᵀ [r, N]; Bᵀ [r, N] through the identity (exact)
    if (lin.weight.kind === 'q4') be.qMatmul(sc.V, pair.A, lin.weight.w, r, { alpha: 2 * s });
    else be.matmul(sc.V, pair.A, lin.weight.w, r, N, K, { transB: true, alpha: 2 * s });
    be.matmul(sc.G, pair.A, pair.A, r, r, K, { transB: true });
    be.matmul(sc.V, sc.G, pair.B, r, N, r, { transB: true, alpha: s * s, accumulate: true });
    be.matmul(sc.Bt, sc.eye.get(r)!, pair.B, r, N, r, { transB: true });
    be.copy(d.nsq, 0, d.wsq, 0, N);
    be.columnDot(d.nsq, sc.Bt, sc.V, r, N, { accumulate: true });
    if (!d.mReady) {
      // PEFT's initialisation, at the first forward as PEFT does it: m = ‖W + s·B·A‖_row,
      // here f32(nsq / f32(√nsq)) (doraScale with m = nsq), within an ulp of √nsq
      be.doraScale(d.g, d.invNorm, d.nsq, d.nsq, N);
      be.copy(d.m, 0, d.g, 0, N);
      d.mReady = true;
    }
    be.doraScale(d.g, d.invNorm, d.m, d.nsq, N);
  }

  /**
   * The loss head, in chunks of rows so that no [R, V] logits (or logit gradient) ever exist:
   * hF = rmsnorm(x_L)·w_final for all rows, then for each chunk of at most ws.headRows *scored*
   * rows (targets ≠ −100; unscored rows compute no logits at all): logits_c = hF_c·Eᵀ, the
   * cross-entropy into ws.losses (0 for unscored rows) and, with `gradScale`, its gradient
   * d(hF) = dlogits_c·E into ws.dh (0 for unscored rows), which backward() continues from.
   * `targets` are the host copy of the micro-batch's targets [R] (they decide the chunks).
   * `gradScale` may be per row (f32 [≥ R], preference tuning's dL/dCE of each row's sequence): the
   * crossEntropy kernel takes one scale, so a chunk is also cut wherever the scale changes.
   * Up to ws.headGroup consecutive chunks of one scale run as one GEMM pair (each row's bits are
   * those of its own chunk: see there).
   */
  lossHead(ws: Workspace, R: number, targets: Int32Array, gradScale?: number | Float32Array): void {
    const c = this.config, be = this.backend, C = c.hiddenSize, V = c.vocabSize, cap = this.variant.finalSoftcap;
    be.rmsNorm(ws.hF, ws.rstdF, ws.layerIn(c.numLayers), this.finalNorm, R, C, c.rmsNormEps);
    be.fill(ws.losses, 0, 0, R);
    const grad = gradScale !== undefined;
    if (grad) be.fill(ws.dh, 0, 0, R * C);
    // runs of consecutive scored rows, cut at group boundaries: [row, group row, length]
    const H = ws.headRows, G = ws.headGroup, tc = ws.headTargetsHost;
    let runs: Array<[number, number, number]> = [], n = 0;
    const perRow = typeof gradScale === 'object';
    let scale = perRow ? undefined : gradScale; // the scale of the chunk being gathered
    /** rows [0, m) of the head buffers: the runs `rs` of hF, their targets */
    const head = (rs: Array<[number, number, number]>, tgt: Int32Array, m: number) => {
      be.write(ws.headTargets, tgt);
      for (const [r, i, len] of rs) be.copy(ws.headIn, i * C, ws.hF, r * C, len * C);
      be.matmul(ws.headLogits, ws.headIn, this.lmHead, m, V, C, { transB: true });
      be.crossEntropy(ws.headLosses, ws.headLogits, ws.headTargets, m, V, scale, cap > 0 ? cap : undefined);
      for (const [r, i, len] of rs) be.copy(ws.losses, r, ws.headLosses, i, len);
      if (grad) {
        be.matmul(ws.headIn, ws.headLogits, this.lmHead, m, C, V);
        for (const [r, i, len] of rs) be.copy(ws.dh, r * C, ws.headIn, i * C, len * C);
      }
    };
    const flush = () => {
      if (n === 0) return;
      // a group is whole chunks of H rows but its last. A chunk of fewer than 4 rows ran its NT
      // GEMM as dot products (the M < 4 path), other chunks as one GEMM whose bits do not depend
      // on M: such a last chunk runs alone, as it did before chunks were grouped
      const c0 = n - (n % H);
      if (G > 1 && n % H > 0 && n % H < 4 && c0 > 0) {
        const first: typeof runs = [], last: typeof runs = [];
        for (const [r, i, len] of runs) {
          if (i + len <= c0) first.push([r, i, len]);
          else if (i >= c0) last.push([r, i - c0, len]);
          else { first.push([r, i, c0 - i]); last.push([r + c0 - i, 0, len - (c0 - i)]); }
        }
        head(first, tc.subarray(0, c0), c0);
        head(last, tc.subarray(c0, n), n - c0);
      } else {
        head(runs, tc.subarray(0, n), n);
      }
      runs = [];
      n = 0;
    };
    for (let r = 0; r < R; r++) {
      const t = targets[r]!;
      if (t === -100) continue;
      if (!(t >= 0 && t < V)) throw new WebqloraError(`token id ${t} (row ${r} of the batch) is outside the model's vocabulary of ${V} tokens (does the tokenizer belong to this model?).`);
      if (perRow && gradScale[r] !== scale) {
        flush();
        scale = gradScale[r];
      }
      const last = runs[runs.length - 1];
      if (last && last[0] + last[2] === r) last[2]++;
      else runs.push([r, n, 1]);
      tc[n++] = t;
      if (n === H * G) flush();
    }
    flush();
  }

  /** logits [V] of row `row` only (generation). */
  headLastRow(ws: Workspace, row: number): void {
    const c = this.config, be = this.backend, C = c.hiddenSize;
    be.copy(ws.lastRow, 0, ws.layerIn(c.numLayers), row * C, C);
    be.rmsNorm(ws.lastNorm, ws.lastRstd, ws.lastRow, this.finalNorm, 1, C, c.rmsNormEps);
    be.matmul(ws.lastLogits, ws.lastNorm, this.lmHead, 1, c.vocabSize, C, { transB: true });
    if (this.variant.finalSoftcap > 0) be.softcap(ws.lastLogits, c.vocabSize, this.variant.finalSoftcap);
  }

  private layerForward(ws: Workspace, l: number, B: number, T: number, pos0: number, lora: LoraAdapters | null, seed: number | undefined, docStart?: Tensor): void {
    const c = this.config, v = this.variant, be = this.backend, blk = this.blocks[l]!, a = ws.acts(l);
    const R = B * T, C = c.hiddenSize, KVD = c.numKVHeads * c.headDim, D = c.headDim;
    const x = ws.layerIn(l), out = ws.layerIn(l + 1), rope = this.ropeOf(l);
    const lin = (name: LinearName, input: Tensor, y: Tensor, accumulate: boolean) => {
      this.pager?.ensure(l, name);
      const pair = lora?.get(l, name) ?? null;
      if (this.doraRefresh && pair?.dora) this.refreshDora(pair, blk.lin[name], lora!);
      this.linearForward(ws, blk.lin[name], pair, input, y, loraT(a, pair, name), R, accumulate, dropSeed(seed, l, pair, name));
    };

    be.rmsNorm(a.h1, a.rstd1, x, blk.inNorm, R, C, c.rmsNormEps);
    if (v.qkNorm) {
      lin('q_proj', a.h1, a.qr, false);
      lin('k_proj', a.h1, a.kr, false);
      be.rmsNorm(a.q, a.rstdq, a.qr, blk.qNorm!, R * c.numHeads, D, c.rmsNormEps);
      be.rmsNorm(a.k, a.rstdk, a.kr, blk.kNorm!, R * c.numKVHeads, D, c.rmsNormEps);
    } else {
      lin('q_proj', a.h1, a.q, false);
      lin('k_proj', a.h1, a.k, false);
    }
    lin('v_proj', a.h1, a.v, false);
    be.rope(a.q, rope, R, T, c.numHeads, D, pos0, docStart);
    be.rope(a.k, rope, R, T, c.numKVHeads, D, pos0, docStart);
    if (ws.kv) {
      // B = 1: append this chunk's keys/values to the cache and attend over positions 0..pos0+T−1
      be.copy(ws.kv.k[l]!, pos0 * KVD, a.k, 0, T * KVD);
      be.copy(ws.kv.v[l]!, pos0 * KVD, a.v, 0, T * KVD);
      be.attention(a.att, a.lse, a.q, ws.kv.k[l]!, ws.kv.v[l]!, this.attnShape(l, 1, T, pos0 + T, pos0, ws.kv.maxSeq));
    } else {
      be.attention(a.att, a.lse, a.q, a.k, a.v, { ...this.attnShape(l, B, T, T, 0, T), docStart });
    }
    be.copy(a.x2, 0, x, 0, R * C);
    if (blk.attnOutNorm) {
      lin('o_proj', a.att, a.o, false);
      be.rmsNorm(ws.tmpC, a.rstdo, a.o, blk.attnOutNorm, R, C, c.rmsNormEps);
      be.add(a.x2, ws.tmpC, R * C);
    } else {
      lin('o_proj', a.att, a.x2, true);
    }
    be.rmsNorm(a.h2, a.rstd2, a.x2, blk.postNorm, R, C, c.rmsNormEps);
    lin('gate_proj', a.h2, a.g, false);
    lin('up_proj', a.h2, a.u, false);
    if (v.activation === 'gelu_tanh') be.geglu(a.a, a.g, a.u, R * c.intermediateSize);
    else be.swiglu(a.a, a.g, a.u, R * c.intermediateSize);
    be.copy(out, 0, a.x2, 0, R * C);
    if (blk.mlpOutNorm) {
      lin('down_proj', a.a, a.m, false);
      be.rmsNorm(ws.tmpC, a.rstdm, a.m, blk.mlpOutNorm, R, C, c.rmsNormEps);
      be.add(out, ws.tmpC, R * C);
    } else {
      lin('down_proj', a.a, out, true);
    }
  }

  /** Attention shape of layer l: scale, soft-cap and (on sliding layers) the window of the family. */
  attnShape(l: number, B: number, T: number, S: number, pos0: number, kvStride: number): AttentionShape {
    const c = this.config, v = this.variant;
    const s: AttentionShape = { B, T, S, H: c.numHeads, KVH: c.numKVHeads, D: c.headDim, pos0, kvStride };
    if (v.attnScale !== null) s.scale = v.attnScale;
    if (v.attnSoftcap > 0) s.softcap = v.attnSoftcap;
    if (v.slidingLayers[l] && v.slidingWindow > 0) s.window = v.slidingWindow;
    return s;
  }

  /**
   * y (=|+=) x·Wᵀ + bias + s·(drop(x)·Aᵀ)·Bᵀ. x [R, K], y [R, N]; t [R, r] receives drop(x)·Aᵀ
   * (kept for the backward).
   */
  private linearForward(ws: Workspace, lin: LinearLayer, pair: LoraPair | null, x: Tensor, y: Tensor, t: Tensor | undefined, R: number, accumulate: boolean, seed: number | undefined): void {
    const be = this.backend;
    // Only q/k/v carry a bias (Qwen2), and they never accumulate into the residual stream.
    const bias = lin.bias ?? undefined;
    if (pair?.dora && t) {
      this.doraForward(ws, lin, pair, x, y, t, R, accumulate, seed);
      return;
    }
    this.baseMatmul(y, x, lin, R, { accumulate, bias });
    if (!pair || !t) return;
    const r = pair.r;
    // the parts of a fused module (Phi-3's q/k/v, gate/up) share A and the input: t is computed
    // by the first part (which runs first) and reused by the others
    if (pair.row0 === 0) be.matmul(t, this.dropped(ws, x, R, lin.K, seed), pair.A, R, r, lin.K, { transB: true });
    be.matmul(y, t, pair.B, R, lin.N, r, { transB: true, alpha: pair.scaling, accumulate: true });
  }

  /** y (=|+=) alpha·x·Wᵀ (+ bias) with W 4-bit or f32. */
  private baseMatmul(y: Tensor, x: Tensor, lin: LinearLayer, R: number, o: { alpha?: number; accumulate?: boolean; bias?: Tensor }): void {
    if (lin.weight.kind === 'q4') this.backend.qMatmul(y, x, lin.weight.w, R, o);
    else this.backend.matmul(y, x, lin.weight.w, R, lin.N, lin.K, { ...o, transB: true });
  }

  /** dx (=|+=) dy·W with W 4-bit or f32. */
  private baseMatmulBackward(dx: Tensor, dy: Tensor, lin: LinearLayer, R: number, accumulate: boolean): void {
    if (lin.weight.kind === 'q4') this.backend.qMatmulBackwardInput(dx, dy, lin.weight.w, R, { accumulate });
    else this.backend.matmul(dx, dy, lin.weight.w, R, lin.K, lin.N, { accumulate });
  }

  /** drop(x) into ws.xd when dropout is on (training), else x itself. */
  private dropped(ws: Workspace, x: Tensor, R: number, K: number, seed: number | undefined): Tensor {
    if (seed === undefined || ws.dropout === 0) return x;
    this.backend.dropout(ws.xd, x, R * K, ws.dropout, seed);
    return ws.xd;
  }

  /**
   * DoRA's linear as PEFT computes it, with g = m / ‖W + s·B·A‖_row (refreshDora) and
   * xd = drop(x), t = xd·Aᵀ: y (=|+=) x·Wᵀ + bias + (g − 1) ⊙ (xd·Wᵀ) + g ⊙ (s·t·Bᵀ). Without
   * dropout xd = x and this is y = bias + g ⊙ z with z = x·Wᵀ + s·t·Bᵀ, computed as such.
   */
  private doraForward(ws: Workspace, lin: LinearLayer, pair: LoraPair, x: Tensor, y: Tensor, t: Tensor, R: number, accumulate: boolean, seed: number | undefined): void {
    const be = this.backend, d = pair.dora!, z = ws.doraZ, { N, K, r } = pair, bias = lin.bias ?? undefined;
    if (z.length < R * N) throw new Error('DoRA adapters need a workspace made with { dora: true }');
    const xd = this.dropped(ws, x, R, K, seed);
    if (pair.row0 === 0) be.matmul(t, xd, pair.A, R, r, K, { transB: true });
    if (xd === x) {
      this.baseMatmul(z, x, lin, R, {});
      be.matmul(z, t, pair.B, R, N, r, { transB: true, alpha: pair.scaling, accumulate: true });
      be.scaleColumns(y, z, d.g, R, N, { accumulate, bias });
      return;
    }
    this.baseMatmul(y, x, lin, R, { accumulate, bias });
    this.baseMatmul(z, xd, lin, R, {});
    be.scaleColumns(y, z, d.g, R, N, { offset: -1, accumulate: true });
    be.matmul(z, t, pair.B, R, N, r, { transB: true, alpha: pair.scaling });
    be.scaleColumns(y, z, d.g, R, N, { accumulate: true });
  }

  /**
   * Backward of doraForward (the norm is a constant, as PEFT detaches it): with dz = g ⊙ dy,
   * dx (=|+=) dy·W + drop'(((g − 1) ⊙ dy)·W + s·(dz·B)·A) (without dropout: dz·W + s·(dz·B)·A),
   * dB += s·dzᵀ·t, dA += (s·dz·B)ᵀ·xd, dm += invNorm ⊙ Σ_r dy ⊙ (xd·Wᵀ + s·t·Bᵀ).
   */
  private doraBackward(ws: Workspace, lin: LinearLayer, pair: LoraPair, dy: Tensor, dx: Tensor, x: Tensor, t: Tensor, R: number, accumulate: boolean, seed: number | undefined): void {
    const be = this.backend, d = pair.dora!, z = ws.doraZ, dz = ws.doraDZ, { N, K, r } = pair, s = pair.scaling;
    if (dz.length < R * N) throw new Error('DoRA training needs a workspace made with { dora: true, training: true }');
    const xd = this.dropped(ws, x, R, K, seed);
    // dm: z = xd·Wᵀ + s·t·Bᵀ recomputed (one base GEMM more than LoRA; no [R, N] kept per layer)
    this.baseMatmul(z, xd, lin, R, {});
    be.matmul(z, t, pair.B, R, N, r, { transB: true, alpha: s, accumulate: true });
    be.columnDot(d.dm, dy, z, R, N, { scale: d.invNorm, accumulate: true });
    be.scaleColumns(dz, dy, d.g, R, N);
    be.matmul(pair.dB, dz, t, N, r, R, { transA: true, alpha: s, accumulate: true });
    be.matmul(ws.dt, dz, pair.B, R, r, N, { alpha: s });
    be.matmul(pair.dA, ws.dt, xd, r, K, R, { transA: true, accumulate: true });
    if (xd === x) {
      this.baseMatmulBackward(dx, dz, lin, R, accumulate);
      be.matmul(dx, ws.dt, pair.A, R, K, r, { accumulate: true });
      return;
    }
    // d(xd) = ((g − 1) ⊙ dy)·W + dt·A into xd's buffer (xd has served dA), then the mask
    this.baseMatmulBackward(dx, dy, lin, R, accumulate);
    be.scaleColumns(dz, dy, d.g, R, N, { offset: -1 });
    this.baseMatmulBackward(ws.xd, dz, lin, R, false);
    be.matmul(ws.xd, ws.dt, pair.A, R, K, r, { accumulate: true });
    be.dropout(ws.xd, ws.xd, R * K, ws.dropout, seed!);
    be.add(dx, ws.xd, R * K);
  }

  // ---- backward ------------------------------------------------------------------------

  /**
   * Backward of the whole model after forward() and lossHead() with a gradScale of the same
   * batch (ws.dh holds d(hF)). Accumulates LoRA gradients into the
   * adapters' dA/dB. With checkpointing, each layer's forward is recomputed from its saved input.
   * `docStart`: the forward's (packed sequences).
   */
  backward(ws: Workspace, B: number, T: number, lora: LoraAdapters, seed: number | undefined, docStart?: Tensor): void {
    const c = this.config, be = this.backend, R = B * T, C = c.hiddenSize;
    // head: d(hF) is in ws.dh (lossHead); d(x_L) = rmsnorm backward
    be.rmsNormBackward(ws.dres, ws.dh, ws.layerIn(c.numLayers), this.finalNorm, ws.rstdF, R, C, false);
    for (let l = c.numLayers - 1; l >= 0; l--) {
      // the last layer's activations are still in the shared set from the forward pass
      if (ws.checkpointing && l < c.numLayers - 1) this.layerForward(ws, l, B, T, 0, lora, seed, docStart);
      this.layerBackward(ws, l, B, T, lora, seed, docStart);
    }
  }

  /** ws.dres holds d(layer output) on entry and d(layer input) on exit. */
  private layerBackward(ws: Workspace, l: number, B: number, T: number, lora: LoraAdapters, seed: number | undefined, docStart?: Tensor): void {
    const c = this.config, v = this.variant, be = this.backend, blk = this.blocks[l]!, a = ws.acts(l);
    const R = B * T, C = c.hiddenSize, D = c.headDim, rope = this.ropeOf(l);
    const back = (name: LinearName, dy: Tensor, dx: Tensor, x: Tensor, accumulate: boolean) => {
      this.pager?.ensure(l, name);
      const pair = lora.get(l, name);
      this.linearBackward(ws, blk.lin[name], pair, dy, dx, x, loraT(a, pair, name), R, accumulate, dropSeed(seed, l, pair, name));
    };

    // x' = x2 + m, m = [norm](a·Wdᵀ)
    let dm = ws.dres;
    if (blk.mlpOutNorm) {
      be.rmsNormBackward(ws.dtmp, ws.dres, a.m, blk.mlpOutNorm, a.rstdm, R, C, false);
      dm = ws.dtmp;
    }
    back('down_proj', dm, ws.da, a.a, false);
    if (v.activation === 'gelu_tanh') be.gegluBackward(ws.dg, ws.du, ws.da, a.g, a.u, R * c.intermediateSize);
    else be.swigluBackward(ws.dg, ws.du, ws.da, a.g, a.u, R * c.intermediateSize);
    back('gate_proj', ws.dg, ws.dh, a.h2, false);
    back('up_proj', ws.du, ws.dh, a.h2, true);
    be.rmsNormBackward(ws.dres, ws.dh, a.x2, blk.postNorm, a.rstd2, R, C, true);
    // x2 = x + o, o = [norm](att·Woᵀ)
    let dO = ws.dres;
    if (blk.attnOutNorm) {
      be.rmsNormBackward(ws.dtmp, ws.dres, a.o, blk.attnOutNorm, a.rstdo, R, C, false);
      dO = ws.dtmp;
    }
    back('o_proj', dO, ws.datt, a.att, false);
    be.attentionBackward(ws.dq, ws.dk, ws.dv, ws.datt, a.q, a.k, a.v, a.att, a.lse, { ...this.attnShape(l, B, T, T, 0, T), docStart });
    be.ropeBackward(ws.dq, rope, R, T, c.numHeads, D, 0, docStart);
    be.ropeBackward(ws.dk, rope, R, T, c.numKVHeads, D, 0, docStart);
    let dq = ws.dq, dk = ws.dk;
    if (v.qkNorm) {
      be.rmsNormBackward(ws.dqr, ws.dq, a.qr, blk.qNorm!, a.rstdq, R * c.numHeads, D, false);
      be.rmsNormBackward(ws.dkr, ws.dk, a.kr, blk.kNorm!, a.rstdk, R * c.numKVHeads, D, false);
      dq = ws.dqr;
      dk = ws.dkr;
    }
    back('q_proj', dq, ws.dh, a.h1, false);
    back('k_proj', dk, ws.dh, a.h1, true);
    back('v_proj', ws.dv, ws.dh, a.h1, true);
    be.rmsNormBackward(ws.dres, ws.dh, ws.layerIn(l), blk.inNorm, a.rstd1, R, C, true);
  }

  /**
   * Backward of linearForward. dy [R, N]; dx [R, K] (=|+=) dy·W + LoRA path; accumulates
   * dB += s·dyᵀ·t and dA += dtᵀ·drop(x) with dt = s·dy·B.
   */
  private linearBackward(ws: Workspace, lin: LinearLayer, pair: LoraPair | null, dy: Tensor, dx: Tensor, x: Tensor, t: Tensor | undefined, R: number, accumulate: boolean, seed: number | undefined): void {
    const be = this.backend;
    if (pair?.dora && t) {
      this.doraBackward(ws, lin, pair, dy, dx, x, t, R, accumulate, seed);
      return;
    }
    this.baseMatmulBackward(dx, dy, lin, R, accumulate);
    if (!pair || !t) return;
    const r = pair.r, p = ws.dropout, s = pair.scaling;
    be.matmul(pair.dB, dy, t, lin.N, r, R, { transA: true, alpha: s, accumulate: true });
    be.matmul(ws.dt, dy, pair.B, R, r, lin.N, { alpha: s });
    const xin = this.dropped(ws, x, R, lin.K, seed);
    be.matmul(pair.dA, ws.dt, xin, r, lin.K, R, { transA: true, accumulate: true });
    if (xin !== x) {
      // d(drop(x)) = dt·A, then the same mask and scale: d(x) = drop'(d(drop(x))); drop(x) has
      // served dA above, so its buffer takes d(drop(x)) (calls run in order; dropout is in place)
      be.matmul(ws.xd, ws.dt, pair.A, R, lin.K, r);
      be.dropout(ws.xd, ws.xd, R * lin.K, p, seed!);
      be.add(dx, ws.xd, R * lin.K);
    } else {
      be.matmul(dx, ws.dt, pair.A, R, lin.K, r, { accumulate: true });
    }
  }
}

/** The t = drop(x)·Aᵀ buffer of an adapted linear: its module's first part's (fused parts share it). */
function loraT(a: LayerActs, pair: LoraPair | null, name: LinearName): Tensor | undefined {
  return a.t[pair ? pair.module.parts[0]!.name : name];
}

const LIN_INDEX: Record<LinearName, number> = Object.fromEntries(LINEAR_NAMES.map((n, i) => [n, i])) as Record<LinearName, number>;
/** Dropout seed of an adapted linear: the parts of one fused module share their first part's mask. */
function dropSeed(seed: number | undefined, layer: number, pair: LoraPair | null, name: LinearName): number | undefined {
  if (seed === undefined) return undefined;
  return deriveSeed(seed, layer, LIN_INDEX[pair ? pair.module.parts[0]!.name : name]);
}

/**
 * Activations of one decoder layer that its backward needs (the layer's formulas at the top of
 * this file; R = B·T rows, all f32). [switch]: sized only when the family sets it, else empty.
 */
export interface LayerActs {
  h1: Tensor; // [R, C] rmsnorm(x)·w_in
  rstd1: Tensor; // [R] its 1/rms
  q: Tensor; // [R, H, D] after RoPE (and the q norm)
  k: Tensor; // [R, KVH, D] after RoPE (and the k norm); a KV cache holds its own copy
  v: Tensor; // [R, KVH, D]
  att: Tensor; // [R, H, D] attention output, before o_proj
  lse: Tensor; // [B, H, T] log-sum-exp of each query's scores
  x2: Tensor; // [R, C] residual after attention
  h2: Tensor; // [R, C] rmsnorm(x2)·w_post
  rstd2: Tensor; // [R]
  g: Tensor; // [R, F] gate_proj output
  u: Tensor; // [R, F] up_proj output
  a: Tensor; // [R, F] act(g) ⊙ u, the down_proj input
  qr: Tensor; // [R, H, D] [qkNorm] q before its per-head norm
  kr: Tensor; // [R, KVH, D] [qkNorm] k before its norm
  rstdq: Tensor; // [R, H] [qkNorm]
  rstdk: Tensor; // [R, KVH] [qkNorm]
  o: Tensor; // [R, C] [sandwichNorms] attention output before its norm
  rstdo: Tensor; // [R] [sandwichNorms]
  m: Tensor; // [R, C] [sandwichNorms] MLP output before its norm
  rstdm: Tensor; // [R] [sandwichNorms]
  /** LoRA t = drop(x)·Aᵀ [R, r] per adapted linear layer (fused parts share their first part's) */
  t: Partial<Record<LinearName, Tensor>>;
}

/** Bytes of logits one loss-head chunk may hold. */
export const HEAD_CHUNK_BYTES = 8 * 2 ** 20;
/**
 * Loss-head chunks run this many at a time (one GEMM pair, so the lm_head is packed once per group,
 * not per chunk) where the vocabulary is at most HEAD_GROUP_MAX_VOCAB: its chunks have ≥ 64 rows
 * and a group of four (33 MB at 32K) ran a stories15M b4×256 step ~7% faster than single 65-row
 * chunks, bit for bit the same. Larger vocabularies keep single 8 MiB chunks (their memory).
 */
export const HEAD_GROUP = 4;
export const HEAD_GROUP_MAX_VOCAB = 32768;

export interface WorkspaceOptions {
  /** Largest B and T this workspace serves. */
  batch: number;
  seqLen: number;
  /** Keep per-layer activations for a backward (training). */
  training: boolean;
  /** Recompute each layer in the backward from its saved input instead of keeping every activation. */
  checkpointing: boolean;
  /** Largest LoRA rank of any adapted module (0 = no adapters). */
  loraRank: number;
  /** LoRA dropout probability (training). Default 0. */
  loraDropout?: number;
  /** Rows per loss-head chunk (default: as many as HEAD_CHUNK_BYTES of logits hold). */
  headRows?: number;
  /** Loss-head chunks run at a time (default HEAD_GROUP where the vocabulary allows; 1: one by one). */
  headGroup?: number;
  /** KV cache capacity in positions (generation, B = 1). */
  kvCache?: number;
  /** The adapters are DoRA adapters (two [R, max out features] scratch buffers). */
  dora?: boolean;
  /** Batches may be packed (sample packing): a docStart buffer of max rows. */
  packing?: boolean;
  /** Preference tuning (DPO): a [2R] buffer for the reference and the policy pass's per-row losses. */
  preference?: boolean;
}

/**
 * Every activation buffer of a forward/backward, sized once from the config and the largest
 * batch (STYLE.md §9: nothing is allocated inside a step).
 */
export class Workspace {
  /** rows of the largest batch (B·T) */
  readonly R: number;
  readonly checkpointing: boolean;
  readonly ids: Tensor; // i32 [R] token ids of the micro-batch
  readonly losses: Tensor; // [R] per-row cross-entropy (0 for unscored rows)
  readonly hF: Tensor; // [R, C] rmsnorm(x_L)·w_final (empty with a KV cache)
  readonly rstdF: Tensor; // [R]
  /** Loss head chunk (lossHead): at most headRows scored rows at a time. */
  readonly headRows: number;
  /** chunks run at a time (HEAD_GROUP, or 1); the head buffers hold HR = min(R, headRows·headGroup) rows */
  readonly headGroup: number;
  readonly headIn: Tensor; // [HR, C] rows of hF in, d(hF) out
  readonly headLogits: Tensor; // [HR, V] logits, then their gradient
  readonly headTargets: Tensor; // i32 [HR]
  readonly headLosses: Tensor; // [HR]
  readonly headTargetsHost: Int32Array; // [HR] host copy of headTargets
  // generation: the last row's head
  readonly lastRow: Tensor; // [C]
  readonly lastNorm: Tensor; // [C]
  readonly lastRstd: Tensor; // [1]
  readonly lastLogits: Tensor; // [V]
  readonly xd: Tensor; // [R, max K] LoRA drop(x), then d(drop(x)) (training with adapters)
  /** DoRA: the bias-free pre-scale output z = x·Wᵀ + s·t·Bᵀ, and g ⊙ dy (training) */
  readonly doraZ: Tensor; // [R, max N]
  readonly doraDZ: Tensor; // [R, max N]
  readonly docStart: Tensor; // i32 [R] (packing; else empty): docStart of a packed micro-batch, passed to forward/backward
  readonly refLosses: Tensor; // [2R] (preference; else empty): DPO's reference then policy per-row losses, read at once
  readonly tmpC: Tensor; // [R, C] scratch of the sandwich norms' outputs
  readonly dropout: number;
  /** KV cache per layer (generation, B = 1): k, v [maxSeq, KVH, D] */
  readonly kv: { k: Tensor[]; v: Tensor[]; maxSeq: number } | null;
  // backward scratch (training only; zero-length placeholders otherwise)
  readonly dres: Tensor; // [R, C] gradient of the residual stream
  readonly dh: Tensor; // [R, C] gradient of a norm's output (d(hF) from the loss head)
  readonly dq: Tensor; // [R, H, D]
  readonly dk: Tensor; // [R, KVH, D]
  readonly dv: Tensor; // [R, KVH, D]
  readonly datt: Tensor; // [R, H, D]
  readonly dg: Tensor; // [R, F]
  readonly du: Tensor; // [R, F]
  readonly da: Tensor; // [R, F]
  readonly dt: Tensor; // [R, r] LoRA d(t)
  readonly dqr: Tensor; // [R, H, D] [qkNorm]
  readonly dkr: Tensor; // [R, KVH, D] [qkNorm]
  readonly dtmp: Tensor; // [R, C] [sandwichNorms]
  /** residual stream x_l [R, C]: every layer input (training) or two ping-ponged buffers */
  private readonly xs: Tensor[];
  private readonly layerActs: LayerActs[];
  private readonly all: Tensor[] = [];

  constructor(readonly backend: Backend, readonly config: ModelConfig, readonly opts: WorkspaceOptions) {
    const c = config, B = opts.batch, T = opts.seqLen, R = B * T;
    const C = c.hiddenSize, F = c.intermediateSize, HD = c.numHeads * c.headDim, KVD = c.numKVHeads * c.headDim, V = c.vocabSize;
    const r = opts.loraRank, v = variantOf(c);
    this.R = R;
    this.dropout = opts.loraDropout ?? 0;
    this.checkpointing = opts.training && opts.checkpointing;
    const f = (n: number, label: string) => this.track(backend.alloc('f32', n, label));
    const none = (label: string) => this.track(backend.alloc('f32', 0, label));
    this.ids = this.track(backend.alloc('i32', R, 'ids'));
    this.losses = f(R, 'losses');
    // residual stream: every layer input is kept for training; inference ping-pongs two buffers
    const nx = opts.training ? c.numLayers + 1 : 2;
    this.xs = Array.from({ length: nx }, (_, i) => f(R * C, `x.${i}`));
    const nActs = opts.training && !opts.checkpointing ? c.numLayers : 1;
    this.layerActs = Array.from({ length: nActs }, (_, l) => {
      const p = `acts.${nActs === 1 ? '*' : l}`;
      const t: Partial<Record<LinearName, Tensor>> = {};
      if (r > 0) for (const name of LINEAR_NAMES) t[name] = f(R * r, `${p}.t.${name}`);
      return {
        h1: f(R * C, `${p}.h1`), rstd1: f(R, `${p}.rstd1`), q: f(R * HD, `${p}.q`), k: f(R * KVD, `${p}.k`), v: f(R * KVD, `${p}.v`),
        att: f(R * HD, `${p}.att`), lse: f(B * c.numHeads * T, `${p}.lse`), x2: f(R * C, `${p}.x2`), h2: f(R * C, `${p}.h2`),
        rstd2: f(R, `${p}.rstd2`), g: f(R * F, `${p}.g`), u: f(R * F, `${p}.u`), a: f(R * F, `${p}.a`), t,
        qr: v.qkNorm ? f(R * HD, `${p}.qr`) : none(`${p}.qr`), kr: v.qkNorm ? f(R * KVD, `${p}.kr`) : none(`${p}.kr`),
        rstdq: v.qkNorm ? f(R * c.numHeads, `${p}.rstdq`) : none(`${p}.rstdq`), rstdk: v.qkNorm ? f(R * c.numKVHeads, `${p}.rstdk`) : none(`${p}.rstdk`),
        o: v.sandwichNorms ? f(R * C, `${p}.o`) : none(`${p}.o`), rstdo: v.sandwichNorms ? f(R, `${p}.rstdo`) : none(`${p}.rstdo`),
        m: v.sandwichNorms ? f(R * C, `${p}.m`) : none(`${p}.m`), rstdm: v.sandwichNorms ? f(R, `${p}.rstdm`) : none(`${p}.rstdm`),
      };
    });
    // generation only needs the last row's norm (lastNorm); training and eval the whole head
    this.hF = opts.kvCache ? none('hF') : f(R * C, 'hF');
    this.rstdF = opts.kvCache ? none('rstdF') : f(R, 'rstdF');
    // the loss head's chunk: ≤ 8 MiB of logits (and never more rows than the batch has)
    const loss = opts.training || !opts.kvCache;
    this.headRows = loss ? Math.max(1, Math.min(R, opts.headRows ?? Math.floor(HEAD_CHUNK_BYTES / (4 * V)))) : 0;
    // chunks of < 4 rows run as dot products (never grouped: lossHead)
    this.headGroup = loss && this.headRows >= 4 && V <= HEAD_GROUP_MAX_VOCAB ? Math.min(opts.headGroup ?? HEAD_GROUP, Math.ceil(R / this.headRows)) : 1;
    const HR = Math.min(R, this.headRows * this.headGroup);
    this.headIn = loss ? f(HR * C, 'head.in') : none('head.in');
    this.headLogits = loss ? f(HR * V, 'head.logits') : none('head.logits');
    this.headTargets = this.track(backend.alloc('i32', HR, 'head.targets'));
    this.headLosses = loss ? f(HR, 'head.losses') : none('head.losses');
    this.headTargetsHost = new Int32Array(HR);
    this.lastRow = f(C, 'lastRow');
    this.lastNorm = f(C, 'lastNorm');
    this.lastRstd = f(1, 'lastRstd');
    this.lastLogits = f(V, 'lastLogits');
    const maxK = Math.max(C, F, HD);
    const tr = opts.training;
    // LoRA dropout runs only in training (it needs a seed)
    this.xd = r > 0 && tr ? f(R * maxK, 'xd') : none('xd');
    this.dres = tr ? f(R * C, 'dres') : none('dres');
    this.dh = tr ? f(R * C, 'dh') : none('dh');
    this.dq = tr ? f(R * HD, 'dq') : none('dq');
    this.dk = tr ? f(R * KVD, 'dk') : none('dk');
    this.dv = tr ? f(R * KVD, 'dv') : none('dv');
    this.datt = tr ? f(R * HD, 'datt') : none('datt');
    this.dg = tr ? f(R * F, 'dg') : none('dg');
    this.du = tr ? f(R * F, 'du') : none('du');
    this.da = tr ? f(R * F, 'da') : none('da');
    this.dt = tr && r > 0 ? f(R * r, 'dt') : none('dt');
    const maxN = Math.max(C, F, HD);
    this.doraZ = opts.dora ? f(R * maxN, 'dora.z') : none('dora.z');
    this.doraDZ = opts.dora && tr ? f(R * maxN, 'dora.dz') : none('dora.dz');
    this.docStart = this.track(backend.alloc('i32', opts.packing ? R : 0, 'docStart'));
    this.refLosses = opts.preference ? f(2 * R, 'refLosses') : none('refLosses');
    this.tmpC = v.sandwichNorms ? f(R * C, 'tmpC') : none('tmpC');
    this.dqr = tr && v.qkNorm ? f(R * HD, 'dqr') : none('dqr');
    this.dkr = tr && v.qkNorm ? f(R * KVD, 'dkr') : none('dkr');
    this.dtmp = tr && v.sandwichNorms ? f(R * C, 'dtmp') : none('dtmp');
    if (opts.kvCache) {
      const S = opts.kvCache;
      this.kv = {
        k: Array.from({ length: c.numLayers }, (_, l) => f(S * KVD, `kcache.${l}`)),
        v: Array.from({ length: c.numLayers }, (_, l) => f(S * KVD, `vcache.${l}`)),
        maxSeq: S,
      };
    } else {
      this.kv = null;
    }
  }

  private track(t: Tensor): Tensor {
    this.all.push(t);
    return t;
  }

  /** Input of layer l (l = L: the final residual stream). */
  layerIn(l: number): Tensor {
    return this.xs.length === 2 ? this.xs[l % 2]! : this.xs[l]!;
  }

  acts(l: number): LayerActs {
    return this.layerActs.length === 1 ? this.layerActs[0]! : this.layerActs[l]!;
  }

  checkRows(B: number, T: number): void {
    if (B < 1 || T < 1 || B > this.opts.batch || T > this.opts.seqLen) {
      throw new Error(`workspace sized for B ≤ ${this.opts.batch}, T ≤ ${this.opts.seqLen}; got B=${B}, T=${T}`);
    }
  }

  free(): void {
    for (const t of this.all) this.backend.free(t);
    this.all.length = 0;
  }
}

/**
 * cos/sin tables [P, D/2] of the rotate-half RoPE, computed in float64 on the host:
 * inv_freq_i = θ^(−2i/D) (with llama3 / linear rope scaling applied), angle = pos·inv_freq_i.
 */
export function ropeAngles(c: ModelConfig, P: number): { cos: Float32Array; sin: Float32Array } {
  const D = c.headDim, half = D / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / Math.pow(c.ropeTheta, (2 * i) / D);
  const sc = c.ropeScaling;
  if (sc?.ropeType === 'linear') {
    for (let i = 0; i < half; i++) invFreq[i]! /= sc.factor;
  } else if (sc?.ropeType === 'factors') {
    for (let i = 0; i < half; i++) invFreq[i]! /= sc.factors![i]!;
  } else if (sc?.ropeType === 'llama3') {
    // transformers _compute_llama3_parameters: long wavelengths slowed by `factor`, short ones
    // kept, a smooth ramp between low_freq_factor and high_freq_factor.
    const lowF = sc.lowFreqFactor ?? 1, highF = sc.highFreqFactor ?? 4, orig = sc.originalMaxPositionEmbeddings ?? 8192;
    const lowWavelen = orig / lowF, highWavelen = orig / highF;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / invFreq[i]!;
      if (wavelen > lowWavelen) invFreq[i] = invFreq[i]! / sc.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (orig / wavelen - lowF) / (highF - lowF);
        invFreq[i] = (1 - smooth) * (invFreq[i]! / sc.factor) + smooth * invFreq[i]!;
      }
    }
  }
  const cos = new Float32Array(P * half), sin = new Float32Array(P * half);
  for (let p = 0; p < P; p++) {
    for (let i = 0; i < half; i++) {
      const ang = p * invFreq[i]!;
      cos[p * half + i] = Math.cos(ang);
      sin[p * half + i] = Math.sin(ang);
    }
  }
  return { cos, sin };
}

function buildRope(be: Backend, c: ModelConfig, P: number): RopeTables {
  const { cos, sin } = ropeAngles(c, P);
  const half = c.headDim / 2;
  const t = { cos: be.alloc('f32', P * half, 'rope.cos'), sin: be.alloc('f32', P * half, 'rope.sin') };
  be.write(t.cos, cos);
  be.write(t.sin, sin);
  return t;
}
