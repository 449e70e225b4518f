// bench/threads: WASM thread scaling, 1 thread vs N (default 2) on the same process and inputs:
// the f32 GEMM and the fused NF4 GEMM (forward x·Wᵀ and the backward dY·deq(W)), and one whole
// training step of a stories15M-shaped synthetic model (NF4 + double quant, LoRA r 16 on every
// linear layer, AdamW, seq 256). The two backends are timed alternately, call by call and step by
// step, so both see the same machine. GEMM rows: median call time of each backend, and the
// speed-up as the median over rounds of (1-thread call / N-thread call) timed back to back;
// training: median step of each (interference on a shared machine hits single calls, and a
// median of paired ratios is steadier than a ratio of best calls). Every ratio comes from one
// run. Results: bench/results/threads.json.
// The first row is the ceiling: the register-only simd_peak kernel run once per thread through
// the same pool. On a machine shared with other work it shows how many cores were really free
// (1.0× = none besides ours), which bounds every other row.
//   node --import tsx bench/threads.ts [--threads 2] [--quick]
//   node --experimental-wasm-relaxed-simd --import tsx bench/threads.ts
import { createWasmBackend, wasmBackendInfo, wasmInternals } from '../src/backend/wasm/index.ts';
import type { Backend } from '../src/backend/backend.ts';
import { syntheticSource } from '../src/model/synthetic.ts';
import { loadModel } from '../src/model/load.ts';
import { LoraAdapters, DEFAULT_LORA } from '../src/model/lora.ts';
import { Trainer, TRAIN_DEFAULTS } from '../src/train/trainer.ts';
import { SampleRng } from '../src/generate/sample.ts';
import { lcg, nf4, put } from './gemm.ts';
import { printTable, saveResults } from './util.ts';
import { RandomBatches } from './train.ts';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
}


interface Row { what: string; one: number; many: number; speedup: number; unit: string }

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

/**
 * f1 and f2 called back to back for ≥ ms (≥ 7 rounds) after ~0.3 s of warm-up; returns the
 * median time of each and the median of the per-round ratios t1/t2.
 */
function pairTimes(ms: number, f1: () => void, f2: () => void): { t1: number; t2: number; ratio: number } {
  let t0 = performance.now();
  while (performance.now() - t0 < 300) { f1(); f2(); }
  const a: number[] = [], b: number[] = [], r: number[] = [];
  t0 = performance.now();
  while (a.length < 7 || performance.now() - t0 < ms) {
    let t = performance.now();
    f1();
    const x = performance.now() - t;
    t = performance.now();
    f2();
    const y = performance.now() - t;
    a.push(x); b.push(y); r.push(x / y);
  }
  return { t1: median(a) / 1000, t2: median(b) / 1000, ratio: median(r) };
}

/** simd_peak once per thread, through the pool (one chunk each) vs once on one thread. */
function peakRow(b1: Backend, bN: Backend, threads: number, quick: boolean): Row {
  const iters = 2e6, flop = 96 * iters;
  const I1 = wasmInternals(b1), IN = wasmInternals(bN);
  const chunks = Array.from({ length: threads }, (_, t) => [t, t + 1] as [number, number]);
  const p = pairTimes(quick ? 400 : 1500, () => I1.kernels.k.simd_peak_par(iters, 0, 1), () => IN.par('simd_peak_par', [iters, 0, threads], 1, { chunks }));
  return { what: 'register-only peak (simd_peak, one per thread): the ceiling', one: flop / p.t1 / 1e9, many: (threads * flop) / p.t2 / 1e9, speedup: threads * p.ratio, unit: 'GFLOP/s' };
}

