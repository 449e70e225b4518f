// Elementwise kernels and plain data movement. Every kernel takes its work range last
// ([i0, i1) elements or [r0, r1) rows) so the TS side can split it across threads; indices
// inside are global (dropout hashes the global element index). swiglu uses the vector exp of
// simd.ts (< 1 ulp; lanes and loop tails compute alike, so any split gives the same bits) where
// the reference rounds a float64 exp once: outputs differ by a few f32 ulps. geglu and softcap
// use simd.ts's tanh (a few ulp, clamped: ±1 for large arguments, never NaN) the same way.
import { hash32, hash32x4 } from './rng';
import { expf4, exp1, tanhf4, tanh1 } from './simd';
import { BT_F32, BT_F16, BT_BF16, load4, load1 } from './half';

/**
 * out[r, :] = table[ids[r], :]. out f32 [R, C]; table [V, C] of element type bt (0 f32, 1 f16,
 * 2 bf16; halves widened exactly); ids i32 [R] (checked by the caller). Rows [r0, r1).
 */
export function embedding(out: usize, table: usize, ids: usize, C: i32, bt: i32, r0: i32, r1: i32): void {
  if (bt == BT_F32) {
    const rb = <usize>C << 2;
    for (let r = r0; r < r1; r++) memory.copy(out + <usize>r * rb, table + <usize>load<i32>(ids + (<usize>r << 2)) * rb, rb);
  } else if (bt == BT_F16) widenRows(out, table, ids, C, r0, r1, BT_F16);
  else widenRows(out, table, ids, C, r0, r1, BT_BF16);
}

@inline function widenRows(out: usize, table: usize, ids: usize, C: i32, r0: i32, r1: i32, bt: i32): void {
  for (let r = r0; r < r1; r++) {
    const src = table + <usize>load<i32>(ids + (<usize>r << 2)) * (<usize>C << 1);
    const dst = out + ((<usize>r * <usize>C) << 2);
    let c: i32 = 0;
    for (; c + 4 <= C; c += 4) v128.store(dst + (<usize>c << 2), load4(src + (<usize>c << 1), bt));
    for (; c < C; c++) store<f32>(dst + (<usize>c << 2), load1(src + (<usize>c << 1), bt));
  }
}

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

