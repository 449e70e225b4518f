// WASM quantization kernels against the plain-TS reference on fresh seeded inputs: every
// blocksize, odd and tail sizes, every 4-bit type, and a tensor long enough to cross the
// wrapper's chunk boundary. Exact equality is required (both follow bnb's float32 rules).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { quantize4bit, dequantize4bit, effectiveAbsmax, quantizeBlockwise8, dequantizeBlockwise8, sliceQuantRows } from '../../src/quant/quantize.ts';
import { quantize4bitRef, dequantize4bitRef, quantizeBlockwise8Ref, dequantizeBlockwise8Ref, dqRecoverAbsmaxRef } from '../../src/backend/reference/quant.ts';
import { ALLOWED_BLOCKSIZES, type QuantType } from '../../src/quant/types.ts';
import { DYNAMIC_SIGNED } from '../../src/quant/tables.ts';

const TYPES: QuantType[] = ['nf4', 'fp4', 'int4'];

function input(rng: Rng, n: number): Float32Array {
  const x = rng.f32(n, 0.02);
  // a few outliers, exact zeros and a zero block so every branch is taken
  for (let k = 0; k < Math.min(8, n); k++) x[rng.int(n)] = (rng.next() - 0.5) * 10;
  for (let k = 0; k < Math.min(8, n); k++) x[rng.int(n)] = 0;
  return x;
}

test('quantize_4bit / dequantize_4bit: wasm == reference for every blocksize and type', async () => {
  const rng = new Rng(1);
  for (const bs of ALLOWED_BLOCKSIZES) {
    for (const n of [1, 2, 31, bs - 1, bs, bs + 1, 3 * bs + 7, 5000 + (bs % 7)]) {
      if (n < 1) continue;
      const x = input(rng, n);
      for (const t of TYPES) {
        const q = await quantize4bit(x, { quantType: t, blocksize: bs });
        const r = quantize4bitRef(x, bs, t);
        assertBitsEqual(q.packed, r.packed, `${t} bs${bs} n${n} packed`);
        assertBitsEqual(q.absmax!, r.absmax, `${t} bs${bs} n${n} absmax`);
        const d = await dequantize4bit(q);
        assertBitsEqual(d, dequantize4bitRef(r.packed, n, bs, q.quantMap, r.absmax), `${t} bs${bs} n${n} dequant`);
      }
    }
  }
});

test('chunked path: a tensor longer than one kernel chunk', async () => {
  const rng = new Rng(2);
  const n = (1 << 20) * 2 + 64 * 3 + 5;
  const x = rng.f32(n, 0.05);
  const q = await quantize4bit(x, { quantType: 'nf4', blocksize: 64, doubleQuant: true });
  const r = quantize4bitRef(x, 64, 'nf4');
  assertBitsEqual(q.packed, r.packed, 'packed');
  const d = await dequantize4bit(q);
  const am = dqRecoverAbsmaxRef(q.dq!.codes, 256, q.dq!.nestedQuantMap, q.dq!.nestedAbsmax, q.dq!.offset);
  assertBitsEqual(d, dequantize4bitRef(r.packed, n, 64, q.quantMap, am), 'dequant');
});

test('double quantization: wasm == reference, and the error it adds is small', async () => {
  const rng = new Rng(3);
  for (const n of [64 * 256, 64 * 300 + 17, 4096 * 3]) {
    const x = rng.f32(n, 0.02);
    const q = await quantize4bit(x, { quantType: 'nf4', blocksize: 64, doubleQuant: true });
    const plain = quantize4bitRef(x, 64, 'nf4');
    const dq = q.dq!;
    const centred = plain.absmax.map((a) => a - dq.offset);
    const r8 = quantizeBlockwise8Ref(centred, 256);
    assertBitsEqual(dq.codes, r8.q, 'nested codes');
    assertBitsEqual(dq.nestedAbsmax, r8.absmax, 'nested absmax');
    const rec = await effectiveAbsmax(q);
    assertBitsEqual(rec, dqRecoverAbsmaxRef(r8.q, 256, DYNAMIC_SIGNED, r8.absmax, dq.offset), 'recovered absmax');
    // 8-bit dynamic codes keep each absmax within ~1% of the block range of the centred values
    let worst = 0;
    for (let b = 0; b < rec.length; b++) worst = Math.max(worst, Math.abs(rec[b]! - plain.absmax[b]!) / plain.absmax[b]!);
    assert.ok(worst < 0.05, `worst relative absmax error ${worst}`);
  }
});

