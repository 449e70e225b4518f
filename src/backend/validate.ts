// The boundary checks of the Backend contract (backend.ts), in one place and applied by all three
// backends (STYLE.md §6: validate once, trust inside). A backend keeps only what is its own: that
// a tensor belongs to it and is live, and the limits of its kernels (passed in, e.g. the longest
// head dim of its attention). Every message names the call and the tensor.
import type { AttentionShape, Backend, BufferType, GemmOptions, QuantUpload, QuantWeight, Tensor } from './backend.ts';
import { ELEM_TYPE } from './abi.ts';

/** Bytes per element of each buffer type. */
export const BUFFER_BYTES: Record<BufferType, number> = { f32: 4, i32: 4, u8: 1, f16: 2, bf16: 2 };

/** The host array of each buffer type: what write() takes and read() returns (halves as raw bits). */
export const HOST_ARRAY = { f32: Float32Array, i32: Int32Array, u8: Uint8Array, f16: Uint16Array, bf16: Uint16Array } as const;
export type HostArray = Float32Array | Int32Array | Uint8Array | Uint16Array;

/**
 * What a backend keeps beside its Backend object for callers below the API (its internals for
 * tests, how it runs), found by that object; get() refuses a backend of another kind.
 */
export function sideTable<T>(what: string, kind: Backend['name']): { set(be: Backend, v: T): void; get(be: Backend): T } {
  const m = new WeakMap<Backend, T>();
  return {
    set: (be, v) => void m.set(be, v),
    get: (be) => {
      const v = m.get(be);
      if (v === undefined) throw new Error(`${what}: ${be.name} is not a ${kind} backend`);
      return v;
    },
  };
}

// ---- buffers ------------------------------------------------------------------------------------

/** alloc: a whole number of elements ≥ 0. */
export function checkAlloc(length: number, label: string): void {
  if (!(Number.isInteger(length) && length >= 0)) throw new Error(`alloc ${label}: bad length ${length}`);
}

/** An operand of a kernel: of `type` and holding at least n elements (a short buffer would be a silent out-of-bounds access). */
export function checkOperand(t: Tensor, type: BufferType, n: number, what: string): void {
  if (t.type !== type) throw new Error(`${what}: ${t.label} is ${t.type}, expected ${type}`);
  if (!(n <= t.length)) throw new Error(`${what}: ${t.label} holds ${t.length} elements, ${n} needed`);
}

/** [offset, offset + n) is a range of whole elements inside t. */
function checkRange(what: string, t: Tensor, offset: number, n: number): void {
  if (!(Number.isInteger(offset) && Number.isInteger(n) && offset >= 0 && n >= 0 && offset + n <= t.length)) {
    throw new Error(`${what}: [${offset}, ${offset + n}) is outside ${t.label} [${t.length}]`);
  }
}

/** write(t, data, offset): data is t's host array (HOST_ARRAY) and fits at offset. */
export function checkWrite(t: Tensor, data: HostArray, offset: number): void {
  const want = HOST_ARRAY[t.type];
  if (!(data instanceof want)) throw new Error(`write ${t.label}: a ${t.type} tensor takes a ${want.name}, got ${data.constructor.name}`);
  checkRange('write', t, offset, data.length);
}

/** read(t, offset, length): the elements read (length absent: to the end), a range inside t. */
export function readLength(t: Tensor, offset: number, length: number | undefined): number {
  const n = length ?? t.length - offset;
  checkRange('read', t, offset, n);
  return n;
}

/** copy(dst, dstOffset, src, srcOffset, n): one element type, both ranges inside their tensors. */
export function checkCopy(dst: Tensor, dstOffset: number, src: Tensor, srcOffset: number, n: number): void {
  if (dst.type !== src.type) throw new Error(`copy: ${src.label} is ${src.type}, ${dst.label} is ${dst.type}`);
  checkRange('copy from', src, srcOffset, n);
  checkRange('copy to', dst, dstOffset, n);
}

