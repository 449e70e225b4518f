// Seeded mutation fuzzing for file parsers: take valid files, corrupt them in ways real files get
// corrupted (bit rot, truncated downloads, hand-edited headers, wrong length fields) and check
// that the parser only ever fails with a WebqloraError — never a RangeError / TypeError /
// SyntaxError escaping, and never a hang. Used by every parser test (safetensors, HF dirs, GGUF,
// llama2.c).
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebqloraError } from '../../src/errors.ts';
import type { Rng } from './index.ts';

/** Values that break length and count fields: 0, off-by-one, sign bits, 2^31/2^32/2^53 edges. */
const INTERESTING_U32 = [0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_U64_HI = [0, 0, 0, 1, 0x1fffff, 0x200000, 0x7fffffff, 0x80000000, 0xffffffff];

/** JSON fragments swapped in for a token (numbers that overflow, wrong types, broken syntax). */
const JSON_TOKENS = [
  '0', '-1', '1', '1e300', '-0', '1.5', '9007199254740993', '18446744073709551616', 'NaN', 'null', 'true', 'false',
  '""', '"x"', '"F32"', '"U8"', '"BF16"', '[]', '[1]', '[0,0]', '[-1,2]', '{}', '{"a":1}', '[', ']', '{', '}', ',', ':', '"', '\\', '\\u0000', '\\ud800',
];

export interface Mutation {
  bytes: Uint8Array;
  /** What was done, for the failure message. */
  what: string;
}

/** One random corruption of `bytes` (the input is not modified). */
export function mutateWithLabel(bytes: Uint8Array, rng: Rng): Mutation {
  const n = bytes.length;
  const out = () => bytes.slice();
  const headLen = Math.min(n, 4096); // headers live at the start of every format we parse
  switch (rng.int(9)) {
    case 0: { // bit flips anywhere
      const b = out();
      const k = 1 + rng.int(4);
      for (let i = 0; i < k && n > 0; i++) b[rng.int(n)]! ^= 1 << rng.int(8);
      return { bytes: b, what: `${k} bit flips` };
    }
    case 1: { // byte overwrites in the header region
      const b = out();
      const k = 1 + rng.int(4);
      for (let i = 0; i < k && headLen > 0; i++) b[rng.int(headLen)] = rng.int(256);
      return { bytes: b, what: `${k} header byte overwrites` };
    }
    case 2: { // truncation (a partial download)
      const at = rng.next() < 0.5 ? rng.int(headLen + 1) : rng.int(n + 1);
      return { bytes: bytes.slice(0, at), what: `truncated to ${at} bytes` };
    }
    case 3: { // a length/count field near the start replaced by an interesting value
      const b = out();
      if (n < 8) return { bytes: b, what: 'unchanged (too short)' };
      const at = 4 * rng.int(Math.min(16, Math.floor(n / 4) - 1) + 1);
      if (at + 8 > n) return { bytes: b, what: 'unchanged (too short)' };
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const mode = rng.int(3);
      if (mode === 0) dv.setUint32(at, INTERESTING_U32[rng.int(INTERESTING_U32.length)]!, true);
      else if (mode === 1) dv.setUint32(at, (dv.getUint32(at, true) + (rng.int(17) - 8)) >>> 0, true);
      else dv.setUint32(at + 4, INTERESTING_U64_HI[rng.int(INTERESTING_U64_HI.length)]!, true);
      return { bytes: b, what: `length field at ${at} changed (mode ${mode})` };
    }
    case 4: { // the u64 at offset 0 (safetensors header length, GGUF magic+version) nudged
      const b = out();
      if (n < 8) return { bytes: b, what: 'unchanged (too short)' };
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const lo = dv.getUint32(0, true);
      const delta = [-8, -1, 1, 8, 1 << 20, -lo][rng.int(6)]!;
      dv.setUint32(0, (lo + delta) >>> 0, true);
      return { bytes: b, what: `first u32 changed by ${delta}` };
    }
    case 5: { // JSON/text token replaced
      const { b, what } = swapToken(bytes, headLen, rng);
      return { bytes: b, what };
    }
    case 6: { // inserted bytes
      const at = rng.int(headLen + 1);
      const k = 1 + rng.int(8);
      const ins = new Uint8Array(k);
      for (let i = 0; i < k; i++) ins[i] = rng.next() < 0.5 ? rng.int(256) : ' {}[],:"0'.charCodeAt(rng.int(9));
      const b = new Uint8Array(n + k);
      b.set(bytes.subarray(0, at)); b.set(ins, at); b.set(bytes.subarray(at), at + k);
      return { bytes: b, what: `${k} bytes inserted at ${at}` };
    }
    case 7: { // deleted bytes
      const at = rng.int(Math.max(headLen, 1));
      const k = Math.min(1 + rng.int(8), n - at);
      const b = new Uint8Array(n - Math.max(k, 0));
      b.set(bytes.subarray(0, at)); b.set(bytes.subarray(at + Math.max(k, 0)), at);
      return { bytes: b, what: `${k} bytes deleted at ${at}` };
    }
    default: { // a run of 0x00 / 0xff over a random range (zeroed sectors, sign bits)
      const b = out();
      const at = rng.int(Math.max(n, 1));
      const k = Math.min(1 + rng.int(32), n - at);
      b.fill(rng.next() < 0.5 ? 0 : 0xff, at, at + k);
      return { bytes: b, what: `${k} bytes filled at ${at}` };
    }
  }
}

/** One random corruption of `bytes` (the input is not modified). */
export function mutate(bytes: Uint8Array, rng: Rng): Uint8Array {
  return mutateWithLabel(bytes, rng).bytes;
}

/** Replaces one JSON-ish token (number, string, bracket, punctuation) inside the first `limit` bytes. */
function swapToken(bytes: Uint8Array, limit: number, rng: Rng): { b: Uint8Array; what: string } {
  // Find token boundaries: runs of [0-9.eE+-], quoted strings, or single punctuation characters.
  const spans: Array<[number, number]> = [];
  let i = 0;
  while (i < limit && spans.length < 4096) {
    const c = bytes[i]!;
    if (c === 0x22) { // "string"
      let j = i + 1;
      while (j < limit && bytes[j] !== 0x22) j += bytes[j] === 0x5c ? 2 : 1;
      spans.push([i, Math.min(j + 1, limit)]);
      i = j + 1;
    } else if ((c >= 0x30 && c <= 0x39) || c === 0x2d) {
      let j = i + 1;
      while (j < limit && /[0-9.eE+-]/.test(String.fromCharCode(bytes[j]!))) j++;
      spans.push([i, j]);
      i = j;
    } else if ('{}[],:'.includes(String.fromCharCode(c))) {
      spans.push([i, i + 1]);
      i++;
    } else i++;
  }
  if (spans.length === 0) return { b: bytes.slice(), what: 'unchanged (no tokens)' };
  const [s, e] = spans[rng.int(spans.length)]!;
  let rep: Uint8Array;
  let what: string;
  if (rng.next() < 0.25 && spans.length > 1) { // swap with another token of the same file
    const [s2, e2] = spans[rng.int(spans.length)]!;
    rep = bytes.slice(s2, e2);
    what = `token at ${s} replaced by token at ${s2}`;
  } else {
    const t = JSON_TOKENS[rng.int(JSON_TOKENS.length)]!;
    rep = new TextEncoder().encode(t);
    what = `token at ${s} replaced by ${t}`;
  }
  const b = new Uint8Array(bytes.length - (e - s) + rep.length);
  b.set(bytes.subarray(0, s)); b.set(rep, s); b.set(bytes.subarray(e), s + rep.length);
  return { b, what };
}

export interface FuzzOptions {
  /** Seed of the case generator. */
  seed?: number;
  /** Per-case wall time limit in ms (a parse slower than this counts as a hang). */
  caseTimeoutMs?: number;
  /** Corruptions stacked per case: 1..maxStack. */
  maxStack?: number;
  /** Rng constructor (defaults to test/helpers Rng). */
  rng?: Rng;
}

export interface FuzzResult {
  cases: number;
  /** Cases the parser accepted (mutation kept the file valid). */
  accepted: number;
  /** Cases rejected with a WebqloraError. */
  rejected: number;
  /** Slowest case in ms. */
  slowestMs: number;
}

/**
 * Runs `count` mutated variants of `seeds` through `parse`. Anything thrown that is not a
 * WebqloraError fails the test with the case number, the mutations applied, the error and a
 * path where the offending bytes were saved; so does a case slower than caseTimeoutMs.
 */
export async function fuzzParser(
  name: string,
  seeds: Uint8Array[],
  count: number,
  parse: (bytes: Uint8Array) => Promise<unknown>,
  opts: FuzzOptions = {},
): Promise<FuzzResult> {
  const { Rng } = await import('./index.ts');
  const rng = opts.rng ?? new Rng(opts.seed ?? 0x5eed);
  const limit = opts.caseTimeoutMs ?? 2000;
  const maxStack = opts.maxStack ?? 3;
  const res: FuzzResult = { cases: 0, accepted: 0, rejected: 0, slowestMs: 0 };
  for (let c = 0; c < count; c++) {
    const si = rng.int(seeds.length);
    let bytes = seeds[si]!;
    const whats: string[] = [];
    const k = 1 + rng.int(maxStack);
    for (let j = 0; j < k; j++) {
      const m = mutateWithLabel(bytes, rng);
      bytes = m.bytes;
      whats.push(m.what);
    }
    const t0 = performance.now();
    let err: unknown = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // The timer catches an async parser that never settles; a synchronous endless loop cannot
      // be interrupted here and would hang the test run, which also fails it.
      await Promise.race([
        parse(bytes),
        new Promise((_, rej) => { timer = setTimeout(() => rej(new HangError()), limit); }),
      ]);
    } catch (e) {
      err = e;
    } finally {
      clearTimeout(timer);
    }
    const ms = performance.now() - t0;
    res.slowestMs = Math.max(res.slowestMs, ms);
    res.cases++;
    const fail = (why: string): never => {
      const dir = mkdtempSync(join(tmpdir(), 'webqlora-fuzz-'));
      const path = join(dir, `${name.replace(/[^\w.-]+/g, '_')}-case${c}.bin`);
      writeFileSync(path, bytes);
      throw new Error(`${name}: case ${c} (seed file ${si}; ${whats.join('; ')}): ${why}; bytes saved to ${path}`);
    };
    if (err instanceof HangError || ms > limit) fail(`took ${ms.toFixed(0)} ms (limit ${limit} ms)`);
    if (err === null) res.accepted++;
    else if (err instanceof WebqloraError) res.rejected++;
    else fail(`escaped ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message ?? String(err)}\n${(err as Error)?.stack ?? ''}`);
  }
  return res;
}

class HangError extends Error {}
