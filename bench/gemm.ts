// bench/gemm: GFLOP/s of the WASM GEMMs on one thread, against the register-only multiply-add
// ceiling of the same build (simd_peak), for the three training layouts and decoding:
//   NT  out[M, N] = x[M, K] · Wᵀ        f32 matmul (transB)   vs fused NF4 qMatmul
//   NN  dX[M, K] = dY[M, N] · W          f32 matmul            vs fused NF4 qMatmulBackwardInput
//   TN  dW[M, N] = dYᵀ[M, K] · X[K, N]   f32 matmul (transA)   (no 4-bit version: W is frozen)
//   M = 1 rows are decoding (the dot-product paths).
// NF4 = double-quantized, blocksize 64. Every build this engine runs is measured (plain SIMD128,
// and relaxed SIMD when WebAssembly.validate accepts it: Node 20 needs --experimental-wasm-relaxed-simd).
// Each row times peak, f32 and NF4 alternately and keeps each one's fastest call, so its three
// numbers (and both ratios) come from one run under the same conditions (the machines are shared).
//   node --import tsx bench/gemm.ts [--quick]
//   node --experimental-wasm-relaxed-simd --import tsx bench/gemm.ts
import { createWasmBackend, wasmBackendInfo, wasmInternals } from '../src/backend/wasm/index.ts';
import { relaxedSimdSupported } from '../src/backend/wasm/module.ts';
import type { Backend, QuantWeight, Tensor } from '../src/backend/backend.ts';
import { quantize4bit } from '../src/quant/quantize.ts';
import { log, printTable, saveResults } from './util.ts';

export function lcg(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = ((s >>> 8) / 2 ** 24 - 0.5) * scale; }
  return a;
}

/**
 * Fastest call of each function, called alternately for ≥ `ms` (≥ 5 rounds) after ~0.2 s of
 * warm-up (V8 tiers wasm up from Liftoff lazily). The minimum, not the median: on a shared
 * machine interference only ever makes a call slower, and alternating calls give every function
 * of a ratio the same conditions.
 */
export function time(ms: number, ...fns: Array<() => void>): number[] {
  let t0 = performance.now();
  let n = 0;
  while (n < 2 || performance.now() - t0 < 200) { for (const f of fns) f(); n++; }
  const best = fns.map(() => Infinity);
  t0 = performance.now();
  n = 0;
  while (n < 5 || performance.now() - t0 < ms) {
    fns.forEach((f, i) => {
      const t = performance.now();
      f();
      best[i] = Math.min(best[i]!, performance.now() - t);
    });
    n++;
  }
  return best.map((b) => b / 1000);
}

export function put(be: Backend, data: Float32Array, label: string): Tensor {
  const t = be.alloc('f32', data.length, label);
  be.write(t, data);
  return t;
}

export async function nf4(be: Backend, N: number, K: number, seed: number): Promise<QuantWeight> {
  const q = await quantize4bit(lcg(N * K, seed, 0.1), { quantType: 'nf4', blocksize: 64, doubleQuant: true, shape: [N, K] });
  return be.uploadQuant({ N, K, blocksize: 64, quantType: 'nf4', packed: q.packed, quantMap: q.quantMap, absmax: null, dq: q.dq, label: 'w' });
}

interface Row { layout: string; M: number; N: number; K: number; peak: number; f32: number; nf4: number | null; f32OfPeak: number; nf4OverF32: number | null }