/** fill(t, value, offset, n): the elements filled (n absent: to the end), a range inside t. */
export function fillLength(t: Tensor, offset: number, n: number | undefined): number {
  const count = n ?? t.length - offset;
  checkRange('fill', t, offset, count);
  return count;
}

/** Every part of a 4-bit upload has exactly the length its [N, K] shape and blocksize imply. */
export function checkQuantUpload(w: QuantUpload, what = 'uploadQuant'): void {
  const n = w.N * w.K, nb = Math.ceil(n / w.blocksize);
  const bad = (msg: string) => new Error(`${what} ${w.label}: ${msg}`);
  if (!(Number.isSafeInteger(w.N) && Number.isSafeInteger(w.K) && Number.isSafeInteger(n) && n > 0 && Number.isSafeInteger(w.blocksize) && w.blocksize > 0)) {
    throw bad(`[${w.N}, ${w.K}] blocksize ${w.blocksize} is not a valid weight`);
  }
  if (w.packed.length !== Math.ceil(n / 2)) throw bad(`packed has ${w.packed.length} bytes, [${w.N}, ${w.K}] needs ${Math.ceil(n / 2)}`);
  if (w.quantMap.length !== 16) throw bad(`quant map has ${w.quantMap.length} entries, expected 16`);
  if ((w.absmax === null) === (w.dq === null)) throw bad('exactly one of absmax and dq must be given');
  if (w.absmax && w.absmax.length !== nb) throw bad(`absmax has ${w.absmax.length} entries, expected ${nb}`);
  const dq = w.dq;
  if (dq) {
    if (!(dq.nestedBlocksize > 0)) throw bad(`nested blocksize ${dq.nestedBlocksize} is not positive`);
    if (dq.codes.length !== nb) throw bad(`dq codes have ${dq.codes.length} entries, expected ${nb}`);
    if (dq.nestedQuantMap.length !== 256) throw bad(`nested quant map has ${dq.nestedQuantMap.length} entries, expected 256`);
    if (dq.nestedAbsmax.length !== Math.ceil(nb / dq.nestedBlocksize)) throw bad(`nested absmax has ${dq.nestedAbsmax.length} entries, expected ${Math.ceil(nb / dq.nestedBlocksize)}`);
  }
}

/**
 * A resident 4-bit weight as every backend records it from its upload: the QuantWeight fields,
 * the nested blocksize, which a weight written into it later (writeQuant) must share, and its
 * capacity in elements (the upload's N·K). Each backend's weight class extends it with where the
 * data lives.
 */
export interface QuantSlot extends QuantWeight {
  /** nested blocksize of a double-quantized weight (0 otherwise) */
  readonly nestedBlocksize: number;
  /** elements the slot's storage holds: N·K of the upload that made it */
  readonly capacity: number;
}
export class QuantSlot {
  constructor(w: QuantUpload) {
    Object.assign(this, { N: w.N, K: w.K, blocksize: w.blocksize, quantType: w.quantType, doubleQuant: w.dq !== null, label: w.label, nestedBlocksize: w.dq ? w.dq.nestedBlocksize : 0, capacity: w.N * w.K });
  }
}

/**
 * writeQuant: the new weight is well-formed, of the slot's kind (quant type, blocksize,
 * double-quant and nested blocksize) and no larger than the slot's capacity — every part's
 * length grows with N·K, so it fits each backend's storage; the slot then has its shape.
 */
export function takeQuant(slot: QuantSlot, u: QuantUpload): void {
  checkQuantUpload(u, 'writeQuant');
  const fits = u.N * u.K <= slot.capacity && slot.blocksize === u.blocksize && slot.quantType === u.quantType
    && slot.doubleQuant === (u.dq !== null) && (!u.dq || u.dq.nestedBlocksize === slot.nestedBlocksize);
  if (!fits) {
    throw new Error(`writeQuant ${slot.label}: [${u.N}, ${u.K}] ${u.quantType} bs${u.blocksize}${u.dq ? ' dq' : ''} does not fit the slot of ${slot.capacity} elements ${slot.quantType} bs${slot.blocksize}${slot.doubleQuant ? ' dq' : ''}`);
  }
  Object.assign(slot, { N: u.N, K: u.K });
}

