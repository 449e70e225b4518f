// GGUF reader (llama.cpp's model file format), v2 and v3, little-endian.
//
// Why our own parser and not @huggingface/gguf (0.4.6): that package takes a URL (HTTP range
// requests through `fetch`) or, in Node only, a local path it opens itself; it cannot read from
// our ByteSource, so it would give us two code paths (Node file handle vs browser Blob) instead of
// one. It also buffers the header into a single ArrayBuffer capped at 50 MB, never reads tensor
// data (no dequantization), and pulls in @huggingface/tasks. What we need is small: parse the
// header through ByteSource, then read one tensor at a time.
//
// Format (ggml docs/gguf.md; ggml/src/gguf.cpp):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv × { string key | u32 value_type | value }
//   n_tensors × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data (offsets relative to its start)
//   string = u64 byte length + UTF-8 bytes (no NUL); array = u32 elem_type + u64 count + elems.
// ggml `ne` is innermost-first: ne[0] is the row length, so the row-major shape is ne reversed.
import { WebqloraError } from '../errors.ts';
import { sameShape, toFloat32 } from './dtype.ts';
import { numel } from '../num.ts';
import * as quants from './ggml-quants.ts';
import type { ByteSource } from './source.ts';
import type { EmbeddedVocab, TensorRef, WeightSource } from './weights.ts';
import { expectedTensors, type ModelConfig } from '../model/config.ts';
import type { Quant4Tensor } from '../quant/types.ts';
import { ggufArch, ggufNames, ggufToHfConfig, type GgufArch, type MetaReader } from './gguf-arch.ts';

// ---------------------------------------------------------------------------------------------
// Low-level: header, metadata, tensor infos

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32

/** GGUF metadata value types (gguf.md `gguf_metadata_value_type`). */
export const GgufType = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7,
  STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;

/**
 * A metadata value. 64-bit integers are bigint; arrays of numbers are typed arrays of the
 * element type (u8 → Uint8Array, f32 → Float32Array, u64 → BigUint64Array, ...); arrays of
 * bools, strings and arrays are plain arrays.
 */
export type GgufValue = number | bigint | boolean | string | GgufArray;
export type GgufArray =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array
  | BigUint64Array | BigInt64Array | boolean[] | string[] | GgufArray[];

/** ggml tensor types: [name, block size (elements), block size (bytes)] (ggml.c type_traits). */
const GGML_TYPES: Record<number, readonly [string, number, number]> = {
  0: ['F32', 1, 4], 1: ['F16', 1, 2], 2: ['Q4_0', 32, 18], 3: ['Q4_1', 32, 20],
  6: ['Q5_0', 32, 22], 7: ['Q5_1', 32, 24], 8: ['Q8_0', 32, 34], 9: ['Q8_1', 32, 36],
  10: ['Q2_K', 256, 84], 11: ['Q3_K', 256, 110], 12: ['Q4_K', 256, 144], 13: ['Q5_K', 256, 176],
  14: ['Q6_K', 256, 210], 15: ['Q8_K', 256, 292], 16: ['IQ2_XXS', 256, 66], 17: ['IQ2_XS', 256, 74],
  18: ['IQ3_XXS', 256, 98], 19: ['IQ1_S', 256, 50], 20: ['IQ4_NL', 32, 18], 21: ['IQ3_S', 256, 110],
  22: ['IQ2_S', 256, 82], 23: ['IQ4_XS', 256, 136], 24: ['I8', 1, 1], 25: ['I16', 1, 2], 26: ['I32', 1, 4],
  27: ['I64', 1, 8], 28: ['F64', 1, 8], 29: ['IQ1_M', 256, 56], 30: ['BF16', 1, 2],
  34: ['TQ1_0', 256, 54], 35: ['TQ2_0', 256, 66], 39: ['MXFP4', 32, 17],
};
const GGML_F16 = 1, GGML_BF16 = 30;

export function ggmlTypeName(type: number): string {
  return GGML_TYPES[type]?.[0] ?? `unknown type ${type}`;
}

export interface GgufTensorInfo {
  /** Name as stored (GGUF naming, e.g. blk.0.attn_q.weight). */
  name: string;
  /** Row-major shape (ggml ne reversed). */
  shape: number[];
  /** ggml type number (0 F32, 1 F16, 2 Q4_0, 8 Q8_0, 30 BF16, ...). */
  type: number;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  /** Data size in bytes. */
  byteLength: number;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute offset of the tensor data section. */
  dataOffset: number;
}

