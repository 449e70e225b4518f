// Gated MLP activations (backend.ts): Backend.swiglu ↔ swiglu, Backend.swigluBackward ↔
// swiglu_backward, Backend.geglu ↔ geglu, Backend.gegluBackward ↔ geglu_backward (wgsl/swiglu.wgsl
// holds the same four). Work range: elements [i0, i1); indices are global. swiglu uses the vector
// exp of simd.ts (< 1 ulp; lanes and loop tails compute alike, so any split gives the same bits)
// where the reference rounds a float64 exp once: outputs differ by a few f32 ulps. geglu uses
// simd.ts's tanh (a few ulp, clamped: ±1 for large arguments, never NaN) the same way.
import { expf4, exp1, tanhf4, tanh1 } from './simd';

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
