// Choosing a backend. `auto` picks WebGPU when a GPU adapter is available and says so; it never
// falls back silently: an explicit `webgpu` that cannot start is an error.
import type { Backend } from './backend.ts';
import { WebqloraError } from '../errors.ts';

export type BackendChoice = 'auto' | 'wasm' | 'webgpu' | 'reference';

export interface CreateBackendOptions {
  prefer?: BackendChoice;
  /** WASM worker threads (default: all cores when shared memory is available). */
  threads?: number;
  /** The WebGPU entry point: navigator.gpu in browsers, Dawn's GPU in Node (src/backend/webgpu/dawn.ts). */
  gpu?: GPU | null;
  /** Told which backend was chosen and why. */
  onInfo?: (message: string) => void;
}

export async function createBackend(opts: CreateBackendOptions = {}): Promise<Backend> {
  const prefer = opts.prefer ?? 'auto';
  const gpu = opts.gpu !== undefined ? opts.gpu : (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu ?? null;
  const info = (m: string) => opts.onInfo?.(m);
  if (prefer === 'reference') {
    const { createReferenceBackend } = await import('./reference/index.ts');
    info('backend: reference');
    return createReferenceBackend();
  }
  if (prefer === 'webgpu' || prefer === 'auto') {
    const { createWebGpuBackend, describeAdapter } = await import('./webgpu/index.ts');
    let why: string;
    if (!gpu) {
      if (prefer === 'webgpu') throw new WebqloraError('--backend webgpu: WebGPU is not available here (no navigator.gpu, and in Node the optional `webgpu` package is not installed); use --backend wasm.');
      why = 'WebGPU is not available here';
    } else {
      let adapter: GPUAdapter | null;
      try {
        adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
      } catch (e) {
        if (prefer === 'webgpu') throw new WebqloraError(`--backend webgpu: requesting a WebGPU adapter failed (${(e as Error).message}); use --backend wasm.`);
        adapter = null;
      }
      if (!adapter) {
        if (prefer === 'webgpu') throw new WebqloraError('--backend webgpu: no WebGPU adapter is available (is a GPU driver installed?); use --backend wasm.');
        why = 'no WebGPU adapter';
      } else {
        const a = describeAdapter(adapter);
        if (prefer === 'webgpu' || !a.cpu) {
          // an explicit webgpu, or a real GPU under auto: it must start (no silent fallback)
          const be = await createWebGpuBackend({ gpu, adapter });
          info(`backend: webgpu (${a.name}${a.cpu ? ', a CPU emulation: expect it to be slow' : ''})`);
          return be;
        }
        why = `the only WebGPU adapter, ${a.name}, is a CPU emulation; use --backend webgpu to force it`;
      }
    }
    return wasm(opts, why);
  }
  return wasm(opts, null);
}

/** The WASM backend, announced in one line: how it runs, and why not WebGPU when that applies. */
async function wasm(opts: CreateBackendOptions, whyNotGpu: string | null): Promise<Backend> {
  const { createWasmBackend, wasmBackendInfo } = await import('./wasm/index.ts');
  const be = await createWasmBackend({ threads: opts.threads });
  const how = wasmBackendInfo(be).summary.replace(/^wasm:\s*/, '');
  opts.onInfo?.(`backend: wasm, ${how}${whyNotGpu ? ` (${whyNotGpu})` : ''}`);
  return be;
}
