// Hugging Face model directories: config.json + model.safetensors, or shards listed in
// model.safetensors.index.json; plain float checkpoints and bitsandbytes 4-bit checkpoints
// (QLORA_SPEC.md §4). Everything is checked at open — the index against the shards, bnb parts
// against their quant_state, every tensor against the shapes the config implies — so a bad
// directory fails before any training starts, with one sentence naming the file and tensor.
import { WebqloraError } from '../errors.ts';
import { expectedTensors, type ModelConfig } from '../model/config.ts';
import { configFromHf } from './hf-config.ts';
import type { Quant4Tensor } from '../quant/types.ts';
import { checkBnbWeight, dequantizeToDtype, findBnbWeights, readBnbQuant, type BnbQuantType, type QuantStateFields, type TensorStore } from './bnb.ts';
import { sameShape, toFloat32, type DType } from './dtype.ts';
import { openSafetensors, type SafetensorsFile } from './safetensors.ts';
import { closeSource, readJson, type ByteSource, type DirSource } from './source.ts';
import type { TensorRef, WeightSource } from './weights.ts';

const INDEX_FILE = 'model.safetensors.index.json';

/** bnb settings of one quantized weight, from its quant_state. */
export interface QuantInfo {
  quantType: BnbQuantType;
  blocksize: number;
  doubleQuant: boolean;
  /** dtype the weight had when quantized. */
  dtype: 'F32' | 'F16' | 'BF16';
}

export interface HfWeightSource extends WeightSource {
  /** Safetensors files the weights come from, in order. */
  readonly files: string[];
  /** bnb settings of a 4-bit weight, or null for a float tensor. */
  quantInfo(name: string): QuantInfo | null;
}

async function closeAll(srcs: ByteSource[]): Promise<void> {
  await Promise.all(srcs.map((s) => closeSource(s).catch(() => {})));
}

/** Opens an HF model directory (float or bnb 4-bit) as a WeightSource. */
export async function openHfDir(dir: DirSource): Promise<HfWeightSource> {
  const opened: ByteSource[] = [];
  try {
    return await openHfDirInner(dir, opened);
  } catch (e) {
    await closeAll(opened);
    throw e;
  }
}

