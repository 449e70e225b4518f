// Where one training step's time goes: a Backend wrapped in a Proxy that times every call and
// counts the FLOPs of the GEMM-like ones (bench/flops.ts's rules, from the call's own shapes).
// Only meaningful on WASM, where every kernel call runs to completion before it returns, so its
// wall time is its cost. On WebGPU a call only enqueues work; timing it would need a flush after
// every call, which serializes the GPU and measures something else: profiledBackend refuses it.
// "host" is the step's wall time minus the time inside Backend calls: the JS between them
// (loss readback bookkeeping, the step's control flow, and this proxy's own ~0.1 µs per call).
import type { AttentionShape, Backend, QuantWeight } from '../src/backend/backend.ts';
import { causalPairs } from './flops.ts';
import { fmt } from './util.ts';

export type Family = 'GEMM f32 (LoRA A/B)' | '4-bit GEMM (frozen base)' | 'attention' | 'norms' | 'loss head (lm_head GEMMs, cross-entropy)' | 'elementwise (RoPE, SwiGLU, add, dropout, embedding)' | 'optimizer (grad norm, AdamW)' | 'buffers (write, read, copy, fill)';

export interface KernelRow { family: Family; kernel: string; calls: number; seconds: number; flops: number }

const FAMILY: Record<string, Family> = {
  qMatmul: '4-bit GEMM (frozen base)', qMatmulBackwardInput: '4-bit GEMM (frozen base)',
  attention: 'attention', attentionBackward: 'attention',
  rmsNorm: 'norms', rmsNormBackward: 'norms',
  crossEntropy: 'loss head (lm_head GEMMs, cross-entropy)', softcap: 'loss head (lm_head GEMMs, cross-entropy)',
  rope: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)', ropeBackward: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)',
  swiglu: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)', swigluBackward: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)',
  geglu: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)', gegluBackward: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)',
  add: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)', dropout: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)',
  embedding: 'elementwise (RoPE, SwiGLU, add, dropout, embedding)',
  sumSquares: 'optimizer (grad norm, AdamW)', adamwStep: 'optimizer (grad norm, AdamW)', sgdStep: 'optimizer (grad norm, AdamW)',
  write: 'buffers (write, read, copy, fill)', read: 'buffers (write, read, copy, fill)', copy: 'buffers (write, read, copy, fill)',
  fill: 'buffers (write, read, copy, fill)', alloc: 'buffers (write, read, copy, fill)', free: 'buffers (write, read, copy, fill)',
  uploadQuant: 'buffers (write, read, copy, fill)', writeQuant: 'buffers (write, read, copy, fill)', freeQuant: 'buffers (write, read, copy, fill)',
  flush: 'buffers (write, read, copy, fill)',
};
/** Passed through untimed: not work. */
const UNTIMED = new Set(['memory', 'destroy']);

/** FLOPs of attention over s (causal, no window: the training case). */
function attentionPairs(s: AttentionShape): number {
  if (s.pos0 !== 0 || s.window) {
    let p = 0;
    for (let t = 0; t < s.T; t++) p += Math.min(s.pos0 + t + 1, s.window || Infinity);
    return s.B * s.H * p;
  }
  return s.B * s.H * causalPairs(s.T);
}

export class KernelProfile {
  /** calls are recorded only while this is true (one chosen step) */
  recording = false;
  readonly rows = new Map<string, KernelRow>();

  /** @param vocab V: a matmul with a side of this length is an lm_head GEMM, any other a LoRA one */
  constructor(private readonly vocab: number) {}

  /** The row of one call: its kernel name (matmul split by role and layout) and FLOPs. */
  private classify(name: string, a: unknown[]): { family: Family; kernel: string; flops: number } {
    if (name === 'matmul') {
      const [M, N, K] = a.slice(3, 6) as number[];
      const o = (a[6] ?? {}) as { transA?: boolean; transB?: boolean };
      const layout = o.transA ? 'TN' : o.transB ? 'NT' : 'NN';
      const head = M === this.vocab || N === this.vocab || K === this.vocab;
      return { family: head ? 'loss head (lm_head GEMMs, cross-entropy)' : 'GEMM f32 (LoRA A/B)', kernel: `matmul ${layout}${head ? ' lm_head' : ''}`, flops: 2 * M! * N! * K! };
    }
    if (name === 'qMatmul' || name === 'qMatmulBackwardInput') {
      const w = a[2] as QuantWeight, M = a[3] as number;
      return { family: FAMILY[name]!, kernel: name, flops: 2 * M * w.N * w.K };
    }
    if (name === 'attention') {
      const s = a[5] as AttentionShape;
      return { family: 'attention', kernel: name, flops: 4 * s.D * attentionPairs(s) };
    }
    if (name === 'attentionBackward') {
      const s = a[9] as AttentionShape;
      return { family: 'attention', kernel: name, flops: 10 * s.D * attentionPairs(s) };
    }
    return { family: FAMILY[name] ?? 'buffers (write, read, copy, fill)', kernel: name, flops: 0 };
  }

