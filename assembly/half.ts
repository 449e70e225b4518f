// Exact widening of half-precision operands (f16 / bf16 embedding and lm_head tables, kept in
// the checkpoint's precision) to f32, four lanes or one element at a time. Element types are the
// ELEM_TYPE_* codes of abi.ts (generated; the host passes the same codes). Callers pass the type
// as a literal to these @inline helpers so the optimizer keeps one branch-free copy per type.
import { ELEM_TYPE_F32, ELEM_TYPE_BF16 } from './abi';

/** 2¹¹² as f32 bits: rebiases an f16 exponent (bias 15) to f32 (bias 127), subnormals included. */
const REBIAS: u32 = 0x77800000;

/** Four f16 values (one per u32 lane, zero-extended) → f32x4, exact (subnormals, ±inf, NaN). */
@inline export function f16x4ToF32(h: v128): v128 {
  const sign = i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16);
  const em = v128.and(h, i32x4.splat(0x7fff));
  const shifted = i32x4.shl(em, 13);
  // normal and subnormal halves: the bits shifted into place are the value · 2⁻¹¹², exactly
  const finite = f32x4.mul(shifted, f32x4.splat(reinterpret<f32>(REBIAS)));
  const special = v128.or(shifted, i32x4.splat(0x7f800000)); // exponent 31 → 255 (inf / NaN)
  const isSpecial = i32x4.ge_u(em, i32x4.splat(0x7c00));
  return v128.or(v128.bitselect(special, finite, isSpecial), sign);
}

@inline export function f16ToF32(h: u32): f32 {
  const em = h & 0x7fff;
  const shifted = em << 13;
  const v: u32 = em >= 0x7c00 ? shifted | 0x7f800000 : reinterpret<u32>(reinterpret<f32>(shifted) * reinterpret<f32>(REBIAS));
  return reinterpret<f32>(v | ((h & 0x8000) << 16));
}

/** Bytes per element of type elemType. */
@inline export function elemBytes(elemType: i32): usize {
  return elemType == ELEM_TYPE_F32 ? 4 : 2;
}

/** Four consecutive elements of type elemType at p as f32x4. */
@inline export function load4(p: usize, elemType: i32): v128 {
  if (elemType == ELEM_TYPE_F32) return v128.load(p);
  const h = v128.load16x4_u(p);
  if (elemType == ELEM_TYPE_BF16) return i32x4.shl(h, 16);
  return f16x4ToF32(h);
}

/** One element of type elemType at p as f32. */
@inline export function load1(p: usize, elemType: i32): f32 {
  if (elemType == ELEM_TYPE_F32) return load<f32>(p);
  const h = <u32>load<u16>(p);
  if (elemType == ELEM_TYPE_BF16) return reinterpret<f32>(h << 16);
  return f16ToF32(h);
}
