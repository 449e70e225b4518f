// Which backends the kernel tests run against the reference. The reference is the oracle;
// every other backend that can start here is tested. With CI=true a backend that cannot start
// is a failure, not a skip (the WebGPU tests must run for real in CI).
import type { Backend } from '../../src/backend/backend.ts';

export interface NamedBackend { name: string; backend: Backend }

let cached: Promise<NamedBackend[]> | null = null;

/** Backends under test (not including the reference). Created once per test process. */
export function backendsUnderTest(): Promise<NamedBackend[]> {
  cached ??= (async () => {
    const out: NamedBackend[] = [];
    const only = process.env.WEBQLORA_TEST_BACKENDS?.split(',');
    const want = (n: string) => !only || only.includes(n);
    if (want('wasm') || want('wasm-simd128')) {
      const { createWasmBackend } = await import('../../src/backend/wasm/index.ts');
      // as the Node entry points do: relaxed SIMD on (Node 20 has it behind a flag), so the relaxed
      // build is tested here too, next to the plain SIMD128 one
      (await import('../../src/backend/wasm/node-flags.ts')).enableRelaxedSimd();
      const { relaxedSimdSupported } = await import('../../src/backend/wasm/module.ts');
      // 'wasm': the default build (relaxed SIMD where the engine validates it, as in Chromium);
      // 'wasm-simd128': plain SIMD128, what engines without relaxed SIMD (Firefox, Safari) run.
      // Where relaxed SIMD is missing the default already is SIMD128: one backend, not two.
      if (want('wasm')) out.push({ name: 'wasm', backend: await createWasmBackend() });
      if (want('wasm-simd128') && (relaxedSimdSupported() || !want('wasm'))) out.push({ name: 'wasm-simd128', backend: await createWasmBackend({ relaxedSimd: false }) });
    }
    if (want('webgpu')) {
      try {
        const { dawnGpu } = await import('../../src/backend/webgpu/dawn.ts');
        const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu ?? (await dawnGpu());
        if (!gpu) throw new Error('WebGPU is not available: no navigator.gpu and the `webgpu` package (Dawn) is not installed');
        const mod = await import('../../src/backend/webgpu/index.ts');
        const be = await mod.createWebGpuBackend({ gpu });
        out.push({ name: 'webgpu', backend: be });
      } catch (e) {
        if (process.env.CI === 'true') throw e;
        // outside CI a machine without WebGPU simply tests fewer backends
      }
    }
    return out;
  })();
  return cached;
}
