// Element types of tensor files and conversions to and from float32.
import { WebqloraError } from '../errors.ts';

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

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const cvtBuf = new DataView(new ArrayBuffer(4));

/** IEEE half → float32 (exact). */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 → IEEE half, round to nearest even (as torch's .to(float16)). */
export function f32ToF16(x: number): number {
  cvtBuf.setFloat32(0, x, true);
  const f = cvtBuf.getUint32(0, true);
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const man = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = man | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** bfloat16 bits → float32 (exact). */
export function bf16ToF32(b: number): number {
  cvtBuf.setUint32(0, b << 16, true);
  return cvtBuf.getFloat32(0, true);
}

/** float32 → bfloat16 bits, round to nearest even; NaN stays NaN. */
export function f32ToBf16(x: number): number {
  cvtBuf.setFloat32(0, x, true);
  const f = cvtBuf.getUint32(0, true);
  if ((f & 0x7fffffff) > 0x7f800000) return ((f >>> 16) | 0x40) & 0xffff;
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
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
  const out = new Uint16Array(values.length);
  if (dtype === 'F16') for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]!);
  else for (let i = 0; i < values.length; i++) out[i] = f32ToBf16(values[i]!);
  return new Uint8Array(out.buffer);
}
