// embedding: out[r, :] = table[ids[r], :] for f32, f16 and bf16 tables (half values widened
// exactly). (a) reference against the definition, (c) parity, exact. The table is frozen in
// QLoRA, so there is no backward, and no (b).
import { test } from 'uvu';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { f32ToBf16, f32ToF16 } from '../../src/num.ts';
import { parity, randn, refF32, runCase, type Case, type Typed } from './harness.ts';

/** Random values exactly representable in `type` (so the expected widening is known without
 *  a conversion routine): multiples of 1/256 below 8 for f16, of 1/16 below 16 for bf16. */
function table(rng: Rng, n: number, type: 'f32' | 'f16' | 'bf16'): { values: Float32Array; input: Float32Array | Typed } {
  if (type === 'f32') { const v = randn(rng, n); return { values: v, input: v }; }
  const step = type === 'f16' ? 256 : 16, lim = type === 'f16' ? 2047 : 255;
  const values = Float32Array.from({ length: n }, () => (rng.int(2 * lim + 1) - lim) / step);
  const bits = Uint16Array.from(values, type === 'f16' ? f32ToF16 : f32ToBf16);
  return { values, input: { type, data: bits } };
}

function ids(rng: Rng, R: number, V: number): Int32Array {
  const a = Int32Array.from({ length: R }, () => rng.int(V));
  a[0] = V - 1; // the last row, and a repeat
  if (R > 2) a[R - 1] = a[1]!;
  return a;
}

test('embedding reference: rows gathered exactly from f32, f16 and bf16 tables', async () => {
  const rng = new Rng(1001);
  const R = 9, C = 13, V = 20;
  for (const type of ['f32', 'f16', 'bf16'] as const) {
    const { values, input } = table(rng, V * C, type);
    const id = ids(rng, R, V);
    const got = (await runCase(refF32, { what: 'embedding', inputs: { table: input, id }, outputs: { out: R * C }, run: (be, t) => be.embedding(t.out!, t.table!, t.id!, R, C) })).out!;
    const want = new Float32Array(R * C);
    for (let r = 0; r < R; r++) want.set(values.subarray(id[r]! * C, (id[r]! + 1) * C), r * C);
    assertBitsEqual(got, want, `embedding ${type}`);
  }
});

test('embedding parity (exact)', async () => {
  const rng = new Rng(1002);
  const cases: Case[] = [];
  for (const type of ['f32', 'f16', 'bf16'] as const) {
    for (const [R, C] of [[1, 5], [7, 64], [64, 130]] as const) {
      const V = 50;
      const { input } = table(rng, V * C, type);
      cases.push({ what: `embedding ${type} R${R} C${C}`, inputs: { table: input, id: ids(rng, R, V) }, outputs: { out: R * C }, run: (be, t) => be.embedding(t.out!, t.table!, t.id!, R, C) });
    }
  }
  await parity(cases, { atol: 0, rtol: 0, why: 'a gather: bit-identical' });
});

test.run();