/** out[i] = silu(gate[i])·up[i], silu(g) = g / (1 + e^−g), for i in [i0, i1). */
export function swiglu(out: usize, gate: usize, up: usize, i0: i32, i1: i32): void {
  const one = f32x4.splat(1);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(gate + o);
    v128.store(out + o, f32x4.mul(f32x4.div(g, f32x4.add(one, expf4(f32x4.neg(g)))), v128.load(up + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(gate + o);
    store<f32>(out + o, g / (1.0 + exp1(-g)) * load<f32>(up + o));
  }
}

/**
 * dgate = dout·up·σ(g)·(1 + g·(1 − σ(g))), dup = dout·silu(g) (both overwritten), for i in [i0, i1).
 */
export function swiglu_backward(dgate: usize, dup: usize, dout: usize, gate: usize, up: usize, i0: i32, i1: i32): void {
  const one = f32x4.splat(1);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(gate + o), d = v128.load(dout + o);
    const sig = f32x4.div(one, f32x4.add(one, expf4(f32x4.neg(g))));
    v128.store(dgate + o, f32x4.mul(f32x4.mul(d, v128.load(up + o)), f32x4.mul(sig, f32x4.add(one, f32x4.mul(g, f32x4.sub(one, sig))))));
    v128.store(dup + o, f32x4.mul(d, f32x4.mul(g, sig)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(gate + o), d = load<f32>(dout + o);
    const sig: f32 = 1.0 / (1.0 + exp1(-g));
    store<f32>(dgate + o, d * load<f32>(up + o) * (sig * (1.0 + g * (1.0 - sig))));
    store<f32>(dup + o, d * (g * sig));
  }
}

// GELU, tanh approximation (PyTorch gelu(approximate='tanh'), Gemma's gelu_pytorch_tanh), in
// PyTorch's operation order: gelu(g) = (0.5·g)·(1 + tanh(β·(g + κ·g³))), β = √(2/π), κ = 0.044715.
const GELU_BETA: f32 = 0.7978845608028654;
const GELU_KAPPA: f32 = 0.044715;
/** 3·κ, for the derivative of the inner polynomial */
const GELU_KAPPA3: f32 = 0.134145;

/** out[i] = gelu(gate[i])·up[i] for i in [i0, i1). out may alias gate or up. */
export function geglu(out: usize, gate: usize, up: usize, i0: i32, i1: i32): void {
  const half = f32x4.splat(0.5), one = f32x4.splat(1), beta = f32x4.splat(GELU_BETA), kappa = f32x4.splat(GELU_KAPPA);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(gate + o);
    const t = tanhf4(f32x4.mul(beta, f32x4.add(g, f32x4.mul(kappa, f32x4.mul(f32x4.mul(g, g), g)))));
    v128.store(out + o, f32x4.mul(f32x4.mul(f32x4.mul(half, g), f32x4.add(one, t)), v128.load(up + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(gate + o);
    const t = tanh1(GELU_BETA * (g + GELU_KAPPA * (g * g * g)));
    store<f32>(out + o, (<f32>0.5 * g) * (<f32>1.0 + t) * load<f32>(up + o));
  }
}

/**
 * dgate = dout·up·gelu'(g), dup = dout·gelu(g) (both overwritten), for i in [i0, i1), with
 * gelu'(g) = 0.5·(1 + t) + (0.5·g)·(1 − t²)·β·(1 + 3κ·g²), t = tanh(β·(g + κ·g³)) (PyTorch's
 * GeluBackward order).
 */
export function geglu_backward(dgate: usize, dup: usize, dout: usize, gate: usize, up: usize, i0: i32, i1: i32): void {
  const half = f32x4.splat(0.5), one = f32x4.splat(1), beta = f32x4.splat(GELU_BETA);
  const kappa = f32x4.splat(GELU_KAPPA), kappa3 = f32x4.splat(GELU_KAPPA3);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(gate + o), d = v128.load(dout + o);
    const sq = f32x4.mul(g, g);
    const t = tanhf4(f32x4.mul(beta, f32x4.add(g, f32x4.mul(kappa, f32x4.mul(sq, g)))));
    const left = f32x4.mul(half, g), right = f32x4.add(one, t);
    const dt = f32x4.sub(one, f32x4.mul(t, t));
    const di = f32x4.mul(beta, f32x4.add(one, f32x4.mul(kappa3, sq)));
    const dgelu = f32x4.add(f32x4.mul(half, right), f32x4.mul(f32x4.mul(left, dt), di));
    v128.store(dgate + o, f32x4.mul(f32x4.mul(d, v128.load(up + o)), dgelu));
    v128.store(dup + o, f32x4.mul(d, f32x4.mul(left, right)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(gate + o), d = load<f32>(dout + o);
    const sq = g * g;
    const t = tanh1(GELU_BETA * (g + GELU_KAPPA * (sq * g)));
    const left: f32 = <f32>0.5 * g, right: f32 = <f32>1.0 + t;
    const dgelu: f32 = <f32>0.5 * right + left * (<f32>1.0 - t * t) * (GELU_BETA * (<f32>1.0 + GELU_KAPPA3 * sq));
    store<f32>(dgate + o, d * load<f32>(up + o) * dgelu);
    store<f32>(dup + o, d * (left * right));
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

/**
 * Inverted dropout: out[i] = hash32(seed, i) ≥ threshold ? x[i]·scale : 0 for i in [i0, i1)
 * (threshold = dropThreshold(p), scale = dropScale(p), both from src/backend/rng.ts).
 */
/** Backend.addUniformNoise: x[i] += f32(u_i·scale), u_i = (hash32(seed, i) >>> 8)·2⁻²³ − 1 (exact). */
export function add_uniform_noise(x: usize, scale: f32, seed: u32, i0: i32, i1: i32): void {
  for (let i = i0; i < i1; i++) {
    const o = <usize>i << 2;
    const u = <f32>(hash32(seed, <u32>i) >>> 8) * <f32>1.1920928955078125e-7 - <f32>1.0;
    store<f32>(x + o, load<f32>(x + o) + u * scale);
  }
}

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
