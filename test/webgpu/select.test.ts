// Backend choice (src/backend/index.ts createBackend): `auto` takes WebGPU only on a real GPU and
// says why it did not otherwise; `webgpu` either starts or throws a WebqloraError — never a silent
// fallback. describeAdapter recognises CPU emulations from GPUAdapterInfo.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createBackend } from '../../src/backend/index.ts';
import { describeAdapter } from '../../src/backend/webgpu/index.ts';
import { WebqloraError } from '../../src/errors.ts';
import { testGpu } from './gpu.ts';

const fakeAdapter = (info: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean }) => ({ info }) as unknown as GPUAdapter;

test('describeAdapter: lavapipe, SwiftShader and fallback adapters are CPU emulations; a GPU is not', () => {
  assert.equal(describeAdapter(fakeAdapter({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15', description: 'llvmpipe: Mesa 25.0.7' })), { name: 'lavapipe', cpu: true });
  assert.equal(describeAdapter(fakeAdapter({ vendor: 'google', description: 'SwiftShader Device (Subzero)' })), { name: 'SwiftShader', cpu: true });
  assert.ok(describeAdapter(fakeAdapter({ vendor: 'microsoft', description: 'Microsoft Basic Render Driver', isFallbackAdapter: true })).cpu);
  assert.equal(describeAdapter(fakeAdapter({ vendor: 'nvidia', architecture: 'ada', description: 'NVIDIA GeForce RTX 4090' })), { name: 'NVIDIA GeForce RTX 4090', cpu: false });
  assert.equal(describeAdapter(fakeAdapter({ vendor: 'apple', architecture: 'metal-3' })).cpu, false);
});

test('auto on this machine: WebGPU only on a real GPU, and the message says which and why', async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' }))!;
  const a = describeAdapter(adapter);
  const msgs: string[] = [];
  const be = await createBackend({ prefer: 'auto', gpu, onInfo: (m) => msgs.push(m) });
  if (a.cpu) {
    assert.is(be.name, 'wasm');
    assert.is(msgs.length, 1);
    assert.match(msgs[0]!, /^backend: wasm, \d+ threads? .*\(the only WebGPU adapter, /);
    assert.ok(msgs[0]!.endsWith(`(the only WebGPU adapter, ${a.name}, is a CPU emulation; use --backend webgpu to force it)`), msgs[0]);
  } else {
    assert.is(be.name, 'webgpu');
    assert.equal(msgs, [`backend: webgpu (${a.name})`]);
  }
  await be.destroy();
});

test('webgpu forced: starts on whatever adapter there is, and says so', async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const msgs: string[] = [];
  const be = await createBackend({ prefer: 'webgpu', gpu, onInfo: (m) => msgs.push(m) });
  assert.is(be.name, 'webgpu');
  assert.is(msgs.length, 1);
  assert.match(msgs[0]!, /^backend: webgpu \(/);
  await be.destroy();
});

test('no WebGPU: auto says so and uses wasm; webgpu is a WebqloraError', async () => {
  const msgs: string[] = [];
  const be = await createBackend({ prefer: 'auto', gpu: null, onInfo: (m) => msgs.push(m) });
  assert.is(be.name, 'wasm');
  assert.is(msgs.length, 1);
  assert.match(msgs[0]!, /^backend: wasm, \d+ threads? .*\(WebGPU is not available here\)$/);
  await be.destroy();
  try {
    await createBackend({ prefer: 'webgpu', gpu: null });
    assert.unreachable('webgpu without WebGPU must throw');
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.match((e as Error).message, /--backend webgpu: WebGPU is not available/);
  }
  // an entry point without adapters (a browser with WebGPU disabled by policy)
  const none = { requestAdapter: async () => null } as unknown as GPU;
  msgs.length = 0;
  const be2 = await createBackend({ prefer: 'auto', gpu: none, onInfo: (m) => msgs.push(m) });
  assert.is(be2.name, 'wasm');
  assert.is(msgs.length, 1);
  assert.match(msgs[0]!, /^backend: wasm, \d+ threads? .*\(no WebGPU adapter\)$/);
  await be2.destroy();
  try {
    await createBackend({ prefer: 'webgpu', gpu: none });
    assert.unreachable('webgpu without an adapter must throw');
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.match((e as Error).message, /no WebGPU adapter/);
  }
});

test.run();
