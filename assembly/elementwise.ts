// Elementwise kernels and plain data movement (backend.ts): Backend.add ↔ add, copy, fill,
// dropout, addUniformNoise ↔ add_uniform_noise, softcap (wgsl/elementwise.wgsl holds the same).
// Every kernel takes its work range last ([i0, i1) elements) so the TS side can split it across
// threads; indices inside are global (dropout hashes the global element index). softcap uses
// simd.ts's tanh (a few ulp, clamped: ±1 for large arguments, never NaN) where the reference
// rounds a float64 tanh once: outputs differ by a few f32 ulps.
import { hash32, hash32x4 } from './rng';
import { tanhf4, tanh1 } from './simd';

/** n bytes from src to dst (Backend.copy; the TS side converts elements to bytes). */
export function copy(dst: usize, src: usize, n: usize): void {
  memory.copy(dst, src, n);
}

/** Backend.fill: n elements of `size` bytes (1, 2 or 4) at p set to the bit pattern `bits`. */
export function fill(p: usize, n: i32, bits: u32, size: i32): void {
  if (n <= 0) return;
  if (size == 1) {
    memory.fill(p, <u8>bits, <usize>n);
    return;
  }
  if (size == 2) {
    bits = (bits & 0xffff) | (bits << 16);
    if (p & 2) { store<u16>(p, <u16>bits); p += 2; n--; }
    const pairs = n >> 1;
    fill(p, pairs, bits, 4);
    if (n & 1) store<u16>(p + (<usize>pairs << 2), <u16>bits);
    return;
  }
  const v = i32x4.splat(<i32>bits);
  let i: i32 = 0;
  for (; i + 4 <= n; i += 4) v128.store(p + (<usize>i << 2), v);
  for (; i < n; i++) store<u32>(p + (<usize>i << 2), bits);
}

/** out[i] += alpha·x[i] for i in [i0, i1). */
export function add(out: usize, x: usize, alpha: f32, i0: i32, i1: i32): void {
  const av = f32x4.splat(alpha);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, f32x4.add(v128.load(out + o), f32x4.mul(av, v128.load(x + o))));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, load<f32>(out + o) + alpha * load<f32>(x + o));
  }
}

/** x[i] = cap·tanh(x[i] / cap) for i in [i0, i1) (Backend.softcap; cap > 0, checked by the caller). */
export function softcap(x: usize, cap: f32, i0: i32, i1: i32): void {
  const cv = f32x4.splat(cap);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(x + o, f32x4.mul(cv, tanhf4(f32x4.div(v128.load(x + o), cv))));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(x + o, cap * tanh1(load<f32>(x + o) / cap));
  }
}

/** Backend.addUniformNoise: x[i] += f32(u_i·scale), u_i = (hash32(seed, i) >>> 8)·2⁻²³ − 1 (exact). */
export function add_uniform_noise(x: usize, scale: f32, seed: u32, i0: i32, i1: i32): void {
  for (let i = i0; i < i1; i++) {
    const o = <usize>i << 2;
    const u = <f32>(hash32(seed, <u32>i) >>> 8) * <f32>1.1920928955078125e-7 - <f32>1.0;
    store<f32>(x + o, load<f32>(x + o) + u * scale);
  }
}

/**
 * Inverted dropout: out[i] = hash32(seed, i) ≥ threshold ? x[i]·scale : 0 for i in [i0, i1)
 * (threshold = dropThreshold(p), scale = dropScale(p), both from src/backend/rng.ts).
 */
export function dropout(out: usize, x: usize, threshold: u32, scale: f32, seed: u32, i0: i32, i1: i32): void {
  const tv = i32x4.splat(<i32>threshold), sv = f32x4.splat(scale);
  let i = i0;
  let idx = i32x4.add(i32x4.splat(i0), i32x4(0, 1, 2, 3));
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const keep = i32x4.ge_u(hash32x4(seed, idx), tv);
    v128.store(out + o, v128.and(f32x4.mul(v128.load(x + o), sv), keep));
    idx = i32x4.add(idx, i32x4.splat(4));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, hash32(seed, <u32>i) >= threshold ? load<f32>(x + o) * scale : 0);
  }
}
