// bench/gpu: WebGPU training throughput on this machine's GPU, for a lent GPU (issue 12 item 6).
// Run through bench/gpu.sh (installs nothing beyond `npm ci`, needs no network). For each model
// shape, one bench/train.ts process on --backend webgpu: NF4 + double quant base, LoRA r16 on all
// linear layers, dropout 0, AdamW, batch 1 × seq 256, no checkpointing. Reports train tokens/s
// (the steps after the first, their wall time ending in a flush), achieved GFLOP/s (the step's
// GEMM FLOPs counted from the shapes by bench/flops.ts: frozen base forward + input gradient, the
// LoRA terms, causal attention, the lm_head; elementwise work not counted) and the adapter.
//   node --import tsx bench/gpu.ts [--steps 4] [--seq 256] [--models stories110M,tinyllama-1.1b]
//     [--timeout-s 200] [--require-gpu]
// No adapter at all: exit 2 with the reason. A CPU emulation (lavapipe, SwiftShader): measured and
// labelled CPU EMULATION on every line, or exit 3 with --require-gpu. Results: bench/results/gpu.json.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { dawnGpu } from '../src/backend/webgpu/dawn.ts';
import { describeAdapter } from '../src/backend/webgpu/index.ts';
import { BENCH_DIR, fmt, printTable, saveResults } from './util.ts';
import type { TrainBenchResult } from './train.ts';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
}
const fail = (code: number, msg: string): never => {
  console.error(`bench/gpu: ${msg}`);
  process.exit(code);
};

const steps = Number(arg('steps', '4')), seq = Number(arg('seq', '256')), timeoutS = Number(arg('timeout-s', '200'));
const models = arg('models', 'stories110M,tinyllama-1.1b').split(',').filter(Boolean);
if (!(steps >= 2)) fail(1, `--steps ${steps}: at least 2 (the first is a warm-up)`);

// the adapter first, so a machine without one fails in seconds
const gpu = await dawnGpu({ quiet: true });
if (!gpu) fail(2, 'the optional `webgpu` package (Dawn) is not installed or not built for this platform: run `npm ci` (it installs optional dependencies), then check `node -e "import(\'webgpu\')"`.');
const adapter = await gpu!.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter) fail(2, 'no WebGPU adapter: Dawn found no Vulkan device (is a GPU driver with its Vulkan ICD installed? `ls /usr/share/vulkan/icd.d/`, `vulkaninfo --summary`). Nothing was measured.');
const ad = describeAdapter(adapter!);
const info = (adapter as { info?: GPUAdapterInfo }).info;
const adapterText = [ad.name, info?.vendor, info?.architecture, info?.device].filter(Boolean).join(' / ');
const label = ad.cpu ? `${ad.name}: CPU EMULATION, NOT GPU SPEED` : ad.name;
if (ad.cpu && process.argv.includes('--require-gpu')) fail(3, `the only WebGPU adapter is ${adapterText}, a CPU emulation (--require-gpu).`);
console.error(`bench/gpu: adapter ${adapterText}${ad.cpu ? ' — a CPU emulation: the figures below are NOT GPU speed' : ''}`);

interface Row { model: string; ok: boolean; r?: TrainBenchResult; error?: string; wallSeconds: number }
const rows: Row[] = [];
for (const m of models) {
  console.error(`bench/gpu: synthetic:${m}, b1×${seq}, ${steps} steps (timeout ${timeoutS} s)`);
  const t0 = performance.now();
  const p = spawnSync(process.execPath, ['--import', 'tsx', join(BENCH_DIR, 'train.ts'), '--backend', 'webgpu', '--model', `synthetic:${m}`,
    '--batch', '1', '--seq', String(seq), '--steps', String(steps), '--dropout', '0', '--json'], { encoding: 'utf8', timeout: timeoutS * 1000, maxBuffer: 1 << 26 });
  const wallSeconds = (performance.now() - t0) / 1000;
  if (p.status === 0) rows.push({ model: m, ok: true, r: JSON.parse(p.stdout.trim().split('\n').pop()!) as TrainBenchResult, wallSeconds });
  else rows.push({ model: m, ok: false, error: p.signal ? `killed after ${timeoutS} s (--timeout-s)` : (p.stderr.trim().split('\n').filter(Boolean).pop() ?? `exit ${p.status}`), wallSeconds });
}

const G = 1e9;
printTable(`bench/gpu: WebGPU training, adapter ${adapterText}${ad.cpu ? ' (CPU EMULATION: not GPU speed)' : ''}; NF4+DQ base, LoRA r16 all linear, dropout 0, AdamW, b1×${seq}`,
  ['model', 'train tok/s', 'GFLOP/s', 'GFLOP per step', 'step s (first = warm-up)', 'load s', 'adapter'],
  rows.map((x) => x.ok
    ? [x.model, fmt(x.r!.trainTokensPerS!), fmt(x.r!.trainGflops!), fmt(x.r!.stepFlops.total / G), x.r!.stepSeconds.map((s) => s.toFixed(3)).join(' '), fmt(x.r!.loadSeconds), label]
    : [x.model, 'failed', '', '', x.error!, '', label]));
console.log(`\nGFLOP per step: ${rows.filter((x) => x.ok).map((x) => {
  const f = x.r!.stepFlops;
  return `${x.model} = base ${fmt(f.base / G)} + LoRA ${fmt(f.lora / G)} + attention ${fmt(f.attention / G)} + lm_head ${fmt(f.head / G)}`;
}).join('; ')} (bench/flops.ts)`);
console.log(`written ${saveResults('gpu', { adapter: { ...ad, text: adapterText, info: info ? { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description } : null }, steps, seq, rows })}`);
process.exit(rows.every((x) => x.ok) ? 0 : 1);
