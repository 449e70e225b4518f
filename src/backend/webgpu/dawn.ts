// The Node-only loader of Dawn (npm package `webgpu`, an optional dependency). The only file of
// the WebGPU backend that may touch Node: everything else receives the GPU object it returns.
import process from 'node:process';

let cached: Promise<GPU | null> | null = null;

/**
 * Dawn's GPU object, or null when the `webgpu` package is not installed. Created once per
 * process. Dawn's Vulkan loader wants XDG_RUNTIME_DIR; /tmp is used when it is unset.
 */
export function dawnGpu(): Promise<GPU | null> {
  cached ??= (async () => {
    process.env.XDG_RUNTIME_DIR ??= '/tmp';
    let mod: { create: (flags: string[]) => GPU };
    try {
      // a variable specifier: bundlers must not try to resolve the optional native package
      const name = 'webgpu';
      mod = (await import(name)) as typeof mod;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return null;
      throw e;
    }
    return mod.create([]);
  })();
  return cached;
}
