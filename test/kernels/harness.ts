// Shared machinery of the kernel tests (test/kernels/<family>.test.ts):
//  - `refF32` / `refF64`: the reference backend in its float32-oracle and float64 precisions;
//  - `targets()`: the backends under test;
//  - `parity()`: one seeded case run on the reference and on every backend under test, outputs
//    poisoned (NaN) before the kernel, compared with |a − b| ≤ atol + rtol·|ref|;
//  - `fdCheck()`: central finite differences in float64 against an analytic gradient;
//  - small float64 helpers for the naive formulas the tests write out by hand.
import type { Backend, BufferType, QuantUpload, QuantWeight, Tensor } from '../../src/backend/backend.ts';
import { createReferenceBackend, type ReferenceBackend } from '../../src/backend/reference/index.ts';
import { backendsUnderTest, type NamedBackend } from './backends.ts';
import { assertClose, Rng } from '../helpers/index.ts';

export type Host = Float32Array | Int32Array | Uint8Array | Uint16Array;

/** The float32 oracle every parity test compares against. */
export const refF32: ReferenceBackend = createReferenceBackend();
/** Float64 reference, for finite-difference checks only. */
export const refF64: ReferenceBackend = createReferenceBackend({ precision: 'f64' });

/** A tolerance |a − b| ≤ atol + rtol·|ref| and the one-line reason it is what it is. */
export interface Tol { atol: number; rtol: number; why: string }

/** float32 unit roundoff 2⁻²⁴. */
export const U32 = 2 ** -24;

/**
 * Backends that are slow enough (WebGPU on a CPU emulator) that parity cases marked `heavy`
 * are skipped for them. Trim here, not in the test files.
 */
export const LIGHT_BACKENDS = new Set<string>([]);

/** Extra backends under test pushed by a driver script (e.g. deliberately broken kernels, to
 *  check that the tests fail); empty in normal runs. */
export const extraTargets: NamedBackend[] = [];

/** The non-reference backends to test (backends.ts), plus any extra ones a driver pushed. */
export async function targets(): Promise<NamedBackend[]> {
  // WEBQLORA_TEST_SELFCHECK=1 adds the float64 reference as a backend under test: a more
  // accurate implementation must pass every parity tolerance (they are not too tight).
  const self: NamedBackend[] = [...extraTargets, ...(process.env.WEBQLORA_TEST_SELFCHECK === '1' ? [{ name: 'reference-f64', backend: refF64 }] : [])];
  return [...self, ...(await backendsUnderTest())];
}

// ---- tensors --------------------------------------------------------------------------

export function typeOf(a: Host): BufferType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof Uint8Array) return 'u8';
  throw new Error('Uint16Array data needs an explicit f16/bf16 type');
}

/** A backend tensor holding `data` (type from the array, or given for f16/bf16). */
export function put(be: Backend, data: Host, label: string, type: BufferType = typeOf(data)): Tensor {
  const t = be.alloc(type, data.length, label);
  try {
    be.write(t, data);
  } catch (e) {
    be.free(t);
    throw e;
  }
  return t;
}

/** An input given with an explicit type (only needed for f16/bf16 raw bits). */
export interface Typed { type: BufferType; data: Host }

/**
 * One kernel invocation, independent of the backend. Outputs given as a number are f32
 * tensors of that length filled with NaN before the kernel runs; outputs given as arrays
 * start with those contents (in-place kernels, accumulate = true with a non-zero prior;
 * f16/bf16 outputs as Typed raw bits).
 */
export interface Case {
  what: string;
  inputs?: Record<string, Host | Typed>;
  outputs: Record<string, number | Host | Typed>;
  quant?: Record<string, QuantUpload>;
  run(be: Backend, t: Record<string, Tensor>, q: Record<string, QuantWeight>): void;
  /** skip on LIGHT_BACKENDS (big shapes kept for the CPU backends) */
  heavy?: boolean;
}

/** Runs a case on one backend; returns every output read back. Frees what it allocated. */
export async function runCase(be: Backend, c: Case): Promise<Record<string, Host>> {
  const t: Record<string, Tensor> = {};
  const q: Record<string, QuantWeight> = {};
  try {
    for (const [name, v] of Object.entries(c.inputs ?? {})) {
      t[name] = ArrayBuffer.isView(v) ? put(be, v, name) : put(be, v.data, name, v.type);
    }
    for (const [name, v] of Object.entries(c.outputs)) {
      t[name] = typeof v === 'number' ? put(be, new Float32Array(v).fill(NaN), name) : ArrayBuffer.isView(v) ? put(be, v, name) : put(be, v.data, name, v.type);
    }
    for (const [name, w] of Object.entries(c.quant ?? {})) q[name] = be.uploadQuant(w);
    c.run(be, t, q);
    const out: Record<string, Host> = {};
    for (const name of Object.keys(c.outputs)) out[name] = (await be.read(t[name]!)) as Host;
    return out;
  } finally {
    for (const v of Object.values(t)) be.free(v);
    for (const w of Object.values(q)) be.freeQuant(w);
  }
}

/** Throws if an f32 output holds NaN/±Inf (catches elements a kernel never wrote). */
export function assertFinite(a: ArrayLike<number>, what: string): void {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) throw new Error(`${what}: index ${i} is ${a[i]} (never written?)`);
}

/**
 * Runs each case on the float32 reference and on every backend under test (skipping `heavy`
 * cases on LIGHT_BACKENDS) and compares every output. `tol` is one tolerance for all outputs
 * or one per output name. Returns how many backend comparisons ran.
 */