// Limits that keep a corrupt count from turning into a huge allocation or deep recursion. Counts
// are also checked against the bytes left in the file before anything is allocated.
const MAX_STRING = 64 << 20; // a chat template or a token is far below this
const MAX_ARRAY = 1 << 24; // elements; the largest real arrays (vocabularies, merges) hold a few 100k
const MAX_ARRAY_DEPTH = 8;
const MAX_DIMS = 4; // GGML_MAX_DIMS
const CHUNK = 1 << 20;

/** Buffered sequential reader over a ByteSource, for the variable-length header. */
class HeaderReader {
  private buf: Uint8Array = new Uint8Array(0);
  private dv = new DataView(this.buf.buffer);
  private bufStart = 0;
  /** Absolute position of the next byte. */
  pos = 0;
  constructor(private readonly src: ByteSource) {}

  get remaining(): number { return this.src.size - this.pos; }

  /** True if `n` bytes from pos are buffered (the hot path stays synchronous). */
  has(n: number): boolean { return this.pos + n <= this.bufStart + this.buf.length; }

  async need(n: number, what: string): Promise<void> {
    if (this.has(n)) return;
    if (n > this.remaining) {
      throw new WebqloraError(
        `${this.src.name}: the file is truncated (reading ${what} at byte ${this.pos} needs ${n} bytes, the file has ${this.src.size}).`,
      );
    }
    const len = Math.min(Math.max(n, CHUNK), this.remaining);
    this.buf = await this.src.read(this.pos, len);
    this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.bufStart = this.pos;
  }

  private at(n: number): number {
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }
  // Callers have called need() first.
  u8(): number { return this.buf[this.at(1)]!; }
  i8(): number { return this.dv.getInt8(this.at(1)); }
  u16(): number { return this.dv.getUint16(this.at(2), true); }
  i16(): number { return this.dv.getInt16(this.at(2), true); }
  u32(): number { return this.dv.getUint32(this.at(4), true); }
  i32(): number { return this.dv.getInt32(this.at(4), true); }
  f32(): number { return this.dv.getFloat32(this.at(4), true); }
  f64(): number { return this.dv.getFloat64(this.at(8), true); }
  u64(): bigint { return this.dv.getBigUint64(this.at(8), true); }
  i64(): bigint { return this.dv.getBigInt64(this.at(8), true); }
  bytes(n: number): Uint8Array { const o = this.at(n); return this.buf.subarray(o, o + n); }
  str(n: number): string { const o = this.at(n); return decodeUtf8(this.buf, o, n); }

  /** A string already in the buffer, read without awaiting (the common case in big vocabularies), or null. */
  bufferedString(): string | null {
    const o = this.pos - this.bufStart;
    if (o + 8 > this.buf.length) return null;
    const hi = this.dv.getUint32(o + 4, true), len = this.dv.getUint32(o, true);
    if (hi !== 0 || o + 8 + len > this.buf.length) return null;
    this.pos += 8 + len;
    return decodeUtf8(this.buf, o + 8, len);
  }
}

/** UTF-8 → string; short ASCII strings (most tokens) skip TextDecoder, which is slow per call. */
function decodeUtf8(b: Uint8Array, start: number, len: number): string {
  if (len <= 32) {
    let ascii = true;
    for (let i = 0; i < len; i++) if (b[start + i]! >= 0x80) { ascii = false; break; }
    if (ascii) return String.fromCharCode.apply(null, b.subarray(start, start + len) as unknown as number[]);
  }
  return utf8.decode(b.subarray(start, start + len));
}

