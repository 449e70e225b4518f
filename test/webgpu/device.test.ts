// Device loss: once the GPU device is gone (driver reset, tab in the background too long, or
// here device.destroy()), every call of the backend throws a WebqloraError saying so — never a
// silent fallback to another backend and never garbage results.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebqloraError } from '../../src/errors.ts';
import { webgpuInternals } from '../../src/backend/webgpu/index.ts';
import { testWebGpu } from './gpu.ts';

test('after the device is lost every call throws "the GPU device was lost"', async () => {
  const be = await testWebGpu();
  if (!be) return;
  const x = be.alloc('f32', 64, 'x'), y = be.alloc('f32', 64, 'y');
  be.write(x, new Float32Array(64).fill(2));
  be.add(y, x, 64);
  assert.ok(((await be.read(x)) as Float32Array).every((v) => v === 2), 'works before the loss');
  const { device } = webgpuInternals(be);
  device.destroy();
  const info = await device.lost;
  assert.is(info.reason, 'destroyed');
  await new Promise((r) => setTimeout(r, 0));
  const lost = (f: () => unknown, what: string) => {
    try {
      f();
    } catch (e) {
      assert.instance(e, WebqloraError, `${what}: not a WebqloraError: ${(e as Error).message}`);
      assert.match((e as Error).message, /the GPU device was lost \(destroyed/, what);
      return;
    }
    assert.unreachable(`${what} did not throw`);
  };
  const lostAsync = async (p: () => Promise<unknown>, what: string) => {
    try {
      await p();
    } catch (e) {
      assert.instance(e, WebqloraError, `${what}: not a WebqloraError: ${(e as Error).message}`);
      assert.match((e as Error).message, /the GPU device was lost/, what);
      return;
    }
    assert.unreachable(`${what} did not throw`);
  };
  lost(() => be.add(y, x, 64), 'add');
  lost(() => be.matmul(y, x, x, 8, 8, 8), 'matmul');
  lost(() => be.alloc('f32', 4, 'z'), 'alloc');
  lost(() => be.write(x, new Float32Array(4)), 'write');
  lost(() => be.fill(x, 1), 'fill');
  await lostAsync(() => be.read(y), 'read');
  await lostAsync(() => be.flush(), 'flush');
});

test('a read in flight when the device is lost rejects with the same error', async () => {
  const be = await testWebGpu();
  if (!be) return;
  const x = be.alloc('f32', 1 << 16, 'x');
  be.fill(x, 1);
  const pending = be.read(x);
  webgpuInternals(be).device.destroy();
  try {
    await pending;
    // the copy may have completed before the loss: then the data must be right
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.match((e as Error).message, /the GPU device was lost/);
  }
  await webgpuInternals(be).device.lost;
  try {
    await be.read(x);
    assert.unreachable('read after the loss');
  } catch (e) {
    assert.match((e as Error).message, /the GPU device was lost/);
  }
});

test.run();
