// Byte sources and sinks: the only way the rest of src/ touches files, so the same loaders run
// on a Node file handle (io/node.ts) and on a browser Blob/File (this file).
import { WebqloraError } from '../errors.ts';

/** Random-access bytes: a file on disk, a browser Blob, or memory. */
export interface ByteSource {
  /** Shown in error messages (a path or a file name). */
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes from `offset`; throws WebqloraError if that runs past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** A directory of files (an HF model folder, an adapter folder). */
export interface DirSource {
  readonly name: string;
  /** The file at a path relative to the directory, or null if there is none. */
  open(rel: string): Promise<ByteSource | null>;
  /** Names of the files directly in the directory. */
  list(): Promise<string[]>;
}

/** One output file being written. Nothing is visible under its final name before commit(). */
export interface ByteSink {
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the file visible under its final name (Node: fsync + rename of a temp file). */
  commit(): Promise<void>;
  /** Drops everything written; the final name is untouched. */
  abort(): Promise<void>;
}

/** An output directory (adapter, checkpoint, quantized model). */
export interface OutDir {
  readonly name: string;
  create(rel: string): Promise<ByteSink>;
  /** Subdirectory, created if needed. */
  sub(rel: string): Promise<OutDir>;
}

export function outOfRange(src: { name: string; size: number }, offset: number, length: number): WebqloraError {
  return new WebqloraError(
    `${src.name}: the file is truncated (needed bytes ${offset}..${offset + length}, the file has ${src.size}).`,
  );
}

/** In-memory bytes (tests, browser uploads already read, synthetic files). */
export class MemorySource implements ByteSource {
  constructor(readonly name: string, private readonly bytes: Uint8Array) {}
  get size(): number { return this.bytes.length; }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.bytes.length)) throw outOfRange(this, offset, length);
    return this.bytes.subarray(offset, offset + length);
  }
}

/** A browser Blob or File: reads slices lazily, never the whole file. */
export class BlobSource implements ByteSource {
  readonly name: string;
  constructor(private readonly blob: Blob, name?: string) {
    this.name = name ?? ((blob as File).name || 'blob');
  }
  get size(): number { return this.blob.size; }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.blob.size)) throw outOfRange(this, offset, length);
    return new Uint8Array(await this.blob.slice(offset, offset + length).arrayBuffer());
  }
}

/** A directory given as files keyed by relative path (browser: from an <input webkitdirectory>). */
export class MapDirSource implements DirSource {
  constructor(readonly name: string, private readonly files: Map<string, Blob | Uint8Array>) {}
  async open(rel: string): Promise<ByteSource | null> {
    const f = this.files.get(rel);
    if (f === undefined) return null;
    return f instanceof Uint8Array ? new MemorySource(`${this.name}/${rel}`, f) : new BlobSource(f, `${this.name}/${rel}`);
  }
  async list(): Promise<string[]> {
    return [...this.files.keys()].filter((k) => !k.includes('/'));
  }
}

/** Output kept in memory (browser downloads, tests). `files` holds only committed files. */
export class MemoryOutDir implements OutDir {
  readonly files = new Map<string, Uint8Array>();
  constructor(readonly name = 'memory') {}
  async create(rel: string): Promise<ByteSink> {
    const chunks: Uint8Array[] = [];
    const files = this.files;
    return {
      async write(chunk) { chunks.push(chunk.slice()); },
      async commit() { files.set(rel, concatBytes(chunks)); },
      async abort() { chunks.length = 0; },
    };
  }
  async sub(rel: string): Promise<OutDir> {
    const parent = this;
    return {
      name: `${this.name}/${rel}`,
      create: (r: string) => parent.create(`${rel}/${r}`),
      sub: (r: string) => parent.sub(`${rel}/${r}`),
    };
  }
}

export function concatBytes(chunks: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) { out.set(c, o); o += c.length; }
  return out;
}

export async function readText(src: ByteSource): Promise<string> {
  return new TextDecoder('utf-8', { fatal: false }).decode(await src.read(0, src.size));
}

/** JSON.parse, with a parse error as a WebqloraError naming `name` (a file). */
export function parseJson(text: string, name: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new WebqloraError(`${name}: not valid JSON (${(e as Error).message}).`);
  }
}

/** A whole file parsed as JSON (any JSON value; callers check its shape). */
export async function readJson(src: ByteSource): Promise<unknown> {
  return parseJson(await readText(src), src.name);
}

/** Closes a source that holds a resource (a Node FileSource); a no-op for the others. */
export async function closeSource(src: ByteSource): Promise<void> {
  await (src as { close?: () => Promise<void> }).close?.();
}

/** Writes one whole file atomically. */
export async function writeFileTo(dir: OutDir, rel: string, data: Uint8Array | string): Promise<void> {
  const sink = await dir.create(rel);
  try {
    await sink.write(typeof data === 'string' ? new TextEncoder().encode(data) : data);
    await sink.commit();
  } catch (e) {
    await sink.abort();
    throw e;
  }
}
