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
  if (prefer === 'reference') {
    const { createReferenceBackend } = await import('./reference/index.ts');
    return createReferenceBackend();
  }
  if (prefer === 'webgpu') throw new WebqloraError('--backend webgpu: this build has no WebGPU backend yet (use --backend wasm).');
  if (prefer === 'auto') opts.onInfo?.(`backend: wasm (${gpu ? 'WebGPU backend not built yet' : 'no WebGPU adapter'})`);
  const { createWasmBackend } = await import('./wasm/index.ts');
  const be = await createWasmBackend({ threads: opts.threads });
  if (prefer === 'wasm') opts.onInfo?.('backend: wasm');
  return be;
}
