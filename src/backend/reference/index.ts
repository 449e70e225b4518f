// The reference backend: every kernel of backend.ts in plain, loop-by-loop TypeScript. It is the
// oracle the WASM and WebGPU kernels are tested against (test/kernels/*.test.ts), so it is
// written to be obviously correct, never fast.
//
// Two precisions:
//   'f32' (default) — f32 buffers are Float32Array and the arithmetic is an honest float32
//     oracle: every product and every sum is rounded with Math.fround as it happens (no fused
//     multiply-add, f32 accumulators, summation in ascending index order). Transcendentals
//     (exp, log, sqrt) are evaluated in float64 and rounded once, i.e. correctly rounded — a
//     real kernel's exp may differ by an ulp or two, which the parity tolerances allow.
//   'f64' — f32-typed buffers are Float64Array and nothing is rounded. Used only for the
//     finite-difference gradient checks, where float32 noise would swamp the derivative.
//     `read()` still returns Float32Array (the interface type); use `peek()` for the exact values.
//
// Quantized weights are frozen data, not arithmetic: a dequantized weight is always the float32
// value bnb defines, w = f32(quantMap[code] · absmax_b), in both precisions.
//
// The contract's boundary checks are validate.ts's, as in the other backends; beyond them nothing
// here validates shapes but `assertLen` (cheap; catches test mistakes): the model validates shapes
// once (STYLE.md §6).
import type {
  AdamWParams, AttentionShape, Backend, BufferType, GemmOptions, MemoryStats, QuantUpload, QuantWeight, RopeTables, Tensor,
} from '../backend.ts';
import { quantBytes } from '../../quant/types.ts';
import { dropScale, dropThreshold, hash32 } from '../rng.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../num.ts';
import {
  attentionParams,
  BUFFER_BYTES, QuantSlot, checkAlloc, checkAttention, checkCopy, checkCrossEntropySoftcap, checkDocStartTensor, checkDocStartValues, checkDropout,
  checkGemmOptions, checkNoiseScale, checkOperand, checkQuantUpload, takeQuant, checkScaleColumnsOptions, checkSoftcap, checkTargets,
  checkTokenIds, checkWrite, elemTypeOf, fillLength, readLength,
} from '../validate.ts';

export type ReferencePrecision = 'f32' | 'f64';

// GELU, tanh approximation (PyTorch gelu(approximate='tanh'), Gemma's gelu_pytorch_tanh):
// gelu(g) = 0.5·g·(1 + tanh(β·(g + κ·g³))), β = √(2/π), κ = 0.044715.
const GELU_BETA = Math.sqrt(2 / Math.PI);
const GELU_KAPPA = 0.044715;
/** Storage per BufferType: f32 → Float32Array ('f32') or Float64Array ('f64'); i32 → Int32Array;
 * u8 → Uint8Array; f16/bf16 → Uint16Array of raw half bits. */
export type RefArray = Float32Array | Float64Array | Int32Array | Uint8Array | Uint16Array;

export interface ReferenceBackend extends Backend {
  readonly name: 'reference';
  readonly precision: ReferencePrecision;
  /** The live storage of t (no copy, no rounding). Reference-only, for tests. */
  peek(t: Tensor): RefArray;
  /** Same, typed for f32 tensors (Float32Array in 'f32', Float64Array in 'f64'). */
  peekF(t: Tensor): Float32Array | Float64Array;
}

class RefTensor implements Tensor {
  constructor(readonly type: BufferType, readonly length: number, readonly label: string, public data: RefArray | null) {}
}

/** A resident 4-bit weight: its own copy of the upload's parts (u), read one element at a time. */
class RefQuant extends QuantSlot {
  live = true;
  readonly bytes: number;
  constructor(readonly u: QuantUpload) {
    super(u);
    this.bytes = quantBytes(u);
  }
}

/** Throws unless t is a live tensor of `type` holding at least n elements. */
export function assertLen(t: Tensor, type: BufferType, n: number, what: string): void {
  const rt = t as RefTensor;
  if (!(rt instanceof RefTensor) || rt.data === null) throw new Error(`reference ${what}: ${t?.label ?? t} is not a live reference tensor`);
  checkOperand(t, type, n, what);
}

