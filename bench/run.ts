// npm run bench: the whole benchmark suite in one command. Prints one summary table (every
// figure a ratio or a measurement from this run, next to its goal) and writes
// bench/results/summary.json; each part's details go to its own JSON in bench/results/.
//   node --import tsx bench/run.ts [--quick] [--no-7b] [--memory-only] [--threads N]
// --quick: smaller GEMM sweeps and skips the memory runs (1B-class seq-512 steps, 1.1B, 7B).
// --memory-only: only the memory runs. The 7B step takes minutes.
// PyTorch rows appear when `python3 -c 'import torch'` works (never needed in CI): the tuned
// yardstick of bench/torch_lora.py, run right after webqlora's run of the same shape, with the
// settings it ran under in the table. A ratio to PyTorch is quoted only from such a pair.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { BENCH_DIR, fmt, printTable, saveResults, setQuiet } from './util.ts';
import { benchQuant } from './quant.ts';
import { benchGemm } from './gemm.ts';
import { benchThreads } from './threads.ts';
import type { TrainBenchResult } from './train.ts';
import { estimateTrainingMemory } from '../src/model/memory.ts';
import { SYNTHETIC_CONFIGS } from '../src/model/synthetic.ts';
import { DEFAULT_LORA } from '../src/model/lora.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const skip7b = quick || argv.includes('--no-7b');
const memoryOnly = argv.includes('--memory-only');
const threads = argv.includes('--threads') ? Number(argv[argv.indexOf('--threads') + 1]) : availableParallelism();
const GB = 1e9;
const rows: Array<[string, string, string, string]> = [];
const add = (what: string, value: string, goal = '', ok = '') => rows.push([what, value, goal, ok]);
const mark = (pass: boolean) => (pass ? 'met' : 'NOT met');

/** What bench/torch_lora.py prints last (its JSON line). */
interface TorchResult {
  tokens_per_s: number;
  settings: { tuned: boolean; jemalloc: string | null; blas: { openblas_config: string | null }; threads: number; cores: number; warmup_steps: number; summary: string };
}

/**
 * A webqlora / PyTorch ratio, quoted only when the yardstick ran the way its experts run it
 * (tuned environment, jemalloc, OpenBLAS); otherwise the row says why there is none. Each pair's
 * PyTorch settings are printed under it.
 */
function addRatio(what: string, value: string, goal: string, pass: boolean, tr: TorchResult): void {
  const st = tr.settings;
  const missing = [
    !st.tuned && 'the tuned environment', !st.jemalloc && 'jemalloc',
    !st.blas.openblas_config && 'OpenBLAS (the tuning here is for OpenBLAS; another BLAS is not measured)',
    st.threads !== st.cores && `a thread per core (${st.threads} threads, ${st.cores} cores)`, !(st.warmup_steps >= 1) && 'a warm-up step',
  ].filter(Boolean);
  if (missing.length) add(what, `no ratio quoted: the yardstick ran without ${missing.join(', ')}`, goal, 'not measured');
  else add(what, value, goal, mark(pass));
  add('  PyTorch yardstick ran with', st.summary);
}
const progress = (s: string) => process.stderr.write(`bench: ${s}\n`);
setQuiet(true);

/**
 * bench/train.ts bundled by esbuild (npm dependencies external, as dist/node is), so that its
 * process holds what `webqlora train` holds: under tsx the loader alone adds ≈ 50 MB of resident
 * memory to every peak RSS figure.
 */
const trainBundle = join(BENCH_DIR, '.bundle', 'train.mjs');
mkdirSync(dirname(trainBundle), { recursive: true });
await (await import('esbuild')).build({
  entryPoints: [join(BENCH_DIR, 'train.ts')], outfile: trainBundle, bundle: true, format: 'esm', platform: 'node', target: 'es2022',
  packages: 'external', logLevel: 'warning',
});

