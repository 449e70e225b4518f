// writeQuant (layer paging): refilling a resident 4-bit weight gives exactly what a fresh upload
// of the new weight gives, on every backend, also when the new weight has another, smaller shape
// (the slot takes it; paging shares one slot among all linears) and back; a larger weight or one
// of another kind is refused. uploadQuant
// and writeQuant refuse parts of the wrong length by name, before writing anything (a longer
// `packed` once overwrote the neighbouring weight).
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
  assert.throws(() => be.writeQuant(slot, other), /writeQuant w1: \[48, 144\] .*does not fit the slot of 3840 elements/);
  // a smaller shape (another N and K, fewer blocks) and back to the slot's own
  const Ns = 24, Ks = 128, small = await upload(Ns, Ks, 5, dq), freshSmall = be.uploadQuant(small);
  const xs = be.alloc('f32', M * Ks, 'xs'), ys1 = be.alloc('f32', M * Ns, 'ys1'), ys2 = be.alloc('f32', M * Ns, 'ys2');
  be.write(xs, new Rng(6).f32(M * Ks));
  be.writeQuant(slot, small);
  assert.equal([slot.N, slot.K], [Ns, Ks], `${be.name}: the slot has the new shape`);
  be.qMatmul(ys1, xs, slot, M);
  be.qMatmul(ys2, xs, freshSmall, M);
  assertBitsEqual((await be.read(ys1)) as Float32Array, (await be.read(ys2)) as Float32Array, `${be.name} slot refilled with [${Ns}, ${Ks}]`);
  be.writeQuant(slot, b);
  be.qMatmul(y1, x, slot, M);
  assertBitsEqual((await be.read(y1)) as Float32Array, (await be.read(y2)) as Float32Array, `${be.name} slot refilled back to [${N}, ${K}]`);
  for (const t of [xs, ys1, ys2]) be.free(t);
  be.freeQuant(freshSmall);
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

/** u with one part replaced (a copy; u itself is left alone). */
function withPart(u: QuantUpload, part: 'packed' | 'absmax' | 'codes' | 'nestedAbsmax' | 'nestedBlocksize', delta: number): QuantUpload {
  const grow = <T extends Uint8Array | Float32Array>(a: T): T => {
    const b = new (a.constructor as new (n: number) => T)(a.length + delta);
    b.set(delta >= 0 ? a : a.subarray(0, b.length));
    if (delta > 0) b.fill(0x77, a.length); // what a longer part would write past the slot
    return b;
  };
  if (part === 'packed') return { ...u, packed: grow(u.packed) };
  if (part === 'absmax') return { ...u, absmax: grow(u.absmax!) };
  const dq = u.dq!;
  if (part === 'codes') return { ...u, dq: { ...dq, codes: grow(dq.codes) } };
  if (part === 'nestedAbsmax') return { ...u, dq: { ...dq, nestedAbsmax: grow(dq.nestedAbsmax) } };
  return { ...u, dq: { ...dq, nestedBlocksize: dq.nestedBlocksize + delta } };
}

test('uploadQuant / writeQuant refuse a part of the wrong length, by name, and leave every weight as it was (reference, wasm)', async () => {
  const backends = [refF32, ...(await targets()).filter((t) => t.name.startsWith('wasm')).map((t) => t.backend)];
  for (const be of backends) {
    for (const dq of [false, true]) {
      // [48, 80] bs64: 60 blocks, 1920 packed bytes; DQ: one nested block of 256
      const a = await upload(48, 80, 11, dq), b = await upload(48, 80, 12, dq), c = await upload(48, 80, 13, dq);
      const M = 3, x = be.alloc('f32', M * 80, 'x'), y = be.alloc('f32', M * 48, 'y');
      be.write(x, new Rng(14).f32(M * 80));
      const slot = be.uploadQuant(a), neighbour = be.uploadQuant(c);
      const result = async (w: typeof slot) => { be.qMatmul(y, x, w, M); return Float32Array.from((await be.read(y)) as Float32Array); };
      const slotBefore = await result(slot), neighbourBefore = await result(neighbour);
      const bad: Array<[string, QuantUpload, RegExp]> = [
        ['packed +1', withPart(b, 'packed', 1), /packed has 1921 bytes, \[48, 80\] needs 1920/],
        ['packed +64', withPart(b, 'packed', 64), /packed has 1984 bytes/],
        ['packed -1', withPart(b, 'packed', -1), /packed has 1919 bytes/],
      ];
      if (dq) {
        bad.push(
          ['nested absmax +1', withPart(b, 'nestedAbsmax', 1), /nested absmax has 2 entries, expected 1/],
          ['dq codes -1', withPart(b, 'codes', -1), /dq codes have 59 entries, expected 60/],
        );
      } else {
        bad.push(['absmax +1', withPart(b, 'absmax', 1), /absmax has 61 entries, expected 60/]);
      }
      for (const [what, u, msg] of bad) {
        const tag = `${be.name} dq ${dq} ${what}`;
        assert.throws(() => be.uploadQuant(u), (e: Error) => /^uploadQuant w12: /.test(e.message) && msg.test(e.message), `${tag}: uploadQuant`);
        assert.throws(() => be.writeQuant(slot, u), (e: Error) => /^writeQuant w12: /.test(e.message) && msg.test(e.message), `${tag}: writeQuant`);
      }
      if (dq) {
        // same lengths, another nested blocksize: not the slot's layout
        assert.throws(() => be.writeQuant(slot, withPart(b, 'nestedBlocksize', -128)), /writeQuant w11: .*does not fit the slot of/, `${be.name}: nested blocksize`);
      }
      assertBitsEqual(await result(slot), slotBefore, `${be.name} dq ${dq}: the slot after the refused writes`);
      assertBitsEqual(await result(neighbour), neighbourBefore, `${be.name} dq ${dq}: the neighbouring weight after the refused writes`);
      be.writeQuant(slot, b); // the well-formed weight still goes in
      assert.ok((await result(slot)).some((v, i) => v !== slotBefore[i]), `${be.name} dq ${dq}: a good refill after the refusals`);
      be.free(x); be.free(y);
      be.freeQuant(slot); be.freeQuant(neighbour);
    }
  }
});


test('checkQuantUpload refuses a shape that is not whole numbers', async () => {
  const { checkQuantUpload } = await import('../../src/backend/validate.ts');
  const q = await quantize4bit(new Float32Array(64).fill(0.5), { quantType: 'nf4', blocksize: 64, shape: [2, 32] });
  const u = { N: 1.5, K: 2, blocksize: 64, quantType: 'nf4' as const, packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: null, label: 'frac' };
  assert.throws(() => checkQuantUpload(u), /^uploadQuant frac: \[1\.5, 2\] blocksize 64 is not a valid weight$/);
});
test.run();
