// Element types of tensor files and conversions of whole tensors to and from float32 (one
// element at a time: src/num.ts).
import { WebqloraError } from '../errors.ts';
import { f16ToF32, toHalfBits } from '../num.ts';

/** safetensors dtype names (also used for tensors from every other format). */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'U16' | 'U32' | 'U64' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, U64: 8, BOOL: 1,
};

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** torch dtype names as they appear in config.json and bnb quant_state JSON. */
export const TORCH_DTYPE: Partial<Record<DType, string>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };
export function dtypeFromTorch(name: string): 'F32' | 'F16' | 'BF16' | null {
  const n = name.replace(/^torch\./, '');
  if (n === 'float32' || n === 'float') return 'F32';
  if (n === 'float16' || n === 'half') return 'F16';
  if (n === 'bfloat16') return 'BF16';
  return null;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Little-endian raw bytes of a float tensor → float32 values (into `into` when it has exactly n
 * elements; `into` may be a view at any offset of a larger buffer).
 */
export function toFloat32(bytes: Uint8Array, dtype: DType, what: string, into?: Float32Array): Float32Array {
  const n = bytes.length / DTYPE_BYTES[dtype];
  const out = into && into.length === n ? into : new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true));
      return out;
    case 'BF16': {
      // out.byteOffset is a multiple of 4 (a Float32Array view), so a Uint32Array view fits it.
      const u = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    default:
      throw new WebqloraError(`${what}: dtype ${dtype} is not a floating-point type (expected F32, F16 or BF16).`);
  }
}

/** float32 values → little-endian raw bytes of `dtype` (F32, F16 or BF16; round to nearest even). */
export function fromFloat32(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  return new Uint8Array(toHalfBits(values, dtype === 'F16' ? 'f16' : 'bf16', new Uint16Array(values.length)).buffer);
}
