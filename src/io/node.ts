// Node-only file access (STYLE.md §11: Node modules are imported only in io/node*.ts, src/cli/,
// the Dawn loader and the WASM backend's Node launchers). Everything else sees ByteSource /
// DirSource / OutDir. Model paths (openModelPath) are in node-model.ts.
import { open, stat, readdir, mkdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { WebqloraError } from '../errors.ts';
import { outOfRange, type ByteSink, type ByteSource, type DirSource, type OutDir } from './source.ts';

export class FileSource implements ByteSource {
  private closed = false;
  private constructor(readonly name: string, readonly size: number, private readonly fh: FileHandle) {}
  static async open(path: string): Promise<FileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new WebqloraError(`${path}: ${fsReason(e)}.`);
    }
    let st;
    try {
      st = await fh.stat();
    } catch (e) {
      await fh.close().catch(() => {});
      throw new WebqloraError(`${path}: ${fsReason(e)}.`);
    }
    if (st.isDirectory()) {
      await fh.close();
      throw new WebqloraError(`${path}: is a directory, expected a file.`);
    }
    return new FileSource(path, st.size, fh);
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.size)) {
      throw outOfRange(this, offset, length);
    }
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, Math.min(length - done, 1 << 30), offset + done);
      if (bytesRead === 0) throw outOfRange(this, offset, length);
      done += bytesRead;
    }
    return buf;
  }
  /** Idempotent: a file closed early (io/open.ts) is closed again by its NodeDirSource. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

export class NodeDirSource implements DirSource {
  private readonly opened: FileSource[] = [];
  constructor(readonly name: string) {}
  async open(rel: string): Promise<ByteSource | null> {
    const p = join(this.name, rel);
    try {
      const st = await stat(p);
      if (!st.isFile()) return null;
    } catch {
      return null;
    }
    const f = await FileSource.open(p);
    this.opened.push(f);
    return f;
  }
  /** Files, and symlinks to files (a Hugging Face hub cache snapshot is all symlinks), as open() sees them. */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for (const d of await readdir(this.name, { withFileTypes: true })) {
      if (d.isFile() || (d.isSymbolicLink() && (await stat(join(this.name, d.name)).then((s) => s.isFile(), () => false)))) out.push(d.name);
    }
    return out;
  }
  async close(): Promise<void> {
    await Promise.all(this.opened.splice(0).map((f) => f.close()));
  }
}

let tmpCounter = 0;

/** Writes `<dir>/.<name>.tmp-<pid>-<n>`, fsyncs, then renames over the final name. */
class AtomicFileSink implements ByteSink {
  private constructor(private readonly finalPath: string, private readonly tmpPath: string, private fh: FileHandle | null) {}
  static async create(path: string): Promise<AtomicFileSink> {
    const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${tmpCounter++}`);
    try {
      await mkdir(dirname(path), { recursive: true });
      return new AtomicFileSink(path, tmp, await open(tmp, 'w'));
    } catch (e) {
      throw new WebqloraError(`${path}: cannot write (${fsReason(e)}).`);
    }
  }
  async write(chunk: Uint8Array): Promise<void> {
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.fh!.write(chunk, done, chunk.length - done);
      done += bytesWritten;
    }
  }
  async commit(): Promise<void> {
    await this.fh!.sync();
    await this.fh!.close();
    this.fh = null;
    await rename(this.tmpPath, this.finalPath);
  }
  async abort(): Promise<void> {
    if (this.fh) await this.fh.close().catch(() => {});
    this.fh = null;
    await rm(this.tmpPath, { force: true });
  }
}

export class NodeOutDir implements OutDir {
  constructor(readonly name: string) {}
  async create(rel: string): Promise<ByteSink> {
    return AtomicFileSink.create(join(this.name, rel));
  }
  async sub(rel: string): Promise<OutDir> {
    const path = join(this.name, rel);
    try {
      await mkdir(path, { recursive: true });
    } catch (e) {
      throw new WebqloraError(`${path}: cannot create the directory (${fsReason(e)}).`);
    }
    return new NodeOutDir(path);
  }
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export function fsReason(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  if (code === 'ENOTDIR') return 'a parent is not a directory';
  if (code === 'EEXIST') return 'a file is in the way of a directory';
  if (code === 'ENOSPC') return 'no space left on the device';
  return (e as Error).message ?? String(e);
}

/**
 * Removes the temporary files (".name.tmp-PID-N") that a killed writer leaves in `dir` and its
 * immediate subdirectories. Final names are never touched: they are only ever renamed into place.
 */
export async function removeStaleTemps(dir: string): Promise<number> {
  let removed = 0;
  const sweep = async (d: string, depth: number): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isFile() && /^\..+\.tmp-\d+-\d+$/.test(e.name)) {
        await rm(join(d, e.name), { force: true });
        removed++;
      } else if (e.isDirectory() && depth > 0) {
        await sweep(join(d, e.name), depth - 1);
      }
    }
  };
  await sweep(dir, 1);
  return removed;
}

/**
 * A full garbage collection, for the moments a loader has just dropped a very large buffer
 * (loadModel's `collect`). Exposed through V8's flag at first use; a no-op if that fails.
 */
export function nodeGc(): void {
  if (!gcFn) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    } catch {
      gcFn = () => {};
    }
  }
  gcFn();
}
let gcFn: (() => void) | null = null;
