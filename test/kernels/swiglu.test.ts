// swiglu / swigluBackward: out = silu(gate)·up. (a) reference against the formula in float64,
// (b) the backward by float64 finite differences, (c) parity, including |gate| up to ~30 where a
// naive exp overflows.
import { test } from 'uvu';
import { Rng, assertClose } from '../helpers/index.ts';
import { U32, dot, fdCheck, freeAll, parity, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

/** gate values: mostly N(0, 2), a few far in both tails. */
function gates(rng: Rng, n: number): Float32Array {
  const g = randn(rng, n, 2);
  for (let i = 0; i < n; i += 13) g[i] = (i % 2 ? 1 : -1) * (10 + 20 * rng.next());
  return g;
}

test('swiglu reference (f32) == g/(1+e^−g)·u in float64', async () => {
  const rng = new Rng(601);
  const n = 300;
  const gate = gates(rng, n), up = randn(rng, n);
  const got = (await runCase(refF32, { what: 'swiglu', inputs: { gate, up }, outputs: { out: n }, run: (be, t) => be.swiglu(t.out!, t.gate!, t.up!, n) })).out!;
  const want = Array.from(gate, (g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
  // exp, one add, one division and two products, each rounded to f32
  assertClose(got, want, { atol: 1e-30, rtol: 8 * U32, what: 'swiglu' });
});

test('swigluBackward is the gradient of swiglu (float64 finite differences)', () => {
  const rng = new Rng(602);
  const n = 40;
  const gate = put64(randn(rng, n, 2), 'gate'), up = put64(randn(rng, n), 'up'), out = refF64.alloc('f32', n, 'out');
  const dyHost = randn(rng, n);
  const dy = put64(dyHost, 'dy'), dgate = refF64.alloc('f32', n, 'dgate'), dup = refF64.alloc('f32', n, 'dup');
  refF64.swigluBackward(dgate, dup, dy, gate, up, n);
  const loss = () => { refF64.swiglu(out, gate, up, n); return dot(refF64, out, dyHost); };
  fdCheck({ x: gate, loss, analytic: refF64.peekF(dgate), what: 'swiglu dgate' });
  fdCheck({ x: up, loss, analytic: refF64.peekF(dup), what: 'swiglu dup' });
  freeAll(refF64, gate, up, out, dy, dgate, dup);
});

test('swiglu / swigluBackward parity', async () => {
  const rng = new Rng(603);
  const fwd: Case[] = [], bwd: Case[] = [];
  for (const [n, heavy] of [[1, false], [7, false], [1000, false], [4099, false], [65537, true]] as const) {
    const gate = gates(rng, n), up = randn(rng, n), dout = randn(rng, n);
    fwd.push({ what: `swiglu n${n}`, heavy, inputs: { gate, up }, outputs: { out: n }, run: (be, t) => be.swiglu(t.out!, t.gate!, t.up!, n) });
    bwd.push({ what: `swigluBackward n${n}`, heavy, inputs: { gate, up, dout }, outputs: { dgate: n, dup: n }, run: (be, t) => be.swigluBackward(t.dgate!, t.dup!, t.dout!, t.gate!, t.up!, n) });
  }
  // a kernel's exp may be a few ulp off the correctly rounded one; the sigmoid derivative
  // σ·(1 + g·(1 − σ)) loses relative accuracy where it crosses zero (g ≈ −1.28), hence atol
  const g = gates(rng, 515), u = randn(rng, 515);
  fwd.push({ what: 'swiglu in place (out = gate)', inputs: { up: u }, outputs: { gate: g }, run: (be, t) => be.swiglu(t.gate!, t.gate!, t.up!, 515) });
  fwd.push({ what: 'swiglu in place (out = up)', inputs: { gate: g }, outputs: { up: u }, run: (be, t) => be.swiglu(t.up!, t.gate!, t.up!, 515) });
  fwd.push({ what: 'swiglu in place (out = gate = up)', outputs: { x: g }, run: (be, t) => be.swiglu(t.x!, t.x!, t.x!, 515) });
  await parity(fwd, { atol: 1e-7, rtol: 1e-6, why: 'exp to a few ulp + 4 rounded ops' });
  await parity(bwd, { atol: 1e-6, rtol: 2e-6, why: 'exp to a few ulp; cancellation in 1 + g·(1 − σ)' });
});

test.run();
