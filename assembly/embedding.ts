// Embedding gather (backend.ts): Backend.embedding ↔ embedding. f16 / bf16 tables (kept in the
// checkpoint's precision) are widened exactly (half.ts). Work range: rows [r0, r1).
import { ELEM_TYPE_F32, ELEM_TYPE_F16, ELEM_TYPE_BF16 } from './abi';
import { load4, load1 } from './half';

/**
 * out[r, :] = table[ids[r], :]. out f32 [R, C]; table [V, C] of element type elemType (ELEM_TYPE_* of abi.ts:
 * f32, f16, bf16; halves widened exactly); ids i32 [R] (checked by the caller). Rows [r0, r1).
 */
export function embedding(out: usize, table: usize, ids: usize, C: i32, elemType: i32, r0: i32, r1: i32): void {
  if (elemType == ELEM_TYPE_F32) {
    const rb = <usize>C << 2;
    for (let r = r0; r < r1; r++) memory.copy(out + <usize>r * rb, table + <usize>load<i32>(ids + (<usize>r << 2)) * rb, rb);
  } else if (elemType == ELEM_TYPE_F16) widenRows(out, table, ids, C, r0, r1, ELEM_TYPE_F16);
  else widenRows(out, table, ids, C, r0, r1, ELEM_TYPE_BF16);
}

@inline function widenRows(out: usize, table: usize, ids: usize, C: i32, r0: i32, r1: i32, elemType: i32): void {
  for (let r = r0; r < r1; r++) {
    const src = table + <usize>load<i32>(ids + (<usize>r << 2)) * (<usize>C << 1);
    const dst = out + ((<usize>r * <usize>C) << 2);
    let c: i32 = 0;
    for (; c + 4 <= C; c += 4) v128.store(dst + (<usize>c << 2), load4(src + (<usize>c << 1), elemType));
    for (; c < C; c++) store<f32>(dst + (<usize>c << 2), load1(src + (<usize>c << 1), elemType));
  }
}