test('8-bit blockwise: wasm == reference', async () => {
  const rng = new Rng(4);
  for (const bs of [64, 256, 4096]) {
    for (const n of [1, 255, 256, 1000, 5003]) {
      const x = input(rng, n);
      const q = await quantizeBlockwise8(x, bs);
      const r = quantizeBlockwise8Ref(x, bs);
      assertBitsEqual(q.q, r.q, `q bs${bs} n${n}`);
      assertBitsEqual(q.absmax, r.absmax, `absmax bs${bs} n${n}`);
      assertBitsEqual(await dequantizeBlockwise8(q.q, bs, DYNAMIC_SIGNED, q.absmax), dequantizeBlockwise8Ref(r.q, bs, DYNAMIC_SIGNED, r.absmax), `dequant bs${bs} n${n}`);
    }
  }
});

test('quantization error is bounded by half the widest code gap times absmax', async () => {
  const rng = new Rng(5);
  const x = rng.f32(64 * 100, 0.02);
  for (const t of TYPES) {
    const q = await quantize4bit(x, { quantType: t, blocksize: 64 });
    const d = await dequantize4bit(q);
    const sorted = [...q.quantMap].sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < sorted.length; i++) gap = Math.max(gap, sorted[i]! - sorted[i - 1]!);
    for (let i = 0; i < x.length; i++) {
      const bound = (gap / 2) * q.absmax![Math.floor(i / 64)]! * (1 + 1e-6);
      assert.ok(Math.abs(d[i]! - x[i]!) <= bound, `${t}: element ${i}: ${x[i]} -> ${d[i]} exceeds ${bound}`);
    }
  }
});

test('a blocksize bnb does not support is a clear error', async () => {
  try {
    await quantize4bit(new Float32Array(100), { quantType: 'nf4', blocksize: 100 });
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /blocksize 100 is not supported/);
  }
});

test('sliceQuantRows: a row slice dequantizes to exactly those rows of the whole (double quant kept on a nested-block boundary, else recovered absmax)', async () => {
  const rng = new Rng(91);
  // K 64, blocksize 64: a row is one block; 256 blocks per nested block
  const N = 600, K = 64, w = rng.f32(N * K, 0.05);
  for (const doubleQuant of [true, false]) {
    const q = await quantize4bit(w, { quantType: 'nf4', blocksize: 64, doubleQuant, shape: [N, K] });
    const whole = await dequantize4bit(q);
    for (const [row0, rows, keepsDq] of [[0, 100, true], [256, 300, true], [64, 128, false], [512, 88, true], [100, 1, false]] as const) {
      const s = sliceQuantRows(q, row0, rows);
      assert.equal(s.shape, [rows, K]);
      assert.is(s.dq !== null, doubleQuant && keepsDq, `dq kept for rows ${row0}+${rows}`);
      assertBitsEqual(await dequantize4bit(s), whole.subarray(row0 * K, (row0 + rows) * K), `rows ${row0}+${rows}${doubleQuant ? ' dq' : ''}`);
    }
  }
  const q = await quantize4bit(rng.f32(8 * 48, 0.05), { quantType: 'nf4', blocksize: 64, doubleQuant: false, shape: [8, 48] });
  assert.throws(() => sliceQuantRows(q, 1, 2), /does not start a 64-block/);
});

test.run();
