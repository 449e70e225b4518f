// geglu / gegluBackward: out = gelu(gate)·up with the tanh GELU (PyTorch gelu(approximate='tanh'),
// Gemma's gelu_pytorch_tanh). (a) reference against the formula in float64, (b) the backward by
// float64 finite differences, (c) parity, including |gate| up to 20 where tanh saturates (a
// naive (e^2x − 1)/(e^2x + 1) gives inf/inf = NaN there).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../helpers/index.ts';
import { U32, dot, fdCheck, freeAll, parity, put64, randn, refF32, refF64, runCase, type Case } from './harness.ts';

const BETA = Math.sqrt(2 / Math.PI), KAPPA = 0.044715;
const gelu = (g: number) => 0.5 * g * (1 + Math.tanh(BETA * (g + KAPPA * g * g * g)));

/** gate values: mostly N(0, 2), every 13th uniform in ±20, and the saturated ends ±20 exactly. */
function gates(rng: Rng, n: number): Float32Array {
  const g = randn(rng, n, 2);
  for (let i = 0; i < n; i += 13) g[i] = Math.fround((i % 2 ? 1 : -1) * 20 * rng.next());
  if (n > 2) { g[1] = 20; g[2] = -20; }
  return g;
}

test('geglu reference (f32) == 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))·u in float64', async () => {
  const rng = new Rng(611);
  const n = 400;
  const gate = gates(rng, n), up = randn(rng, n);
  const got = (await runCase(refF32, { what: 'geglu', inputs: { gate, up }, outputs: { out: n }, run: (be, t) => be.geglu(t.out!, t.gate!, t.up!, n) })).out!;
  for (let i = 0; i < n; i++) {
    const g = gate[i]!, u = up[i]!, want = gelu(g) * u;
    // tanh's argument carries ~6 roundings (relative); tanh damps them by (1 − t²)·|x| ≤ 0.45 and
    // adds its own, so 1 + t is off by ≤ ~4U absolute — relative to 0.5·g·u, not to the result,
    // which cancels towards 0 for negative g — then three products rounded
    const tol = 4 * U32 * Math.abs(g * u) + 4 * U32 * Math.abs(want);
    assert.ok(Math.abs(got[i]! - want) <= tol, `geglu: index ${i} (g ${g}): expected ${want}, got ${got[i]}`);
  }
});

test('gegluBackward is the gradient of geglu (float64 finite differences)', () => {
  const rng = new Rng(612);
  const n = 60;
  // N(0, 2) plus the transition region (|g| 2..6, where 1 − t² is still measurable) and ±20
  const host = randn(rng, n, 2);
  for (let i = 0; i < n; i += 5) host[i] = (i % 2 ? 1 : -1) * (2 + 4 * rng.next());
  host[3] = 20; host[4] = -20;
  const gate = put64(host, 'gate'), up = put64(randn(rng, n), 'up'), out = refF64.alloc('f32', n, 'out');
  const dyHost = randn(rng, n);
  const dy = put64(dyHost, 'dy'), dgate = refF64.alloc('f32', n, 'dgate'), dup = refF64.alloc('f32', n, 'dup');
  refF64.gegluBackward(dgate, dup, dy, gate, up, n);
  const loss = () => { refF64.geglu(out, gate, up, n); return dot(refF64, out, dyHost); };
  fdCheck({ x: gate, loss, analytic: refF64.peekF(dgate), what: 'geglu dgate' });
  fdCheck({ x: up, loss, analytic: refF64.peekF(dup), what: 'geglu dup' });
  freeAll(refF64, gate, up, out, dy, dgate, dup);
});

test('geglu / gegluBackward parity', async () => {
  const rng = new Rng(613);
  const fwd: Case[] = [], bwd: Case[] = [];
  for (const [n, heavy] of [[1, false], [7, false], [1000, false], [4099, false], [65537, true]] as const) {
    const gate = gates(rng, n), up = randn(rng, n), dout = randn(rng, n);
    fwd.push({ what: `geglu n${n}`, heavy, inputs: { gate, up }, outputs: { out: n }, run: (be, t) => be.geglu(t.out!, t.gate!, t.up!, n) });
    bwd.push({ what: `gegluBackward n${n}`, heavy, inputs: { gate, up, dout }, outputs: { dgate: n, dup: n }, run: (be, t) => be.gegluBackward(t.dgate!, t.dup!, t.dout!, t.gate!, t.up!, n) });
  }
  const g = gates(rng, 515), u = randn(rng, 515);
  fwd.push({ what: 'geglu in place (out = gate)', inputs: { up: u }, outputs: { gate: g }, run: (be, t) => be.geglu(t.gate!, t.gate!, t.up!, 515) });
  fwd.push({ what: 'geglu in place (out = up)', inputs: { gate: g }, outputs: { up: u }, run: (be, t) => be.geglu(t.up!, t.gate!, t.up!, 515) });
  fwd.push({ what: 'geglu in place (out = gate = up)', outputs: { x: g }, run: (be, t) => be.geglu(t.x!, t.x!, t.x!, 515) });
  // A kernel's tanh is a few ulp off the correctly rounded one. Near t = −1 (g ≲ −2) 1 + t
  // cancels, so an ulp of t (6e-8) becomes 6e-8·|0.5·g·u| absolute, a few 1e-7 for |g| ≈ 3..5
  // and |u| ≈ 3 (for g ≲ −5 both sides give t = −1 exactly); hence an atol, not just an rtol.
  await parity(fwd, { atol: 1e-6, rtol: 1e-6, why: 'tanh to a few ulp; 1 + t cancels for negative g' });
  // the same cancellation in 1 + t and in 1 − t², times β·(1 + 3κ·g²)·|0.5·g| ≈ 5 at |g| ≈ 4
  await parity(bwd, { atol: 4e-6, rtol: 4e-6, why: 'tanh to a few ulp; 1 ± t cancels near saturation' });
});

test.run();
