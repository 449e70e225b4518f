// What a 4-bit quantized tensor is, in exactly bitsandbytes' terms (QLORA_SPEC.md §2-4).

/** 4-bit data types. nf4 and fp4 are bitsandbytes formats; int4 exists for comparison only. */
export type QuantType = 'nf4' | 'fp4' | 'int4';
/** What `--quant` accepts: a 4-bit type, or none (keep float32). */
export type QuantMode = QuantType | 'none';

export const QTYPE_CODE: Record<QuantType, number> = { nf4: 0, fp4: 1, int4: 2 };
export const ALLOWED_BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096] as const;
export const NESTED_BLOCKSIZE = 256;

/** Second-level quantization of the absmax vector (QLoRA §3, "double quantization"). */
export interface DoubleQuant {
  /** u8 [nb]: 8-bit codes of (absmax - offset), blockwise over NESTED blocks. */
  codes: Uint8Array;
  /** f32 [ceil(nb / nestedBlocksize)]: absmax of each nested block. */
  nestedAbsmax: Float32Array;
  /** f32 [256]: the code the nested values were quantized with (read from the file, never assumed). */
  nestedQuantMap: Float32Array;
  /** float32 mean of the first-level absmax. */
  offset: number;
  nestedBlocksize: number;
}

/**
 * One blockwise 4-bit tensor. Blocks are runs of the row-major flat array and may straddle rows.
 * n = numel(shape); nb = ceil(n / blocksize).
 */
export interface Quant4Tensor {
  quantType: QuantType;
  blocksize: number;
  /** Original shape, [out, in] for a Linear weight. */
  shape: number[];
  /** dtype of the tensor when it was quantized (the default dequantization dtype). */
  dtype: 'F32' | 'F16' | 'BF16';
  /** u8 [ceil(n/2)]: codes, element 2k in the high nibble of byte k. */
  packed: Uint8Array;
  /** f32 [16]: the value of each code. */
  quantMap: Float32Array;
  /** f32 [nb] first-level absmax, or null when double-quantized (then see dq). */
  absmax: Float32Array | null;
  dq: DoubleQuant | null;
}

export function numBlocks(n: number, blocksize: number): number {
  return Math.ceil(n / blocksize);
}

/**
 * Storage of a quantized tensor in bytes (packed codes + scales): of a Quant4Tensor, or of any
 * holder of the same parts (a backend upload, a paged layer's host copy).
 */
export function quantBytes(q: Pick<Quant4Tensor, 'packed' | 'quantMap' | 'absmax'> & { dq: Pick<DoubleQuant, 'codes' | 'nestedAbsmax' | 'nestedQuantMap'> | null }): number {
  let b = q.packed.byteLength + q.quantMap.byteLength;
  if (q.absmax) b += q.absmax.byteLength;
  if (q.dq) b += q.dq.codes.byteLength + q.dq.nestedAbsmax.byteLength + q.dq.nestedQuantMap.byteLength;
  return b;
}

/** Bytes a tensor of n elements takes when quantized this way (for memory estimates). */
export function quantBytesFor(n: number, blocksize: number, doubleQuant: boolean): number {
  const nb = numBlocks(n, blocksize);
  return Math.ceil(n / 2) + 64 + (doubleQuant ? nb + 4 * Math.ceil(nb / NESTED_BLOCKSIZE) + 1024 : 4 * nb);
}