async function gemmRows(b1: Backend, bN: Backend, quick: boolean): Promise<Row[]> {
  const rows: Row[] = [];
  const M = 256, N = 2048, K = 2048;
  const flop = 2 * M * N * K;
  const setup = async (be: Backend) => ({
    x: put(be, lcg(M * K, 1, 1), 'x'), w: put(be, lcg(N * K, 2, 0.1), 'w'), y: be.alloc('f32', M * N, 'y'),
    dy: put(be, lcg(M * N, 3, 1), 'dy'), dx: be.alloc('f32', M * K, 'dx'), q: await nf4(be, N, K, 2),
  });
  const s1 = await setup(b1), sN = await setup(bN);
  const ms = quick ? 400 : 1500;
  const cases: Array<[string, (be: Backend, s: typeof s1) => void]> = [
    [`f32 GEMM x·Wᵀ ${M}×${N}×${K}`, (be, s) => be.matmul(s.y, s.x, s.w, M, N, K, { transB: true })],
    [`NF4 GEMM x·deq(W)ᵀ ${M}×${N}×${K}`, (be, s) => be.qMatmul(s.y, s.x, s.q, M)],
    [`NF4 backward dY·deq(W) ${M}×${K}×${N}`, (be, s) => be.qMatmulBackwardInput(s.dx, s.dy, s.q, M)],
  ];
  for (const [what, f] of cases) {
    const p = pairTimes(ms, () => f(b1, s1), () => f(bN, sN));
    rows.push({ what, one: flop / p.t1 / 1e9, many: flop / p.t2 / 1e9, speedup: p.ratio, unit: 'GFLOP/s' });
  }
  return rows;
}

async function trainRow(b1: Backend, bN: Backend, steps: number): Promise<Row & { stepSeconds1: number[]; stepSecondsN: number[] }> {
  const seq = 256, batch = 1;
  const setup = async (be: Backend) => {
    const model = await loadModel(syntheticSource('synthetic:stories15M'), be, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: seq });
    const lora = new LoraAdapters(be, model.config, { ...DEFAULT_LORA }, true);
    const rng = new SampleRng(2);
    lora.initPeft(() => rng.next());
    return new Trainer(model, lora, new RandomBatches(batch, seq, model.config.vocabSize), {
      ...TRAIN_DEFAULTS, batchSize: batch, seqLen: seq, totalSteps: steps + 1, warmupRatio: 0,
    });
  };
  const tr1 = await setup(b1), trN = await setup(bN);
  // one untimed step each (JIT tier-up, first touch of memory), then alternate
  await tr1.trainStep();
  await trN.trainStep();
  const s1: number[] = [], sN: number[] = [];
  for (let i = 0; i < steps; i++) {
    s1.push((await tr1.trainStep()).seconds);
    sN.push((await trN.trainStep()).seconds);
  }
  const m1 = median(s1), mN = median(sN);
  tr1.free();
  trN.free();
  return { what: `training step, synthetic:stories15M NF4, LoRA r ${DEFAULT_LORA.r} all linear, seq ${seq} (median of ${steps})`, one: (batch * seq) / m1, many: (batch * seq) / mN, speedup: m1 / mN, unit: 'tokens/s', stepSeconds1: s1, stepSecondsN: sN };
}

export async function benchThreads(threads = 2, quick = false): Promise<unknown> {
  const b1 = await createWasmBackend({ threads: 1 });
  const bN = await createWasmBackend({ threads });
  const info = wasmBackendInfo(bN);
  if (info.threads !== threads) throw new Error(`bench/threads: asked for ${threads} threads, got ${info.summary}`);
  const rows: Row[] = [peakRow(b1, bN, threads, quick), ...(await gemmRows(b1, bN, quick))];
  const train = await trainRow(b1, bN, quick ? 3 : 7);
  rows.push(train);
  printTable(`bench/threads: 1 thread vs ${threads} (${info.summary}; ${wasmBackendInfo(b1).variant} for 1 thread), timed alternately in one run`,
    ['what', 'unit', '1 thread', `${threads} threads`, 'speed-up'], rows.map((r) => [r.what, r.unit, r.one, r.many, r.speedup]));
  await b1.destroy();
  await bN.destroy();
  return { threads, variant: info.variant, rows };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const res = await benchThreads(Number(arg('threads', '2')), process.argv.includes('--quick'));
  console.log(`\nwritten ${saveResults('threads', res)}`);
}
