// Merging an adapter into the base: W' = deq(W4) + s·B·A (DoRA: each row then scaled by
// m / ‖row‖), written as an HF directory in
// f16/bf16/f32. The base is dequantized from exactly the 4-bit weights the adapter was trained
// against (the stored bnb weights, or the same deterministic quantization of the float
// checkpoint), and the result is never re-quantized: re-quantizing adds rounding error
// (huggingface/peft #2321) and merging into the original float weights mismatches what the
// adapter learned against (artidoro/qlora #28) — QLORA_SPEC §9.8.
import type { Backend, Tensor } from '../backend/backend.ts';
import { copyTokenizerFiles, pythonJsonDumps } from '../io/bnb.ts';
import { fromFloat32, TORCH_DTYPE } from '../io/dtype.ts';
import { writeSafetensors, type SafetensorsEntry } from '../io/safetensors.ts';
import { writeFileTo, type DirSource, type OutDir } from '../io/source.ts';
import type { WeightSource } from '../io/weights.ts';
import { dequantize4bit, quantize4bit } from '../quant/quantize.ts';
import type { QuantMode } from '../quant/types.ts';
import { expectedTensors, LINEAR_NAMES, linearShape, linearSource } from './config.ts';
import { configToHf } from '../io/hf-config.ts';
import type { LoraAdapters } from './lora.ts';

export interface MergeOptions {
  dtype: 'F16' | 'BF16' | 'F32';
  /** How the base was held while the adapter trained (default nf4 + double quant, blocksize 64). */
  quant: QuantMode;
  doubleQuant: boolean;
  blocksize: number;
  copyFrom?: DirSource | null;
  onProgress?: (done: number, total: number, name: string) => void;
}

/**
 * The merged model's tensors, one at a time (HF names and layout): linear weights are
 * deq(W) + s·B·A, everything else is read from the source. `free` releases the backend scratch.
 */
export function mergedValues(src: WeightSource, lora: LoraAdapters, backend: Backend, opts: Omit<MergeOptions, 'dtype' | 'copyFrom' | 'onProgress'>): { values: (name: string) => Promise<Float32Array>; free: () => void } {
  const c = src.config;
  // stored linear weight name → its layer (a fused Phi-3 module holds several logical linears)
  const linearOf = new Map<string, number>();
  for (let l = 0; l < c.numLayers; l++) for (const n of LINEAR_NAMES) linearOf.set(`${linearSource(c, l, n).path}.weight`, l);
  const shapes = new Map(expectedTensors(c).map((t) => [t.name, t.shape]));
  // one backend buffer for every s·B·A, sized for the widest linear layer
  let widest = 0;
  for (const n of LINEAR_NAMES) { const [N, K] = linearShape(c, n); widest = Math.max(widest, N * K); }
  const delta = lora.pairs.length ? backend.alloc('f32', widest, 'merge.delta') : null;
  return {
    values: async (name) => {
      const layer = linearOf.get(name);
      return layer !== undefined ? mergedLinear(src, lora, backend, delta, layer, name, shapes.get(name) as [number, number], opts) : src.readFloat(name);
    },
    free: () => { if (delta) backend.free(delta); },
  };
}

/** Writes config.json and model.safetensors (one tensor computed at a time) into `out`. */
export async function mergeAdapter(src: WeightSource, lora: LoraAdapters, backend: Backend, out: OutDir, opts: MergeOptions): Promise<{ tensors: number }> {
  const c = src.config;
  const tensors = expectedTensors(c);
  const merged = mergedValues(src, lora, backend, opts);
  let done = 0;
  const entries: SafetensorsEntry[] = tensors.map((t) => ({
    name: t.name,
    dtype: opts.dtype,
    shape: t.shape,
    data: async () => {
      const v = await merged.values(t.name);
      opts.onProgress?.(++done, tensors.length, t.name);
      return fromFloat32(v, opts.dtype);
    },
  }));
  try {
    await writeSafetensors(await out.create('model.safetensors'), entries, { format: 'pt' });
  } finally {
    merged.free();
  }
  await copyTokenizerFiles(opts.copyFrom ?? null, out, undefined, src.vocab);
  // config.json last: a directory that has one holds a finished model
  const cfg = { ...configToHf(c), torch_dtype: TORCH_DTYPE[opts.dtype] };
  await writeFileTo(out, 'config.json', pythonJsonDumps(cfg, { indent: 2, sortKeys: true }) + '\n');
  return { tensors: tensors.length };
}

/**
 * deq(W) + s·B·A of one stored linear weight [rows, K]: the base exactly as training held it
 * (a fused module is quantized whole, as on load), plus each adapted logical linear's delta in
 * its rows.
 */
async function mergedLinear(src: WeightSource, lora: LoraAdapters, be: Backend, delta: Tensor | null, layer: number, wname: string, shape: [number, number], o: Omit<MergeOptions, 'dtype' | 'copyFrom' | 'onProgress'>): Promise<Float32Array> {
  let w: Float32Array;
  const stored = src.format === 'bnb-4bit' ? await src.readQuant(wname) : null;
  if (stored) w = await dequantize4bit(stored);
  else if (o.quant === 'none') w = await src.readFloat(wname);
  else w = await dequantize4bit(await quantize4bit(await src.readFloat(wname), { quantType: o.quant, blocksize: o.blocksize, doubleQuant: o.doubleQuant, shape }));
  const K = shape[1];
  for (const name of LINEAR_NAMES) {
    const ls = linearSource(src.config, layer, name);
    const pair = `${ls.path}.weight` === wname ? lora.get(layer, name) : null;
    if (!pair || !delta) continue;
    // ΔW [N, K] = s · B[N, r] · A[r, K], computed by the backend's GEMM, added to rows row0..
    be.matmul(delta, pair.B, pair.A, pair.N, K, pair.r, { alpha: pair.scaling });
    const d = (await be.read(delta, 0, pair.N * K)) as Float32Array;
    const o0 = ls.row0 * K;
    for (let i = 0; i < d.length; i++) w[o0 + i] = w[o0 + i]! + d[i]!;
    if (pair.dora) {
      // DoRA folds its magnitude in (PEFT's merge): row j of W + ΔW times m_j / ‖(W + ΔW)_j‖
      const m = (await be.read(pair.dora.m)) as Float32Array;
      for (let j = 0; j < pair.N; j++) {
        const row = w.subarray(o0 + j * K, o0 + (j + 1) * K);
        let ss = 0;
        for (let k = 0; k < K; k++) ss += row[k]! * row[k]!;
        const f = m[j]! / Math.fround(Math.sqrt(ss));
        for (let k = 0; k < K; k++) row[k] = row[k]! * f;
      }
    }
  }
  return w;
}