export async function parity(cases: Case[], tol: Tol | Record<string, Tol>): Promise<number> {
  const backends = await targets();
  if (backends.length === 0) return 0;
  let ran = 0;
  for (const c of cases) {
    const want = await runCase(refF32, c);
    for (const [name, a] of Object.entries(want)) if (a instanceof Float32Array) assertFinite(a, `reference ${c.what} ${name}`);
    for (const { name: bname, backend } of backends) {
      if (c.heavy && LIGHT_BACKENDS.has(bname)) continue;
      const got = await runCase(backend, c);
      for (const name of Object.keys(want)) {
        const tl = 'atol' in tol ? (tol as Tol) : (tol as Record<string, Tol>)[name];
        if (!tl) throw new Error(`parity ${c.what}: no tolerance for output ${name}`);
        assertClose(got[name]!, want[name]!, { atol: tl.atol, rtol: tl.rtol, what: `${bname} ${c.what}: ${name}` });
        if (process.env.WEBQLORA_TEST_MARGIN) margin(got[name]!, want[name]!, tl, `${bname} ${c.what}: ${name}`);
      }
      ran++;
    }
  }
  return ran;
}

/** WEBQLORA_TEST_MARGIN=1: print how much of each tolerance was used (diagnostic only; the
 *  assertion above is what tests). Helps keep tolerances tight when a backend changes. */
function margin(got: ArrayLike<number>, want: ArrayLike<number>, tl: Tol, what: string): void {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const tol = tl.atol + tl.rtol * Math.abs(want[i]!);
    const err = Math.abs(got[i]! - want[i]!);
    worst = Math.max(worst, tol > 0 ? err / tol : err > 0 ? Infinity : 0);
  }
  console.log(`margin ${worst.toFixed(3)}  ${what}`);
}

// ---- finite differences (float64 reference) ---------------------------------------------

/** Σ dy ⊙ y over the live float64 storage of y. */
export function dot(be: ReferenceBackend, y: Tensor, dy: ArrayLike<number>): number {
  const a = be.peekF(y);
  let s = 0;
  for (let i = 0; i < dy.length; i++) s += dy[i]! * a[i]!;
  return s;
}

export interface FdSpec {
  /** an f32 tensor of refF64 whose elements are perturbed in place */
  x: Tensor;
  /** runs the forward from the current contents of x (and of anything else it needs) and
   *  returns the scalar loss */
  loss(): number;
  /** dL/dx from the backward kernel under test */
  analytic: ArrayLike<number>;
  /** check this many seeded indices (default: every element) */
  sample?: number;
  rng?: Rng;
  /** step (default 1e-5 · max(1, |x_i|)) */
  h?: number;
  what: string;
  /** default: rtol 1e-6 and atol 1e-7·max|analytic| — float64 central differences with
   *  h ≈ 1e-5 are accurate to ~1e-9 relative, so a wrong formula stands out by orders. */
  tol?: { atol: number; rtol: number };
}

/** Central differences (L(x+h) − L(x−h)) / 2h against the analytic gradient. */
export function fdCheck(s: FdSpec): void {
  const xs = refF64.peekF(s.x);
  const n = s.x.length;
  let idx: number[];
  if (s.sample === undefined || s.sample >= n) idx = Array.from({ length: n }, (_, i) => i);
  else {
    const rng = s.rng ?? new Rng(12345);
    const set = new Set<number>();
    while (set.size < s.sample) set.add(rng.int(n));
    idx = [...set].sort((a, b) => a - b);
  }
  const num = new Float64Array(idx.length), ana = new Float64Array(idx.length);
  let scale = 0;
  for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(s.analytic[i]!));
  idx.forEach((i, j) => {
    const x0 = xs[i]!;
    const h = s.h ?? 1e-5 * Math.max(1, Math.abs(x0));
    xs[i] = x0 + h;
    const lp = s.loss();
    xs[i] = x0 - h;
    const lm = s.loss();
    xs[i] = x0;
    num[j] = (lp - lm) / (2 * h);
    ana[j] = s.analytic[i]!;
  });
  const tol = s.tol ?? { atol: 1e-7 * scale, rtol: 1e-6 };
  if (!(scale > 0)) throw new Error(`${s.what}: analytic gradient is identically zero (a useless test)`);
  try {
    assertClose(ana, num, { ...tol, what: `${s.what} (analytic vs finite difference)` });
  } catch (e) {
    const m = /index (\d+)/.exec((e as Error).message);
    const at = m ? ` [element ${idx[Number(m[1])]}]` : '';
    throw new Error(`${(e as Error).message}${at}`);
  }
}

/** A float64 tensor of refF64 holding `data`. */
export function put64(data: ArrayLike<number>, label: string): Tensor {
  const t = refF64.alloc('f32', data.length, label);
  refF64.peekF(t).set(data);
  return t;
}

/** Frees tensors of refF64 (or another backend). */
export function freeAll(be: Backend, ...ts: Tensor[]): void {
  for (const t of ts) be.free(t);
}

// ---- float64 helpers for the naive formulas ----------------------------------------------

/** A float32 array as float64 (exact). */
export function f64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

/** Normal(0, scale) values plus `shift`, never all zero. */
export function randn(rng: Rng, n: number, scale = 1, shift = 0): Float32Array {
  const a = rng.f32(n, scale);
  if (shift) for (let i = 0; i < n; i++) a[i] = Math.fround(a[i]! + shift);
  return a;
}
