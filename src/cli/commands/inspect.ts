// webqlora inspect PATH [--json]: what a model file holds (format, config, tensors) and how much
// memory its weights need unquantized and in 4-bit. `inspect synthetic:` lists the synthetic shapes.
import { stat } from 'node:fs/promises';
import { WebqloraError } from '../../errors.ts';
import type { DType } from '../../io/dtype.ts';
import { numel } from '../../num.ts';
import { FileSource } from '../../io/node.ts';
import { openModelPath } from '../../io/node-model.ts';
import { openSafetensors } from '../../io/safetensors.ts';
import { ggmlTypeName, openGguf, readGguf } from '../../io/gguf.ts';
import type { QuantInfo } from '../../io/hf.ts';
import type { WeightSource } from '../../io/weights.ts';
import { paramCount, variantOf, type ModelConfig } from '../../model/config.ts';
import { bool, choice, num, optNum, str, type Command, type FlagTable, type Parsed } from '../args.ts';
import { contextOf, defaultSeqLen, quantFlags } from '../common.ts';
import { fmtBytes } from '../progress.ts';
import { autoPageReason, estimateTrainingMemory, RUNTIME_BASELINE_BYTES, WASM32_CAPACITY, weightParts, type TrainMemoryOptions } from '../../model/memory.ts';
import { DEFAULT_LORA, parseTargets } from '../../model/lora.ts';
import { SYNTHETIC_CONFIGS } from '../../model/synthetic.ts';
import type { OptimizerName } from '../../train/trainer.ts';
import { BATCH_SIZE, BLOCKSIZE, CHECKPOINTING, DOUBLE_QUANT, JSON_OUT, LORA_R, OPTIMIZER, PAGE_WEIGHTS, QUANT, SEQ_LEN, TARGET } from '../flags.ts';

interface TensorRow {
  name: string;
  dtype: DType;
  shape: number[];
  quant?: QuantInfo;
}

/** Weight memory as loadModel holds it, for f32 / NF4 / NF4+DQ linear layers (blocksize 64). */
export function weightMemory(c: ModelConfig): { none: number; nf4: number; nf4_double_quant: number } {
  const total = (q: Parameters<typeof weightParts>[1]) => { const w = weightParts(c, q); return w.embeddings + w.norms + w.layer * c.numLayers; };
  return {
    none: total({ quant: 'none', doubleQuant: false, blocksize: 64 }),
    nf4: total({ quant: 'nf4', doubleQuant: false, blocksize: 64 }),
    nf4_double_quant: total({ quant: 'nf4', doubleQuant: true, blocksize: 64 }),
  };
}


function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => '  ' + r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function tensorTable(rows: TensorRow[]): string {
  return table([
    ['name', 'dtype', 'shape', 'quant'],
    ...rows.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, t.quant ? `${t.quant.quantType} bs${t.quant.blocksize}${t.quant.doubleQuant ? ' +dq' : ''}` : '']),
  ]);
}

