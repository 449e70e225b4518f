// Shared test utilities: seeded randomness, fixture paths, tolerance checks that report the
// first failing index with expected and actual values (STYLE.md §10).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = join(REPO, 'test', 'fixtures');
export const VECTORS = join(REPO, 'test', 'vectors', 'bnb');
export const STORIES_GGUF = join(REPO, 'assets', 'stories260K.gguf');
export const STORIES_BIN = join(FIXTURES, 'models', 'stories260K', 'stories260K.bin');
export const STORIES_HF = join(FIXTURES, 'models', 'stories260K', 'hf');

/** Seeded PRNG (mulberry32). Never use Math.random in tests. */
export class Rng {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0; }
  /** uniform in [0, 1) */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number { return Math.floor(this.next() * n); }
  normal(): number {
    const u = 1 - this.next(), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  f32(n: number, scale = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * scale;
    return a;
  }
  uniform(n: number, lo = -1, hi = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * this.next();
    return a;
  }
}

/** |a - b| <= atol + rtol*|ref| element-wise; throws naming the first bad index. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, opts: { atol?: number; rtol?: number; what?: string } = {}): void {
  const atol = opts.atol ?? 0, rtol = opts.rtol ?? 0;
  if (actual.length !== expected.length) throw new Error(`${opts.what ?? 'arrays'}: length ${actual.length}, expected ${expected.length}`);
  let worst = 0, worstAt = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    const err = Math.abs(a - e);
    const tol = atol + rtol * Math.abs(e);
    if (!(err <= tol)) {
      throw new Error(`${opts.what ?? 'arrays'}: index ${i}: expected ${e}, got ${a} (|diff| ${err} > ${tol}; atol ${atol}, rtol ${rtol})`);
    }
    if (err > worst) { worst = err; worstAt = i; }
  }
  void worstAt;
}

/** Bit-exact equality of two typed arrays (compares the raw bytes, so -0 != +0 and NaN bits count). */
export function assertBitsEqual(actual: ArrayBufferView, expected: ArrayBufferView, what = 'arrays'): void {
  const a = new Uint8Array(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = new Uint8Array(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.length !== e.length) throw new Error(`${what}: ${a.length} bytes, expected ${e.length}`);
  const el = (expected as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) {
      const k = Math.floor(i / el);
      const av = (actual as unknown as ArrayLike<number>)[k], ev = (expected as unknown as ArrayLike<number>)[k];
      throw new Error(`${what}: element ${k} differs: expected ${ev}, got ${av}`);
    }
  }
}

/** Fills with NaN (floats) or 0xAB bytes so a kernel that skips an output element is caught. */
export function poison<T extends Float32Array | Uint8Array | Int32Array>(a: T): T {
  if (a instanceof Float32Array) a.fill(NaN);
  else if (a instanceof Uint8Array) a.fill(0xab);
  else a.fill(0x7badbeef);
  return a;
}

/** A config as the model computes with it: the variant made explicit, the source's raw config.json dropped. */
export function mathConfig(c: import('../../src/model/config.ts').ModelConfig): unknown {
  const { hfConfig: _raw, ...rest } = c;
  return { ...rest, variant: variantOfConfig(c) };
}
import { variantOf as variantOfConfig } from '../../src/model/config.ts';

/** f() must throw (or reject with) a WebqloraError whose message contains every one of `parts`. */
export async function rejectsUser(f: () => unknown, ...parts: string[]): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (!(e instanceof WebqloraErrorForTests)) throw new Error(`expected a WebqloraError, got ${(e as Error)?.stack ?? e}`);
    for (const p of parts) if (!e.message.includes(p)) throw new Error(`message ${JSON.stringify(e.message)} lacks ${JSON.stringify(p)}`);
    return;
  }
  throw new Error(`expected an error with ${parts.join(', ')}`);
}
import { WebqloraError as WebqloraErrorForTests } from '../../src/errors.ts';

/** A PEFT adapter directory loaded onto a backend, the directory's files closed afterwards. */
export async function loadAdapterAt(path: string, ...rest: [Parameters<typeof loadAdapterForTests>[1], Parameters<typeof loadAdapterForTests>[2], Parameters<typeof loadAdapterForTests>[3]?]): Promise<Awaited<ReturnType<typeof loadAdapterForTests>>> {
  const dir = new NodeDirSourceForTests(path);
  try {
    return await loadAdapterForTests(dir, ...rest);
  } finally {
    await dir.close();
  }
}
import { loadAdapter as loadAdapterForTests } from '../../src/model/peft.ts';
import { NodeDirSource as NodeDirSourceForTests } from '../../src/io/node.ts';
