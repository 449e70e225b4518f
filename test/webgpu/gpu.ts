// How the WebGPU-specific tests get a device: Dawn in Node (src/backend/webgpu/dawn.ts). Outside
// CI a machine without WebGPU skips them; with CI=true that is a failure (as test/kernels/backends.ts).
import type { Backend } from '../../src/backend/backend.ts';
import { dawnGpu } from '../../src/backend/webgpu/dawn.ts';
import { createWebGpuBackend, type WebGpuOptions } from '../../src/backend/webgpu/index.ts';

/** Dawn's GPU, or null (then the caller skips) unless CI=true, where a missing WebGPU throws. */
export async function testGpu(): Promise<GPU | null> {
  let gpu: GPU | null = null;
  let err: unknown = null;
  try {
    gpu = await dawnGpu();
    if (gpu && !(await gpu.requestAdapter())) gpu = null;
  } catch (e) {
    err = e;
  }
  if (!gpu && process.env.CI === 'true') throw new Error(`WebGPU did not start (${err ? (err as Error).message : 'no adapter / no webgpu package'}): CI requires it`);
  return gpu;
}

/** A fresh WebGPU backend (each test file owns its devices), or null when WebGPU is unavailable outside CI. */
export async function testWebGpu(opts: Omit<WebGpuOptions, 'gpu'> = {}): Promise<Backend | null> {
  const gpu = await testGpu();
  return gpu ? createWebGpuBackend({ ...opts, gpu }) : null;
}
