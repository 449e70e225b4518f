// Dequantization of a 4-bit weight held as bitsandbytes stores it (backend.ts QuantWeight), for
// the kernels that read one: gemm.wgsl's fused 4-bit GEMMs and dora.wgsl's row norms. The
// including file defines q4_word(i) (word i of the binding that holds the weight's parts) and
// the Params fields q_packed, q_map, q_bs, q_absmax, q_dq, q_codes, q_nmap, q_nabsmax, q_nbs,
// q_offset and one.

/** Byte j of the byte array starting at word `base` of the weight's binding. */
fn byte_at(base: u32, j: u32) -> u32 {
  return (q4_word(base + (j >> 2u)) >> ((j & 3u) * 8u)) & 0xffu;
}

/** absmax of block blk: f32, or bnb's double-quant rule f32(f32(nmap[code]·nabsmax[blk / nbs]) + offset). */
fn absmax_of(blk: u32) -> f32 {
  if (P.q_dq == 0u) {
    return bitcast<f32>(q4_word(P.q_absmax + blk));
  }
  let prod = bitcast<f32>(q4_word(P.q_nmap + byte_at(P.q_codes, blk))) * bitcast<f32>(q4_word(P.q_nabsmax + blk / P.q_nbs));
  // Two roundings, bit-exact with bnb. A GPU compiler may contract x·y + z into one fma;
  // multiplying the rounded product by a runtime 1.0 first makes that harmless:
  // fma(prod, 1, offset) rounds once, exactly like prod + offset.
  return prod * P.one + P.q_offset;
}

/** deq(W) at flat index i = n·K + k: f32(map[code_i] · absmax_(i / bs)), code_i the high nibble for even i. */
fn deq(i: u32) -> f32 {
  let bt = byte_at(P.q_packed, i >> 1u);
  let code = select(bt & 15u, bt >> 4u, (i & 1u) == 0u);
  return bitcast<f32>(q4_word(P.q_map + code)) * absmax_of(i / P.q_bs);
}
