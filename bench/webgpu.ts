// bench/webgpu: the time of every Backend kernel on WebGPU next to WASM, at the shapes of one
// decoder layer of real models (B 1, T 256), plus one whole training step.
//
// WebGPU here is Dawn (npm `webgpu`) on Mesa lavapipe, a Vulkan driver that runs on the CPU:
// the figures are CPU EMULATION (lavapipe), NOT GPU SPEED. They show which kernels are
// dispatch- or readback-bound and how the WGSL kernels scale with shape, nothing about a GPU.
// WASM runs one thread unless --threads N says otherwise (lavapipe uses every core).
//
// Timing: a kernel is enqueued N times, then flush() and a 1-element read(), and the total is
// divided by N (no per-op synchronisation); N is chosen so a round takes ≥ 0.25 s, and the best
// of 3 rounds is kept (shared machines: interference only ever makes a round slower; kernels
// slower than 1 s per call get 2 rounds of N = 1, a training step slower than 5 s one timed step).
//
//   node --import tsx bench/webgpu.ts [--quick] [--only wasm|webgpu] [--no-step] [--threads N]
//     --quick   stories15M shapes only
// Kernels a backend lacks (or that throw) show as "—" with the reason in the JSON.
import type { AttentionShape, Backend, QuantWeight, RopeTables, Tensor } from '../src/backend/backend.ts';
import { createBackend } from '../src/backend/index.ts';
import { dawnGpu } from '../src/backend/webgpu/dawn.ts';
import { quantize4bit } from '../src/quant/quantize.ts';
import { SYNTHETIC_CONFIGS, syntheticSource } from '../src/model/synthetic.ts';
import { loadModel } from '../src/model/load.ts';
import { LoraAdapters } from '../src/model/lora.ts';
import { LINEAR_NAMES } from '../src/model/config.ts';
import { Trainer, TRAIN_DEFAULTS, type MicroBatchSource } from '../src/train/trainer.ts';
import { fmt, printTable, saveResults } from './util.ts';

export const benchTitle = (threads: number) =>
  `bench/webgpu: Backend kernels, WebGPU = CPU emulation (lavapipe), not GPU speed; WASM = ${threads} thread${threads > 1 ? 's' : ''}`;

interface Shape {
  name: string;
  B: number; T: number; C: number; H: number; KVH: number; D: number; F: number; V: number;
  /** LoRA rank */
  r: number;
  /** the synthetic model for the training-step row, or null */
  model: string | null;
}

const SHAPES: Shape[] = [
  { name: 'stories15M', B: 1, T: 256, C: 288, H: 6, KVH: 6, D: 48, F: 768, V: 32000, r: 16, model: 'stories15M' },
  { name: 'stories110M', B: 1, T: 256, C: 768, H: 12, KVH: 12, D: 64, F: 2048, V: 32000, r: 16, model: null },
];

function lcg(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = ((s >>> 8) / 2 ** 24 - 0.5) * scale; }
  return a;
}

/** One kernel call at one shape; `out` is read back (1 element) to end each timed round. */
interface KernelCase {
  kernel: string;
  args: string;
  run: () => void;
  out: Tensor;
}