async function benchVariant(relaxedSimd: boolean, quick: boolean): Promise<{ variant: string; rows: Row[]; plain: { M: number; N: number; K: number; gflops: number } }> {
  const be = await createWasmBackend({ threads: 1, relaxedSimd });
  const I = wasmInternals(be);
  const variant = wasmBackendInfo(be).variant;
  const ms = quick ? 250 : 600;
  const Ms = quick ? [1, 64, 256] : [1, 64, 256, 512];
  const NKs = quick ? [1024] : [768, 2048];
  const rows: Row[] = [];
  for (const NK of NKs) {
    const N = NK, K = NK;
    const w = put(be, lcg(N * K, 7, 0.1), 'w');
    const qw = await nf4(be, N, K, 7);
    for (const M of Ms) {
      const x = put(be, lcg(M * K, 11, 1), 'x'), y = be.alloc('f32', M * N, 'y');
      const dy = put(be, lcg(M * N, 13, 1), 'dy'), dx = be.alloc('f32', M * K, 'dx');
      const flop = 2 * M * N * K;
      // the peak kernel runs about as long as one f32 call at ~30 GFLOP/s
      const iters = Math.max(1000, Math.round(flop / 96 / 4));
      const peakFn = () => { I.kernels.k.simd_peak(iters); };
      const layouts: Array<[string, () => void, (() => void) | null]> = [
        ['NT x·Wᵀ', () => be.matmul(y, x, w, M, N, K, { transB: true }), () => be.qMatmul(y, x, qw, M)],
        ['NN dY·W', () => be.matmul(dx, dy, w, M, K, N), () => be.qMatmulBackwardInput(dx, dy, qw, M)],
      ];
      // TN: dW[M, N] = dYᵀ·X with M out features, N in features, K = tokens: here M = N = K = NK rows
      // of a [K, M] dY would not fit the table's M; run it as a [NK, NK] product over M tokens instead
      if (M > 1) layouts.push(['TN dYᵀ·X', () => be.matmul(y, dy, w, M, N, N, { transA: true }), null]);
      for (const [layout, f, q] of layouts) {
        const fns = q ? [peakFn, f, q] : [peakFn, f];
        const t = time(ms, ...fns);
        const peak = (96 * iters) / t[0]! / 1e9, f32 = flop / t[1]! / 1e9, qq = q ? flop / t[2]! / 1e9 : null;
        const kk = layout.startsWith('TN') ? N : K;
        rows.push({ layout, M, N, K: kk, peak, f32, nf4: qq, f32OfPeak: f32 / peak, nf4OverF32: qq === null ? null : qq / f32 });
      }
      for (const t of [x, y, dy, dx]) be.free(t);
    }
    be.free(w);
    be.freeQuant(qw);
  }
  // the plain triple loop, for scale
  const M = 64, N = 256, K = 256;
  const a = put(be, lcg(M * K, 3, 1), 'a'), b = put(be, lcg(N * K, 5, 1), 'b'), out = be.alloc('f32', M * N, 'out');
  const p = (t: Tensor) => I.ptr(t);
  const tv1 = time(ms, () => I.kernels.k.matmul_v1(p(out), p(a), p(b), M, N, K, 0, 1, 0, 1, 0, 0, I.scratch(0), 0, M, 0, N))[0]!;
  await be.destroy();
  return { variant, rows, plain: { M, N, K, gflops: (2 * M * N * K) / tv1 / 1e9 } };
}

export async function benchGemm(quick = false): Promise<unknown> {
  const variants = relaxedSimdSupported() ? [false, true] : [false];
  const out: unknown[] = [];
  for (const relaxed of variants) {
    const r = await benchVariant(relaxed, quick);
    printTable(`bench/gemm [${r.variant}]: GFLOP/s, one thread; peak = simd_peak of this build (register-only ${relaxed ? 'relaxed_madd' : 'f32x4 mul + add'}), timed alternately with the GEMMs`,
      ['layout', 'M', 'N', 'K', 'peak', 'f32', 'f32 / peak', 'NF4', 'NF4 / f32'],
      r.rows.map((x) => [x.layout, x.M, x.N, x.K, x.peak, x.f32, x.f32OfPeak, x.nf4 ?? '—', x.nf4OverF32 ?? '—']));
    log(`plain triple loop (matmul_v1) NT ${r.plain.M}x${r.plain.N}x${r.plain.K}: ${r.plain.gflops.toFixed(2)} GFLOP/s`);
    out.push(r);
  }
  return { variants: out };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const res = await benchGemm(process.argv.includes('--quick'));
  console.log(`\nwritten ${saveResults('gemm', res)}`);
}
