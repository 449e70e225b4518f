// bitsandbytes 4-bit checkpoints (QLORA_SPEC.md §4; test/vectors/bnb/README.md §2.4).
//
// Per quantized Linear with weight name W (e.g. model.layers.0.self_attn.q_proj.weight),
// n = numel, nb = ceil(n/S), nn = ceil(nb/256):
//   W                                    U8  [ceil(n/2), 1]  packed codes, element 2k in the high nibble
//   W.absmax                             U8 [nb] (double quant) | F32 [nb] (plain)
//   W.quant_map                          F32 [16]
//   W.nested_absmax                      F32 [nn]            (double quant only)
//   W.nested_quant_map                   F32 [256]           (double quant only)
//   W.quant_state.bitsandbytes__nf4|fp4  U8 [len]            UTF-8 JSON of the non-tensor fields
// bnb Linear4bit._save_to_state_dict + QuantState.as_dict(packed=True); readers: QuantState.from_dict.
import { WebqloraError } from '../errors.ts';
import { hfTokenizerFiles } from '../tokenizer/export.ts';
import type { EmbeddedVocab } from './weights.ts';
import { LINEAR_NAMES, expectedTensors, linearSource, type ModelConfig } from '../model/config.ts';
import { configToHf } from './hf-config.ts';
import { quantize4bit, doubleQuantize, dequantize4bit, checkBlocksize, quantMapOf } from '../quant/quantize.ts';
import { DYNAMIC_SIGNED } from '../quant/tables.ts';
import { ALLOWED_BLOCKSIZES, NESTED_BLOCKSIZE, numBlocks, type Quant4Tensor, type QuantType } from '../quant/types.ts';
import { DTYPE_BYTES, TORCH_DTYPE, dtypeFromTorch, fromFloat32, sameShape, toFloat32, type DType } from './dtype.ts';
import { numel } from '../num.ts';
import { planSafetensors, writeSafetensors, type SafetensorsEntry, type SafetensorsFile } from './safetensors.ts';
import { closeSource, writeFileTo, type DirSource, type OutDir } from './source.ts';
import type { WeightSource } from './weights.ts';

export type BnbQuantType = 'nf4' | 'fp4';

/** Suffix of the packed-JSON key for a quant type (bnb QuantState.as_dict(packed=True)). */
function quantStateSuffix(t: BnbQuantType): string {
  return `quant_state.bitsandbytes__${t}`;
}

const QUANT_STATE_RE = /^(.*)\.quant_state\.bitsandbytes__(nf4|fp4)$/;

// ---------------------------------------------------------------------------------------------
// Python-compatible JSON, so files bnb/transformers would write come out byte-identical.

/**
 * Python `repr(float)`: the shortest digits that round-trip (like JS), but written in exponent
 * form when the decimal exponent is < -4 or >= 16, with a sign and at least two exponent digits
 * (`1e-05`, `1.5e+16`), and with `.0` on integral values in fixed form (`6.0`).
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() with no argument gives the shortest round-trip digits (ECMA-262 Number::toString).
  const m = /^(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(Math.abs(x).toExponential())!;
  const digits = m[1]! + (m[2] ?? '');
  const exp = Number(m[3]);
  if (exp < -4 || exp >= 16) {
    const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${sign}${mant}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  if (digits.length <= exp + 1) return `${sign}${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
}

/** A number that Python holds as a float (so `6` is written `6.0`). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/**
 * Python `json.dumps(value, indent=indent, sort_keys=sortKeys)` with the default
 * ensure_ascii=True. Integral JS numbers are written as Python ints unless wrapped in PyFloat;
 * other numbers use Python's float repr (NaN/Infinity as Python writes them).
 */