export function createReferenceBackend(opts: { precision?: ReferencePrecision } = {}): ReferenceBackend {
  const precision = opts.precision ?? 'f32';
  // r(): the rounding applied after every arithmetic operation (identity in f64 mode).
  const r: (x: number) => number = precision === 'f32' ? Math.fround : (x) => x;
  const f32 = Math.fround;

  const live = new Set<RefTensor>();
  const quants = new Set<RefQuant>();
  let liveBytes = 0;
  let peakBytes = 0;
  const track = (bytes: number) => {
    liveBytes += bytes;
    if (liveBytes > peakBytes) peakBytes = liveBytes;
  };

  // Typed accessors. F() is the storage of an f32 tensor, I() of i32, U() of u8, each
  // checked to hold at least n elements.
  const F = (t: Tensor, n: number, what: string) => (assertLen(t, 'f32', n, what), (t as RefTensor).data as Float32Array | Float64Array);
  const I = (t: Tensor, n: number, what: string) => (assertLen(t, 'i32', n, what), (t as RefTensor).data as Int32Array);
  const data = (t: Tensor, what: string) => {
    const d = (t as RefTensor).data;
    if (!(t instanceof RefTensor) || d === null) throw new Error(`reference ${what}: ${t?.label} is not a live reference tensor`);
    return d;
  };
  /** An f32 operand that may also be f16/bf16 (embedding table, matmul b): the f32 storage, or
   * an exact widening of the half bits (a copy; this is the reference, it may allocate). */
  const FH = (t: Tensor, n: number, what: string): Float32Array | Float64Array => {
    if (t.type !== 'f16' && t.type !== 'bf16') return F(t, n, what);
    assertLen(t, t.type, n, what);
    const h = (t as RefTensor).data as Uint16Array;
    const cvt = t.type === 'f16' ? f16ToF32 : bf16ToF32;
    const out = new Float64Array(h.length);
    for (let i = 0; i < h.length; i++) out[i] = cvt(h[i]!);
    return out;
  };
  const Q = (w: QuantWeight, what: string) => {
    const q = w as RefQuant;
    if (!(q instanceof RefQuant) || !q.live) throw new Error(`reference ${what}: ${w?.label} is not a live reference quant weight`);
    return q;
  };

  // ---- dequantization, one element at a time, from the stored bnb fields -----------------
  /** absmax of block b: plain, or bnb's DQ rule f32(f32(nestedMap[code_b]·nestedAbsmax[b/nbs]) + offset). */
  function absmaxOf(q: RefQuant, b: number): number {
    if (q.u.absmax) return q.u.absmax[b]!;
    const dq = q.u.dq!;
    return f32(f32(dq.nestedQuantMap[dq.codes[b]!]! * dq.nestedAbsmax[Math.floor(b / dq.nestedBlocksize)]!) + dq.offset);
  }
  /** deq(W)[n, k]: flat index i = n·K + k; element 2j is the high nibble of byte j. */
  function deq(q: RefQuant, n: number, k: number): number {
    const i = n * q.K + k;
    const byte = q.u.packed[i >> 1]!;
    const code = (i & 1) === 0 ? byte >> 4 : byte & 15;
    return f32(q.u.quantMap[code]! * absmaxOf(q, Math.floor(i / q.blocksize)));
  }

  const be: ReferenceBackend = {
    name: 'reference',
    precision,

    // ---- buffers -----------------------------------------------------------------------
    alloc(type, length, label) {
      checkAlloc(length, label);
      const d: RefArray = type === 'f32'
        ? (precision === 'f32' ? new Float32Array(length) : new Float64Array(length))
        : type === 'i32' ? new Int32Array(length) : type === 'u8' ? new Uint8Array(length) : new Uint16Array(length);
      const t = new RefTensor(type, length, label, d);
      live.add(t);
      track(length * BUFFER_BYTES[type]);
      return t;
    },
    free(t) {
      const rt = t as RefTensor;
      if (!live.has(rt)) throw new Error(`reference free: ${t.label} is not live`);
      live.delete(rt);
      rt.data = null;
      liveBytes -= t.length * BUFFER_BYTES[t.type];
    },
    write(t, src, offset = 0) {
      const d = data(t, 'write');
      checkWrite(t, src, offset);
      d.set(src, offset);
    },
    async read(t, offset = 0, length) {
      const d = data(t, 'read');
      const n = readLength(t, offset, length);
      const part = d.subarray(offset, offset + n);
      if (t.type === 'f32') return Float32Array.from(part as Float32Array | Float64Array);
      return part.slice() as Int32Array | Uint8Array | Uint16Array;
    },
    peek(t) {
      return data(t, 'peek');
    },
    peekF(t) {
      if (t.type !== 'f32') throw new Error(`reference peekF: ${t.label} is ${t.type}`);
      return data(t, 'peekF') as Float32Array | Float64Array;
    },
    copy(dst, dstOffset, src, srcOffset, n) {
      const dd = data(dst, 'copy'), ds = data(src, 'copy');
      checkCopy(dst, dstOffset, src, srcOffset, n);
      // copyWithin semantics if dst and src are the same buffer (overlap-safe).
      dd.set(ds.subarray(srcOffset, srcOffset + n), dstOffset);
    },
    fill(t, value, offset = 0, n) {
      const d = data(t, 'fill');
      const len = fillLength(t, offset, n);
      const v = t.type === 'f32' ? r(value) : t.type === 'f16' ? f32ToF16(value) : t.type === 'bf16' ? f32ToBf16(value) : value;
      d.fill(v, offset, offset + len);
    },
    uploadQuant(w) {
      checkQuantUpload(w);
      const dq = w.dq
        ? { codes: w.dq.codes.slice(), nestedAbsmax: w.dq.nestedAbsmax.slice(), nestedQuantMap: w.dq.nestedQuantMap.slice(), offset: f32(w.dq.offset), nestedBlocksize: w.dq.nestedBlocksize }
        : null;
      const q = new RefQuant({ ...w, packed: w.packed.slice(), quantMap: w.quantMap.slice(), absmax: w.absmax ? w.absmax.slice() : null, dq });
      quants.add(q);
      track(q.bytes);
      return q;
    },
    writeQuant(w, src) {
      const q = Q(w, 'writeQuant');
      // parts are read from their starts by q's (now src's) shape: src's parts go in as prefixes
      takeQuant(q, src);
      const u = q.u;
      u.packed.set(src.packed);
      u.quantMap.set(src.quantMap);
      if (u.absmax) u.absmax.set(src.absmax!);
      if (u.dq) {
        u.dq.codes.set(src.dq!.codes);
        u.dq.nestedAbsmax.set(src.dq!.nestedAbsmax);
        u.dq.nestedQuantMap.set(src.dq!.nestedQuantMap);
        u.dq.offset = f32(src.dq!.offset);
      }
    },
    freeQuant(w) {
      const q = Q(w, 'freeQuant');
      q.live = false;
      quants.delete(q);
      liveBytes -= q.bytes;
    },
    async flush() {},
    memory(): MemoryStats {
      return { liveBytes, peakBytes };
    },
    async destroy() {
      for (const t of live) t.data = null;
      for (const q of quants) q.live = false;
      live.clear();
      quants.clear();
      liveBytes = 0;
    },

    // ---- forward kernels ----------------------------------------------------------------

    embedding(out, table, ids, R, C) {
      const o = F(out, R * C, 'embedding out'), id = I(ids, R, 'embedding ids');
      elemTypeOf(table, 'embedding table');
      const tb = FH(table, 0, 'embedding table');
      checkTokenIds(id, R, table, C);
      for (let i = 0; i < R; i++) {
        const row = id[i]!;
        for (let c = 0; c < C; c++) o[i * C + c] = tb[row * C + c]!;
      }
    },

    rmsNorm(out, rstd, x, w, R, C, eps) {
      const o = F(out, R * C, 'rmsNorm out'), rs = F(rstd, R, 'rmsNorm rstd'), xs = F(x, R * C, 'rmsNorm x'), ws = F(w, C, 'rmsNorm w');
      for (let i = 0; i < R; i++) {
        let ss = 0;
        for (let c = 0; c < C; c++) { const v = xs[i * C + c]!; ss = r(ss + r(v * v)); }
        const s = r(1 / r(Math.sqrt(r(r(ss / C) + r(eps)))));
        rs[i] = s;
        for (let c = 0; c < C; c++) o[i * C + c] = r(r(xs[i * C + c]! * s) * ws[c]!);
      }
    },

    rmsNormBackward(dx, dy, x, w, rstd, R, C, accumulate = false) {
      const d = F(dx, R * C, 'rmsNormBackward dx'), g = F(dy, R * C, 'rmsNormBackward dy'), xs = F(x, R * C, 'rmsNormBackward x');
      const ws = F(w, C, 'rmsNormBackward w'), rs = F(rstd, R, 'rmsNormBackward rstd');
      for (let i = 0; i < R; i++) {
        const s = rs[i]!;
        // mean_c(x̂ ⊙ w ⊙ dy)
        let dot = 0;
        for (let c = 0; c < C; c++) dot = r(dot + r(r(r(xs[i * C + c]! * s) * ws[c]!) * g[i * C + c]!));
        const mean = r(dot / C);
        for (let c = 0; c < C; c++) {
          const xhat = r(xs[i * C + c]! * s);
          const v = r(s * r(r(ws[c]! * g[i * C + c]!) - r(xhat * mean)));
          d[i * C + c] = accumulate ? r(d[i * C + c]! + v) : v;
        }
      }
    },

    matmul(out, a, b, M, N, K, o: GemmOptions = {}) {
      const { transA = false, transB = false, alpha = 1, accumulate = false, bias } = o;
      checkGemmOptions(o, 'matmul');
      elemTypeOf(b, 'matmul b', !transA);
      const y = F(out, M * N, 'matmul out'), A = F(a, M * K, 'matmul a'), B = FH(b, K * N, 'matmul b');
      const bs = bias ? F(bias, N, 'matmul bias') : null;
      const al = r(alpha);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let k = 0; k < K; k++) {
            const av = transA ? A[k * M + m]! : A[m * K + k]!; // A [K, M] or [M, K]
            const bv = transB ? B[n * K + k]! : B[k * N + n]!; // B [N, K] or [K, N]
            acc = r(acc + r(av * bv));
          }
          let v = r(al * acc);
          if (bs) v = r(v + bs[n]!);
          y[m * N + n] = accumulate ? r(y[m * N + n]! + v) : v;
        }
      }
    },

    qMatmul(out, x, w, M, o = {}) {
      const q = Q(w, 'qMatmul');
      const { N, K } = q;
      const { alpha = 1, accumulate = false, bias } = o;
      checkGemmOptions(o, 'qMatmul');
      const y = F(out, M * N, 'qMatmul out'), xs = F(x, M * K, 'qMatmul x');
      const bs = bias ? F(bias, N, 'qMatmul bias') : null;
      const al = r(alpha);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let k = 0; k < K; k++) acc = r(acc + r(xs[m * K + k]! * deq(q, n, k)));
          let v = r(al * acc);
          if (bs) v = r(v + bs[n]!);
          y[m * N + n] = accumulate ? r(y[m * N + n]! + v) : v;
        }
      }
    },

    rope(x, tables, R, T, nh, D, pos0, docStart) {
      rotate(x, tables, R, T, nh, D, pos0, 1, 'rope', docStart);
    },

    attention(out, lse, q, k, v, s) {
      const { B, T, S, H, KVH, D, pos0, kvStride } = s;
      const os = F(out, B * T * H * D, 'attention out'), ls = F(lse, B * H * T, 'attention lse');
      const qs = F(q, B * T * H * D, 'attention q');
      const ks = F(k, B * kvStride * KVH * D, 'attention k'), vs = F(v, B * kvStride * KVH * D, 'attention v');
      checkAttention(s, 'attention');
      const { scale, cap, window } = attnOptions(s);
      const ds = docStarts(s, 'attention');
      const group = H / KVH;
      const sc = new Float64Array(S); // scratch: this is the reference, it may allocate
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const kh = Math.floor(h / group);
          for (let t = 0; t < T; t++) {
            const qo = ((b * T + t) * H + h) * D;
            const last = pos0 + t; // keys first..last inclusive; the others are masked (never scored)
            const first = Math.max(window > 0 ? Math.max(0, last - window + 1) : 0, ds ? ds[b * T + t]! : 0);
            let mx = -Infinity;
            for (let j = first; j <= last; j++) {
              const ko = ((b * kvStride + j) * KVH + kh) * D;
              let dot = 0;
              for (let d = 0; d < D; d++) dot = r(dot + r(qs[qo + d]! * ks[ko + d]!));
              sc[j] = r(dot * scale);
              if (cap > 0) sc[j] = r(cap * r(Math.tanh(r(sc[j]! / cap)))); // Gemma 2 soft-cap, before the mask
              if (sc[j]! > mx) mx = sc[j]!;
            }
            let sum = 0;
            for (let j = first; j <= last; j++) { sc[j] = r(Math.exp(r(sc[j]! - mx))); sum = r(sum + sc[j]!); }
            ls[(b * H + h) * T + t] = r(mx + r(Math.log(sum)));
            for (let d = 0; d < D; d++) {
              let acc = 0;
              for (let j = first; j <= last; j++) acc = r(acc + r(r(sc[j]! / sum) * vs[((b * kvStride + j) * KVH + kh) * D + d]!));
              os[qo + d] = acc;
            }
          }
        }
      }
    },

    swiglu(out, gate, up, n) {
      const o = F(out, n, 'swiglu out'), g = F(gate, n, 'swiglu gate'), u = F(up, n, 'swiglu up');
      for (let i = 0; i < n; i++) {
        const gv = g[i]!;
        o[i] = r(r(gv * sigmoid(gv)) * u[i]!);
      }
    },

    geglu(out, gate, up, n) {
      const o = F(out, n, 'geglu out'), g = F(gate, n, 'geglu gate'), u = F(up, n, 'geglu up');
      for (let i = 0; i < n; i++) {
        const gv = g[i]!;
        const t = geluTanh(gv, r(r(gv * gv) * gv));
        o[i] = r(r(r(0.5 * gv) * r(1 + t)) * u[i]!);
      }
    },

    softcap(x, n, cap) {
      checkSoftcap(cap);
      const xs = F(x, n, 'softcap x');
      const c = r(cap);
      for (let i = 0; i < n; i++) xs[i] = capped(xs[i]!, c);
    },

    add(out, x, n, alpha = 1) {
      const o = F(out, n, 'add out'), xs = F(x, n, 'add x');
      const al = r(alpha);
      for (let i = 0; i < n; i++) o[i] = r(o[i]! + r(al * xs[i]!));
    },

    addUniformNoise(x, n, scale, seed) {
      checkNoiseScale(scale);
      const xs = F(x, n, 'addUniformNoise x'), sc = r(scale);
      for (let i = 0; i < n; i++) xs[i] = r(xs[i]! + r((((hash32(seed, i) >>> 8) * 2 ** -23) - 1) * sc));
    },

    dropout(out, x, n, p, seed) {
      checkDropout(p);
      const o = F(out, n, 'dropout out'), xs = F(x, n, 'dropout x');
      const thr = dropThreshold(p);
      const scale = dropScale(p);
      for (let i = 0; i < n; i++) o[i] = hash32(seed, i) >= thr ? r(xs[i]! * scale) : 0;
    },

    crossEntropy(losses, logits, targets, R, V, gradScale, softcap = 0) {
      checkCrossEntropySoftcap(softcap);
      const ls = F(losses, R, 'crossEntropy losses'), zs = F(logits, R * V, 'crossEntropy logits'), tg = I(targets, R, 'crossEntropy targets');
      checkTargets(tg, R, V);
      // with a soft-cap the formulas below read y = cap·tanh(z / cap), one row at a time, from a
      // copy (the logits buffer keeps z until its gradient is written)
      const cap = r(softcap);
      const ys = cap > 0 ? new Float64Array(V) : null;
      for (let i = 0; i < R; i++) {
        const t = tg[i]!;
        if (t === -100) {
          ls[i] = 0;
          if (gradScale !== undefined) for (let j = 0; j < V; j++) zs[i * V + j] = 0;
          continue;
        }
        let lg = zs, o = i * V;
        if (ys) {
          for (let j = 0; j < V; j++) ys[j] = capped(zs[o + j]!, cap);
          lg = ys;
          o = 0;
        }
        let mx = -Infinity;
        for (let j = 0; j < V; j++) if (lg[o + j]! > mx) mx = lg[o + j]!;
        let sum = 0;
        for (let j = 0; j < V; j++) sum = r(sum + r(Math.exp(r(lg[o + j]! - mx))));
        const lse = r(mx + r(Math.log(sum)));
        ls[i] = r(lse - lg[o + t]!);
        if (gradScale !== undefined) {
          const gs = r(gradScale);
          for (let j = 0; j < V; j++) {
            const pj = r(r(Math.exp(r(lg[o + j]! - mx))) / sum);
            const gj = r(r(pj - (j === t ? 1 : 0)) * gs);
            if (!ys) lg[o + j] = gj;
            else {
              // d/dz through the cap: dy/dz = 1 − tanh² = 1 − (y/cap)²
              const q = r(ys[j]! / cap);
              zs[i * V + j] = r(gj * r(1 - r(q * q)));
            }
          }
        }
      }
    },

    // ---- DoRA ---------------------------------------------------------------------------
    // The rounding order every backend follows (wasm and webgpu match these bits except where
    // test/kernels/dora.test.ts states a tolerance):
    //   scaleColumns   s = f32(g[j] + f32(offset)); v = f32(s·x[r,j]); v = f32(v + bias[j]);
    //                  out = accumulate ? f32(out + v) : v
    //   columnDot      acc = 0; acc = f32(acc + f32(a[r,j]·b[r,j])) for r ascending;
    //                  v = scale ? f32(scale[j]·acc) : acc; out = accumulate ? f32(out + v) : v
    //   doraScale      n = f32(√nsq[j]); invNorm = f32(1 / n); g = f32(m[j] / n)
    //   rowSumSquares  acc = f32(acc + f32(x²)) for c ascending; out = accumulate ? f32(out + acc) : acc
    //   qRowSumSquares the same sum over w = deq(W)[n, k] (bnb's f32 value)

    scaleColumns(out, x, g, R, N, o = {}) {
      const { offset = 0, accumulate = false, bias } = o;
      checkScaleColumnsOptions(o, 'reference scaleColumns');
      // out may be x (in place): each element is read before it is written
      const y = F(out, R * N, 'scaleColumns out'), xs = F(x, R * N, 'scaleColumns x'), gs = F(g, N, 'scaleColumns g');
      const bs = bias ? F(bias, N, 'scaleColumns bias') : null;
      const off = r(offset);
      for (let i = 0; i < R; i++) {
        for (let j = 0; j < N; j++) {
          let v = r(r(gs[j]! + off) * xs[i * N + j]!);
          if (bs) v = r(v + bs[j]!);
          y[i * N + j] = accumulate ? r(y[i * N + j]! + v) : v;
        }
      }
    },

    columnDot(out, a, b, R, N, o = {}) {
      const { scale, accumulate = false } = o;
      const y = F(out, N, 'columnDot out'), as = F(a, R * N, 'columnDot a'), bs = F(b, R * N, 'columnDot b');
      const sc = scale ? F(scale, N, 'columnDot scale') : null;
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let i = 0; i < R; i++) acc = r(acc + r(as[i * N + j]! * bs[i * N + j]!));
        const v = sc ? r(sc[j]! * acc) : acc;
        y[j] = accumulate ? r(y[j]! + v) : v;
      }
    },

    doraScale(g, invNorm, m, nsq, N) {
      const gs = F(g, N, 'doraScale g'), inv = F(invNorm, N, 'doraScale invNorm'), ms = F(m, N, 'doraScale m'), ns = F(nsq, N, 'doraScale nsq');
      for (let j = 0; j < N; j++) {
        const n = r(Math.sqrt(ns[j]!));
        inv[j] = r(1 / n);
        gs[j] = r(ms[j]! / n);
      }
    },

    rowSumSquares(out, x, R, C, accumulate = false) {
      const y = F(out, R, 'rowSumSquares out'), xs = F(x, R * C, 'rowSumSquares x');
      for (let i = 0; i < R; i++) {
        let acc = 0;
        for (let c = 0; c < C; c++) { const v = xs[i * C + c]!; acc = r(acc + r(v * v)); }
        y[i] = accumulate ? r(y[i]! + acc) : acc;
      }
    },

    qRowSumSquares(out, w) {
      const q = Q(w, 'qRowSumSquares');
      const { N, K } = q;
      const y = F(out, N, 'qRowSumSquares out');
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) { const v = deq(q, n, k); acc = r(acc + r(v * v)); }
        y[n] = acc;
      }
    },

    // ---- backward kernels ---------------------------------------------------------------

    qMatmulBackwardInput(dx, dy, w, M, o = {}) {
      const q = Q(w, 'qMatmulBackwardInput');
      const { N, K } = q;
      const { alpha = 1, accumulate = false } = o;
      const d = F(dx, M * K, 'qMatmulBackwardInput dx'), g = F(dy, M * N, 'qMatmulBackwardInput dy');
      const al = r(alpha);
      for (let m = 0; m < M; m++) {
        for (let k = 0; k < K; k++) {
          let acc = 0;
          for (let n = 0; n < N; n++) acc = r(acc + r(g[m * N + n]! * deq(q, n, k)));
          const v = r(al * acc);
          d[m * K + k] = accumulate ? r(d[m * K + k]! + v) : v;
        }
      }
    },

    ropeBackward(dx, tables, R, T, nh, D, pos0, docStart) {
      rotate(dx, tables, R, T, nh, D, pos0, -1, 'ropeBackward', docStart);
    },

    attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, s) {
      const { B, T, S, H, KVH, D, kvStride } = s;
      checkAttention(s, 'attentionBackward');
      const nq = B * T * H * D, nkv = B * kvStride * KVH * D;
      const dqs = F(dq, nq, 'attentionBackward dq'), dks = F(dk, nkv, 'attentionBackward dk'), dvs = F(dv, nkv, 'attentionBackward dv');
      const gs = F(dout, nq, 'attentionBackward dout'), qs = F(q, nq, 'attentionBackward q');
      const ks = F(k, nkv, 'attentionBackward k'), vs = F(v, nkv, 'attentionBackward v');
      const os = F(out, nq, 'attentionBackward out'), ls = F(lse, B * H * T, 'attentionBackward lse');
      const { scale, cap, window } = attnOptions(s);
      const ds = docStarts(s, 'attentionBackward');
      const group = H / KVH;
      // dk, dv are sums over queries and the heads of a group: start from zero (rows nobody
      // attends to, including the padding rows S..kvStride-1, stay zero).
      dks.fill(0, 0, nkv);
      dvs.fill(0, 0, nkv);
      const P = new Float64Array(S), dS = new Float64Array(S);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const kh = Math.floor(h / group);
          for (let t = 0; t < T; t++) {
            const qo = ((b * T + t) * H + h) * D;
            const last = t; // pos0 = 0
            const first = Math.max(window > 0 ? Math.max(0, last - window + 1) : 0, ds ? ds[b * T + t]! : 0);
            const l = ls[(b * H + h) * T + t]!;
            // Di = Σ_d dout·out (= Σ_j P_j·dP_j)
            let Di = 0;
            for (let d = 0; d < D; d++) Di = r(Di + r(gs[qo + d]! * os[qo + d]!));
            for (let j = first; j <= last; j++) {
              const ko = ((b * kvStride + j) * KVH + kh) * D;
              let dot = 0, dp = 0;
              for (let d = 0; d < D; d++) {
                dot = r(dot + r(qs[qo + d]! * ks[ko + d]!));
                dp = r(dp + r(gs[qo + d]! * vs[ko + d]!));
              }
              let score = r(dot * scale), th = 0;
              if (cap > 0) {
                th = r(Math.tanh(r(score / cap)));
                score = r(cap * th);
              }
              P[j] = r(Math.exp(r(score - l))); // probabilities recomputed from the saved lse
              dS[j] = r(P[j]! * r(dp - Di));
              // d(cap·tanh(x/cap))/dx = 1 − tanh² = 1 − (score/cap)²
              if (cap > 0) dS[j] = r(dS[j]! * r(1 - r(th * th)));
            }
            for (let d = 0; d < D; d++) {
              let acc = 0;
              for (let j = first; j <= last; j++) acc = r(acc + r(dS[j]! * ks[((b * kvStride + j) * KVH + kh) * D + d]!));
              dqs[qo + d] = r(acc * scale);
            }
            for (let j = first; j <= last; j++) {
              const ko = ((b * kvStride + j) * KVH + kh) * D;
              const dsj = r(dS[j]! * scale);
              for (let d = 0; d < D; d++) {
                dks[ko + d] = r(dks[ko + d]! + r(dsj * qs[qo + d]!));
                dvs[ko + d] = r(dvs[ko + d]! + r(P[j]! * gs[qo + d]!));
              }
            }
          }
        }
      }
    },

    swigluBackward(dgate, dup, dout, gate, up, n) {
      const dg = F(dgate, n, 'swigluBackward dgate'), du = F(dup, n, 'swigluBackward dup');
      const go = F(dout, n, 'swigluBackward dout'), g = F(gate, n, 'swigluBackward gate'), u = F(up, n, 'swigluBackward up');
      for (let i = 0; i < n; i++) {
        const gv = g[i]!, uv = u[i]!, dov = go[i]!;
        const sg = sigmoid(gv);
        const silu = r(gv * sg);
        // d silu/dg = σ(g)·(1 + g·(1 − σ(g)))
        const dsilu = r(sg * r(1 + r(gv * r(1 - sg))));
        dg[i] = r(r(dov * uv) * dsilu);
        du[i] = r(dov * silu);
      }
    },

    gegluBackward(dgate, dup, dout, gate, up, n) {
      const dg = F(dgate, n, 'gegluBackward dgate'), du = F(dup, n, 'gegluBackward dup');
      const go = F(dout, n, 'gegluBackward dout'), g = F(gate, n, 'gegluBackward gate'), u = F(up, n, 'gegluBackward up');
      const beta = r(GELU_BETA), kappa3 = r(3 * GELU_KAPPA);
      for (let i = 0; i < n; i++) {
        const gv = g[i]!, uv = u[i]!, dov = go[i]!;
        // PyTorch's GeluBackward (approximate='tanh') order: left = 0.5·g, right = 1 + t,
        // gelu' = 0.5·right + left·(1 − t²)·β·(1 + 3κ·g²)
        const sq = r(gv * gv);
        const t = geluTanh(gv, r(sq * gv));
        const left = r(0.5 * gv), right = r(1 + t);
        const dgelu = r(r(0.5 * right) + r(r(left * r(1 - r(t * t))) * r(beta * r(1 + r(kappa3 * sq)))));
        dg[i] = r(r(dov * uv) * dgelu);
        du[i] = r(dov * r(left * right));
      }
    },

    // ---- optimizer ----------------------------------------------------------------------

    sumSquares(out, x, n, accumulate = false) {
      const o = F(out, 1, 'sumSquares out'), xs = F(x, n, 'sumSquares x');
      let acc = 0;
      for (let i = 0; i < n; i++) acc = r(acc + r(xs[i]! * xs[i]!));
      o[0] = accumulate ? r(o[0]! + acc) : acc;
    },

    adamwStep(param, grad, m, v, n, p: AdamWParams) {
      const ps = F(param, n, 'adamwStep param'), gs = F(grad, n, 'adamwStep grad');
      const ms = F(m, n, 'adamwStep m'), vs = F(v, n, 'adamwStep v');
      // Scalars are computed in float64 and rounded once (as a host would pass them to a kernel).
      const b1 = r(p.beta1), b2 = r(p.beta2), ob1 = r(1 - p.beta1), ob2 = r(1 - p.beta2);
      const c1 = r(1 - Math.pow(p.beta1, p.step)), c2 = r(1 - Math.pow(p.beta2, p.step));
      const lr = r(p.lr), eps = r(p.eps), gsc = r(p.gradScale);
      const decay = r(1 - p.lr * p.weightDecay);
      for (let i = 0; i < n; i++) {
        const g = r(gs[i]! * gsc);
        const mi = r(r(b1 * ms[i]!) + r(ob1 * g));
        const vi = r(r(b2 * vs[i]!) + r(r(ob2 * g) * g));
        ms[i] = mi;
        vs[i] = vi;
        const pd = r(ps[i]! * decay); // decoupled weight decay, before the update (torch AdamW)
        const mhat = r(mi / c1), vhat = r(vi / c2);
        ps[i] = r(pd - r(lr * r(mhat / r(r(Math.sqrt(vhat)) + eps))));
      }
    },

    sgdStep(param, grad, n, lr, gradScale) {
      const ps = F(param, n, 'sgdStep param'), gs = F(grad, n, 'sgdStep grad');
      const l = r(lr), gsc = r(gradScale);
      for (let i = 0; i < n; i++) ps[i] = r(ps[i]! - r(l * r(gs[i]! * gsc)));
    },
  };

  function sigmoid(g: number): number {
    return r(1 / r(1 + r(Math.exp(-g))));
  }

  /** tanh(β·(g + κ·g³)) of the tanh-approximated GELU, given g³ (PyTorch's order of operations). */
  function geluTanh(g: number, g3: number): number {
    return r(Math.tanh(r(r(GELU_BETA) * r(g + r(r(GELU_KAPPA) * g3)))));
  }

  /** cap·tanh(z / cap) (softcap, the soft-capped cross-entropy). */
  function capped(z: number, cap: number): number {
    return r(cap * r(Math.tanh(r(z / cap))));
  }

  /** The values of s.docStart (checked), or null without one. */
  function docStarts(s: AttentionShape, what: string): Int32Array | null {
    if (!s.docStart) return null;
    const ds = I(s.docStart, s.B * s.T, `${what} docStart`);
    checkDocStartValues(ds, s.B * s.T, s.T, `reference ${what}`);
    return ds;
  }

  /** attentionParams (validate.ts), the scalars rounded like every other. */
  function attnOptions(s: AttentionShape): { scale: number; cap: number; window: number } {
    const p = attentionParams(s);
    return { scale: r(p.scale), cap: r(p.softcap), window: p.window };
  }

  /** rope (dir 1) and its transpose ropeBackward (dir −1, rotation by −θ) on x [R, nh, D]. */
  function rotate(x: Tensor, tables: RopeTables, R: number, T: number, nh: number, D: number, pos0: number, dir: 1 | -1, what: string, docStart?: Tensor): void {
    const xs = F(x, R * nh * D, `${what} x`);
    let ds: Int32Array | null = null;
    if (docStart) {
      checkDocStartTensor(docStart, R, `reference ${what}`);
      ds = I(docStart, R, `${what} docStart`);
      checkDocStartValues(ds, R, T, `reference ${what}`);
    }
    const half = D / 2;
    const cs = F(tables.cos, 0, `${what} cos`), sn = F(tables.sin, 0, `${what} sin`);
    const maxPos = pos0 + Math.min(R, T) - 1;
    assertLen(tables.cos, 'f32', (maxPos + 1) * half, `${what} cos`);
    assertLen(tables.sin, 'f32', (maxPos + 1) * half, `${what} sin`);
    for (let row = 0; row < R; row++) {
      const pos = pos0 + (row % T) - (ds ? ds[row]! : 0); // packed: positions restart at each example
      for (let h = 0; h < nh; h++) {
        const o = (row * nh + h) * D;
        for (let i = 0; i < half; i++) {
          const c = cs[pos * half + i]!, s = dir === 1 ? sn[pos * half + i]! : -sn[pos * half + i]!;
          const a = xs[o + i]!, b = xs[o + i + half]!;
          xs[o + i] = r(r(a * c) - r(b * s));
          xs[o + i + half] = r(r(b * c) + r(a * s));
        }
      }
    }
  }

  return be;
}