/** One bench/train.ts configuration in its own process, so its peak RSS is its own. */
function trainRun(args: string[]): TrainBenchResult {
  const r = spawnSync(process.execPath, [trainBundle, '--json', '--threads', String(threads), ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`bench/train.ts ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrainBenchResult;
}

function torchPython(): string | null {
  for (const py of ['python3', '/usr/bin/python3']) {
    try { execFileSync(py, ['-c', 'import torch'], { stdio: 'ignore' }); return py; } catch { /* next */ }
  }
  return null;
}

const summary: Record<string, unknown> = { threads };

if (!memoryOnly) {
  progress('quantization kernels');
  const q = (await benchQuant()) as { rows: Array<{ kernel: string; gbps: number; vsCopy: number }> };
  summary.quant = q;
  const deq = q.rows.find((r) => r.kernel.startsWith('NF4 dequantize'))!, quant = q.rows.find((r) => r.kernel.startsWith('NF4 quantize'))!;
  add('NF4 dequantize vs a WASM copy of the same f32 bytes', `${fmt(deq.gbps)} GB/s = ${fmt(deq.vsCopy)}× copy`);
  add('NF4 quantize (load-time cost)', `${fmt(quant.gbps)} GB/s of f32`);

  progress('GEMMs (one thread)');
  type GemmRow = { layout: string; M: number; N: number; K: number; peak: number; f32: number; nf4: number | null; f32OfPeak: number; nf4OverF32: number | null };
  const g = (await benchGemm(quick)) as { variants: Array<{ variant: string; rows: GemmRow[] }> };
  summary.gemm = g;
  for (const v of g.variants) {
    const big = v.rows.filter((r) => r.M >= 64);
    const nt = big.filter((r) => r.layout.startsWith('NT'));
    const worstPeak = Math.min(...big.map((r) => r.f32OfPeak));
    const medPeak = big.map((r) => r.f32OfPeak).sort((a, b) => a - b)[Math.floor(big.length / 2)]!;
    const ratios = nt.filter((r) => r.nf4OverF32 !== null).map((r) => r.nf4OverF32!);
    add(`[${v.variant}] WASM SIMD peak (register-only kernel)`, `${fmt(Math.max(...v.rows.map((r) => r.peak)))} GFLOP/s`);
    add(`[${v.variant}] f32 GEMM / peak, M ≥ 64, NT/NN/TN (median, worst)`, `${fmt(medPeak)}, ${fmt(worstPeak)}`, '≥ 0.7', mark(medPeak >= 0.7));
    add(`[${v.variant}] fused NF4 GEMM / f32 GEMM, M ≥ 64 (worst)`, fmt(Math.min(...ratios)), '≥ 0.8', mark(Math.min(...ratios) >= 0.8));
  }

  if (threads > 1) {
    progress(`thread scaling (1 vs ${threads})`);
    type TRow = { what: string; speedup: number; one: number; many: number };
    const t = (await benchThreads(threads, quick)) as { rows: TRow[] };
    summary.threads = t;
    for (const r of t.rows) {
      const isGoal = !r.what.startsWith('register');
      add(`${threads} threads vs 1: ${r.what}`, `${fmt(r.speedup)}×`, isGoal ? '≥ 1.8' : 'ceiling', isGoal ? mark(r.speedup >= 1.8) : '');
    }
  }

  progress('training throughput and decoding');
  const py = torchPython();
  // the register-only peak of the build the training runs use, times the threads: the ceiling
  const peakOf = (relaxed: boolean | null) => {
    const v = (summary.gemm as { variants: Array<{ variant: string; rows: Array<{ peak: number }> }> } | undefined)?.variants.find((x) => x.variant.startsWith('relaxed') === !!relaxed);
    return v ? Math.max(...v.rows.map((x) => x.peak)) : null;
  };
  // [shape, batch]: issue 12's yardstick shapes, LoRA dropout 0 on both sides
  for (const [m, batch] of [['stories15M', 4], ['stories110M', 1]] as const) {
    const shape = `b${batch}×256`;
    const r = trainRun(['--model', `synthetic:${m}`, '--batch', String(batch), '--seq', '256', '--steps', '4', '--dropout', '0', '--decode', '64']);
    summary[`train_${m}`] = r;
    const peak = peakOf(r.relaxedSimd);
    const ceiling = peak === null ? '' : `, ${fmt(r.trainGflops! / (peak * r.threads))} of the ${r.threads}-thread ${r.relaxedSimd ? 'relaxed-' : ''}SIMD peak (${fmt(peak * r.threads)})`;
    add(`train ${m} ${shape} (NF4+DQ, LoRA r16 dropout 0, ${r.threads} threads, ${r.wasmVariant})`, `${fmt(r.trainTokensPerS!)} tok/s = ${fmt(r.trainGflops!)} GFLOP/s${ceiling}`);
    const torch = py === null ? null : spawnSync(py, [join(BENCH_DIR, 'torch_lora.py'), '--model', m, '--batch', String(batch), '--seq', '256', '--warmup', '1', '--steps', '3', '--threads', String(threads)], { encoding: 'utf8' });
    if (torch && torch.status !== 0) {
      add(`PyTorch fp32 LoRA ${m} ${shape}`, `not measured: bench/torch_lora.py failed (${torch.stderr.trim().split('\n').pop()}; no ratio quoted)`);
    } else if (torch) {
      const out = torch.stdout;
      const tr = JSON.parse(out.trim().split('\n').pop()!) as TorchResult;
      summary[`torch_${m}`] = tr;
      const gf = (r.stepFlops.total * tr.tokens_per_s) / (batch * 256) / 1e9;
      const ratio = r.trainTokensPerS! / tr.tokens_per_s;
      add(`PyTorch fp32 LoRA ${m} ${shape} (the yardstick, same FLOP count)`, `${fmt(tr.tokens_per_s)} tok/s = ${fmt(gf)} GFLOP/s`);
      addRatio(`train ${m} ${shape}: webqlora / tuned PyTorch, this run`, `${fmt(ratio)}×`, '≥ 0.7', ratio >= 0.7, tr);
    } else {
      add(`PyTorch fp32 LoRA ${m} ${shape}`, 'not measured: `import torch` fails (no ratio quoted)');
    }
    add(`decode ${m} (NF4+DQ, KV cache)`, `${fmt(r.decodeTokensPerS!)} tok/s`);
  }

  // sample packing on real examples: the alpaca fixture through the tinyllama tokenizer, one epoch each
  progress('sample packing (alpaca fixture)');
  const fixtures = join(BENCH_DIR, '..', 'test', 'fixtures');
  // the unpacked run's micro-batches go to the PyTorch yardstick (issue 12: responses-only loss)
  mkdirSync(join(BENCH_DIR, 'results'), { recursive: true });
  const batchesFile = join(BENCH_DIR, 'results', 'alpaca_batches.json');
  const alpaca = (packing: boolean) => trainRun(['--model', 'synthetic:stories15M', '--batch', '4', '--seq', '256', '--dropout', '0',
    '--data', join(fixtures, 'data', 'identity_alpaca.json'), '--tokenizer', join(fixtures, 'tokenizers', 'tinyllama-1.1b-chat'),
    ...(packing ? ['--packing'] : ['--dump-batches', batchesFile])]).data!;
  // the unpacked run, then at once the same token batches through the tuned yardstick (full
  // logits and CE with ignore_index, as transformers computes the loss; webqlora computes logits
  // of scored (response) positions only), then the packed run
  const plain = alpaca(false);
  const what = 'responses-only loss: alpaca fixture, stories15M b4 (each batch padded to its longest), tinyllama tokenizer; PyTorch computes every position\'s logits as transformers does, webqlora only the scored ones';
  const torchData = py === null ? null : spawnSync(py, [join(BENCH_DIR, 'torch_lora.py'), '--model', 'stories15M', '--batches', batchesFile, '--warmup', '1', '--threads', String(threads)], { encoding: 'utf8' });
  if (torchData === null) add(`${what}: PyTorch`, 'not measured: `import torch` fails (no ratio quoted)');
  else if (torchData.status !== 0) add(`${what}: PyTorch`, `not measured: bench/torch_lora.py failed (${torchData.stderr.trim().split('\n').pop()}; no ratio quoted)`);
  else {
    const tr = JSON.parse(torchData.stdout.trim().split('\n').pop()!) as TorchResult & { batches: number };
    summary.torch_alpaca = tr;
    const ratio = plain.tokensPerS / tr.tokens_per_s;
    addRatio(`${what}: example tok/s, webqlora vs tuned PyTorch on the same ${tr.batches} timed batches, this run`,
      `${fmt(plain.tokensPerS)} vs ${fmt(tr.tokens_per_s)} tok/s = ${fmt(ratio)}×`, '≥ 1.2', ratio >= 1.2, tr);
  }
  const packed = alpaca(true);
  summary.packing = { plain, packed };
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  add('packing: alpaca fixture, stories15M b4×256, tinyllama tokenizer: example tokens/s without → with',
    `${fmt(plain.tokensPerS)} → ${fmt(packed.tokensPerS)} tok/s (${fmt(packed.tokensPerS / plain.tokensPerS)}×)`);
  add('packing: padded positions of an epoch without → with',
    `${pct(plain.padding)} → ${pct(packed.padding)} (${plain.epochPositions} → ${packed.epochPositions} positions, ${plain.epochBatches} → ${packed.epochBatches} micro-batches, for ${plain.epochTokens} tokens)`);
}

if (!quick) {
  // [shape, sequence length, goal GB or null]. Checkpointed steps, batch 1, NF4 +
  // double quant, LoRA r16 on all linear layers. llama-2-7b runs without --page-weights: its
  // layers are paged because they would not fit one wasm32 memory (the row says so).
  const shapes: Array<[string, number, number | null]> = [
    ['llama-3.2-1b', 512, 1.6],
    ['qwen2.5-0.5b', 512, null],
    ['gemma-3-1b', 512, null],
    ['tinyllama-1.1b', 64, 1.2],
  ];
  if (!skip7b) shapes.push(['llama-2-7b', 64, 4.5]);
  for (const [m, seq, goalGB] of shapes) {
    progress(`memory: ${m} checkpointed step, seq ${seq}${m === 'llama-2-7b' ? ' (several minutes)' : ''}`);
    const r = trainRun(['--model', `synthetic:${m}`, '--seq', String(seq), '--steps', '1', '--checkpointing']);
    const est = estimateTrainingMemory(SYNTHETIC_CONFIGS[m]!, { quant: 'nf4', doubleQuant: true, blocksize: 64, lora: DEFAULT_LORA, batch: 1, seqLen: seq, checkpointing: true, pageWeights: r.pageWeights, optimizer: 'adamw', threads: r.threads });
    summary[`memory_${m}`] = { measured: r, predicted: est };
    if (m === 'tinyllama-1.1b') add('tinyllama-1.1b load (NF4+DQ): peak RSS', `${fmt(r.loadPeakRssBytes / GB)} GB`, '≤ 1.0 GB', mark(r.loadPeakRssBytes <= GB));
    const paging = r.autoPaged ? ', layers paged by itself' : r.pageWeights ? ', paged layers' : '';
    add(`${m} training step (seq ${seq}, checkpointing${paging}): peak RSS`, `${fmt(r.peakRssBytes / GB)} GB (load ${fmt(r.loadPeakRssBytes / GB)} GB) in ${fmt(r.stepSeconds[0]!)} s`,
      goalGB === null ? '' : `≤ ${goalGB} GB`, goalGB === null ? '' : mark(r.peakRssBytes <= goalGB * GB));
    if (m === 'llama-2-7b') add('llama-2-7b without --page-weights: paging chosen by itself', r.autoPaged ? 'yes' : 'no', 'yes', mark(r.autoPaged !== null));
    const err = est.peakBytes / r.peakRssBytes - 1;
    add(`${m}: inspect's predicted peak vs measured`, `${fmt(est.peakBytes / GB)} GB (${err >= 0 ? '+' : ''}${(100 * err).toFixed(1)}%)`, 'within 10%', mark(Math.abs(err) <= 0.1));
  }
}

setQuiet(false);
printTable(`webqlora bench (${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${threads} threads; ratios are from this one run on a shared machine)`,
  ['what', 'measured', 'goal', ''], rows);
console.log(`\nwritten ${saveResults('summary', { rows, ...summary })}`);
process.exit(0);
