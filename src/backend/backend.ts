// The Backend: buffers it owns and the coarse kernels the model is written against.
//
// Three implementations: `reference` (plain TS, the oracle), `wasm` (assembly/ → SIMD128),
// `webgpu` (wgsl/). The model and trainer call only what is declared here.
//
// Execution model (fits WebGPU without rework): every kernel call *enqueues* work and returns
// nothing; calls execute in order; `read()` is the only way data comes back and is async.
// The reference and wasm backends simply run each call at once. No kernel allocates: buffers
// are created with `alloc` when a model or trainer is set up (STYLE.md §9). A kernel's shape
// arguments come from the caller (the model computes them from the config once); what the
// contract says of its operands and arguments, every backend checks once with validate.ts.
//
// Dimension legend (STYLE.md §4): R rows (= B·T tokens), C hidden, H heads, KVH kv heads,
// D head dim, F ffn dim, V vocab, r LoRA rank, S kv length (cache positions), N/K the out/in
// features of a linear layer, bs the quantization block size.
//
// Naming: Backend.fooBar ↔ AssemblyScript export foo_bar ↔ WGSL entry point foo_bar ↔
// test/kernels/<family>.test.ts (STYLE.md §2).

import type { QuantType } from '../quant/types.ts';

/**
 * Element types. 'f16' and 'bf16' hold the embedding / lm_head tables of half-precision
 * checkpoints (kept in the checkpoint's precision, as transformers + bitsandbytes do); they are
 * accepted only where a kernel says so and are widened to f32 exactly before any arithmetic.
 */
export type BufferType = 'f32' | 'i32' | 'u8' | 'f16' | 'bf16';

/** A buffer owned by a backend. Opaque outside it; `length` counts elements of `type`. */
export interface Tensor {
  readonly type: BufferType;
  readonly length: number;
  readonly label: string;
}

/**
 * A frozen 4-bit weight W [N, K] (out, in) resident in the backend, stored exactly as
 * bitsandbytes stores it: packed codes u8 [ceil(N·K/2)] (element 2j in the high nibble), the
 * 16-entry quant map, and either f32 absmax [nb] or double-quantized absmax (u8 codes [nb],
 * nested absmax f32 [ceil(nb/256)], nested 256-entry map, offset). nb = ceil(N·K / bs).
 * Kernels dequantize inside their tiles; W is never materialised in f32.
 */
export interface QuantWeight {
  readonly N: number;
  readonly K: number;
  readonly blocksize: number;
  readonly quantType: QuantType;
  readonly doubleQuant: boolean;
  readonly label: string;
}

export interface GemmOptions {
  /** op(A) = Aᵀ: A is stored [K, M] instead of [M, K]. */
  transA?: boolean;
  /** op(B) = Bᵀ: B is stored [N, K] instead of [K, N] (the nn.Linear layout). */
  transB?: boolean;
  /** Multiplies op(A)·op(B). Default 1. */
  alpha?: number;
  /** Add to out instead of overwriting it. */
  accumulate?: boolean;
  /** f32 [N] added to every row; only with accumulate false (validate.ts refuses the combination). */
  bias?: Tensor;
}

/** RoPE angle tables built once by the model: cos/sin f32 [maxPositions, D/2]. */
export interface RopeTables {
  cos: Tensor;
  sin: Tensor;
}

export interface AttentionShape {
  /** sequences in the batch */
  B: number;
  /** query positions per sequence */
  T: number;
  /** key/value positions per sequence (T for training; pos0 + T with a KV cache) */
  S: number;
  H: number;
  KVH: number;
  D: number;
  /** absolute position of query row 0: query t attends to keys 0 .. pos0 + t (causal) */
  pos0: number;
  /** key/value rows allocated per sequence in k and v (>= S; the cache capacity) */
  kvStride: number;
  /** Score scale. Default 1/√D; Gemma uses query_pre_attn_scalar^(−1/2). */
  scale?: number;
  /**
   * Attention logit soft-cap (Gemma 2): after scaling, score ← cap·tanh(score / cap), before the
   * mask and the softmax; lse is then the log-sum-exp of the capped scores. 0 or absent: none.
   */
  softcap?: number;
  /**
   * Sliding window (Mistral, Gemma, Qwen2 sliding layers; transformers' sliding_window_causal
   * mask): the query at absolute position p attends to keys j with p − window < j ≤ p, i.e. at
   * most `window` keys including itself. 0 or absent: unlimited (plain causal).
   */
  window?: number;
  /**
   * Packed sequences (sample packing): i32 [B·T], docStart[b·T + t] = the in-row index of the
   * first token of the example that row t belongs to. Query t attends only to keys j with
   * docStart[b·T + t] ≤ j ≤ t (and within the window if set), so no example sees another; a
   * row's examples are contiguous (docStart[t] is t or docStart[t − 1]). Training shapes only:
   * pos0 = 0 and S = T. Absent: one sequence per row.
   */
  docStart?: Tensor;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction */
  step: number;
  /** every gradient is multiplied by this first (global-norm clipping and loss scaling) */
  gradScale: number;
}