async function openHfDirInner(dir: DirSource, opened: ByteSource[]): Promise<HfWeightSource> {
  const cfgSrc = await dir.open('config.json');
  if (!cfgSrc) throw new WebqloraError(`${dir.name}: no config.json (expected a Hugging Face model directory).`);
  opened.push(cfgSrc);
  const cfgJson = await readJson(cfgSrc);
  const config = configFromHf(cfgJson, cfgSrc.name);
  const bnbConfigured = checkQuantizationConfig((cfgJson as Record<string, unknown>).quantization_config, cfgSrc.name);

  // name → the file holding it
  const where = new Map<string, SafetensorsFile>();
  const files: SafetensorsFile[] = [];
  const indexSrc = await dir.open(INDEX_FILE);
  if (indexSrc) {
    opened.push(indexSrc);
    const idx = await readJson(indexSrc);
    const wm = (idx as { weight_map?: unknown } | null)?.weight_map;
    if (typeof idx !== 'object' || idx === null || typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
      throw new WebqloraError(`${indexSrc.name}: expected an object with a "weight_map" of tensor name to shard file.`);
    }
    const byShard = new Map<string, SafetensorsFile>();
    for (const [tensor, shard] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard === '' || /[\\/]/.test(shard) || shard === '.' || shard === '..') {
        throw new WebqloraError(`${indexSrc.name}: tensor ${tensor} maps to ${JSON.stringify(shard)}, expected a file name in the same directory.`);
      }
      let st = byShard.get(shard);
      if (!st) {
        const s = await dir.open(shard);
        if (!s) throw new WebqloraError(`${indexSrc.name}: shard ${shard} (listed for tensor ${tensor}) does not exist in ${dir.name}.`);
        opened.push(s);
        st = await openSafetensors(s);
        byShard.set(shard, st);
        files.push(st);
      }
      if (!st.tensors.has(tensor)) throw new WebqloraError(`${indexSrc.name}: tensor ${tensor} is listed in shard ${shard}, but ${shard} has no such tensor.`);
      where.set(tensor, st);
    }
    if (where.size === 0) throw new WebqloraError(`${indexSrc.name}: the weight_map is empty.`);
  } else {
    const s = await dir.open('model.safetensors');
    if (!s) {
      const listed = await dir.list().catch(() => [] as string[]);
      const pt = listed.find((f) => /\.(bin|pt|pth)$/.test(f) && f !== 'training_args.bin');
      throw new WebqloraError(pt
        ? `${dir.name}: has ${pt} but no model.safetensors; pickled PyTorch checkpoints are not supported (convert to safetensors first).`
        : `${dir.name}: no model.safetensors or ${INDEX_FILE} (expected the weights of a Hugging Face model).`);
    }
    opened.push(s);
    const st = await openSafetensors(s);
    files.push(st);
    for (const name of st.tensors.keys()) where.set(name, st);
  }

  const store: TensorStore = {
    info: (n) => where.get(n)?.tensors.get(n),
    read: (n) => {
      const st = where.get(n);
      if (!st) throw new WebqloraError(`${dir.name}: no tensor named ${n}.`);
      return st.readRaw(n);
    },
    fileOf: (n) => where.get(n)?.name ?? dir.name,
  };

  // bnb weights: one TensorRef per weight, its parts hidden. Detected from the tensors
  // themselves, so a checkpoint whose config lost its quantization_config still loads.
  const quant = new Map<string, QuantStateFields>();
  const consumed = new Set<string>();
  for (const [w, type] of findBnbWeights(where.keys())) {
    if (!where.has(w)) throw new WebqloraError(`${store.fileOf(`${w}.quant_state.bitsandbytes__${type}`)}: ${w} is missing (its quant_state is present; every bnb 4-bit weight needs both).`);
    const { qs, parts } = await checkBnbWeight(store, w, type);
    quant.set(w, qs);
    for (const p of parts) consumed.add(p);
  }
  const isBnb = quant.size > 0;
  if (bnbConfigured && !isBnb) {
    throw new WebqloraError(`${cfgSrc.name}: quantization_config says bitsandbytes 4-bit, but the weights hold no quant_state tensors.`);
  }

  const refs = new Map<string, TensorRef>();
  for (const [name, st] of where) {
    if (consumed.has(name) && !quant.has(name)) continue;
    const qs = quant.get(name);
    const t = st.tensors.get(name)!;
    refs.set(name, qs ? { name, dtype: qs.dtype, shape: [...qs.shape] } : { name, dtype: t.dtype, shape: [...t.shape] });
  }
  checkAgainstConfig(config, refs, quant, store);

  // Model parameters first in model order, then anything else in file order.
  const ordered: TensorRef[] = [];
  for (const e of expectedTensors(config)) {
    const r = refs.get(e.name);
    if (r) { ordered.push(r); refs.delete(e.name); }
  }
  ordered.push(...refs.values());

  const byName = new Map(ordered.map((t) => [t.name, t]));
  const need = (name: string): TensorRef => {
    const t = byName.get(name);
    if (!t) throw new WebqloraError(`${dir.name}: no tensor named ${name}.`);
    return t;
  };
  const readQuant = async (name: string): Promise<Quant4Tensor | null> => {
    need(name);
    const qs = quant.get(name);
    return qs ? readBnbQuant(store, name, qs) : null;
  };
  return {
    format: isBnb ? 'bnb-4bit' : 'hf',
    name: dir.name,
    config,
    tensors: ordered,
    vocab: null,
    files: files.map((f) => f.name),
    quantInfo(name: string): QuantInfo | null {
      const qs = quant.get(name);
      return qs ? { quantType: qs.quantType, blocksize: qs.blocksize, doubleQuant: qs.nested !== null, dtype: qs.dtype } : null;
    },
    async readFloat(name: string, into?: Float32Array): Promise<Float32Array> {
      const t = need(name);
      const q = await readQuant(name);
      // bnb dequantize_4bit returns the weight in its quant_state dtype.
      if (q) return dequantizeToDtype(q);
      return toFloat32(await store.read(name), t.dtype, `${store.fileOf(name)}: tensor ${name}`, into);
    },
    async readFloatRows(name: string, row0: number, rows: number, into?: Float32Array): Promise<Float32Array> {
      need(name);
      if (quant.has(name)) throw new WebqloraError(`${store.fileOf(name)}: ${name} is 4-bit; its rows are read whole.`);
      return where.get(name)!.readFloatRows(name, row0, rows, into);
    },
    readQuant,
    async close(): Promise<void> {
      await closeAll(opened.splice(0));
    },
  };
}