/** Buffers of one shape on one backend (the same values on every backend). */
async function buildCases(be: Backend, s: Shape): Promise<{ cases: KernelCase[]; free: () => void }> {
  const R = s.B * s.T, qd = s.H * s.D, kvd = s.KVH * s.D, nOpt = 1 << 18;
  const owned: Tensor[] = [];
  const quants: QuantWeight[] = [];
  let seed = 1;
  const f32 = (n: number, scale = 1, label = 'x'): Tensor => {
    const t = be.alloc('f32', n, label);
    be.write(t, lcg(n, seed++, scale));
    owned.push(t);
    return t;
  };
  const empty = (type: 'f32' | 'i32', n: number, label: string): Tensor => {
    const t = be.alloc(type, n, label);
    be.fill(t, 0);
    owned.push(t);
    return t;
  };
  const ints = (n: number, mod: number, label: string): Tensor => {
    const v = new Int32Array(n);
    for (let i = 0; i < n; i++) v[i] = (i * 7919 + 13) % mod;
    const t = be.alloc('i32', n, label);
    be.write(t, v);
    owned.push(t);
    return t;
  };
  const q4 = async (N: number, K: number, label: string): Promise<QuantWeight> => {
    const q = await quantize4bit(lcg(N * K, seed++, 0.04), { quantType: 'nf4', blocksize: 64, doubleQuant: true, shape: [N, K] });
    const w = be.uploadQuant({ N, K, blocksize: 64, quantType: 'nf4', packed: q.packed, quantMap: q.quantMap, absmax: null, dq: q.dq, label });
    quants.push(w);
    return w;
  };

  const x = f32(R * s.C, 1, 'x'), normW = f32(s.C, 0.1, 'norm.w'), rstd = empty('f32', R, 'rstd');
  const normOut = empty('f32', R * s.C, 'norm.out'), dx = empty('f32', R * s.C, 'dx'), dy = f32(R * s.C, 1, 'dy');
  const wq = await q4(qd, s.C, 'q_proj'), wup = await q4(s.F, s.C, 'up_proj'), wdown = await q4(s.C, s.F, 'down_proj');
  const qOut = empty('f32', R * qd, 'q'), upOut = empty('f32', R * s.F, 'up'), downOut = empty('f32', R * s.C, 'down');
  const dyDown = f32(R * s.C, 1, 'dy.down'), dxDown = empty('f32', R * s.F, 'dx.down'), dec = empty('f32', s.F, 'decode.up'), x1 = f32(s.C, 1, 'x1');
  const table = f32(s.V * s.C, 0.04, 'embed'), ids = ints(R, s.V, 'ids'), emb = empty('f32', R * s.C, 'emb');
  const logits = empty('f32', R * s.V, 'logits'), dlogits = f32(R * s.V, 1e-4, 'dlogits'), dxHead = empty('f32', R * s.C, 'dx.head');
  const loraA = f32(s.r * s.C, 0.05, 'lora_A'), xa = empty('f32', R * s.r, 'x·Aᵀ'), dB = empty('f32', qd * s.r, 'dB');
  const dq = f32(R * qd, 1, 'dq.out'), xaRows = f32(R * s.r, 1, 'xa');
  // real rotations (|cos|² + |sin|² = 1), so in-place repeats neither grow nor decay to denormals
  const half = s.D / 2, cv = new Float32Array(s.T * half), sv = new Float32Array(s.T * half);
  for (let p = 0; p < s.T; p++) for (let i = 0; i < half; i++) { const a = p * 10000 ** (-i / half); cv[p * half + i] = Math.cos(a); sv[p * half + i] = Math.sin(a); }
  const cos = empty('f32', cv.length, 'rope.cos'), sin = empty('f32', sv.length, 'rope.sin');
  be.write(cos, cv);
  be.write(sin, sv);
  const rope: RopeTables = { cos, sin };
  const q = f32(R * qd, 1, 'q'), k = f32(R * kvd, 1, 'k'), v = f32(R * kvd, 1, 'v');
  const att = empty('f32', R * qd, 'att'), lse = empty('f32', s.B * s.H * s.T, 'lse');
  const dAtt = f32(R * qd, 1, 'datt'), dqA = empty('f32', R * qd, 'dq'), dk = empty('f32', R * kvd, 'dk'), dv = empty('f32', R * kvd, 'dv');
  const as: AttentionShape = { B: s.B, T: s.T, S: s.T, H: s.H, KVH: s.KVH, D: s.D, pos0: 0, kvStride: s.T };
  const gate = f32(R * s.F, 2, 'gate'), up = f32(R * s.F, 2, 'up'), sw = empty('f32', R * s.F, 'swiglu');
  const dsw = f32(R * s.F, 1, 'dswiglu'), dgate = empty('f32', R * s.F, 'dgate'), dup = empty('f32', R * s.F, 'dup');
  const addOut = empty('f32', R * s.C, 'add.out'), drop = empty('f32', R * s.C, 'drop');
  const ceLogits = f32(R * s.V, 4, 'ce.logits'), targets = ints(R, s.V, 'targets'), losses = empty('f32', R, 'losses');
  const param = f32(nOpt, 0.1, 'param'), grad = f32(nOpt, 0.01, 'grad'), m = empty('f32', nOpt, 'm'), vv = empty('f32', nOpt, 'v'), ss = empty('f32', 1, 'ss');
  const adam = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 };
  // the kernel table: every Backend kernel at this shape; matmul in its three training layouts
  const cases: KernelCase[] = [
    { kernel: 'embedding', args: `R ${R}, C ${s.C}, V ${s.V}`, out: emb, run: () => be.embedding(emb, table, ids, R, s.C) },
    { kernel: 'rmsNorm', args: `R ${R}, C ${s.C}`, out: normOut, run: () => be.rmsNorm(normOut, rstd, x, normW, R, s.C, 1e-5) },
    { kernel: 'qMatmul q_proj', args: `M ${R}, N ${qd}, K ${s.C}`, out: qOut, run: () => be.qMatmul(qOut, x, wq, R) },
    { kernel: 'qMatmul up_proj', args: `M ${R}, N ${s.F}, K ${s.C}`, out: upOut, run: () => be.qMatmul(upOut, x, wup, R) },
    { kernel: 'qMatmul down_proj', args: `M ${R}, N ${s.C}, K ${s.F}`, out: downOut, run: () => be.qMatmul(downOut, upOut, wdown, R) },
    { kernel: 'qMatmul up_proj decode', args: `M 1, N ${s.F}, K ${s.C}`, out: dec, run: () => be.qMatmul(dec, x1, wup, 1) },
    { kernel: 'matmul NT lora x·Aᵀ', args: `M ${R}, N ${s.r}, K ${s.C}`, out: xa, run: () => be.matmul(xa, x, loraA, R, s.r, s.C, { transB: true }) },
    { kernel: 'matmul TN lora dB', args: `M ${qd}, N ${s.r}, K ${R}`, out: dB, run: () => be.matmul(dB, dq, xaRows, qd, s.r, R, { transA: true }) },
    { kernel: 'matmul NT lm_head', args: `M ${R}, N ${s.V}, K ${s.C}`, out: logits, run: () => be.matmul(logits, normOut, table, R, s.V, s.C, { transB: true }) },
    { kernel: 'matmul NN lm_head dX', args: `M ${R}, N ${s.C}, K ${s.V}`, out: dxHead, run: () => be.matmul(dxHead, dlogits, table, R, s.C, s.V) },
    { kernel: 'rope', args: `R ${R}, H ${s.H}, D ${s.D}`, out: q, run: () => be.rope(q, rope, R, s.T, s.H, s.D, 0) },
    { kernel: 'attention', args: `B ${s.B}, T ${s.T}, H ${s.H}, KVH ${s.KVH}, D ${s.D}`, out: att, run: () => be.attention(att, lse, q, k, v, as) },
    { kernel: 'swiglu', args: `n ${R * s.F}`, out: sw, run: () => be.swiglu(sw, gate, up, R * s.F) },
    { kernel: 'add', args: `n ${R * s.C}`, out: addOut, run: () => be.add(addOut, x, R * s.C, 1) },
    { kernel: 'dropout', args: `n ${R * s.C}, p 0.05`, out: drop, run: () => be.dropout(drop, x, R * s.C, 0.05, 1234) },
    { kernel: 'crossEntropy (+grad)', args: `R ${R}, V ${s.V}`, out: losses, run: () => be.crossEntropy(losses, ceLogits, targets, R, s.V, 1 / R) },
    { kernel: 'qMatmulBackwardInput down', args: `M ${R}, N ${s.C}, K ${s.F}`, out: dxDown, run: () => be.qMatmulBackwardInput(dxDown, dyDown, wdown, R) },
    { kernel: 'rmsNormBackward', args: `R ${R}, C ${s.C}`, out: dx, run: () => be.rmsNormBackward(dx, dy, x, normW, rstd, R, s.C) },
    { kernel: 'ropeBackward', args: `R ${R}, H ${s.H}, D ${s.D}`, out: dq, run: () => be.ropeBackward(dq, rope, R, s.T, s.H, s.D, 0) },
    { kernel: 'attentionBackward', args: `B ${s.B}, T ${s.T}, H ${s.H}, D ${s.D}`, out: dqA, run: () => be.attentionBackward(dqA, dk, dv, dAtt, q, k, v, att, lse, as) },
    { kernel: 'swigluBackward', args: `n ${R * s.F}`, out: dgate, run: () => be.swigluBackward(dgate, dup, dsw, gate, up, R * s.F) },
    { kernel: 'sumSquares', args: `n ${nOpt}`, out: ss, run: () => be.sumSquares(ss, grad, nOpt) },
    { kernel: 'adamwStep', args: `n ${nOpt}`, out: param, run: () => be.adamwStep(param, grad, m, vv, nOpt, adam) },
    { kernel: 'sgdStep', args: `n ${nOpt}`, out: param, run: () => be.sgdStep(param, grad, nOpt, 1e-6, 1) },
  ];
  // the forward of attention must have run once before its backward reads lse
  be.attention(att, lse, q, k, v, as);
  be.rmsNorm(normOut, rstd, x, normW, R, s.C, 1e-5);
  await be.flush();
  return {
    cases,
    free: () => {
      for (const t of owned) be.free(t);
      for (const w of quants) be.freeQuant(w);
    },
  };
}