/**
 * The optional fields of an AttentionShape (attention, attentionBackward): scale > 0 finite,
 * softcap ≥ 0 finite (0: none), window ≥ 0 integer (0: unlimited), docStart an i32 tensor of
 * B·T entries and only for training shapes (pos0 = 0, S = T: a KV cache holds one sequence).
 * Absent fields are fine.
 */
export function checkAttentionOptions(s: AttentionShape, what: string): void {
  if (s.scale !== undefined && !(Number.isFinite(s.scale) && s.scale > 0)) throw new Error(`${what}: scale ${s.scale} must be a finite number > 0 (leave it out for 1/√D)`);
  if (s.softcap !== undefined && !(Number.isFinite(s.softcap) && s.softcap >= 0)) throw new Error(`${what}: softcap ${s.softcap} must be a finite number ≥ 0 (0 or absent: no soft-cap)`);
  if (s.window !== undefined && !(Number.isSafeInteger(s.window) && s.window >= 0)) throw new Error(`${what}: window ${s.window} must be an integer ≥ 0 (0 or absent: unlimited)`);
  if (s.docStart !== undefined) {
    if (s.pos0 !== 0 || s.S !== s.T) throw new Error(`${what}: docStart (packed sequences) needs pos0 = 0 and S = T (training, no KV cache), got pos0 ${s.pos0}, S ${s.S}, T ${s.T}`);
    checkDocStartTensor(s.docStart, s.B * s.T, what);
  }
}

/** A docStart operand (rope, ropeBackward, attention): i32 with at least `rows` entries. */
export function checkDocStartTensor(t: Tensor, rows: number, what: string): void {
  checkOperand(t, 'i32', rows, `${what} docStart`);
}

/**
 * The values of a docStart (backends that can see them on the host: reference, wasm): rows of T,
 * each a run of contiguous examples, so docStart[t] is 0 at t = 0 and t or docStart[t − 1] after
 * (examples are contiguous; 0 ≤ docStart[t] ≤ t follows).
 */
export function checkDocStartValues(ds: ArrayLike<number>, R: number, T: number, what: string): void {
  for (let r = 0; r < R; r++) {
    const t = r % T, d = ds[r]!;
    if (t === 0 ? d === 0 : d === t || d === ds[r - 1]!) continue;
    throw new Error(`${what}: docStart[${r}] = ${d} at position ${t} of its row: an example starts at 0 or where the previous one ends (expected ${t === 0 ? 0 : `${t} or ${ds[r - 1]}`})`);
  }
}

/** scaleColumns' options: offset a finite number (absent: 0). */
export function checkScaleColumnsOptions(o: { offset?: number }, what: string): void {
  if (o.offset !== undefined && !Number.isFinite(o.offset)) throw new Error(`${what}: offset ${o.offset} must be a finite number (leave it out for 0)`);
}

// ---- kernels ------------------------------------------------------------------------------------

/**
 * The element type code (ELEM_TYPE of abi.ts, the kernels' own) of an operand that may be held in
 * half precision: an embedding table, or matmul's b when `halfOk` (not with transA).
 */
export function elemTypeOf(t: Tensor, what: string, halfOk = true): number {
  const code = (ELEM_TYPE as Partial<Record<BufferType, number>>)[t.type];
  if (code === undefined || (code !== ELEM_TYPE.f32 && !halfOk)) throw new Error(`${what}: ${t.label} is ${t.type}, expected f32${halfOk ? ', f16 or bf16' : ''}`);
  return code;
}

/** matmul and qMatmul: a bias only with accumulate false (scaleColumns allows both, and does not call this). */
export function checkGemmOptions(o: Pick<GemmOptions, 'bias' | 'accumulate'>, what: string): void {
  if (o.bias && o.accumulate) throw new Error(`${what}: bias is only allowed with accumulate false`);
}

