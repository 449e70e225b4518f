// safetensors reader and writer (huggingface/safetensors; QLORA_SPEC.md §4.4).
//
// File layout: u64 little-endian N | N bytes of UTF-8 JSON header | data buffer.
// Header: { "__metadata__"?: {string: string}, name: {"dtype", "shape", "data_offsets": [begin, end]} }
// with offsets relative to the start of the data buffer.
//
// The reader parses the header only and reads one tensor at a time on request, so a 7B checkpoint
// is never held in memory. Everything the header claims is validated at open, the way the Rust
// crate's `SafeTensors::read_metadata` + `Metadata::validate` do it: the tensors must tile the
// data buffer exactly (no overlaps, no holes, nothing after the last tensor).
//
// The writer reproduces the Rust crate's `prepare` byte for byte: `__metadata__` first, tensors
// sorted by dtype (descending enum order) then by name, header padded with spaces to a multiple
// of 8. It streams tensor data one tensor at a time through a ByteSink.
import { WebqloraError } from '../errors.ts';
import { DTYPE_BYTES, isDType, toFloat32, type DType } from './dtype.ts';
import { MemoryOutDir, type ByteSink, type ByteSource } from './source.ts';
import { checkRowRange } from './weights.ts';

/** Rust `MAX_HEADER_SIZE` (safetensors/src/tensor.rs). */
const MAX_HEADER_BYTES = 100_000_000;

/** dtypes this reader accepts, in the order error messages list them. */
const SAFETENSORS_DTYPES: readonly DType[] = ['F32', 'F16', 'BF16', 'F64', 'U8', 'I8', 'I16', 'I32', 'I64', 'BOOL', 'U16', 'U32', 'U64'];

/**
 * Rank of each dtype in the Rust `Dtype` enum (safetensors/src/tensor.rs), which is declared in
 * increasing alignment order; `prepare` sorts tensors by this rank, descending. (Newer crate
 * versions insert F4/F6/F8 variants, which does not change the relative order of these.)
 */
const DTYPE_RANK: Record<DType, number> = {
  BOOL: 0, U8: 1, I8: 2, /* F8_E5M2: 3, F8_E4M3: 4, */ I16: 5, U16: 6, F16: 7, BF16: 8, I32: 9, U32: 10, F32: 11, F64: 12, I64: 13, U64: 14,
};

export interface SafetensorsTensorInfo {
  dtype: DType;
  shape: number[];
  /** Byte offsets relative to the start of the data buffer (the header's data_offsets). */
  begin: number;
  end: number;
}

/** An open safetensors file: the parsed, validated header plus lazy access to each tensor. */
export class SafetensorsFile {
  /** Absolute file offset of the data buffer (8 + header length). */
  readonly dataOffset: number;

  constructor(
    readonly src: ByteSource,
    /** Tensors in header order. */
    readonly tensors: Map<string, SafetensorsTensorInfo>,
    /** `__metadata__`, or null if the file has none. */
    readonly metadata: Record<string, string> | null,
    readonly headerBytes: number,
  ) {
    this.dataOffset = 8 + headerBytes;
  }

  get name(): string { return this.src.name; }

  /** Header entry of `name`; throws WebqloraError if the file has no such tensor. */
  info(name: string): SafetensorsTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new WebqloraError(`${this.src.name}: no tensor named ${name}.`);
    return t;
  }

  /** The stored little-endian bytes of one tensor. */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    return this.src.read(this.dataOffset + t.begin, t.end - t.begin);
  }

  /** Rows [row0, row0 + rows) of a 2-D float tensor as float32 values (a slice of the stored bytes). */
  async readFloatRows(name: string, row0: number, rows: number, into?: Float32Array): Promise<Float32Array> {
    const t = this.info(name);
    const cols = t.shape[1]!, bytes = DTYPE_BYTES_OF[t.dtype as keyof typeof DTYPE_BYTES_OF];
    if (t.shape.length !== 2 || !bytes) throw new WebqloraError(`${this.src.name}: tensor ${name} is not a 2-D float tensor.`);
    checkRowRange(name, t.shape, row0, rows);
    const raw = await this.src.read(this.dataOffset + t.begin + row0 * cols * bytes, rows * cols * bytes);
    return toFloat32(raw, t.dtype, `${this.src.name}: tensor ${name}`, into);
  }

  /** One floating-point tensor (F32, F16, BF16 or F64) as float32 values. */
  async readFloat(name: string, into?: Float32Array): Promise<Float32Array> {
    const t = this.info(name);
    return toFloat32(await this.readRaw(name), t.dtype, `${this.src.name}: tensor ${name}`, into);
  }
}