/** Seconds per call: N calls, then flush + a 1-element read, best of `rounds`. */
async function timeKernel(be: Backend, c: KernelCase, rounds = 3, minRound = 0.25): Promise<number> {
  const sync = async () => { await be.flush(); await be.read(c.out, 0, 1); };
  c.run();
  await sync(); // warm-up: pipelines compiled, wasm tiered up
  let t0 = performance.now();
  c.run();
  await sync();
  const one = (performance.now() - t0) / 1000;
  const n = Math.max(1, Math.min(64, Math.ceil(minRound / Math.max(one, 1e-6))));
  // the probe is a round of N = 1 too; a kernel slower than 1 s gets one more round, not three
  let best = one;
  for (let r = 0; r < (one > 1 ? 1 : rounds); r++) {
    t0 = performance.now();
    for (let i = 0; i < n; i++) c.run();
    await sync();
    best = Math.min(best, (performance.now() - t0) / 1000 / n);
  }
  return best;
}

/** Seconds of one optimizer step (B 1, T 256, LoRA r 16 on all linear layers, AdamW), best of 3 after a warm-up. */
async function timeTrainStep(be: Backend, s: Shape): Promise<number> {
  const src = syntheticSource(`synthetic:${s.model}`);
  const model = await loadModel(src, be, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: s.T });
  const lora = new LoraAdapters(be, model.config, { r: s.r, alpha: 2 * s.r, dropout: 0.05, targets: [...LINEAR_NAMES], useRslora: false }, true);
  let st = 7;
  lora.initPeft(() => { st = (Math.imul(st, 1664525) + 1013904223) >>> 0; return st / 2 ** 32; });
  const R = s.B * s.T;
  const ids = new Int32Array(R), targets = new Int32Array(R);
  for (let i = 0; i < R; i++) { ids[i] = (i * 31 + 5) % s.V; targets[i] = (i * 31 + 36) % s.V; }
  const data: MicroBatchSource = { next: () => ({ ids, targets, B: s.B, T: s.T }), state: () => null, restore: () => {} };
  const trainer = new Trainer(model, lora, data, { ...TRAIN_DEFAULTS, batchSize: s.B, seqLen: s.T, totalSteps: 100 });
  try {
    const warm = (await trainer.trainStep()).seconds; // pipelines compiled, wasm tiered up
    let best = Infinity;
    for (let i = 0; i < (warm > 5 ? 1 : 3); i++) best = Math.min(best, (await trainer.trainStep()).seconds);
    return best;
  } finally {
    trainer.free();
    lora.free();
    model.free();
    await src.close();
  }
}