const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** Reads the header, metadata and tensor infos (no tensor data) and validates them. */
export async function readGguf(src: ByteSource): Promise<GgufFile> {
  const name = src.name;
  const bad = (msg: string) => new WebqloraError(`${name}: ${msg}`);
  const r = new HeaderReader(src);

  if (src.size < 4) throw bad(`the file is too small to be GGUF (${src.size} bytes).`);
  await r.need(4, 'the magic');
  const magic = r.u32();
  if (magic !== GGUF_MAGIC) {
    const seen = [...(await src.read(0, 4))].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
    throw bad(`not a GGUF file (the first bytes are "${seen}", expected "GGUF").`);
  }
  await r.need(4, 'the version');
  const version = r.u32();
  if (version !== 2 && version !== 3) {
    // A big-endian file stores the version byte-swapped (0x03000000).
    const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 | version >>> 24) >>> 0;
    if (swapped === 2 || swapped === 3) throw bad('big-endian GGUF files are not supported (convert it to little-endian).');
    if (version === 1) throw bad('GGUF version 1 is not supported (only versions 2 and 3; re-convert the model with a recent llama.cpp).');
    throw bad(`GGUF version ${version} is not supported (only versions 2 and 3).`);
  }

  const count = async (what: string, minBytesEach: number): Promise<number> => {
    await r.need(8, what);
    const n = r.u64();
    // Every entry takes at least minBytesEach bytes, so a count the file cannot hold is corrupt.
    if (n * BigInt(minBytesEach) > BigInt(r.remaining)) {
      throw bad(`${what} is ${n}, which cannot fit in the ${r.remaining} bytes left (the header is corrupt).`);
    }
    return Number(n);
  };

  const readString = async (what: string): Promise<string> => {
    if (!r.has(8)) await r.need(8, what);
    const len = r.u64();
    if (len > BigInt(r.remaining)) {
      throw bad(`${what} claims ${len} bytes but only ${r.remaining} are left (the file is truncated or corrupt).`);
    }
    if (len > BigInt(MAX_STRING)) throw bad(`${what} is ${len} bytes long, more than the ${MAX_STRING}-byte limit (the header is corrupt).`);
    const n = Number(len);
    if (!r.has(n)) await r.need(n, what);
    return r.str(n);
  };

  const readValue = async (type: number, what: string, depth: number): Promise<GgufValue> => {
    const size = SCALAR_SIZE[type];
    if (size !== undefined) {
      if (!r.has(size)) await r.need(size, what);
      return readScalar(r, type);
    }
    if (type === GgufType.STRING) return readString(what);
    if (type !== GgufType.ARRAY) throw bad(`${what} has unknown value type ${type}.`);
    if (depth >= MAX_ARRAY_DEPTH) throw bad(`${what} nests arrays more than ${MAX_ARRAY_DEPTH} deep (the header is corrupt).`);
    await r.need(4, what);
    const et = r.u32();
    const esize = SCALAR_SIZE[et];
    const minEach = esize ?? (et === GgufType.STRING ? 8 : et === GgufType.ARRAY ? 12 : 0);
    if (minEach === 0) throw bad(`${what} is an array of unknown value type ${et}.`);
    const n = await count(`the length of ${what}`, minEach);
    if (n > MAX_ARRAY) throw bad(`${what} is an array of ${n} elements, more than the ${MAX_ARRAY}-element limit (the header is corrupt).`);
    if (esize !== undefined) {
      await r.need(n * esize, what);
      return readScalarArray(r, et, n);
    }
    const out: GgufValue[] = [];
    for (let i = 0; i < n; i++) {
      const fast = et === GgufType.STRING ? r.bufferedString() : null;
      out.push(fast ?? (await readValue(et, what, depth + 1)));
    }
    return out as GgufArray;
  };

  const nTensors = await count('the tensor count', 32);
  const nKv = await count('the metadata count', 13);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = await readString(`metadata key #${i}`);
    if (metadata.has(key)) throw bad(`metadata key "${key}" appears twice.`);
    await r.need(4, `metadata "${key}"`);
    const type = r.u32();
    metadata.set(key, await readValue(type, `metadata "${key}"`, 0));
  }

  let alignment = 32; // GGUF_DEFAULT_ALIGNMENT
  if (metadata.has('general.alignment')) {
    const a = metadata.get('general.alignment');
    if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || (a & (a - 1)) !== 0) {
      throw bad(`general.alignment is ${String(a)}, expected a power of two.`);
    }
    alignment = a;
  }

  type RawInfo = { name: string; shape: number[]; type: number; rel: bigint; byteLength: number };
  const raw: RawInfo[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const tname = await readString(`the name of tensor #${i}`);
    if (seen.has(tname)) throw bad(`tensor "${tname}" appears twice.`);
    seen.add(tname);
    await r.need(4, `tensor "${tname}"`);
    const nDims = r.u32();
    if (nDims < 1 || nDims > MAX_DIMS) throw bad(`tensor "${tname}" has ${nDims} dimensions, expected 1 to ${MAX_DIMS}.`);
    await r.need(8 * nDims + 12, `tensor "${tname}"`);
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const v = r.u64();
      if (v > BigInt(src.size) * 8n) throw bad(`tensor "${tname}" has dimension ${v}, larger than the file could hold (the header is corrupt).`);
      ne.push(Number(v));
    }
    const type = r.u32();
    const rel = r.u64();
    const tt = GGML_TYPES[type];
    if (!tt) throw bad(`tensor "${tname}" has unknown ggml type ${type}.`);
    const [tn, blk, bytes] = tt;
    if (ne[0]! % blk !== 0) throw bad(`tensor "${tname}" has rows of ${ne[0]} elements, not a multiple of the ${tn} block size ${blk}.`);
    const n = numel(ne);
    if (!Number.isSafeInteger(n) || n > src.size * 8) throw bad(`tensor "${tname}" has ${n} elements, more than the file could hold (the header is corrupt).`);
    raw.push({ name: tname, shape: ne.slice().reverse(), type, rel, byteLength: (n / blk) * bytes });
  }

  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  const tensors: GgufTensorInfo[] = raw.map((t) => {
    if (t.rel % BigInt(alignment) !== 0n) throw bad(`tensor "${t.name}" starts at offset ${t.rel}, not a multiple of the alignment ${alignment}.`);
    const offset = dataOffset + Number(t.rel);
    if (t.rel > BigInt(src.size) || offset + t.byteLength > src.size) {
      throw bad(`tensor "${t.name}" data (bytes ${offset}..${offset + t.byteLength}) lies outside the file (${src.size} bytes; the file is truncated or corrupt).`);
    }
    return { name: t.name, shape: t.shape, type: t.type, offset, byteLength: t.byteLength };
  });
  return { version, metadata, tensors, alignment, dataOffset };
}