export function pythonJsonDumps(value: unknown, opts: { indent?: number; sortKeys?: boolean } = {}): string {
  const indent = opts.indent;
  const item = indent === undefined ? ', ' : ',';
  const num = (x: number, isFloat: boolean): string => {
    if (Number.isNaN(x)) return 'NaN';
    if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
    return !isFloat && Number.isInteger(x) && !Object.is(x, -0) ? String(x) : pythonFloatRepr(x);
  };
  const go = (v: unknown, depth: number): string => {
    const nl = indent === undefined ? '' : '\n' + ' '.repeat(indent * (depth + 1));
    const end = indent === undefined ? '' : '\n' + ' '.repeat(indent * depth);
    if (v === null || v === undefined) return 'null';
    if (v instanceof PyFloat) return num(v.value, true);
    if (typeof v === 'number') return num(v, false);
    if (typeof v === 'boolean') return v ? 'true' : 'false';
    if (typeof v === 'string') return pythonJsonString(v);
    if (Array.isArray(v)) {
      if (v.length === 0) return '[]';
      return `[${nl}${v.map((x) => go(x, depth + 1)).join(item + nl)}${end}]`;
    }
    if (typeof v === 'object') {
      let keys = Object.keys(v as object);
      if (keys.length === 0) return '{}';
      if (opts.sortKeys) keys = keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${nl}${keys.map((k) => `${pythonJsonString(k)}: ${go((v as Record<string, unknown>)[k], depth + 1)}`).join(item + nl)}${end}}`;
    }
    throw new Error(`pythonJsonDumps: cannot write a ${typeof v}`);
  };
  return go(value, 0);
}

function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[i];
  }
  return out + '"';
}

// ---------------------------------------------------------------------------------------------
// quant_state JSON

/** The packed quant_state JSON exactly as bnb writes it (QuantState.as_dict + pack_dict_to_tensor). */
export function quantStateJson(q: Quant4Tensor): string {
  const qt = requireBnbType(q.quantType);
  const fields: Record<string, unknown> = {
    quant_type: qt,
    blocksize: q.blocksize,
    dtype: TORCH_DTYPE[q.dtype],
    shape: q.shape,
  };
  if (q.dq) {
    fields.nested_blocksize = q.dq.nestedBlocksize;
    fields.nested_dtype = 'float32';
    // The float32 offset widened to double, printed by Python's float repr.
    fields.nested_offset = new PyFloat(q.dq.offset);
  }
  return pythonJsonDumps(fields);
}

function requireBnbType(t: QuantType): BnbQuantType {
  if (t !== 'nf4' && t !== 'fp4') {
    throw new WebqloraError(`${t} is not a bitsandbytes 4-bit type, so it cannot be written as a bnb checkpoint (use --quant nf4 or fp4).`);
  }
  return t;
}

/** Fields of a parsed quant_state JSON. */
export interface QuantStateFields {
  quantType: BnbQuantType;
  blocksize: number;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  nested: { blocksize: number; offset: number } | null;
}

/** Parses and checks a quant_state JSON blob (`what` names the tensor key in messages). */
export function parseQuantState(bytes: Uint8Array, what: string, expectType?: BnbQuantType): QuantStateFields {
  let j: unknown;
  try {
    j = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new WebqloraError(`${what}: the quant_state is not valid UTF-8 JSON.`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new WebqloraError(`${what}: the quant_state is not a JSON object.`);
  const o = j as Record<string, unknown>;
  const qt = o.quant_type;
  if (qt !== 'nf4' && qt !== 'fp4') throw new WebqloraError(`${what}: quant_type ${JSON.stringify(qt) ?? 'is missing'} is not supported (expected "nf4" or "fp4").`);
  if (expectType && qt !== expectType) throw new WebqloraError(`${what}: quant_type "${qt}" does not match the key suffix __${expectType}.`);
  const bs = o.blocksize;
  if (typeof bs !== 'number' || !(ALLOWED_BLOCKSIZES as readonly number[]).includes(bs)) {
    throw new WebqloraError(`${what}: blocksize ${JSON.stringify(bs) ?? '(missing)'} is not supported (expected one of ${ALLOWED_BLOCKSIZES.join(', ')}).`);
  }
  const dtype = typeof o.dtype === 'string' ? dtypeFromTorch(o.dtype) : null;
  if (!dtype) throw new WebqloraError(`${what}: dtype ${JSON.stringify(o.dtype) ?? '(missing)'} is not supported (expected "float32", "float16" or "bfloat16").`);
  const shape = o.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0) || !Number.isSafeInteger(numel(shape as number[]))) {
    throw new WebqloraError(`${what}: shape ${JSON.stringify(shape) ?? '(missing)'} is not a list of non-negative integers.`);
  }
  let nested: QuantStateFields['nested'] = null;
  const hasNested = 'nested_blocksize' in o || 'nested_offset' in o || 'nested_dtype' in o;
  if (hasNested) {
    const nbs = o.nested_blocksize, off = o.nested_offset;
    if (typeof nbs !== 'number' || !(ALLOWED_BLOCKSIZES as readonly number[]).includes(nbs)) {
      throw new WebqloraError(`${what}: nested_blocksize ${JSON.stringify(nbs) ?? '(missing)'} is not supported (expected one of ${ALLOWED_BLOCKSIZES.join(', ')}; bnb writes 256).`);
    }
    if (o.nested_dtype !== 'float32') throw new WebqloraError(`${what}: nested_dtype ${JSON.stringify(o.nested_dtype) ?? '(missing)'} is not supported (expected "float32").`);
    if (typeof off !== 'number' || !Number.isFinite(off)) throw new WebqloraError(`${what}: nested_offset ${JSON.stringify(off) ?? '(missing)'} is not a finite number.`);
    // Readers round the double back to the float32 it came from (vectors README §2.4).
    nested = { blocksize: nbs, offset: Math.fround(off) };
  }
  return { quantType: qt, blocksize: bs, dtype, shape: [...(shape as number[])], nested };
}

// ---------------------------------------------------------------------------------------------
// Quant4Tensor <-> checkpoint tensors

/** The checkpoint tensors of one quantized weight named `weightName` (e.g. `...q_proj.weight`). */
export function bnbTensorEntries(weightName: string, q: Quant4Tensor): Array<{ name: string; dtype: DType; shape: number[]; data: Uint8Array }> {
  const qt = requireBnbType(q.quantType);
  const n = numel(q.shape);
  const out: Array<{ name: string; dtype: DType; shape: number[]; data: Uint8Array }> = [
    { name: weightName, dtype: 'U8', shape: [Math.ceil(n / 2), 1], data: q.packed },
  ];
  if (q.dq) {
    out.push(
      { name: `${weightName}.absmax`, dtype: 'U8', shape: [q.dq.codes.length], data: q.dq.codes },
      { name: `${weightName}.quant_map`, dtype: 'F32', shape: [16], data: fromFloat32(q.quantMap, 'F32') },
      { name: `${weightName}.nested_absmax`, dtype: 'F32', shape: [q.dq.nestedAbsmax.length], data: fromFloat32(q.dq.nestedAbsmax, 'F32') },
      { name: `${weightName}.nested_quant_map`, dtype: 'F32', shape: [256], data: fromFloat32(q.dq.nestedQuantMap, 'F32') },
    );
  } else {
    out.push(
      { name: `${weightName}.absmax`, dtype: 'F32', shape: [q.absmax!.length], data: fromFloat32(q.absmax!, 'F32') },
      { name: `${weightName}.quant_map`, dtype: 'F32', shape: [16], data: fromFloat32(q.quantMap, 'F32') },
    );
  }
  const json = new TextEncoder().encode(quantStateJson(q));
  out.push({ name: `${weightName}.${quantStateSuffix(qt)}`, dtype: 'U8', shape: [json.length], data: json });
  return out;
}

/** Names, dtypes and shapes of a weight's checkpoint tensors (without data), given its quant_state. */
function bnbPartSpecs(weightName: string, qs: QuantStateFields): Array<{ name: string; dtype: DType; shape: number[] }> {
  const n = numel(qs.shape);
  const nb = numBlocks(n, qs.blocksize);
  const specs: Array<{ name: string; dtype: DType; shape: number[] }> = [
    { name: weightName, dtype: 'U8', shape: [Math.ceil(n / 2), 1] },
    { name: `${weightName}.absmax`, dtype: qs.nested ? 'U8' : 'F32', shape: [nb] },
    { name: `${weightName}.quant_map`, dtype: 'F32', shape: [16] },
  ];
  if (qs.nested) {
    specs.push(
      { name: `${weightName}.nested_absmax`, dtype: 'F32', shape: [numBlocks(nb, qs.nested.blocksize)] },
      { name: `${weightName}.nested_quant_map`, dtype: 'F32', shape: [256] },
    );
  }
  return specs;
}

/** Read access to tensors by name, possibly spread over several files (HF shards). */
export interface TensorStore {
  /** Header entry, or undefined if no file holds the tensor. */
  info(name: string): { dtype: DType; shape: number[] } | undefined;
  read(name: string): Promise<Uint8Array>;
  /** File a tensor lives in, for messages. */
  fileOf(name: string): string;
}

function storeOf(st: SafetensorsFile): TensorStore {
  return { info: (n) => st.tensors.get(n), read: (n) => st.readRaw(n), fileOf: () => st.name };
}

/** Every quant_state key in a store's tensor names, as weightName → quant type. */
export function findBnbWeights(names: Iterable<string>): Map<string, BnbQuantType> {
  const out = new Map<string, BnbQuantType>();
  for (const k of names) {
    const m = QUANT_STATE_RE.exec(k);
    if (!m) continue;
    if (out.has(m[1]!)) throw new WebqloraError(`${m[1]}: has both a quant_state.bitsandbytes__nf4 and a __fp4 (expected exactly one).`);
    out.set(m[1]!, m[2] as BnbQuantType);
  }
  return out;
}

/**
 * Reads and checks the quant_state of `weightName` and the headers of its parts (not their data).
 * Returns the parsed fields and the part names it accounts for.
 */
export async function checkBnbWeight(store: TensorStore, weightName: string, type: BnbQuantType): Promise<{ qs: QuantStateFields; parts: string[] }> {
  const key = `${weightName}.${quantStateSuffix(type)}`;
  const kinfo = store.info(key)!;
  const where = `${store.fileOf(key)}: ${key}`;
  if (kinfo.dtype !== 'U8') throw new WebqloraError(`${where}: dtype ${kinfo.dtype}, expected U8 (UTF-8 JSON bytes).`);
  const qs = parseQuantState(await store.read(key), where, type);
  const parts = [key];
  for (const spec of bnbPartSpecs(weightName, qs)) {
    const got = store.info(spec.name);
    if (!got) throw new WebqloraError(`${store.fileOf(key)}: ${spec.name} is missing (every bnb 4-bit weight needs it; expected ${spec.dtype} [${spec.shape.join(', ')}]).`);
    const loc = `${store.fileOf(spec.name)}: ${spec.name}`;
    // Packed weights may be stored [P, 1] (bnb) or flat [P]; other quant_storage dtypes are not supported.
    const shapeOk = sameShape(got.shape, spec.shape) || (spec.name === weightName && sameShape(got.shape, [spec.shape[0]!]));
    if (got.dtype !== spec.dtype) {
      const hint = spec.name === weightName ? ' (only bnb_4bit_quant_storage uint8 is supported)' : '';
      throw new WebqloraError(`${loc}: dtype ${got.dtype}, expected ${spec.dtype}${hint}.`);
    }
    if (!shapeOk) {
      throw new WebqloraError(`${loc}: shape [${got.shape.join(', ')}], expected [${spec.shape.join(', ')}] for a ${qs.quantType} weight of shape [${qs.shape.join(', ')}] with blocksize ${qs.blocksize}.`);
    }
    parts.push(spec.name);
  }
  return { qs, parts };
}

/** Loads one quantized weight exactly as stored (its own quant_map and nested_quant_map). */
export async function readBnbQuant(store: TensorStore, weightName: string, qs: QuantStateFields): Promise<Quant4Tensor> {
  const f32 = async (k: string) => toFloat32(await store.read(k), 'F32', `${store.fileOf(k)}: ${k}`);
  const packed = (await store.read(weightName)).slice();
  const quantMap = await f32(`${weightName}.quant_map`);
  const base = { quantType: qs.quantType, blocksize: qs.blocksize, shape: [...qs.shape], dtype: qs.dtype, packed, quantMap };
  if (!qs.nested) return { ...base, absmax: await f32(`${weightName}.absmax`), dq: null };
  return {
    ...base,
    absmax: null,
    dq: {
      codes: (await store.read(`${weightName}.absmax`)).slice(),
      nestedAbsmax: await f32(`${weightName}.nested_absmax`),
      nestedQuantMap: await f32(`${weightName}.nested_quant_map`),
      offset: qs.nested.offset,
      nestedBlocksize: qs.nested.blocksize,
    },
  };
}

/**
 * Every bnb 4-bit weight in one safetensors file, keyed by weight name (`<layer>.weight`),
 * without needing a model config (e.g. the vectors' model_* files).
 */
export async function readBnbWeights(st: SafetensorsFile): Promise<Map<string, Quant4Tensor>> {
  const store = storeOf(st);
  const out = new Map<string, Quant4Tensor>();
  for (const [w, type] of findBnbWeights(st.tensors.keys())) {
    const { qs } = await checkBnbWeight(store, w, type);
    out.set(w, await readBnbQuant(store, w, qs));
  }
  return out;
}

/** dequantize_4bit output in the quantized tensor's own dtype, widened back to float32. */
export async function dequantizeToDtype(q: Quant4Tensor): Promise<Float32Array> {
  const v = await dequantize4bit(q);
  return q.dtype === 'F32' ? v : roundToDtype(v, q.dtype);
}

/** Rounds float32 values to F16/BF16 (RNE) and back, in place. */
export function roundToDtype(v: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Float32Array {
  if (dtype === 'F32') return v;
  const r = toFloat32(fromFloat32(v, dtype), dtype, 'round');
  v.set(r);
  return v;
}

// ---------------------------------------------------------------------------------------------
// config.json

/**
 * `quantization_config` as transformers' BitsAndBytesConfig.to_dict() writes it (QLORA_SPEC.md §4.5,
 * all fields). `computeDtype` is the torch name ("bfloat16", ...).
 */
export function bnbQuantizationConfig(opts: { quantType: BnbQuantType; doubleQuant: boolean; computeDtype: string }): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: opts.computeDtype,
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: opts.quantType,
    bnb_4bit_use_double_quant: opts.doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: new PyFloat(6.0),
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: 'bitsandbytes',
  };
}

// ---------------------------------------------------------------------------------------------
// Writing a whole quantized model

/**
 * Files copied next to the weights when the source directory has them: what save_pretrained
 * writes for a tokenizer (recent transformers versions put the chat template in chat_template.jinja;
 * vocab.json, merges.txt and added_tokens.json make up tokenizers saved without tokenizer.json),
 * and the generation defaults.
 */
export const TOKENIZER_FILES = [
  'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'tokenizer.model',
  'chat_template.jinja', 'added_tokens.json', 'vocab.json', 'merges.txt',
] as const;

/**
 * Copies each of TOKENIZER_FILES that `from` has into `out` (nothing if `from` is null), each
 * written atomically; the names copied are appended to `copied` when given.
 */
export async function copyTokenizerFiles(from: DirSource | null, out: OutDir, copied?: string[], vocab?: EmbeddedVocab | null): Promise<void> {
  if (!from) {
    // no tokenizer files to copy (a GGUF source): write the HF files of its vocabulary, so
    // transformers' AutoTokenizer opens the output with the same ids
    if (!vocab) return;
    for (const [f, bytes] of hfTokenizerFiles(vocab, { chatTemplate: vocab.chatTemplate ?? null })) {
      await writeFileTo(out, f, bytes);
      copied?.push(f);
    }
    return;
  }
  for (const f of TOKENIZER_FILES) {
    const s = await from.open(f);
    if (!s) continue;
    try {
      await writeFileTo(out, f, await s.read(0, s.size));
    } finally {
      await closeSource(s);
    }
    copied?.push(f);
  }
}

/** transformers' default max_shard_size "5GB" (10^9-byte GB). */
const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export interface BnbWriteOptions {
  quantType: BnbQuantType;
  doubleQuant: boolean;
  blocksize: number;
  /** Called after each step: a pre-pass over quantized weights (double quant only), then each tensor written. */
  onProgress?: (done: number, total: number, name: string) => void;
  /** Copy TOKENIZER_FILES from here if present (the source HF directory). */
  copyFrom?: DirSource | null;
  /** Shard when the weights exceed this many bytes (default 5 GB, as save_pretrained). */
  maxShardBytes?: number;
}

export interface BnbWriteResult {
  files: string[];
  tensors: number;
  quantized: number;
  /** Bytes of tensor data written. */
  bytes: number;
}

interface Unit {
  /** Source tensor name. */
  name: string;
  /** Output entries (lazy data). */
  entries: SafetensorsEntry[];
  bytes: number;
}

/**
 * Writes `src` as a bnb 4-bit HF checkpoint into `out`: the seven linear weights of every block
 * quantized, every other tensor kept in the model's torch dtype (what transformers + bnb save).
 *
 * Memory: the safetensors header needs every tensor's size before any data, and a
 * double-quantized weight's quant_state JSON length depends on its offset, so double quant first
 * runs a pre-pass that quantizes each weight once and keeps only its offset and nested absmax
 * (nb/256 floats). The write pass then reads and quantizes one tensor at a time (a weight's parts
 * of one dtype sort next to each other, so a one-entry cache serves them); at most one float
 * tensor and one quantized tensor are alive at once. Each weight is quantized twice in total.
 */
export async function writeBnbModel(src: WeightSource, out: OutDir, opts: BnbWriteOptions): Promise<BnbWriteResult> {
  const quantType = requireBnbType(opts.quantType);
  checkBlocksize(opts.blocksize);
  const c = src.config;
  const dtype = c.torchDtype;
  const have = new Map(src.tensors.map((t) => [t.name, t]));
  const linear = new Set<string>();
  for (let l = 0; l < c.numLayers; l++) for (const lin of LINEAR_NAMES) linear.add(`${linearSource(c, l, lin).path}.weight`);
  // The model's parameters as present in the source (lm_head is absent when tied, as
  // save_pretrained drops it).
  const names = expectedTensors(c).map((t) => t.name).filter((n) => have.has(n));
  const quantNames = names.filter((n) => linear.has(n));

  const quantizePlain = async (name: string): Promise<Quant4Tensor> => {
    // transformers quantizes the weight as loaded in torch_dtype: round to it first.
    const values = roundToDtype(await src.readFloat(name), dtype);
    return quantize4bit(values, { quantType, blocksize: opts.blocksize, doubleQuant: false, shape: have.get(name)!.shape, dtype });
  };

  const total = (opts.doubleQuant ? quantNames.length : 0) + names.length;
  let done = 0;
  const progress = (name: string) => opts.onProgress?.(++done, total, name);

  // Pre-pass (double quant only): offset and nested absmax of every weight.
  const dqInfo = new Map<string, { offset: number; nestedAbsmax: Float32Array }>();
  if (opts.doubleQuant) {
    for (const name of quantNames) {
      const q = await doubleQuantize(await quantizePlain(name));
      dqInfo.set(name, { offset: q.dq!.offset, nestedAbsmax: q.dq!.nestedAbsmax });
      progress(name);
    }
  }

  let cache: { name: string; q: Promise<Quant4Tensor> } | null = null;
  const quantized = (name: string): Promise<Quant4Tensor> => {
    if (cache?.name !== name) {
      const info = dqInfo.get(name);
      // The pre-pass offset is passed back in, so the data always matches the header's JSON.
      cache = { name, q: quantizePlain(name).then((p) => (info ? doubleQuantize(p, undefined, info.offset) : p)) };
    }
    return cache.q;
  };

  const units: Unit[] = [];
  for (const name of names) {
    const t = have.get(name)!;
    let touched = false;
    const touch = () => { if (!touched) { touched = true; progress(name); } };
    if (!linear.has(name)) {
      const entries: SafetensorsEntry[] = [{ name, dtype, shape: [...t.shape], data: async () => { touch(); return fromFloat32(await src.readFloat(name), dtype); } }];
      units.push({ name, entries, bytes: numel(t.shape) * DTYPE_BYTES[dtype] });
      continue;
    }
    const n = numel(t.shape);
    const nb = numBlocks(n, opts.blocksize);
    const info = dqInfo.get(name);
    // A stand-in with the real fixed parts (tables, nested absmax, offset) and zeroed
    // data-dependent parts gives the exact names, dtypes, shapes and JSON bytes.
    const proto: Quant4Tensor = {
      quantType, blocksize: opts.blocksize, shape: [...t.shape], dtype,
      packed: new Uint8Array(Math.ceil(n / 2)), quantMap: quantMapOf(quantType),
      absmax: info ? null : new Float32Array(nb),
      dq: info ? { codes: new Uint8Array(nb), nestedAbsmax: info.nestedAbsmax, nestedQuantMap: DYNAMIC_SIGNED.slice(), offset: info.offset, nestedBlocksize: NESTED_BLOCKSIZE } : null,
    };
    const dataDependent = new Set([name, `${name}.absmax`]);
    const entries: SafetensorsEntry[] = bnbTensorEntries(name, proto).map((s) => ({
      name: s.name, dtype: s.dtype, shape: s.shape,
      data: async () => {
        touch();
        if (!dataDependent.has(s.name)) return s.data;
        return bnbTensorEntries(name, await quantized(name)).find((e) => e.name === s.name)!.data;
      },
    }));
    units.push({ name, entries, bytes: entries.reduce((sum, e) => sum + numel(e.shape) * DTYPE_BYTES[e.dtype], 0) });
  }

  // Shards: consecutive units (all parts of a weight stay in one file), as shard_checkpoint does.
  const maxShard = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const shards: Unit[][] = [[]];
  let cur = 0;
  for (const u of units) {
    if (cur + u.bytes > maxShard && shards[shards.length - 1]!.length > 0) { shards.push([]); cur = 0; }
    shards[shards.length - 1]!.push(u);
    cur += u.bytes;
  }
  const meta = { format: 'pt' };
  const files: string[] = [];
  let bytes = 0;
  const weightMap: Record<string, string> = {};
  const pad = (i: number) => String(i).padStart(5, '0');
  for (let s = 0; s < shards.length; s++) {
    const file = shards.length === 1 ? 'model.safetensors' : `model-${pad(s + 1)}-of-${pad(shards.length)}.safetensors`;
    const entries = shards[s]!.flatMap((u) => u.entries);
    bytes += planSafetensors(entries, meta).dataBytes;
    for (const e of entries) weightMap[e.name] = file;
    await writeSafetensors(await out.create(file), entries, meta);
    files.push(file);
  }
  if (shards.length > 1) {
    const sortedMap: Record<string, string> = {};
    for (const k of Object.keys(weightMap).sort()) sortedMap[k] = weightMap[k]!;
    await writeFileTo(out, 'model.safetensors.index.json', pythonJsonDumps({ metadata: { total_size: bytes }, weight_map: sortedMap }, { indent: 2 }) + '\n');
    files.push('model.safetensors.index.json');
  }
  await copyTokenizerFiles(opts.copyFrom ?? null, out, files, src.vocab);
  // config.json last: a directory without it is not a model, so an interrupted run is never
  // mistaken for a finished one.
  await writeFileTo(out, 'config.json', bnbConfigJson(c, quantType, opts.doubleQuant));
  files.push('config.json');
  return { files, tensors: names.length, quantized: quantNames.length, bytes };
}

/** config.json of a bnb checkpoint: the model config in HF form + quantization_config. */
function bnbConfigJson(c: ModelConfig, quantType: BnbQuantType, doubleQuant: boolean): string {
  const torch = TORCH_DTYPE[c.torchDtype]!;
  const hf: Record<string, unknown> = {
    ...(configToHf(c) as Record<string, unknown>),
    quantization_config: bnbQuantizationConfig({ quantType, doubleQuant, computeDtype: torch }),
    torch_dtype: torch,
  };
  return pythonJsonDumps(hf, { indent: 2, sortKeys: true }) + '\n';
}
