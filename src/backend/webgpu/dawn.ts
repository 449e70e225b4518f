// The Node-only loader of Dawn (npm package `webgpu`, an optional dependency). The only file of
// the WebGPU backend that may touch Node: everything else receives the GPU object it returns.
import { execFile } from 'node:child_process';
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import process from 'node:process';
import { describeAdapter } from './index.ts';

let cached: Promise<GPU | null> | null = null;
let quiet = false;

export interface DawnOptions {
  /**
   * Keep what Dawn itself prints on stderr while it looks for adapters (such as "Warning:
   * maxDynamicUniformBuffersPerPipelineLayout artificially reduced …", printed for CPU emulations
   * like lavapipe) from reaching the terminal. The last call's setting holds.
   */
  quiet?: boolean;
  /**
   * For a caller that passes over CPU emulations (`--backend auto`): when quiet and stderr cannot
   * be silenced here (a socket, a regular file), look for the adapter in a child process first,
   * and load Dawn here only when it found a real GPU. Otherwise the GPU returned only describes
   * the adapter the child saw (or none): it creates no device.
   */
  probeFirst?: boolean;
}

/**
 * Dawn's GPU object, or null when the `webgpu` package is not installed. Created once per
 * process. Dawn's Vulkan loader wants XDG_RUNTIME_DIR; /tmp is used when it is unset.
 */
export async function dawnGpu(opts: DawnOptions = {}): Promise<GPU | null> {
  if (opts.quiet !== undefined) quiet = opts.quiet;
  if (quiet && opts.probeFirst && !cached && !stderrCanBeSilenced()) {
    const probe = await probeInChild();
    if (probe === 'no-package') return null;
    if (probe !== 'unknown' && (probe.info === null || describeAdapter({ info: probe.info } as unknown as GPUAdapter).cpu)) return describingGpu(probe.info);
  }
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
    const gpu = mod.create([]);
    // Dawn discovers adapters, and prints its warnings with fprintf(stderr), synchronously inside
    // the first requestAdapter call: when quiet, that call alone runs with stderr on /dev/null.
    const request = gpu.requestAdapter;
    gpu.requestAdapter = (o?: GPURequestAdapterOptions) => (quiet ? withoutStderr(() => request.call(gpu, o)) : request.call(gpu, o));
    return gpu;
  })();
  return cached;
}

/** GPUAdapterInfo's fields, as the child process reports them. */
type AdapterInfoFields = Pick<GPUAdapterInfo, 'vendor' | 'architecture' | 'device' | 'description'> & { isFallbackAdapter?: boolean };

// The child: Dawn's preferred adapter, printed as JSON; its stderr is dropped. Dawn can keep a
// process alive, hence the exit.
const PROBE = `const { create } = await import(process.argv[1]);
const a = await create([]).requestAdapter({ powerPreference: 'high-performance' });
const i = a && a.info;
process.stdout.write(JSON.stringify({ info: i ? { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, isFallbackAdapter: i.isFallbackAdapter } : null }));
process.exit(0);`;

/** Dawn's preferred adapter as a child process sees it: 'unknown' if the child fails. */
async function probeInChild(): Promise<{ info: AdapterInfoFields | null } | 'no-package' | 'unknown'> {
  let url: string;
  try {
    const name = 'webgpu'; // a variable: bundlers must not resolve the optional native package
    url = import.meta.resolve(name);
  } catch {
    return 'no-package';
  }
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', PROBE, url], { timeout: 60_000, encoding: 'utf8' }, (err, stdout) => {
      if (err) return resolve('unknown');
      try {
        resolve(JSON.parse(stdout) as { info: AdapterInfoFields | null });
      } catch {
        resolve('unknown');
      }
    });
  });
}

/** A GPU that only describes one adapter (or none): requestDevice always fails. */
function describingGpu(info: AdapterInfoFields | null): GPU {
  const adapter = info && {
    info, isFallbackAdapter: info.isFallbackAdapter ?? false, features: new Set(), limits: {},
    requestDevice: () => Promise.reject(new Error('this adapter was only described by a probe; it creates no device')),
  };
  return { requestAdapter: async () => adapter, wgslLanguageFeatures: new Set() } as unknown as GPU;
}

/** Whether withoutStderr can point descriptor 2 elsewhere and back (a tty or a pipe). */
function stderrCanBeSilenced(): boolean {
  return reopenFlags() !== null;
}

/** The flags that re-open stderr by path, or null where that cannot be done safely. */
function reopenFlags(): number | null {
  if (fdPath(2) === null) return null;
  try {
    fstatSync(0); fstatSync(1); // both open: the descriptor freed below is the lowest one, 2
    const st = fstatSync(2);
    if (st.isSocket() || (st.isFile() && process.platform === 'linux')) return null;
  } catch {
    return null;
  }
  return constants.O_WRONLY | constants.O_NOCTTY;
}

/** The path that re-opens an open descriptor, where the platform has one. */
function fdPath(fd: number): string | null {
  if (process.platform === 'linux') return `/proc/self/fd/${fd}`;
  if (process.platform === 'darwin') return `/dev/fd/${fd}`;
  return null;
}

/**
 * Runs the synchronous `fn` with file descriptor 2 on /dev/null, then puts stderr back: native
 * code writes to the descriptor directly, so redirecting the descriptor is the only way to keep its
 * lines away. Node has no dup(), so the original is re-opened by path (/proc/self/fd/2: the same
 * tty or pipe). A regular file is left alone on Linux: its re-opened copy would have an offset of
 * its own, and a shell writing to the same file afterwards would overwrite our lines. Sockets,
 * Windows and closed stdio are left alone too.
 */
function withoutStderr<T>(fn: () => T): T {
  const flags = reopenFlags();
  if (flags === null) return fn();
  let saved: number;
  try {
    saved = openSync(fdPath(2)!, flags);
  } catch {
    return fn();
  }
  closeSync(2);
  const nul = openSync('/dev/null', 'w'); // 2, unless another thread opened a file just now
  try {
    return fn();
  } finally {
    closeSync(nul);
    if (nul === 2) openSync(fdPath(saved)!, flags); // lands on 2 again
    closeSync(saved);
  }
}