export interface MemoryStats {
  /** bytes held in backend buffers now, and the most at once */
  liveBytes: number;
  peakBytes: number;
}

export interface Backend {
  readonly name: 'reference' | 'wasm' | 'webgpu';

  // ---- buffers -------------------------------------------------------------------------
  /** A new buffer (contents undefined). length may be 0: a placeholder no kernel touches. */
  alloc(type: BufferType, length: number, label: string): Tensor;
  free(t: Tensor): void;
  /**
   * Host → backend copy of `data` into t at element offset `offset`. f16/bf16 tensors take a
   * Uint16Array of raw half bits.
   */
  write(t: Tensor, data: Float32Array | Int32Array | Uint8Array | Uint16Array, offset?: number): void;
  /** Backend → host copy (waits for all enqueued work that writes t). */
  read(t: Tensor, offset?: number, length?: number): Promise<Float32Array | Int32Array | Uint8Array | Uint16Array>;
  /** dst[dstOffset .. +n] = src[srcOffset .. +n] (same type). */
  copy(dst: Tensor, dstOffset: number, src: Tensor, srcOffset: number, n: number): void;
  /** t[offset .. offset+n] = value */
  fill(t: Tensor, value: number, offset?: number, n?: number): void;
  /** Makes a 4-bit weight resident. `absmax` (f32 [nb]) xor `dq` must be given. */
  uploadQuant(w: QuantUpload): QuantWeight;
  freeQuant(w: QuantWeight): void;
  /**
   * Overwrites a resident 4-bit weight with another of the same blocksize, quant type and
   * double-quant-ness and at most the N·K it was uploaded with; w takes data's N and K (layer
   * paging: one device slot serves every linear of every host-resident layer). Enqueued like
   * write(): kernels enqueued before it see the old contents and shape.
   */
  writeQuant(w: QuantWeight, data: QuantUpload): void;
  /** Resolves when every enqueued kernel has finished. */
  flush(): Promise<void>;
  memory(): MemoryStats;
  /** Releases everything (device, workers). */
  destroy(): Promise<void>;

  // ---- forward kernels (each has a backward below where training needs it) -------------

  /** out[R, C] = table[ids[r], :]; ids i32 [R], table f32, f16 or bf16 [V, C], out f32. */
  embedding(out: Tensor, table: Tensor, ids: Tensor, R: number, C: number): void;

  /**
   * out[R, C] = x · rstd · w with rstd[r] = 1/sqrt(mean_c(x[r,c]²) + eps). Writes rstd f32 [R]
   * for the backward. out may not alias x.
   */
  rmsNorm(out: Tensor, rstd: Tensor, x: Tensor, w: Tensor, R: number, C: number, eps: number): void;

  /**
   * f32 GEMM: out[M, N] (=|+=) alpha · op(A)[M, K] · op(B)[K, N] (+ bias). The three layouts
   * training needs: forward x·Wᵀ (transB), input gradient dY·W (none), weight gradient dYᵀ·X (transA).
   * b may be f16 or bf16 (a half-precision lm_head / tied embedding) when transA is false;
   * everything else is f32.
   */
  matmul(out: Tensor, a: Tensor, b: Tensor, M: number, N: number, K: number, opts?: GemmOptions): void;

  /**
   * Fused 4-bit GEMM: out[M, N] (=|+=) alpha · x[M, K] · deq(W)ᵀ, W [N, K]; bias f32 [N] only
   * with accumulate false. deq(W)[n, k] = f32(quantMap[code_i] · absmax_b) with i = n·K + k,
   * code_i the high nibble of packed[i/2] for even i (low for odd), b = floor(i / bs), and with
   * double quant absmax_b = f32(f32(nestedQuantMap[codes[b]] · nestedAbsmax[floor(b / nbs)]) + offset)
   * (bnb's rule, bit-exact; blocks run over the flat array and may straddle rows).
   */
  qMatmul(out: Tensor, x: Tensor, w: QuantWeight, M: number, opts?: { alpha?: number; accumulate?: boolean; bias?: Tensor }): void;

  /**
   * Rotate-half RoPE in place on x [R, nh, D] where row r is position pos0 + (r mod T):
   * for i < D/2, (x_i, x_{i+D/2}) ← (x_i·cos − x_{i+D/2}·sin, x_{i+D/2}·cos + x_i·sin) with
   * cos/sin = tables[pos, i]. R = B·T. With docStart (i32 [R], packed sequences, see
   * AttentionShape.docStart) row r is position pos0 + (r mod T) − docStart[r]: positions restart
   * at each example.
   */
  rope(x: Tensor, tables: RopeTables, R: number, T: number, nh: number, D: number, pos0: number, docStart?: Tensor): void;

