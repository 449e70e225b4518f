// writeQuant (layer paging): refilling a resident 4-bit weight gives exactly what a fresh upload
// of the new weight gives, on every backend; a weight of another layout is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, QuantUpload } from '../../src/backend/backend.ts';
import { quantize4bit } from '../../src/quant/quantize.ts';
import { Rng, assertBitsEqual } from '../helpers/index.ts';
import { refF32, targets } from './harness.ts';

async function upload(N: number, K: number, seed: number, dq: boolean): Promise<QuantUpload> {
  const q = await quantize4bit(new Rng(seed).f32(N * K, 0.05), { quantType: 'nf4', blocksize: 64, doubleQuant: dq, shape: [N, K] });
  return { N, K, blocksize: 64, quantType: 'nf4', packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: `w${seed}` };
}

async function run(be: Backend, dq: boolean): Promise<void> {
  const N = 48, K = 80, M = 5;
  const a = await upload(N, K, 1, dq), b = await upload(N, K, 2, dq);
  const x = be.alloc('f32', M * K, 'x'), y1 = be.alloc('f32', M * N, 'y1'), y2 = be.alloc('f32', M * N, 'y2');
  be.write(x, new Rng(3).f32(M * K));
  const slot = be.uploadQuant(a), fresh = be.uploadQuant(b);
  be.qMatmul(y1, x, slot, M); // enqueued before the refill: must see the old weight
  const old = Float32Array.from((await be.read(y1)) as Float32Array);
  be.writeQuant(slot, b);
  be.qMatmul(y1, x, slot, M);
  be.qMatmul(y2, x, fresh, M);
  const refilled = (await be.read(y1)) as Float32Array;
  assertBitsEqual(refilled, (await be.read(y2)) as Float32Array, `${be.name} refilled slot`);
  assert.ok(old.some((v, i) => v !== refilled[i]), `${be.name}: the output changed with the weight`);
  const other = await upload(N, K + 64, 4, dq);
  assert.throws(() => be.writeQuant(slot, other), /writeQuant/);
  for (const t of [x, y1, y2]) be.free(t);
  be.freeQuant(slot);
  be.freeQuant(fresh);
}

test('writeQuant refills a slot exactly like a fresh upload (plain and double-quant)', async () => {
  for (const be of [refF32, ...(await targets()).map((t) => t.backend)]) {
    await run(be, false);
    await run(be, true);
  }
});

test.run();
