// Where the parts of a 4-bit weight lie in the WASM kernel memory, and how they are written there.
// Loads no kernels, so the memory estimate (src/backend/counting.ts) allocates exactly what the
// wasm backend allocates without loading them. The descriptor the kernels read (assembly/abi.ts)
// and its writer (writeQ4Desc) are generated from one table by scripts/gen-tables.mjs.
import type { QuantUpload } from '../backend.ts';
import { Q4_DESC_BYTES, writeQ4Desc } from '../abi.ts';

/** Alignment of every part (one cache line; keeps f32 parts v128-aligned). */
const PART_ALIGN = 64;

/** Indices into WasmQuantLayout.offs. */
const QPART = { DESC: 0, MAP: 1, NESTED_MAP: 2, NESTED_ABSMAX: 3, ABSMAX_OR_CODES: 4, PACKED: 5 } as const;

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
  const parts = [Q4_DESC_BYTES, 16 * 4, dq ? 256 * 4 : 0, dq ? Math.ceil(nb / nestedBlocksize) * 4 : 0, dq ? nb : nb * 4, Math.ceil(n / 2)];
  const offs: number[] = [];
  let total = 0;
  for (const b of parts) {
    offs.push(total);
    total += Math.ceil(b / PART_ALIGN) * PART_ALIGN;
  }
  return { offs, total, nb };
}

/**
 * Writes weight w into the allocation at byte `base` of the kernel memory (laid out by
 * wasmQuantLayout for w's shape): its parts, then the descriptor that points at them. w has been
 * checked (validate.ts checkQuantUpload): every part has exactly the length its shape implies.
 */
export function writeWasmQuant(memory: ArrayBufferLike, base: number, w: QuantUpload): void {
  const { offs } = wasmQuantLayout(w.N, w.K, w.blocksize, w.dq ? w.dq.nestedBlocksize : null), dq = w.dq;
  const at = (part: number) => base + offs[part]!;
  const f32 = (part: number, a: Float32Array) => new Float32Array(memory, at(part), a.length).set(a);
  const u8 = (part: number, a: Uint8Array) => new Uint8Array(memory, at(part), a.length).set(a);
  f32(QPART.MAP, w.quantMap);
  if (dq) {
    f32(QPART.NESTED_MAP, dq.nestedQuantMap);
    f32(QPART.NESTED_ABSMAX, dq.nestedAbsmax);
    u8(QPART.ABSMAX_OR_CODES, dq.codes);
  } else {
    f32(QPART.ABSMAX_OR_CODES, w.absmax!);
  }
  u8(QPART.PACKED, w.packed);
  writeQ4Desc(new DataView(memory, base, Q4_DESC_BYTES), {
    packed: at(QPART.PACKED), quantMap: at(QPART.MAP), absmax: dq ? 0 : at(QPART.ABSMAX_OR_CODES), codes: dq ? at(QPART.ABSMAX_OR_CODES) : 0,
    nestedAbsmax: dq ? at(QPART.NESTED_ABSMAX) : 0, nestedMap: dq ? at(QPART.NESTED_MAP) : 0, offset: dq ? dq.offset : 0,
    blocksize: w.blocksize, nestedBlocksize: dq ? dq.nestedBlocksize : 1, N: w.N, K: w.K,
  });
}