  /**
   * Causal grouped-query attention. q [B·T, H, D]; k, v [B, kvStride, KVH, D] (rows 0..S-1 of
   * each sequence are valid); out [B·T, H, D]; lse f32 [B, H, T] (log-sum-exp of the scaled
   * scores, kept for the backward). Query head h reads kv head floor(h / (H / KVH)).
   * score = f32(f32(q·k) · scale) (scale default 1/√D), then the optional soft-cap, then the mask.
   * Requires H mod KVH = 0 and pos0 + T ≤ S ≤ kvStride; query t attends to keys 0 .. pos0 + t,
   * and only the last `window` of those when s.window is set, and only those of its own example
   * when s.docStart is set.
   * Cache rows S..kvStride−1 may hold anything (even NaN) and must not affect any output.
   */
  attention(out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, s: AttentionShape): void;

  /** out[n] = silu(gate[n]) · up[n], silu(g) = g / (1 + e^−g). out may alias gate or up. */
  swiglu(out: Tensor, gate: Tensor, up: Tensor, n: number): void;

  /**
   * GeGLU with the tanh approximation of GELU (Gemma's gelu_pytorch_tanh):
   * out[n] = gelu(gate[n]) · up[n], gelu(g) = 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))).
   * out may alias gate or up.
   */
  geglu(out: Tensor, gate: Tensor, up: Tensor, n: number): void;

  /** In place x[i] ← cap · tanh(x[i] / cap) for i < n (Gemma 2's final logit soft-cap), cap > 0. */
  softcap(x: Tensor, n: number, cap: number): void;

  /**
   * In place x[i] += f32(u_i · scale), u_i = (hash32(seed, i) >>> 8)·2⁻²³ − 1, uniform in [−1, 1)
   * (exact in f32, the same counter hash as dropout): NEFTune's embedding noise, bit-identical
   * on every backend.
   */
  addUniformNoise(x: Tensor, n: number, scale: number, seed: number): void;

  /** out[i] += alpha · x[i] for i < n. */
  add(out: Tensor, x: Tensor, n: number, alpha?: number): void;

  /**
   * Inverted dropout with a counter-based RNG, identical on every backend:
   * keep_i = hash(seed, i) ≥ p·2³², out_i = keep_i ? x_i / (1 − p) : 0. Applying it to the
   * upstream gradient with the same seed is its backward.
   * Exactly (rng.ts): keep_i = hash32(seed, i) ≥ dropThreshold(p) and out_i = x_i · dropScale(p),
   * a product with the f32-rounded scale (not a division), so every backend is bit-identical.
   * 0 ≤ p < 1. out may alias x.
   */
  dropout(out: Tensor, x: Tensor, n: number, p: number, seed: number): void;

  /**
   * Cross-entropy over rows of logits [R, V] against targets i32 [R] (−100 = ignored):
   * losses[r] = logsumexp(logits[r]) − logits[r, t] (0 for ignored rows). If `gradScale` is
   * given, logits is overwritten with its gradient: (softmax − onehot) · gradScale (0 rows for
   * ignored targets) — the caller passes 1 / (scored tokens in the batch). Targets other than
   * −100 must lie in [0, V). Without gradScale, logits is left unchanged.
   * With `softcap` > 0 (Gemma 2's final logit soft-cap, fused here so the backward needs no saved
   * copy), logits holds the raw z and every formula above uses y = cap·tanh(z / cap) in place of
   * the logits; the gradient written is then d/dz = (softmax(y) − onehot) · gradScale · (1 − (y/cap)²).
   */
  crossEntropy(losses: Tensor, logits: Tensor, targets: Tensor, R: number, V: number, gradScale?: number, softcap?: number): void;

  // ---- DoRA (weight-decomposed LoRA): per-output-feature scales and norms ---------------

  /**
   * out[r, j] (=|+=) (g[j] + offset) · x[r, j] (+ bias[j]) for x, out f32 [R, N] and g, bias
   * f32 [N] (offset default 0): DoRA's magnitude / norm scale on a linear's output, and on its
   * gradient. Rounding, bit-identical on every backend: s = f32(g + offset), v = f32(s·x),
   * v = f32(v + bias), out = accumulate ? f32(out + v) : v. out may alias x.
   */
  scaleColumns(out: Tensor, x: Tensor, g: Tensor, R: number, N: number, opts?: { offset?: number; accumulate?: boolean; bias?: Tensor }): void;