/** True if config.json declares a bnb 4-bit checkpoint; throws for quantizations we cannot read. */
function checkQuantizationConfig(qc: unknown, file: string): boolean {
  if (qc === undefined || qc === null) return false;
  if (typeof qc !== 'object' || Array.isArray(qc)) throw new WebqloraError(`${file}: "quantization_config" must be an object.`);
  const q = qc as Record<string, unknown>;
  const method = q.quant_method ?? 'bitsandbytes';
  if (method !== 'bitsandbytes') {
    throw new WebqloraError(`${file}: quantization_config.quant_method ${JSON.stringify(method)} is not supported (expected "bitsandbytes" 4-bit).`);
  }
  if (q.load_in_8bit === true || q._load_in_8bit === true) {
    throw new WebqloraError(`${file}: 8-bit bitsandbytes checkpoints are not supported (only load_in_4bit).`);
  }
  if (q.load_in_4bit !== true && q._load_in_4bit !== true) {
    throw new WebqloraError(`${file}: quantization_config has neither load_in_4bit nor load_in_8bit set.`);
  }
  const storage = q.bnb_4bit_quant_storage;
  if (storage !== undefined && storage !== null && storage !== 'uint8') {
    throw new WebqloraError(`${file}: bnb_4bit_quant_storage ${JSON.stringify(storage)} is not supported (expected "uint8").`);
  }
  return true;
}

const FLOAT_DTYPES: readonly DType[] = ['F32', 'F16', 'BF16', 'F64'];

/** Every parameter the config implies must be present with its exact shape and a float dtype. */
function checkAgainstConfig(c: ModelConfig, refs: Map<string, TensorRef>, quant: Map<string, QuantStateFields>, store: TensorStore): void {
  for (const e of expectedTensors(c)) {
    const r = refs.get(e.name);
    const file = store.fileOf(e.name);
    if (!r) {
      if (e.name === 'lm_head.weight' && c.tieWordEmbeddings) continue;
      throw new WebqloraError(`${file}: ${e.name} is missing (the config expects shape [${e.shape.join(', ')}]).`);
    }
    if (!sameShape(r.shape, e.shape)) {
      const transposed = r.shape.length === 2 && e.shape.length === 2 && r.shape[0] === e.shape[1] && r.shape[1] === e.shape[0];
      throw new WebqloraError(`${file}: ${e.name}: expected [${e.shape.join(', ')}], got [${r.shape.join(', ')}]${transposed ? ' (is the checkpoint transposed?)' : ' (does config.json match the weights?)'}.`);
    }
    if (!quant.has(e.name) && !FLOAT_DTYPES.includes(r.dtype)) {
      throw new WebqloraError(`${file}: ${e.name}: dtype ${r.dtype} is not a floating-point type (expected F32, F16 or BF16).`);
    }
  }
}