  /**
   * `be` behind a timing proxy. Throws on WebGPU (see the file comment). Backend internals kept
   * in WeakMaps (wasmBackendInfo, backendCapacity) need the unwrapped backend.
   */
  wrap(be: Backend): Backend {
    if (be.name !== 'wasm' && be.name !== 'reference') {
      throw new Error(`--profile: ${be.name} kernels run asynchronously, so a call's wall time is only its enqueue time (a flush after every call would serialize the device and time something else); profile with --backend wasm.`);
    }
    const wrapped = new Map<PropertyKey, unknown>();
    return new Proxy(be, {
      get: (target, prop) => {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== 'function') return v;
        let w = wrapped.get(prop);
        if (!w) {
          const fn = v as (...a: unknown[]) => unknown, name = String(prop);
          w = UNTIMED.has(name) ? fn.bind(target) : (...a: unknown[]) => {
            if (!this.recording) return fn.apply(target, a);
            const t0 = performance.now();
            const out = fn.apply(target, a);
            this.add(name, a, (performance.now() - t0) / 1000);
            return out;
          };
          wrapped.set(prop, w);
        }
        return w;
      },
    });
  }

  private add(name: string, a: unknown[], seconds: number): void {
    const c = this.classify(name, a);
    const key = `${c.family}\u0000${c.kernel}`;
    const row = this.rows.get(key) ?? { family: c.family, kernel: c.kernel, calls: 0, seconds: 0, flops: 0 };
    row.calls++;
    row.seconds += seconds;
    row.flops += c.flops;
    this.rows.set(key, row);
  }

  /**
   * The table of one recorded step of `stepSeconds`: each family's total with its kernels under
   * it, largest first, then host work; share of the step and GFLOP/s where FLOPs were counted.
   */
  table(stepSeconds: number): { header: string[]; rows: string[][]; families: Array<{ family: string; seconds: number; share: number; flops: number }>; hostSeconds: number; kernelFlops: number } {
    const fam = new Map<Family, KernelRow[]>();
    for (const r of this.rows.values()) fam.set(r.family, [...(fam.get(r.family) ?? []), r]);
    const sum = (rs: KernelRow[], k: 'seconds' | 'flops' | 'calls') => rs.reduce((s, r) => s + r[k], 0);
    const inside = sum([...this.rows.values()], 'seconds');
    const host = stepSeconds - inside;
    const ms = (s: number) => fmt(s * 1000);
    const pct = (s: number) => `${(100 * s / stepSeconds).toFixed(1)}%`;
    const gf = (f: number, s: number) => (f > 0 && s > 0 ? fmt(f / s / 1e9) : '');
    const rows: string[][] = [];
    const families = [...fam.entries()].map(([family, rs]) => ({ family, rs, seconds: sum(rs, 'seconds'), flops: sum(rs, 'flops') }))
      .sort((a, b) => b.seconds - a.seconds);
    for (const f of families) {
      rows.push([f.family, String(sum(f.rs, 'calls')), ms(f.seconds), pct(f.seconds), gf(f.flops, f.seconds)]);
      for (const r of [...f.rs].sort((a, b) => b.seconds - a.seconds)) rows.push([`    ${r.kernel}`, String(r.calls), ms(r.seconds), pct(r.seconds), gf(r.flops, r.seconds)]);
    }
    rows.push(['host (JS between Backend calls)', '', ms(host), pct(host), '']);
    const kernelFlops = sum([...this.rows.values()], 'flops');
    rows.push(['whole step', String(sum([...this.rows.values()], 'calls')), ms(stepSeconds), '100%', gf(kernelFlops, stepSeconds)]);
    return {
      header: ['family / kernel', 'calls', 'ms', 'of step', 'GFLOP/s'], rows,
      families: [...families.map((f) => ({ family: f.family as string, seconds: f.seconds, share: f.seconds / stepSeconds, flops: f.flops })), { family: 'host', seconds: host, share: host / stepSeconds, flops: 0 }],
      hostSeconds: host, kernelFlops,
    };
  }
}
