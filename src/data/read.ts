// Raw records from a training-data file, streamed so a large JSONL file never has to fit in one
// string. Three layouts:
//   jsonl  one JSON value per line (blank lines skipped)            → one record per line
//   json   one JSON array of records, read whole (these are small)   → one record per element
//          (a .json file whose first line is a complete JSON value is read as JSONL, and a single
//          pretty-printed object as one record)
//   txt    plain text for the `text` format: documents separated by lines that are exactly
//          `<|endoftext|>` (the TinyStories / GPT-2 convention), else the whole file is one document
// Every record carries the 1-based line it starts on, so errors read `train.jsonl:17: …`.
import { WebqloraError } from '../errors.ts';
import { concatBytes, type ByteSource } from '../io/source.ts';

export type FileLayout = 'jsonl' | 'json' | 'txt';

/** One record as read: a parsed JSON value (or `{text}` for a plain-text document) and its line. */
export interface RawRecord {
  line: number;
  value: unknown;
}

/** The document separator of plain-text files, alone on its line. */
export const TEXT_DOC_SEPARATOR = '<|endoftext|>';

const DEFAULT_CHUNK = 1 << 20;
/** A JSON array is parsed as one string; beyond this, JSONL is the only sensible layout. */
const MAX_JSON_ARRAY_BYTES = 256 << 20;

/**
 * The layout from the file name: `.jsonl`/`.ndjson` → jsonl, `.json` → json, `.txt`/`.text`/`.md`
 * → txt; null when the extension says nothing (then `readRecords` sniffs the first byte).
 */
export function layoutFromName(name: string): FileLayout | null {
  const lower = name.toLowerCase();
  if (lower.endsWith('.jsonl') || lower.endsWith('.ndjson')) return 'jsonl';
  if (lower.endsWith('.json')) return 'json';
  if (lower.endsWith('.txt') || lower.endsWith('.text') || lower.endsWith('.md')) return 'txt';
  return null;
}

/**
 * Lines of a file as `{line, text}` (1-based, without the `\n` or a trailing `\r`), read in
 * chunks of `chunkSize` bytes. Lines are cut on the byte 0x0A before decoding — that byte never
 * occurs inside a multi-byte UTF-8 sequence — so a character split across two chunks is decoded
 * whole, and invalid UTF-8 is reported with its exact line.
 */
export async function* readLines(src: ByteSource, chunkSize = DEFAULT_CHUNK): AsyncGenerator<{ line: number; text: string }> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const decode = (bytes: Uint8Array, line: number): string => {
    try {
      return decoder.decode(bytes);
    } catch {
      throw new WebqloraError(`${src.name}:${line}: invalid UTF-8 (the file must be UTF-8 text).`);
    }
  };
  let pending: Uint8Array[] = []; // bytes of the current line seen in earlier chunks
  let line = 1;
  for (let offset = 0; offset < src.size; offset += chunkSize) {
    const chunk = await src.read(offset, Math.min(chunkSize, src.size - offset));
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, nl);
      const bytes = pending.length === 0 ? piece : concatBytes([...pending, piece]);
      pending = [];
      yield { line, text: stripCr(decode(bytes, line)) };
      line++;
      start = nl + 1;
    }
    // subarray views stay valid: ByteSource.read returns a fresh (or immutable) buffer per call.
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length > 0) yield { line, text: stripCr(decode(concatBytes(pending), line)) };
}

/**
 * The records of a data file, in order. `layout` overrides the guess from the name. Throws
 * WebqloraError naming file and line for invalid JSON, and `name: no records` for a file without
 * any. JSON values are returned as parsed; whether a record has the right shape is format.ts's job.
 */
export async function* readRecords(src: ByteSource, opts: { layout?: FileLayout; chunkSize?: number } = {}): AsyncGenerator<RawRecord> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK;
  const layout = opts.layout ?? layoutFromName(src.name) ?? (await sniffLayout(src));
  let count = 0;
  if (layout === 'txt') {
    for await (const r of readTextDocuments(src, chunkSize)) { count++; yield r; }
  } else if (layout === 'json' && (await looksLikeWholeJson(src))) {
    for (const r of await readJsonArray(src)) { count++; yield r; }
  } else {
    for await (const r of readJsonl(src, chunkSize)) { count++; yield r; }
  }
  if (count === 0) throw new WebqloraError(`${src.name}: no records.`);
}

