// Exact widening of half-precision bits to f32 (f16/bf16 embedding tables and lm_head). Integer
// arithmetic only, so subnormals, infinities and NaN payloads come through unchanged on every
// GPU (unpack2x16float may flush f16 subnormals). Half arrays live in array<u32>: element e is
// the low half of word e/2 when e is even (little-endian, as written by the host).

fn f16_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    // zero or subnormal: m·2⁻²⁴, exact (and normal) in f32
    return bitcast<f32>(bitcast<u32>(f32(m) * 5.9604644775390625e-8) | sign);
  }
  if (e == 31u) {
    return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
  }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn bf16_to_f32(h: u32) -> f32 {
  return bitcast<f32>(h << 16u);
}

/** The 16 bits of half element e from the word that holds it. */
fn half_of(word: u32, e: u32) -> u32 {
  return (word >> ((e & 1u) * 16u)) & 0xffffu;
}
