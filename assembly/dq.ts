// bitsandbytes' double-quantization rule, in one place for the recovery kernel (quant.ts
// dq_recover_absmax) and the fused 4-bit GEMMs (qgemm.ts, on the fly). Not exported from index.ts.

/**
 * First-level absmax of a block from its 8-bit code q and the absmax of its nested block nb
 * (QLoRA §3, bnb dequantize_4bit with a nested state):
 *   absmax = f32(f32(nested_map[q] · nested_absmax[nb]) + offset)
 */
@inline export function dqAbsmaxRule(nestedMap: usize, q: usize, nestedAbsmax: usize, nb: usize, offset: f32): f32 {
  const v: f32 = load<f32>(nestedMap + (q << 2)) * load<f32>(nestedAbsmax + (nb << 2));
  return v + offset;
}