async function inspectSafetensorsFile(path: string, json: boolean): Promise<number> {
  const src = await FileSource.open(path);
  try {
    const st = await openSafetensors(src);
    const rows: TensorRow[] = [...st.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
    const elements = rows.reduce((s, r) => s + numel(r.shape), 0);
    if (json) {
      process.stdout.write(JSON.stringify({ path, format: 'safetensors', metadata: st.metadata, tensors: rows, elements, bytes: src.size }) + '\n');
    } else {
      let s = `${path}\nformat: safetensors (${fmtBytes(src.size)})\n`;
      if (st.metadata) s += `metadata: ${JSON.stringify(st.metadata)}\n`;
      s += `tensors (${rows.length}, ${elements.toLocaleString('en-US')} elements):\n${tensorTable(rows)}`;
      process.stdout.write(s);
    }
    return 0;
  } finally {
    await src.close();
  }
}

/** The training run the memory estimate is for, from the same flags `train` takes. */
function trainOptions(p: Parsed, c: ModelConfig): TrainMemoryOptions {
  const q = quantFlags(p);
  return {
    quant: q.quant, doubleQuant: q.doubleQuant, blocksize: q.blocksize,
    lora: { ...DEFAULT_LORA, r: num(p, 'lora-r'), targets: parseTargets(str(p, 'target')!) },
    batch: num(p, 'batch-size'),
    seqLen: optNum(p, 'seq-len') ?? defaultSeqLen(c),
    checkpointing: bool(p, 'checkpointing'),
    pageWeights: bool(p, 'page-weights'),
    optimizer: choice<OptimizerName>(p, 'optimizer'),
    threads: num(p, 'threads'),
  };
}

async function inspectModel(path: string, json: boolean, p: Parsed, gguf?: GgufSummary): Promise<number> {
  const ws: WeightSource = await openModelPath(path);
  try {
    const quantInfo = (ws as { quantInfo?: (n: string) => QuantInfo | null }).quantInfo;
    const rows: TensorRow[] = ws.tensors.map((t) => {
      const q = quantInfo?.(t.name) ?? null;
      return q ? { name: t.name, dtype: t.dtype, shape: t.shape, quant: q } : { name: t.name, dtype: t.dtype, shape: t.shape };
    });
    const params = paramCount(ws.config);
    const mem = weightMemory(ws.config);
    const to = { ...trainOptions(p, ws.config), wholeTables: !ws.readFloatRows };
    // as train on the WASM backend: layers are paged by themselves when the run would not fit
    const autoPaged = to.pageWeights ? null : autoPageReason(estimateTrainingMemory(ws.config, to), WASM32_CAPACITY);
    if (autoPaged) to.pageWeights = true;
    const train = estimateTrainingMemory(ws.config, to);
    // the config as the model computes with it (the source's raw config.json is not repeated)
    const { hfConfig: _raw, ...shown } = ws.config;
    if (json) {
      process.stdout.write(JSON.stringify({ path, format: ws.format, config: shown, tensors: rows, parameters: params, memory: mem, training_memory: { options: to, auto_paged: autoPaged, ...train }, ...(gguf ? { gguf } : {}) }) + '\n');
      return 0;
    }
    let s = `${path}\nformat: ${ws.format}\nconfig:\n`;
    s += table(Object.entries(shown).map(([k, v]) => [k, typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)]));
    s += `tensors (${rows.length}):\n${tensorTable(rows)}`;
    if (gguf) s += `gguf v${gguf.version} tensor types: ${typeCounts(gguf)}\n`;
    s += `parameters: ${params.toLocaleString('en-US')}\n`;
    s += `weight memory (block linear layers as below; embeddings and lm_head in ${ws.config.torchDtype}, norms f32):\n`;
    s += table([
      ['none (f32)', fmtBytes(mem.none)],
      ['nf4 (blocksize 64)', fmtBytes(mem.nf4)],
      ['nf4 + double quant', fmtBytes(mem.nf4_double_quant)],
    ]);
    const desc = `${to.quant}${to.quant !== 'none' && to.doubleQuant ? '+dq' : ''}, LoRA r ${to.lora.r}, batch ${to.batch} × ${to.seqLen} tokens${to.checkpointing ? ', checkpointing' : ''}${to.pageWeights ? ', paged weights' : ''}, ${to.optimizer}`;
    s += `training memory estimate (${desc}; same flags as train):\n`;
    if (autoPaged) s += `  (${autoPaged}, as train on the WASM backend does without --page-weights)\n`;
    s += table([
      ...Object.entries(train.parts).map(([k, v]) => [`  ${k}`, fmtBytes(v)]),
      ['backend memory', fmtBytes(train.backendBytes)],
      ['host memory (paged layers / optimizer)', fmtBytes(train.hostBytes)],
      ['peak while loading', fmtBytes(train.loadPeakBytes + RUNTIME_BASELINE_BYTES)],
      ['predicted peak RSS', fmtBytes(train.peakBytes)],
    ]);
    process.stdout.write(s);
    return 0;
  } finally {
    await ws.close();
  }
}

interface GgufSummary {
  version: number;
  metadata_keys: number;
  architecture: string | null;
  tensors: Array<{ name: string; type: string; shape: number[]; bytes: number }>;
}

function typeCounts(g: GgufSummary): string {
  const n = new Map<string, number>();
  for (const t of g.tensors) n.set(t.type, (n.get(t.type) ?? 0) + 1);
  return [...n].map(([t, k]) => `${t} ×${k}`).join(', ');
}

/**
 * A .gguf file: the model view (plus its ggml tensor types) when it loads as a model; otherwise
 * what the header holds (every tensor's GGUF name, ggml type and shape) and why it does not load.
 */
