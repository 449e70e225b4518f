// Dequantization of a 4-bit weight held as bitsandbytes stores it (QLORA_SPEC §2-4, backend.ts
// QuantWeight), for the kernels that read one: qgemm.ts's fused GEMMs and dora.ts's row norms
// (wgsl/q4.wgsl is the same for the shaders). The weight is described by the descriptor the host
// writes at upload (abi.ts, generated with its TS writer from scripts/gen-tables.mjs):
//   element e = f32(quant_map[code_e] · absmax[e / bs]), code_e the HIGH nibble of byte e/2 for even e
//   DQ:  absmax_b = f32(f32(nested_map[q_b] · nested_absmax[b / nbs]) + offset)   (bnb, QLoRA §3)
// Blocks are runs of the flat N·K array and may straddle rows.
import { descPacked, descQuantMap, descAbsmax, descCodes, descNestedAbsmax, descNestedMap, descOffset, descBlocksize, descNestedBlocksize } from './abi';
import { decode16 } from './lut16';
import { dqAbsmaxRule } from './dq';

/** absmax of block b, recovered from double quantization on the fly when needed. */
@inline function absmaxOf(d: usize, b: usize): f32 {
  const am = descAbsmax(d);
  if (am != 0) return load<f32>(am + (b << 2));
  return dqAbsmax(d, b, b / descNestedBlocksize(d));
}

/** Double-quantized absmax of block b, whose nested block is nb = b / nbs. */
@inline function dqAbsmax(d: usize, b: usize, nb: usize): f32 {
  return dqAbsmaxRule(descNestedMap(d), <usize>load<u8>(descCodes(d) + b), descNestedAbsmax(d), nb, descOffset(d));
}

/** a / m, by a shift when m is a power of two (block sizes always are; bnb allows no others). */
@inline function div(a: usize, m: usize): usize {
  return (m & (m - 1)) == 0 ? a >> <usize>ctz(m) : a / m;
}

/** Code of flat element e (high nibble for even e). */
@inline function codeAt(packed: usize, e: usize): usize {
  const byte = <usize>load<u8>(packed + (e >> 1));
  return (e & 1) ? byte & 15 : byte >> 4;
}

/**
 * dst[0..n) = deq(W) flat elements [e0, e0 + n): 16 at a time with the byte-swizzle lookup
 * (lut16.ts, planes p0..p3 of the weight's quant map) where a run is nibble-aligned and inside
 * one block, one at a time otherwise. The block (and nested block) index is divided out once per
 * call and then stepped: an integer division per 64-element block cost as much as decoding the
 * block. (An @inline wrapper of one call: asc warns, AS112, on any exported function with v128
 * parameters, though this one never leaves the module.)
 */
@inline export function deqRange(d: usize, p0: v128, p1: v128, p2: v128, p3: v128, e0: usize, n: i32, dst: usize): void {
  deqRangeImpl(d, p0, p1, p2, p3, e0, n, dst);
}

function deqRangeImpl(d: usize, p0: v128, p1: v128, p2: v128, p3: v128, e0: usize, n: i32, dst: usize): void {
  const packed = descPacked(d), map = descQuantMap(d), bs = descBlocksize(d), am = descAbsmax(d), nbs = descNestedBlocksize(d);
  const end = e0 + <usize>n;
  let e = e0;
  let o = dst;
  let b = div(e0, bs);
  let blockEnd = (b + 1) * bs;
  let nb: usize = am != 0 ? 0 : div(b, nbs);
  let nr: usize = am != 0 ? 0 : b - nb * nbs;
  while (e < end) {
    const bEnd = min(end, blockEnd);
    const a = am != 0 ? load<f32>(am + (b << 2)) : dqAbsmax(d, b, nb);
    if ((e & 1) != 0) {
      store<f32>(o, load<f32>(map + (codeAt(packed, e) << 2)) * a);
      e++; o += 4;
    }
    const av = f32x4.splat(a);
    while (e + 16 <= bEnd) {
      decode16(packed + (e >> 1), p0, p1, p2, p3, av, o);
      e += 16; o += 64;
    }
    while (e < bEnd) {
      store<f32>(o, load<f32>(map + (codeAt(packed, e) << 2)) * a);
      e++; o += 4;
    }
    b++;
    blockEnd += bs;
    if (++nr == nbs) { nr = 0; nb++; }
  }
}

/** Plain scalar dequantization of flat elements [e0, e0 + n) (the v1 path). */
export function deqRangeScalar(d: usize, e0: usize, n: i32, dst: usize): void {
  const packed = descPacked(d), map = descQuantMap(d), bs = descBlocksize(d);
  for (let i: i32 = 0; i < n; i++) {
    const e = e0 + <usize>i;
    store<f32>(dst + (<usize>i << 2), load<f32>(map + (codeAt(packed, e) << 2)) * absmaxOf(d, e / bs));
  }
}