/** embedding: every id (host-visible) lies in [0, V). */
export function checkTokenIds(ids: ArrayLike<number>, R: number, table: Tensor, C: number): void {
  const V = Math.floor(table.length / C);
  for (let r = 0; r < R; r++) {
    if (!(ids[r]! >= 0 && ids[r]! < V)) throw new Error(`embedding: token id ${ids[r]} at row ${r} is outside ${table.label} [${V}, ${C}]`);
  }
}

/** crossEntropy: every target (host-visible) lies in [0, V) or is the ignore index −100. */
export function checkTargets(targets: ArrayLike<number>, R: number, V: number): void {
  for (let r = 0; r < R; r++) {
    const t = targets[r]!;
    if (t !== -100 && !(t >= 0 && t < V)) throw new Error(`crossEntropy: target ${t} at row ${r} is outside [0, ${V}) and is not the ignore index -100`);
  }
}

/** softcap's cap: a positive finite number. */
export function checkSoftcap(cap: number): void {
  if (!(cap > 0 && cap < Infinity)) throw new Error(`softcap: cap must be a positive finite number, got ${cap}`);
}

/** crossEntropy's fused soft-cap: 0 (none) or a positive finite number. */
export function checkCrossEntropySoftcap(softcap: number): void {
  if (!(softcap >= 0 && softcap < Infinity)) throw new Error(`crossEntropy: softcap must be 0 (none) or a positive finite number, got ${softcap}`);
}

/** addUniformNoise's scale: a finite number ≥ 0. */
export function checkNoiseScale(scale: number): void {
  if (!(Number.isFinite(scale) && scale >= 0)) throw new Error(`addUniformNoise: scale must be a finite number >= 0, got ${scale}`);
}

/** dropout's p: in [0, 1). */
export function checkDropout(p: number): void {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
}

/** What a backend's attention kernels take beyond the contract: head dims up to `maxHeadDim`, multiples of `headDimStep`. */
export interface AttentionLimits {
  maxHeadDim: number;
  headDimStep: number;
}

/**
 * attention and attentionBackward (`what`): KVH ≥ 1 dividing H, 0 ≤ pos0, pos0 + T ≤ S ≤ kvStride,
 * a head dim the backend's kernels take (`limits`), the options (checkAttentionOptions); and for
 * the backward pos0 = 0 (training has no KV cache).
 */
export function checkAttention(s: AttentionShape, what: 'attention' | 'attentionBackward', limits: AttentionLimits = { maxHeadDim: Infinity, headDimStep: 1 }): void {
  const bad = (m: string) => new Error(`${what}: ${m} (B ${s.B}, T ${s.T}, S ${s.S}, H ${s.H}, KVH ${s.KVH}, D ${s.D}, pos0 ${s.pos0}, kvStride ${s.kvStride})`);
  if (!(s.KVH >= 1 && s.H % s.KVH === 0)) throw bad('H must be a multiple of KVH');
  if (!(s.pos0 >= 0)) throw bad('pos0 must be ≥ 0');
  if (!(s.pos0 + s.T <= s.S)) throw bad('pos0 + T exceeds S');
  if (!(s.S <= s.kvStride)) throw bad('S exceeds kvStride');
  const { maxHeadDim: max, headDimStep: step } = limits;
  if (!(s.D >= 1 && s.D % step === 0 && s.D <= max)) {
    throw bad(`this backend's attention kernels take head dims${step > 1 ? ` that are multiples of ${step}` : ''} up to ${max}`);
  }
  if (what === 'attentionBackward' && s.pos0 !== 0) throw bad('pos0 must be 0 (training has no KV cache)');
  checkAttentionOptions(s, what);
}

/**
 * The one reading of AttentionShape's options, for every backend: scale (default f32(1 / f32(√D)),
 * the bits the kernels computed before scale was an option: f32 √ and ÷ are correctly rounded),
 * soft-cap (0: none) and window (0: unlimited; a window no query can exceed is passed as 0).
 */
export function attentionParams(s: AttentionShape): { scale: number; softcap: number; window: number } {
  const w = s.window ?? 0;
  return { scale: s.scale ?? Math.fround(1 / Math.fround(Math.sqrt(s.D))), softcap: s.softcap ?? 0, window: w < s.pos0 + s.T ? w : 0 };
}