async function inspectGgufFile(path: string, json: boolean, p: Parsed): Promise<number> {
  const src = await FileSource.open(path);
  let g: GgufSummary, notLoadable: string | null;
  try {
    const f = await readGguf(src); // an unreadable header is an error, not a description
    const arch = f.metadata.get('general.architecture');
    g = {
      version: f.version, metadata_keys: f.metadata.size, architecture: typeof arch === 'string' ? arch : null,
      tensors: f.tensors.map((t) => ({ name: t.name, type: ggmlTypeName(t.type), shape: t.shape, bytes: t.byteLength })),
    };
    notLoadable = await openGguf(src).then(
      async (w) => { await w.close(); return null; },
      (e: unknown) => { if (e instanceof WebqloraError) return e.message; throw e; },
    );
  } finally {
    await src.close();
  }
  if (notLoadable === null) return inspectModel(path, json, p, g);
  if (json) {
    process.stdout.write(JSON.stringify({ path, format: 'gguf', gguf: g, model: null, not_loadable: notLoadable }) + '\n');
    return 0;
  }
  let s = `${path}\nformat: gguf v${g.version} (${fmtBytes(src.size)}), architecture ${g.architecture ?? '(none)'}, metadata keys: ${g.metadata_keys}\n`;
  s += `tensors (${g.tensors.length}; ${typeCounts(g)}):\n`;
  s += table([['name', 'type', 'shape', 'bytes'], ...g.tensors.map((t) => [t.name, t.type, `[${t.shape.join(', ')}]`, String(t.bytes)])]);
  s += `not a loadable model: ${notLoadable}\n`;
  process.stdout.write(s);
  return 0;
}

/** `inspect synthetic:`: the synthetic shapes, one line each. */
function listSynthetic(json: boolean): number {
  const shapes = Object.entries(SYNTHETIC_CONFIGS).map(([name, c]) => ({
    name: `synthetic:${name}`, family: variantOf(c).family, architecture: c.architecture, parameters: paramCount(c), layers: c.numLayers,
    hidden: c.hiddenSize, heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim, vocab: c.vocabSize, context: contextOf(c),
    dtype: c.torchDtype, tied: c.tieWordEmbeddings, nf4_double_quant: weightMemory(c).nf4_double_quant,
  }));
  if (json) {
    process.stdout.write(JSON.stringify({ synthetic: shapes }) + '\n');
    return 0;
  }
  process.stdout.write(`synthetic models (seeded random weights in the shapes of real checkpoints; inspect synthetic:NAME for one):\n` + table([
    ['name', 'family', 'parameters', 'L', 'C', 'H/KVH×D', 'V', 'context', 'dtype', 'nf4+dq'],
    ...shapes.map((m) => [m.name, m.family, m.parameters.toLocaleString('en-US'), String(m.layers), String(m.hidden), `${m.heads}/${m.kvHeads}×${m.headDim}`,
      String(m.vocab), String(m.context), `${m.dtype}${m.tied ? ' tied' : ''}`, fmtBytes(m.nf4_double_quant)]),
  ]));
  return 0;
}

// The memory estimate's run, described by train's own flags.
const FLAGS: FlagTable = {
  quant: QUANT, 'double-quant': DOUBLE_QUANT, blocksize: BLOCKSIZE, 'lora-r': LORA_R, target: TARGET,
  'seq-len': SEQ_LEN, 'batch-size': BATCH_SIZE, optimizer: OPTIMIZER,
  checkpointing: CHECKPOINTING, 'page-weights': PAGE_WEIGHTS,
  threads: { kind: 'int', arg: 'N', min: 1, max: 256, default: 1, group: 'backend', help: 'WASM threads of the run (each has its own scratch memory)' },
  json: JSON_OUT,
};

export const inspectCommand: Command = {
  summary: 'show a model\'s format, config, tensors and the memory a training run would need',
  flags: FLAGS,
  positional: { name: 'PATH', help: 'a model directory, .gguf, .bin or .safetensors file, or synthetic: for the list of synthetic shapes' },
  example: 'webqlora inspect tinyllama-1.1b-chat.Q4_K_M.gguf --seq-len 256 --checkpointing',
  async run(p) {
    if (p.positionals.length !== 1) throw new WebqloraError('expected exactly one PATH (a model directory, .gguf, .bin or .safetensors file).');
    const path = p.positionals[0]!;
    const json = bool(p, 'json');
    if (path === 'synthetic:') return listSynthetic(json);
    const isFile = await stat(path).then((s) => s.isFile(), () => false);
    if (isFile && path.toLowerCase().endsWith('.safetensors')) return inspectSafetensorsFile(path, json);
    if (isFile && path.toLowerCase().endsWith('.gguf')) return inspectGgufFile(path, json, p);
    return inspectModel(path, json, p);
  },
};
