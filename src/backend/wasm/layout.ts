// Where the parts of a 4-bit weight lie in the WASM kernel memory. A plain function with no
// imports, so the memory estimate (src/backend/counting.ts) allocates exactly what the wasm
// backend allocates without loading the kernels.

/**
 * Bytes of the descriptor read by assembly/qgemm.ts (u32 words): 0 packed, 1 quant_map,
 * 2 absmax (0 with DQ), 3 dq codes, 4 nested absmax, 5 nested map, 6 offset (f32), 7 bs, 8 nbs,
 * 9 N, 10 K.
 */
export const DESC_BYTES = 64;

/** Alignment of every part (one cache line; keeps f32 parts v128-aligned). */
const PART_ALIGN = 64;

/** Indices into WasmQuantLayout.offs. */
export const QPART = { DESC: 0, MAP: 1, NESTED_MAP: 2, NESTED_ABSMAX: 3, ABSMAX_OR_CODES: 4, PACKED: 5 } as const;

export interface WasmQuantLayout {
  /** byte offset of each part from the start of the allocation (QPART order) */
  offs: number[];
  /** bytes of the whole allocation (a multiple of 64) */
  total: number;
  /** first-level blocks */
  nb: number;
}

/**
 * A 4-bit [N, K] weight is one allocation: descriptor | quant map f32[16] | nested map f32[256] |
 * nested absmax f32[ceil(nb / nbs)] | absmax f32[nb] or dq codes u8[nb] | packed codes
 * u8[ceil(N·K / 2)], each part 64-byte aligned (the DQ-only parts are empty without DQ).
 * nestedBlocksize: null when the weight is not double-quantized.
 */
export function wasmQuantLayout(N: number, K: number, blocksize: number, nestedBlocksize: number | null): WasmQuantLayout {
  const n = N * K, nb = Math.ceil(n / blocksize), dq = nestedBlocksize !== null;
  const parts = [DESC_BYTES, 16 * 4, dq ? 256 * 4 : 0, dq ? Math.ceil(nb / nestedBlocksize) * 4 : 0, dq ? nb : nb * 4, Math.ceil(n / 2)];
  const offs: number[] = [];
  let total = 0;
  for (const b of parts) {
    offs.push(total);
    total += Math.ceil(b / PART_ALIGN) * PART_ALIGN;
  }
  return { offs, total, nb };
}