const SCALAR_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readScalar(r: HeaderReader, type: number): GgufValue {
  switch (type) {
    case GgufType.UINT8: return r.u8();
    case GgufType.INT8: return r.i8();
    case GgufType.UINT16: return r.u16();
    case GgufType.INT16: return r.i16();
    case GgufType.UINT32: return r.u32();
    case GgufType.INT32: return r.i32();
    case GgufType.FLOAT32: return r.f32();
    case GgufType.BOOL: return r.u8() !== 0;
    case GgufType.UINT64: return r.u64();
    case GgufType.INT64: return r.i64();
    default: return r.f64();
  }
}

function readScalarArray(r: HeaderReader, type: number, n: number): GgufArray {
  // Copy through DataView reads: the elements need not be aligned for a typed-array view.
  const make = <T extends { [i: number]: number | bigint }>(arr: T, get: () => number | bigint): T => {
    for (let i = 0; i < n; i++) (arr as { [i: number]: number | bigint })[i] = get();
    return arr;
  };
  switch (type) {
    case GgufType.UINT8: return r.bytes(n).slice();
    case GgufType.INT8: return new Int8Array(r.bytes(n).slice().buffer);
    case GgufType.UINT16: return make(new Uint16Array(n), () => r.u16());
    case GgufType.INT16: return make(new Int16Array(n), () => r.i16());
    case GgufType.UINT32: return make(new Uint32Array(n), () => r.u32());
    case GgufType.INT32: return make(new Int32Array(n), () => r.i32());
    case GgufType.FLOAT32: return make(new Float32Array(n), () => r.f32());
    case GgufType.FLOAT64: return make(new Float64Array(n), () => r.f64());
    case GgufType.UINT64: return make(new BigUint64Array(n), () => r.u64());
    case GgufType.INT64: return make(new BigInt64Array(n), () => r.i64());
    default: { // BOOL
      const out: boolean[] = [];
      for (let i = 0; i < n; i++) out.push(r.u8() !== 0);
      return out;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dequantization (ggml-common.h block layouts; ggml-quants.c dequantize_row_*)

/** A tensor type openGguf can turn into float32: the dtype it is reported as, and its decoder. */
interface Dequantizer {
  dtype: 'F32' | 'F16' | 'BF16';
  /** `n` float32 values from the stored bytes (`what` names the tensor in messages). */
  decode(bytes: Uint8Array, n: number, what: string): Float32Array;
}

const GGML_TYPE_BY_NAME = new Map(Object.entries(GGML_TYPES).map(([t, [name]]) => [name, Number(t)]));

/**
 * A tensor type: its dequantizer with the byte count checked first, where the tensor's name is
 * known. Block types (ggml-quants.ts) are reported as F32: their values are gguf-py's float32 ones.
 */
function dequantizer(type: string, dequantize: (b: Uint8Array, n: number) => Float32Array, dtype: Dequantizer['dtype'] = 'F32'): [number, Dequantizer] {
  const t = GGML_TYPE_BY_NAME.get(type)!;
  const [, S, bytes] = GGML_TYPES[t]!;
  return [t, {
    dtype,
    decode(b, n, what) {
      const need = Math.ceil(n / S) * bytes;
      if (n % S !== 0 || b.length < need) {
        throw new WebqloraError(`${what}: ${n} ${type} values need ${need} bytes (${S} per ${bytes}-byte block) but the data has ${b.length} (the tensor is truncated or corrupt).`);
      }
      return dequantize(b, n);
    },
  }];
}

/** Every supported tensor type (the messages list these keys); ggml-quants.ts documents the block types. */
const DEQUANTIZERS = new Map<number, Dequantizer>([
  dequantizer('F32', (b, n) => toFloat32(b.subarray(0, 4 * n), 'F32', 'F32')),
  dequantizer('F16', (b, n) => toFloat32(b.subarray(0, 2 * n), 'F16', 'F16'), 'F16'),
  dequantizer('BF16', (b, n) => toFloat32(b.subarray(0, 2 * n), 'BF16', 'BF16'), 'BF16'),
  dequantizer('Q8_0', quants.dequantizeQ8_0),
  dequantizer('Q4_0', quants.dequantizeQ4_0),
  dequantizer('Q4_1', quants.dequantizeQ4_1),
  dequantizer('Q5_0', quants.dequantizeQ5_0),
  dequantizer('Q5_1', quants.dequantizeQ5_1),
  dequantizer('Q2_K', quants.dequantizeQ2_K),
  dequantizer('Q3_K', quants.dequantizeQ3_K),
  dequantizer('Q4_K', quants.dequantizeQ4_K),
  dequantizer('Q5_K', quants.dequantizeQ5_K),
  dequantizer('Q6_K', quants.dequantizeQ6_K),
  dequantizer('IQ4_NL', quants.dequantizeIQ4_NL),
]);

const SUPPORTED_TYPES = [...DEQUANTIZERS.keys()].map(ggmlTypeName).join(', ');

/** The dequantizer of a tensor type; throws a WebqloraError naming `what` if there is none. */
function dequantizerOf(type: number, what: string): Dequantizer {
  const d = DEQUANTIZERS.get(type);
  if (!d) throw new WebqloraError(`${what} has type ${ggmlTypeName(type)} (${type}), which is not supported (supported: ${SUPPORTED_TYPES}).`);
  return d;
}

/**
 * `n` float32 values of ggml type `type` from their stored bytes, exactly as ggml/gguf-py
 * dequantize them. Throws a WebqloraError naming `what` for an unsupported type or too few bytes.
 */
export function dequantizeGguf(type: number, bytes: Uint8Array, n: number, what: string): Float32Array {
  return dequantizerOf(type, what).decode(bytes, n, what);
}

/**
 * One tensor of a GGUF file by its GGUF name, row-major, as stored: no HF renaming and no q/k row
 * permutation (openGguf's readFloat does both). Any architecture; `file` is readGguf(src).
 */
export async function readGgufTensor(src: ByteSource, file: GgufFile, name: string): Promise<Float32Array> {
  const info = file.tensors.find((t) => t.name === name);
  if (!info) throw new WebqloraError(`${src.name}: no tensor named "${name}".`);
  return dequantizeGguf(info.type, await src.read(info.offset, info.byteLength), numel(info.shape), `${src.name}: tensor "${name}"`);
}

// ---------------------------------------------------------------------------------------------
// RoPE row order

/**
 * GGUF and llama2.c keep q/k rows in the interleaved RoPE order (pairs (2i, 2i+1) rotate
 * together); HF Llama uses rotate-half (pairs (i, i+D/2)). Per head of D rows:
 * HF row j·D/2 + i = interleaved row 2i + j (transformers convert_llama_weights_to_hf `permute`:
 * view(H, D/2, 2, cols).transpose(1, 2)). Works for 2-D weights and 1-D biases (cols = 1).
 */
function interleavedToRotateHalf(w: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (base + 2 * i + j) * cols, dst = (base + j * half + i) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/**
 * A tensor read from a GGUF or llama2.c file in HF layout: q_proj/k_proj weights and biases are
 * permuted from interleaved to rotate-half rows; every other tensor is returned as is.
 */
export function rotateHalfQK(name: string, w: Float32Array, c: ModelConfig): Float32Array {
  const m = /\.self_attn\.([qk])_proj\.(?:weight|bias)$/.exec(name);
  if (!m) return w;
  const heads = m[1] === 'q' ? c.numHeads : c.numKVHeads;
  return interleavedToRotateHalf(w, heads, c.headDim, w.length / (heads * c.headDim));
}

// ---------------------------------------------------------------------------------------------
// High-level: a llama GGUF as a WeightSource with HF names and layouts

/** The shortest decimal that is the same float32 (1e-5 rather than 9.999999747378752e-6). */
function shortestF32(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

class GgufWeights implements WeightSource {
  readonly format = 'gguf' as const;
  private closed = false;
  constructor(
    private readonly src: ByteSource,
    readonly config: ModelConfig,
    readonly tensors: TensorRef[],
    readonly vocab: EmbeddedVocab | null,
    private readonly infos: Map<string, GgufTensorInfo>,
    private readonly arch: GgufArch,
  ) {}
  get name(): string { return this.src.name; }

  async readFloat(name: string): Promise<Float32Array> {
    const info = this.infos.get(name);
    if (this.closed) throw new WebqloraError(`${this.src.name}: the model was closed before reading ${name}.`);
    if (!info) throw new WebqloraError(`${this.src.name}: no tensor named "${name}".`);
    const what = `${this.src.name}: ${name}`;
    const w = dequantizerOf(info.type, what).decode(await this.src.read(info.offset, info.byteLength), numel(info.shape), what);
    // Gemma stores 1 + w (exact back to w for the weights near 0 and 1 norms hold; within 1 ulp otherwise)
    if (this.arch.normShift && /norm\.weight$/.test(name)) for (let i = 0; i < w.length; i++) w[i] = Math.fround(w[i]! - 1);
    return this.arch.permuteQK ? rotateHalfQK(name, w, this.config) : w;
  }

  async readQuant(_name: string): Promise<Quant4Tensor | null> {
    return null; // GGUF Q4_0 is not bnb NF4/FP4: it is dequantized by readFloat instead
  }

  /** Ends use of this source; `src` stays open (its opener owns it, see io/open.ts). */
  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * Opens a GGUF model file of any architecture in gguf-arch.ts: reads and checks the header, maps
 * tensor names to HF, builds the ModelConfig (through the HF config path) and the embedded
 * vocabulary. Tensor data is read later, one tensor per readFloat call. The caller keeps
 * ownership of `src` (close it after the WeightSource).
 */
export async function openGguf(src: ByteSource): Promise<WeightSource> {
  const file = await readGguf(src);
  const name = src.name;
  const bad = (msg: string) => new WebqloraError(`${name}: ${msg}`);
  const md = file.metadata;

  const archName = md.get('general.architecture');
  if (archName === undefined) throw bad('general.architecture is missing (is this a model file?).');
  if (typeof archName !== 'string') throw bad('general.architecture is not a string.');
  const arch = ggufArch(archName, name);

  const meta: MetaReader = {
    has: (key) => md.has(key),
    int(key, def) {
      const v = md.get(key);
      if (v === undefined) {
        if (def !== undefined) return def;
        throw bad(`metadata ${key} is missing.`);
      }
      const x = typeof v === 'bigint' ? Number(v) : v;
      if (typeof x !== 'number' || !Number.isSafeInteger(x) || x <= 0) throw bad(`metadata ${key} is ${String(v)}, expected a positive integer.`);
      return x;
    },
    float(key, def) {
      const v = md.get(key);
      if (v === undefined) {
        if (def !== undefined) return def;
        throw bad(`metadata ${key} is missing.`);
      }
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(`metadata ${key} is ${String(v)}, expected a positive number.`);
      return shortestF32(v);
    },
    str(key, def) {
      const v = md.get(key);
      if (v === undefined) {
        if (def !== undefined) return def;
        throw bad(`metadata ${key} is missing.`);
      }
      if (typeof v !== 'string') throw bad(`metadata ${key} is ${String(v)}, expected a string.`);
      return v;
    },
  };

  const byGguf = new Map(file.tensors.map((t) => [t.name, t]));
  const vocab = readVocab(md, name);
  // Every block has at least 6 tensors (Phi-3's fused layout; 9 for llama): a corrupt block_count
  // must not make us list millions of names.
  const L = meta.int(`${arch.name}.block_count`);
  if (L * 6 > file.tensors.length) {
    throw bad(`${arch.name}.block_count is ${L} but the file has only ${file.tensors.length} tensors (${L * 6 + 2} or more expected).`);
  }
  const embd = byGguf.get('token_embd.weight');
  const V = md.has(`${arch.name}.vocab_size`) ? meta.int(`${arch.name}.vocab_size`) : vocab ? vocab.tokens.length : embd?.shape[0];
  if (V === undefined) throw bad(`the vocabulary size is unknown (no ${arch.name}.vocab_size, token list or token_embd.weight).`);
  const config = ggufToHfConfig(arch, meta, { vocabSize: V, tied: !byGguf.has('output.weight'), bos: vocab?.bosId ?? null, eos: vocab?.eosId ?? null }, name);
  delete config.hfConfig; // made up from metadata: written back through configToHf, not verbatim
  // llama.cpp's llama graph takes q/k/v biases when the file has them (as Qwen2 always does)
  if (byGguf.has('blk.0.attn_q.bias')) {
    if (arch.name !== 'llama' && arch.name !== 'qwen2') throw bad(`tensor "blk.0.attn_q.bias": attention biases are not part of the ${arch.name} architecture.`);
    if (byGguf.has('blk.0.attn_output.bias')) throw bad('tensor "blk.0.attn_output.bias": a bias on the attention output projection is not supported.');
    config.attentionBias = true;
  }
  // The precision the embedding and lm_head tables are held in: the file's own half type when
  // they are stored as F16/BF16; float32 otherwise (F32, or block-quantized values, which a half
  // type would round: llama.cpp computes with the exact dequantized values).
  const tableType = (embd ?? file.tensors[0]!).type;
  config.torchDtype = tableType === GGML_BF16 ? 'BF16' : tableType === GGML_F16 ? 'F16' : 'F32';

  // Llama 3 rope scaling travels as llama.cpp's rope_freqs tensor: per-dimension divisors
  const ropeFreqs = byGguf.get('rope_freqs.weight');
  if (ropeFreqs) {
    if (ropeFreqs.shape.length !== 1 || ropeFreqs.shape[0] !== config.headDim / 2) throw bad(`tensor "rope_freqs.weight" has shape [${ropeFreqs.shape.join(', ')}], expected [${config.headDim / 2}].`);
    const what = `${name}: tensor "rope_freqs.weight"`;
    const f = dequantizerOf(ropeFreqs.type, what).decode(await src.read(ropeFreqs.offset, ropeFreqs.byteLength), config.headDim / 2, what);
    if (!f.every((x) => Number.isFinite(x) && x > 0)) throw bad('tensor "rope_freqs.weight" holds a value that is not a positive number.');
    if (config.ropeScaling) throw bad('has both rope_freqs and a rope scaling type; one of them would be ignored.');
    config.ropeScaling = { ropeType: 'factors', factor: 1, factors: Array.from(f) };
  }

  const expected = new Map(expectedTensors(config).map((t) => [t.name, t.shape]));
  const toGguf = ggufNames(arch, [...expected.keys()]);
  const toHf = new Map([...toGguf].map(([h, g]) => [g, h]));
  const infos = new Map<string, GgufTensorInfo>();
  const tensors: TensorRef[] = [];
  for (const t of file.tensors) {
    if (t.name === 'rope_freqs.weight') continue;
    const hf = toHf.get(t.name);
    if (hf === undefined) throw bad(`unexpected tensor "${t.name}" for a ${arch.name} model with ${config.numLayers} layers.`);
    const want = expected.get(hf)!;
    if (!sameShape(t.shape, want)) {
      throw bad(`tensor "${t.name}" (${hf}) has shape [${t.shape.join(', ')}], expected [${want.join(', ')}].`);
    }
    const { dtype } = dequantizerOf(t.type, `${name}: tensor "${t.name}"`);
    infos.set(hf, t);
    tensors.push({ name: hf, dtype, shape: t.shape.slice() });
  }
  for (const [hf, shape] of expected) {
    if (!infos.has(hf)) throw bad(`tensor ${toGguf.get(hf)} (${hf}, shape [${shape.join(', ')}]) is missing.`);
  }
  return new GgufWeights(src, config, tensors, vocab, infos, arch);
}

/**
 * EmbeddedVocab from tokenizer.ggml.* (llama.cpp llama-vocab.cpp reads the same keys), or null
 * when the metadata has no vocabulary. Exported for vocabulary-only files (tokenizerFromGguf).
 */
export function readVocab(md: Map<string, GgufValue>, name: string): EmbeddedVocab | null {
  const bad = (msg: string) => new WebqloraError(`${name}: ${msg}`);
  const model = md.get('tokenizer.ggml.model');
  const tokens = md.get('tokenizer.ggml.tokens');
  if (model === undefined && tokens === undefined) return null;
  if (typeof model !== 'string') throw bad('tokenizer.ggml.model is missing or not a string.');
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === 'string')) throw bad('tokenizer.ggml.tokens is missing or not an array of strings.');
  const n = tokens.length;
  const scores = md.get('tokenizer.ggml.scores');
  if (scores !== undefined && !(scores instanceof Float32Array && scores.length === n)) {
    throw bad(`tokenizer.ggml.scores must be ${n} float32 values (one per token).`);
  }
  const types = md.get('tokenizer.ggml.token_type');
  if (types !== undefined && !(types instanceof Int32Array && types.length === n)) {
    throw bad(`tokenizer.ggml.token_type must be ${n} int32 values (one per token).`);
  }
  const merges = md.get('tokenizer.ggml.merges');
  if (merges !== undefined && !(Array.isArray(merges) && merges.every((m) => typeof m === 'string'))) {
    throw bad('tokenizer.ggml.merges must be an array of strings.');
  }
  const pre = md.get('tokenizer.ggml.pre');
  if (pre !== undefined && typeof pre !== 'string') throw bad(`tokenizer.ggml.pre is ${String(pre)}, expected a string.`);
  const id = (key: string): number | null => {
    const v = md.get(key);
    if (v === undefined) return null;
    const x = typeof v === 'bigint' ? Number(v) : v;
    if (typeof x !== 'number' || !Number.isInteger(x)) throw bad(`${key} is ${String(v)}, expected a token id.`);
    if (x === -1 || x === 0xffffffff) return null; // llama.cpp writes LLAMA_TOKEN_NULL as u32 -1
    if (x < 0 || x >= n) throw bad(`${key} is ${x}, outside the ${n}-token vocabulary.`);
    return x;
  };
  const flag = (key: string, def: boolean): boolean => {
    const v = md.get(key);
    if (v === undefined) return def;
    if (typeof v !== 'boolean') throw bad(`${key} is ${String(v)}, expected a boolean.`);
    return v;
  };
  return {
    model,
    pre: pre ?? null,
    tokens: tokens as string[],
    scores: (scores as Float32Array | undefined) ?? null,
    tokenTypes: (types as Int32Array | undefined) ?? null,
    merges: (merges as string[] | undefined) ?? null,
    bosId: id('tokenizer.ggml.bos_token_id'),
    eosId: id('tokenizer.ggml.eos_token_id'),
    unkId: id('tokenizer.ggml.unknown_token_id'),
    padId: id('tokenizer.ggml.padding_token_id'),
    // llama.cpp defaults: SentencePiece vocabularies and the Llama 3 pre-tokenizer add BOS,
    // others only when the file says so; only SentencePiece has the dummy-prefix space.
    addBos: flag('tokenizer.ggml.add_bos_token', model === 'llama' || (model === 'gpt2' && pre === 'llama-bpe')),
    addEos: flag('tokenizer.ggml.add_eos_token', false),
    addSpacePrefix: flag('tokenizer.ggml.add_space_prefix', model === 'llama'),
    chatTemplate: typeof md.get('tokenizer.chat_template') === 'string' ? md.get('tokenizer.chat_template') as string : null,
  };
}
