// Numbers every layer needs: element counts and the exact IEEE half / bfloat16 conversions.
// A bottom-level module (imports nothing), so backends and quant use it without reaching up
// into io/ (io/dtype.ts builds the tensor-file conversions on it).

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
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

/** out[i] = the f16 or bf16 bits of values[i] (round to nearest even), for i < values.length; returns out. */
export function toHalfBits(values: Float32Array, type: 'f16' | 'bf16', out: Uint16Array): Uint16Array {
  if (type === 'f16') for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]!);
  else for (let i = 0; i < values.length; i++) out[i] = f32ToBf16(values[i]!);
  return out;
}
