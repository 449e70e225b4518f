// webqlora's Q8_0 / Q4_0 writers round exactly as ggml's quantize_row_q8_0_ref / _q4_0_ref:
// roundf (halfway away from zero, not JavaScript's Math.round) and the float32 sum x·id + 8.5f
// before the cut. Hand-made blocks at the halfway points, where the two roundings differ.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { quantizeQ4_0, quantizeQ8_0 } from '../../src/io/gguf-write.ts';

test('Q8_0: roundf sends ±2.5 to ±3 (d = 1)', () => {
  const v = new Float32Array(32);
  v.set([127, -2.5, 2.5, -0.5, 0.5, 1.5]);
  const q = new Int8Array(quantizeQ8_0(v).buffer, 2, 32);
  assert.equal([...q.subarray(0, 6)], [127, -3, 3, -1, 1, 2]);
});

test('Q4_0: x·id + 8.5 is summed in float32 before the cut (d = −1)', () => {
  const y = 6.5 - 2 ** -21; // 15 − 2⁻²¹ in float64 truncates to 14; float32 rounds the sum to 15
  const v = new Float32Array(32);
  v.set([8, -y, -6.5]);
  const b = quantizeQ4_0(v);
  const lo = (j: number) => b[2 + j]! & 15;
  assert.equal([lo(0), lo(1), lo(2)], [0, 15, 15]);
});

test.run();