/** WebGPU through Dawn on lavapipe (createBackend({ prefer: 'webgpu' })), or why it cannot start. */
async function webgpuBackend(): Promise<{ be: Backend | null; why: string }> {
  try {
    const gpu = await dawnGpu();
    if (!gpu) return { be: null, why: 'the optional `webgpu` package (Dawn) is not installed' };
    const be = await createBackend({ prefer: 'webgpu', gpu });
    return be.name === 'webgpu' ? { be, why: '' } : { be: null, why: `createBackend gave ${be.name}` };
  } catch (e) {
    return { be: null, why: (e as Error).message.split('\n')[0]! };
  }
}

interface Row { shape: string; kernel: string; args: string; wasm_ms: number | null; webgpu_ms: number | null; webgpu_error?: string; wasm_error?: string }

export async function benchWebgpu(opts: { quick?: boolean; only?: string | null; step?: boolean; threads?: number } = {}): Promise<unknown> {
  const threads = opts.threads ?? 1;
  const title = benchTitle(threads);
  const shapes = opts.quick ? SHAPES.slice(0, 1) : SHAPES;
  const backends: Array<{ name: 'wasm' | 'webgpu'; be: Backend | null; why: string }> = [];
  if (opts.only !== 'webgpu') backends.push({ name: 'wasm', be: await createBackend({ prefer: 'wasm', threads }), why: '' });
  if (opts.only !== 'wasm') backends.push({ name: 'webgpu', ...(await webgpuBackend()) });
  for (const b of backends) if (!b.be) console.log(`${b.name}: not available (${b.why})`);
  const rows: Row[] = [];
  for (const s of shapes) {
    const perBackend = new Map<string, Map<string, number | string>>();
    /** kernel → its argument string, in table order */
    const kernels = new Map<string, string>();
    for (const b of backends) {
      const times = new Map<string, number | string>();
      perBackend.set(b.name, times);
      if (!b.be) continue;
      let built: Awaited<ReturnType<typeof buildCases>>;
      try {
        built = await buildCases(b.be, s);
      } catch (e) {
        console.log(`${b.name} ${s.name}: setup failed: ${(e as Error).message}`);
        continue;
      }
      for (const c of built.cases) {
        kernels.set(c.kernel, c.args);
        try {
          times.set(c.kernel, await timeKernel(b.be, c));
        } catch (e) {
          times.set(c.kernel, (e as Error).message.split('\n')[0]!);
        }
        process.stderr.write('.');
      }
      built.free();
      if (opts.step !== false && s.model) {
        try {
          times.set('train step', await timeTrainStep(b.be, s));
        } catch (e) {
          times.set('train step', (e as Error).message.split('\n')[0]!);
        }
      }
    }
    process.stderr.write('\n');
    if (opts.step !== false && s.model) kernels.set('train step', `synthetic:${s.model}, B ${s.B}, T ${s.T}, LoRA r ${s.r} all linear, AdamW`);
    for (const [kernel, args] of kernels) {
      const row: Row = { shape: s.name, kernel, args, wasm_ms: null, webgpu_ms: null };
      for (const b of ['wasm', 'webgpu'] as const) {
        const t = perBackend.get(b)?.get(kernel);
        if (typeof t === 'number') row[`${b}_ms`] = t * 1000;
        else if (typeof t === 'string') row[`${b}_error`] = t;
      }
      rows.push(row);
    }
  }
  const cell = (v: number | null) => (v === null ? '—' : fmt(v));
  printTable(`${title}\n(ms per call, best of 3 rounds of N calls ended by flush + read)`,
    ['shape', 'kernel', 'args', 'wasm ms', 'webgpu ms', 'webgpu / wasm'],
    rows.map((r) => [r.shape, r.kernel, r.args, cell(r.wasm_ms), cell(r.webgpu_ms), r.wasm_ms !== null && r.webgpu_ms !== null ? fmt(r.webgpu_ms / r.wasm_ms) : '—']));
  const missing = backends.filter((b) => !b.be).map((b) => `${b.name}: ${b.why}`);
  if (missing.length) console.log(`\nnot measured: ${missing.join('; ')}`);
  for (const b of backends) await b.be?.destroy();
  return {
    title,
    note: `webgpu = Dawn (npm webgpu) on Mesa lavapipe: CPU emulation (lavapipe), not GPU speed. wasm = ${threads} thread(s).`,
    wasmThreads: threads,
    backends: Object.fromEntries(backends.map((b) => [b.name, b.be ? 'ok' : `unavailable: ${b.why}`])),
    shapes: shapes.map((s) => ({ ...s, config: s.model ? SYNTHETIC_CONFIGS[s.model] : undefined })),
    rows,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const a = process.argv;
  const only = a.includes('--only') ? a[a.indexOf('--only') + 1] ?? null : null;
  const threads = a.includes('--threads') ? Number(a[a.indexOf('--threads') + 1]) : 1;
  const res = await benchWebgpu({ quick: a.includes('--quick'), only, step: !a.includes('--no-step'), threads });
  console.log(`\nwritten ${saveResults('webgpu', res)}`);
}