async function* readJsonl(src: ByteSource, chunkSize: number): AsyncGenerator<RawRecord> {
  for await (const { line, text } of readLines(src, chunkSize)) {
    if (text.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new WebqloraError(`${src.name}:${line}: invalid JSON (${jsonReason(e)}).`);
    }
    yield { line, value };
  }
}

/** Documents of a plain-text file; each starts at the line after the previous separator. */
async function* readTextDocuments(src: ByteSource, chunkSize: number): AsyncGenerator<RawRecord> {
  let lines: string[] = [];
  let first = 1;
  const flush = (): RawRecord | null => {
    // Blank lines around a document are layout, not content; a blank document is skipped.
    let a = 0, b = lines.length;
    while (a < b && lines[a]!.trim() === '') a++;
    while (b > a && lines[b - 1]!.trim() === '') b--;
    const rec = a < b ? { line: first + a, value: { text: lines.slice(a, b).join('\n') } } : null;
    lines = [];
    return rec;
  };
  for await (const { line, text } of readLines(src, chunkSize)) {
    if (text === TEXT_DOC_SEPARATOR) {
      const rec = flush();
      if (rec) yield rec;
      first = line + 1;
    } else {
      lines.push(text);
    }
  }
  const rec = flush();
  if (rec) yield rec;
}

/**
 * A `.json` file is read whole when it starts with `[` (an array) or when its first line is not
 * a complete JSON value (one pretty-printed object); otherwise it is JSONL under a .json name.
 */
async function looksLikeWholeJson(src: ByteSource): Promise<boolean> {
  const head = await firstNonBlank(src);
  if (head === null) return false;
  if (head.text.trimStart().startsWith('[')) return true;
  try {
    JSON.parse(head.text);
    return false;
  } catch {
    return true;
  }
}

async function readJsonArray(src: ByteSource): Promise<RawRecord[]> {
  if (src.size > MAX_JSON_ARRAY_BYTES) {
    throw new WebqloraError(`${src.name}: a JSON array of ${(src.size / 2 ** 20).toFixed(0)} MiB is too large to read whole (write one record per line as JSONL instead).`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await src.read(0, src.size));
  } catch (e) {
    if (e instanceof WebqloraError) throw e;
    throw new WebqloraError(`${src.name}: invalid UTF-8 (the file must be UTF-8 text).`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const pos = /position (\d+)/.exec(String((e as Error).message));
    const where = pos ? `:${lineAt(text, Number(pos[1]))}` : '';
    throw new WebqloraError(`${src.name}${where}: invalid JSON (${jsonReason(e)}).`);
  }
  if (Array.isArray(value)) {
    const lines = topLevelElementLines(text);
    return value.map((v, i) => ({ line: lines[i] ?? 1, value: v }));
  }
  if (value !== null && typeof value === 'object') return [{ line: lineAt(text, text.search(/\S/)), value }];
  throw new WebqloraError(`${src.name}: expected a JSON array of records or JSON lines.`);
}

async function sniffLayout(src: ByteSource): Promise<FileLayout> {
  const head = await firstNonBlank(src);
  if (head === null) return 'jsonl';
  const c = head.text.trimStart()[0];
  return c === '[' ? 'json' : c === '{' ? 'jsonl' : 'txt';
}

async function firstNonBlank(src: ByteSource): Promise<{ line: number; text: string } | null> {
  for await (const l of readLines(src, 64 << 10)) if (l.text.trim() !== '') return l;
  return null;
}

/** 1-based line of each element of the top-level JSON array in `text` (already known valid). */
function topLevelElementLines(text: string): number[] {
  const out: number[] = [];
  let depth = 0, line = 1, inString = false, escaped = false, expectValue = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x0a) line++;
    if (inString) {
      if (escaped) escaped = false;
      else if (c === 0x5c) escaped = true;
      else if (c === 0x22) inString = false;
      continue;
    }
    if (depth === 1 && expectValue && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09 && c !== 0x5d) {
      out.push(line);
      expectValue = false;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) { depth++; if (depth === 1) expectValue = true; }
    else if (c === 0x5d || c === 0x7d) depth--;
    else if (c === 0x2c && depth === 1) expectValue = true;
  }
  return out;
}

function lineAt(text: string, pos: number): number {
  let line = 1;
  for (let i = 0; i < pos && i < text.length; i++) if (text.charCodeAt(i) === 0x0a) line++;
  return line;
}

function jsonReason(e: unknown): string {
  const msg = String((e as Error)?.message ?? e).replace(/\s+/g, ' ').trim();
  return msg.length > 120 ? `${msg.slice(0, 117)}...` : msg;
}

function stripCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}
