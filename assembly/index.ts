// The WebAssembly kernel module. Memory is imported (env.memory) and owned by the TS side:
// kernels never allocate. The exports:
//  - the Backend kernels, called from src/backend/wasm/ (names are snake_case versions of the
//    Backend method names, STYLE.md §2), and the quantization kernels called from src/quant/;
//  - oracles kept for tests only: matmul_v1, q_matmul_v1, q_matmul_backward_input_v1 (plain
//    versions of the optimized GEMMs), sum_squares_v1 (the one-range form of sum_squares),
//    hash32_fill (dropout's hash);
//  - benchmark probes: copy_bytes (bench/quant.ts), simd_peak and simd_peak_par (bench/gemm.ts,
//    bench/threads.ts);
//  - heap_base and scratch_bytes, read once by src/backend/wasm/module.ts and index.ts.
// One file per kernel family, named as in wgsl/ and test/kernels/ (the 4-bit GEMMs: qgemm.ts).
export * from './quant';
export * from './embedding';
export * from './rms_norm';
export * from './gemm';
export * from './qgemm';
export * from './rope';
export * from './attention';
export * from './swiglu';
export * from './elementwise';
export * from './cross_entropy';
export * from './dora';
export * from './optim';
export { hash32_fill } from './rng';
import { SCRATCH_BYTES } from './panel';
import { madd } from './simd';

/** Bytes of scratch each thread needs (the TS side allocates one such area per thread). */
export function scratch_bytes(): usize {
  return SCRATCH_BYTES;
}

/** First byte the TS allocator may use (everything below is this module's static data). */
export function heap_base(): usize {
  return __heap_base;
}

/** Plain copy of n bytes with v128 loads/stores: the bandwidth baseline for bench/quant. */
export function copy_bytes(dst: usize, src: usize, n: i32): void {
  let i: i32 = 0;
  for (; i + 64 <= n; i += 64) {
    v128.store(dst + <usize>i, v128.load(src + <usize>i));
    v128.store(dst + <usize>i, v128.load(src + <usize>i, 16), 16);
    v128.store(dst + <usize>i, v128.load(src + <usize>i, 32), 32);
    v128.store(dst + <usize>i, v128.load(src + <usize>i, 48), 48);
  }
  for (; i < n; i++) store<u8>(dst + <usize>i, load<u8>(src + <usize>i));
}

/**
 * f32x4 multiply-add throughput ceiling of this build for bench/gemm (the denominator of
 * "fraction of peak"): 12 independent chains c = c·m + a in registers, 96 flops per iteration,
 * no memory traffic — with the same madd() as the GEMM micro-kernel, so the plain build measures
 * mul + add and the relaxed build relaxed_madd (FMA). Twelve chains cover the latency at two
 * operations per cycle per port pair. Returns a value so nothing is optimized away.
 */
export function simd_peak(iters: i32): f32 {
  const m = f32x4.splat(0.999999), a = f32x4.splat(1e-6);
  let c0 = f32x4.splat(0.1), c1 = f32x4.splat(0.2), c2 = f32x4.splat(0.3), c3 = f32x4.splat(0.4);
  let c4 = f32x4.splat(0.5), c5 = f32x4.splat(0.6), c6 = f32x4.splat(0.7), c7 = f32x4.splat(0.8);
  let c8 = f32x4.splat(0.9), c9 = f32x4.splat(1.0), c10 = f32x4.splat(1.1), c11 = f32x4.splat(1.2);
  for (let i: i32 = 0; i < iters; i++) {
    c0 = madd(c0, m, a); c1 = madd(c1, m, a);
    c2 = madd(c2, m, a); c3 = madd(c3, m, a);
    c4 = madd(c4, m, a); c5 = madd(c5, m, a);
    c6 = madd(c6, m, a); c7 = madd(c7, m, a);
    c8 = madd(c8, m, a); c9 = madd(c9, m, a);
    c10 = madd(c10, m, a); c11 = madd(c11, m, a);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)), f32x4.add(f32x4.add(f32x4.add(c4, c5), f32x4.add(c6, c7)), f32x4.add(f32x4.add(c8, c9), f32x4.add(c10, c11))));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 3);
}

/**
 * simd_peak as a ranged kernel: (c1 − c0)·iters iterations. bench/threads runs it through the
 * worker pool (one chunk per thread) to measure how many cores the machine really gives at the
 * moment (the register-only ceiling of thread scaling).
 */
export function simd_peak_par(iters: i32, c0: i32, c1: i32): f32 {
  let s: f32 = 0;
  for (let c = c0; c < c1; c++) s += simd_peak(iters);
  return s;
}