const DTYPE_BYTES_OF = { F32: 4, F16: 2, BF16: 2, F64: 8 } as const;

/** Reads and validates the header; tensor data stays on disk until asked for. */
export async function openSafetensors(src: ByteSource): Promise<SafetensorsFile> {
  const file = src.name;
  const fail = (msg: string): never => { throw new WebqloraError(`${file}: ${msg}`); };
  if (src.size < 8) fail(`the file is too short to be safetensors (${src.size} bytes; it must start with an 8-byte header length).`);
  const lenBytes = await src.read(0, 8);
  const dv = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8);
  const lo = dv.getUint32(0, true), hi = dv.getUint32(4, true);
  // u64 as two halves: anything with a high word is far beyond MAX_HEADER_BYTES anyway.
  const n = hi * 2 ** 32 + lo;
  if (hi !== 0 || n > MAX_HEADER_BYTES) fail(`header length ${hi !== 0 ? `${BigInt(hi) * 2n ** 32n + BigInt(lo)}` : n} is larger than the ${MAX_HEADER_BYTES / 1e6} MB limit (is this a safetensors file?).`);
  if (8 + n > src.size) fail(`header length ${n} runs past the end of the file (${src.size} bytes; is the file truncated?).`);
  if (n === 0) fail('the header is empty (expected a JSON object).');
  const headerRaw = await src.read(8, n);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerRaw);
  } catch {
    return fail('the header is not valid UTF-8 (is this a safetensors file?).');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`the header is not valid JSON (${(e as Error).message}).`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    return fail(`the header is ${describe(header)}, expected a JSON object of tensors.`);
  }

  const dataSize = src.size - 8 - n;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> | null = null;
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`__metadata__ is ${describe(entry)}, expected an object of strings.`);
      metadata = {};
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} is ${describe(v)}, expected a string.`);
        metadata[k] = v as string;
      }
      continue;
    }
    const where = `tensor ${name}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`${where}: the header entry is ${describe(entry)}, expected an object with dtype, shape and data_offsets.`);
    const e = entry as Record<string, unknown>;
    for (const key of ['dtype', 'shape', 'data_offsets']) if (!(key in e)) fail(`${where}: the header entry has no "${key}".`);
    const dtype = e.dtype;
    if (typeof dtype !== 'string' || !isDType(dtype)) {
      fail(`${where}: dtype ${typeof dtype === 'string' ? dtype : describe(dtype)} is not supported (expected one of ${SAFETENSORS_DTYPES.join(', ')}).`);
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      fail(`${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers.`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      fail(`${where}: data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers.`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) fail(`${where}: data_offsets [${begin}, ${end}] end before they begin.`);
    const dims = shape as number[];
    let elems = 1;
    for (const d of dims) elems *= d;
    const bytes = elems * DTYPE_BYTES[dtype as DType];
    if (!Number.isSafeInteger(bytes)) fail(`${where}: shape [${dims.join(', ')}] is too large.`);
    if (bytes !== end - begin) {
      fail(`${where}: dtype ${dtype} × shape [${dims.join(', ')}] needs ${bytes} bytes, data_offsets span ${end - begin}.`);
    }
    if (end > dataSize) fail(`${where}: data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes; is the file truncated?).`);
    tensors.set(name, { dtype: dtype as DType, shape: [...dims], begin, end });
  }

  // The tensors must tile [0, dataSize) exactly (Rust Metadata::validate + the
  // MetadataIncompleteBuffer check): sort by offsets, then every tensor starts where the previous ended.
  const byOffset = [...tensors.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let pos = 0;
  let prev: string | null = null;
  for (const [name, t] of byOffset) {
    if (t.begin < pos) fail(`tensors ${prev} and ${name} overlap (bytes ${t.begin}..${pos} of the data belong to both).`);
    if (t.begin > pos) fail(`bytes ${pos}..${t.begin} of the data belong to no tensor (${prev ? `after ${prev}` : 'at the start'}).`);
    pos = t.end;
    prev = name;
  }
  if (pos !== dataSize) fail(`the data holds ${dataSize} bytes but the tensors cover only ${pos} (extra bytes at the end).`);
  return new SafetensorsFile(src, tensors, metadata, n);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface SafetensorsEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** The bytes, or a callback producing them when the writer reaches this tensor. */
  data: Uint8Array | (() => Promise<Uint8Array>);
}

export interface SafetensorsPlan<E extends { name: string; dtype: DType; shape: number[] }> {
  /** The 8-byte length prefix followed by the padded JSON header. */
  head: Uint8Array;
  /** Entries in file order, with their data offsets. */
  order: Array<{ entry: E; begin: number; end: number }>;
  /** Total file size in bytes. */
  fileBytes: number;
  /** Sum of tensor byte sizes (what HF's index.json calls total_size). */
  dataBytes: number;
}

/** Compares by Unicode code point (= UTF-8 byte order, as Rust's String Ord), not UTF-16 units. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!, y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}

/** Header and layout of a file, computed from names, dtypes and shapes alone (Rust `prepare`). */
export function planSafetensors<E extends { name: string; dtype: DType; shape: number[] }>(
  entries: readonly E[],
  metadata?: Record<string, string> | null,
): SafetensorsPlan<E> {
  const seen = new Set<string>();
  for (const e of entries) {
    if (e.name === '__metadata__') throw new WebqloraError('safetensors: a tensor cannot be named __metadata__.');
    if (seen.has(e.name)) throw new WebqloraError(`safetensors: tensor ${e.name} is given twice.`);
    seen.add(e.name);
    if (!isDType(e.dtype)) throw new WebqloraError(`safetensors: tensor ${e.name}: dtype ${String(e.dtype)} is not supported (expected one of ${SAFETENSORS_DTYPES.join(', ')}).`);
    if (!e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new WebqloraError(`safetensors: tensor ${e.name}: shape [${e.shape.join(', ')}] is not a list of non-negative integers.`);
  }
  const sorted = [...entries].sort((a, b) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || compareCodePoints(a.name, b.name));
  const parts: string[] = [];
  if (metadata) {
    const kv = Object.entries(metadata).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  const order: SafetensorsPlan<E>['order'] = [];
  let offset = 0;
  for (const e of sorted) {
    const bytes = e.shape.reduce((p, d) => p * d, 1) * DTYPE_BYTES[e.dtype];
    order.push({ entry: e, begin: offset, end: offset + bytes });
    // serde_json writes the fields in TensorInfo's declaration order, compactly.
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${offset},${offset + bytes}]}`);
    offset += bytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  head.fill(0x20, 8 + json.length);
  return { head, order, fileBytes: head.length + offset, dataBytes: offset };
}

/**
 * Writes a safetensors file through `sink`: the header first (computed from the shapes), then
 * each tensor's data, requesting lazy data one tensor at a time, then commits. On any error the
 * sink is aborted (nothing appears under the final name) and the error is rethrown.
 */
export async function writeSafetensors(sink: ByteSink, entries: readonly SafetensorsEntry[], metadata?: Record<string, string> | null): Promise<void> {
  try {
    const plan = planSafetensors(entries, metadata);
    await sink.write(plan.head);
    for (const { entry, begin, end } of plan.order) {
      const data = typeof entry.data === 'function' ? await entry.data() : entry.data;
      if (data.length !== end - begin) {
        throw new Error(`writeSafetensors: tensor ${entry.name}: got ${data.length} bytes, dtype ${entry.dtype} × shape [${entry.shape.join(', ')}] needs ${end - begin}`);
      }
      await sink.write(data);
    }
    await sink.commit();
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

/** A whole safetensors file in memory (small files, tests, browser downloads). */
export async function serializeSafetensors(entries: readonly SafetensorsEntry[], metadata?: Record<string, string> | null): Promise<Uint8Array> {
  const out = new MemoryOutDir();
  await writeSafetensors(await out.create('file'), entries, metadata);
  return out.files.get('file')!;
}