  /**
   * out[j] (=|+=) scale[j] · Σ_r a[r, j]·b[r, j] for a, b f32 [R, N], out f32 [N] (scale absent:
   * 1): DoRA's magnitude gradient and the cross terms of its row norms. Rounding, bit-identical
   * on every backend: acc = f32(acc + f32(a·b)) for r ascending, v = f32(scale·acc), then
   * out = accumulate ? f32(out + v) : v.
   */
  columnDot(out: Tensor, a: Tensor, b: Tensor, R: number, N: number, opts?: { scale?: Tensor; accumulate?: boolean }): void;

  /**
   * n = f32(√nsq[j]), invNorm[j] = f32(1 / n), g[j] = f32(m[j] / n) for j < N (DoRA's
   * m / ‖W + s·B·A‖_row; WGSL's sqrt and division may be a few ulp off).
   */
  doraScale(g: Tensor, invNorm: Tensor, m: Tensor, nsq: Tensor, N: number): void;

  /** out[r] (=|+=) Σ_c x[r, c]² for x f32 [R, C] (row norms² of an f32 weight). */
  rowSumSquares(out: Tensor, x: Tensor, R: number, C: number, accumulate?: boolean): void;

  /** out[n] = Σ_k deq(W)[n, k]² for a 4-bit W [N, K] (row norms² of the dequantized weight). */
  qRowSumSquares(out: Tensor, w: QuantWeight): void;

  // ---- backward kernels ---------------------------------------------------------------

  /** dx[M, K] (=|+=) alpha · dy[M, N] · deq(W), W [N, K]. (The frozen W gets no gradient.) */
  qMatmulBackwardInput(dx: Tensor, dy: Tensor, w: QuantWeight, M: number, opts?: { alpha?: number; accumulate?: boolean }): void;

  /**
   * RMSNorm input gradient with the saved rstd: dx[r] (=|+=) rstd·(w⊙dy − x̂·mean_c(x̂⊙w⊙dy)),
   * x̂ = x·rstd. (Norm weights are frozen: no dw.)
   */
  rmsNormBackward(dx: Tensor, dy: Tensor, x: Tensor, w: Tensor, rstd: Tensor, R: number, C: number, accumulate?: boolean): void;

  /**
   * Inverse rotation in place (the transpose of rope): turns d(rotated) into d(unrotated):
   * (g_i, g_{i+D/2}) ← (g_i·cos + g_{i+D/2}·sin, g_{i+D/2}·cos − g_i·sin), same positions as rope
   * (docStart as there).
   */
  ropeBackward(dx: Tensor, tables: RopeTables, R: number, T: number, nh: number, D: number, pos0: number, docStart?: Tensor): void;

  /**
   * Attention gradients from dout [B·T, H, D] using the forward's out and lse:
   * dq [B·T, H, D] overwritten; dk, dv [B, kvStride, KVH, D] overwritten (sums over the query
   * heads of each group). pos0 must be 0 (training has no cache). Every element of dk and dv is
   * written: rows no query attends to, including the padding rows S..kvStride−1, become 0.
   * Probabilities are recomputed as exp(score − lse); D_i = Σ_d dout·out. scale, softcap,
   * window and docStart as in attention (with a soft-cap the score gradient is multiplied by 1 − tanh²(z/cap),
   * z the uncapped scaled score).
   */
  attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, s: AttentionShape): void;

  /** dgate, dup (overwritten) from dout and the forward inputs gate, up. */
  swigluBackward(dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor, n: number): void;

  /** dgate, dup (overwritten) from dout and the forward inputs gate, up (backward of geglu). */
  gegluBackward(dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor, n: number): void;

  // ---- optimizer ----------------------------------------------------------------------

  /** out[0] (=|+=) Σ x[i]² over i < n (global gradient norm, accumulated across tensors). */
  sumSquares(out: Tensor, x: Tensor, n: number, accumulate?: boolean): void;

  /**
   * AdamW on n elements (bnb kOptimizer32bit2State / torch AdamW semantics, QLORA_SPEC §6.3):
   * g = grad·gradScale; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
   * p ← p·(1 − lr·wd) (decoupled, before the update, as torch and bnb's default backend);
   * p ← p − lr·(m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + eps).
   * param, m and v are updated in place; grad is only read.
   */
  adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, n: number, p: AdamWParams): void;

  /** p ← p − lr·grad·gradScale (plain SGD, used to check gradients end to end). */
  sgdStep(param: Tensor, grad: Tensor, n: number, lr: number, gradScale: number): void;
}

/** What uploadQuant takes: the fields of a Quant4Tensor for one [N, K] weight. */
export interface QuantUpload {
  N: number;
  K: number;
  blocksize: number;
  quantType: QuantType;
  packed: Uint8Array;
  quantMap: Float32Array;
  absmax: Float32Array | null;
  dq: { codes: Uint8Array; nestedAbsmax: Float32Array; nestedQuantMap: Float32Array; offset: number; nestedBlocksize: number } | null;
  label: string;
}
