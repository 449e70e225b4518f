// Checks every backend shares at its boundary (STYLE.md §6: validate once, trust inside).
import type { AttentionShape, BufferType, QuantUpload, QuantWeight, Tensor } from './backend.ts';

/** Bytes per element of each buffer type. */
export const BUFFER_BYTES: Record<BufferType, number> = { f32: 4, i32: 4, u8: 1, f16: 2, bf16: 2 };

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

/** What a resident 4-bit slot must share with a weight written into it (writeQuant). */
export interface QuantSlotShape extends QuantWeight {
  /** nested blocksize of a double-quantized slot (ignored otherwise) */
  readonly nestedBlocksize: number;
}

/** writeQuant: the new weight is well-formed and has exactly the slot's layout. */
export function checkSameQuant(slot: QuantSlotShape, u: QuantUpload): void {
  checkQuantUpload(u, 'writeQuant');
  const same = slot.N === u.N && slot.K === u.K && slot.blocksize === u.blocksize && slot.quantType === u.quantType
    && slot.doubleQuant === (u.dq !== null) && (!u.dq || u.dq.nestedBlocksize === slot.nestedBlocksize);
  if (!same) {
    throw new Error(`writeQuant ${slot.label}: [${u.N}, ${u.K}] ${u.quantType} bs${u.blocksize}${u.dq ? ' dq' : ''} does not fit the slot [${slot.N}, ${slot.K}] ${slot.quantType} bs${slot.blocksize}${slot.doubleQuant ? ' dq' : ''}`);
  }
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
  if (t.type !== 'i32') throw new Error(`${what}: docStart ${t.label} is ${t.type}, expected i32`);
  if (!(rows <= t.length)) throw new Error(`${what}: docStart ${t.label} holds ${t.length} entries, ${rows} rows need one each`);
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
