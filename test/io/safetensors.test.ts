// safetensors reader/writer: round trips of every dtype, byte-identical rewrites of the bnb
// vector files (written by a mirror of the Rust crate's `prepare`), the Rust crate's own
// serialization examples, every malformed-header case with its message, lazy reads, and
// atomic aborts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, VECTORS, STORIES_HF, assertBitsEqual } from '../helpers/index.ts';
import { WebqloraError } from '../../src/errors.ts';
import { MemorySource, type ByteSource } from '../../src/io/source.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { DTYPE_BYTES, toFloat32, type DType } from '../../src/io/dtype.ts';
import { openSafetensors, planSafetensors, serializeSafetensors, writeSafetensors, compareCodePoints, type SafetensorsEntry } from '../../src/io/safetensors.ts';

const ALL_DTYPES: DType[] = ['F32', 'F16', 'BF16', 'F64', 'U8', 'I8', 'I16', 'I32', 'I64', 'BOOL', 'U16', 'U32', 'U64'];

function randomBytes(rng: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(256);
  return b;
}

function vectorFiles(): string[] {
  const out = [join(VECTORS, 'tables.safetensors')];
  for (const f of readdirSync(join(VECTORS, 'cases'))) out.push(join(VECTORS, 'cases', f));
  for (const d of ['model_nf4_dq_bf16', 'model_fp4_nodq_f16']) {
    for (const f of ['model', 'original_weights', 'expected_dequant']) out.push(join(VECTORS, d, `${f}.safetensors`));
  }
  return out;
}

async function open(bytes: Uint8Array, name = 'model.safetensors') {
  return openSafetensors(new MemorySource(name, bytes));
}

test('round trip of every dtype, empty and scalar shapes, metadata', async () => {
  const rng = new Rng(11);
  const entries: SafetensorsEntry[] = [];
  for (const dt of ALL_DTYPES) {
    const shape = [3, 1 + rng.int(5)];
    let bytes = randomBytes(rng, shape[0]! * shape[1]! * DTYPE_BYTES[dt]);
    if (dt === 'BOOL') bytes = bytes.map((b) => b & 1);
    entries.push({ name: `t.${dt.toLowerCase()}`, dtype: dt, shape, data: bytes });
  }
  entries.push({ name: 'empty', dtype: 'F32', shape: [0, 4], data: new Uint8Array(0) });
  entries.push({ name: 'scalar', dtype: 'F32', shape: [], data: new Uint8Array(new Float32Array([1.5]).buffer) });
  const meta = { format: 'pt', note: 'ünïcode "quoted"\n' };
  const file = await serializeSafetensors(entries, meta);
  const hdrLen = Number(new DataView(file.buffer).getBigUint64(0, true));
  assert.is(hdrLen % 8, 0, 'header padded to a multiple of 8');
  const st = await open(file);
  assert.equal(st.metadata, meta);
  assert.is(st.tensors.size, entries.length);
  for (const e of entries) {
    const info = st.info(e.name);
    assert.is(info.dtype, e.dtype, e.name);
    assert.equal(info.shape, e.shape, e.name);
    assertBitsEqual(await st.readRaw(e.name), e.data as Uint8Array, e.name);
    if (['F32', 'F16', 'BF16', 'F64'].includes(e.dtype)) {
      assertBitsEqual(await st.readFloat(e.name), toFloat32(e.data as Uint8Array, e.dtype, e.name), `${e.name} float`);
    }
  }
  try {
    await st.readFloat('t.i32');
    assert.unreachable();
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.match((e as Error).message, /t\.i32: dtype I32 is not a floating-point type/);
  }
});

test('tensor order: dtype descending in the Rust enum order, then name by code point', async () => {
  const mk = (name: string, dtype: DType): SafetensorsEntry => ({ name, dtype, shape: [1], data: new Uint8Array(DTYPE_BYTES[dtype]) });
  const file = await serializeSafetensors([
    mk('b', 'U8'), mk('a', 'BOOL'), mk('z', 'F16'), mk('y', 'BF16'), mk('c', 'F32'), mk('a', 'I64'), mk('x', 'U64'), mk('d', 'F64'),
    mk('e', 'I32'), mk('f', 'U32'), mk('g', 'I16'), mk('h', 'U16'), mk('i', 'I8'), mk('\u{ffff}', 'U8'), mk('\u{10000}', 'U8'),
  ].map((e, i) => (i === 5 ? { ...e, name: 'a64' } : e)));
  const st = await open(file);
  assert.equal([...st.tensors.keys()], ['x', 'a64', 'd', 'c', 'f', 'e', 'y', 'z', 'h', 'g', 'i', 'b', '\u{ffff}', '\u{10000}', 'a']);
  assert.ok(compareCodePoints('\u{ffff}', '\u{10000}') < 0, 'code point order, not UTF-16 order');
});

test('byte-identical with the Rust crate serialization examples (safetensors/src/tensor.rs tests)', async () => {
  const data = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
  const out = await serializeSafetensors([{ name: 'attn.0', dtype: 'F32', shape: [1, 2, 3], data }]);
  const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  assert.is(out.length, 8 + 64 + 24);
  assert.is(out[0], 64);
  assert.is(new TextDecoder().decode(out.subarray(8, 8 + 64)), header);
  const out2 = await serializeSafetensors([{ name: 'attn0', dtype: 'F32', shape: [1, 1, 2, 3], data }]);
  assert.is(out2[0], 72);
  assert.is(new TextDecoder().decode(out2.subarray(8, 80)), '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ');
  assert.equal([...(await serializeSafetensors([]))], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  const withMeta = await serializeSafetensors([], { framework: 'pt' });
  assert.is(withMeta[0], 40);
  assert.is(new TextDecoder().decode(withMeta.subarray(8)), '{"__metadata__":{"framework":"pt"}}     ');
});

test('every safetensors file in test/vectors/bnb parses and re-writes byte for byte', async () => {
  const files = vectorFiles();
  assert.ok(files.length >= 30);
  for (const f of files) {
    const bytes = new Uint8Array(readFileSync(f));
    const st = await open(bytes, f);
    const entries: SafetensorsEntry[] = [];
    for (const [name, t] of st.tensors) entries.push({ name, dtype: t.dtype, shape: t.shape, data: () => st.readRaw(name) });
    const again = await serializeSafetensors(entries, st.metadata);
    assertBitsEqual(again, bytes, f);
  }
});

test('stories260K model.safetensors (metadata last, another writer) round-trips tensor for tensor', async () => {
  const bytes = new Uint8Array(readFileSync(join(STORIES_HF, 'model.safetensors')));
  const st = await open(bytes);
  assert.is(st.tensors.size, 48);
  const entries: SafetensorsEntry[] = [];
  for (const [name, t] of st.tensors) entries.push({ name, dtype: t.dtype, shape: t.shape, data: await st.readRaw(name) });
  const st2 = await open(await serializeSafetensors(entries, st.metadata));
  for (const [name] of st.tensors) assertBitsEqual(await st2.readRaw(name), await st.readRaw(name), name);
  assert.equal(st2.metadata, { format: 'pt' });
});

test('open reads only the header; readRaw reads only its tensor', async () => {
  const bytes = new Uint8Array(readFileSync(join(STORIES_HF, 'model.safetensors')));
  const reads: Array<[number, number]> = [];
  const inner = new MemorySource('model.safetensors', bytes);
  const src: ByteSource = { name: inner.name, size: inner.size, read: (o, l) => { reads.push([o, l]); return inner.read(o, l); } };
  const st = await openSafetensors(src);
  const total = reads.reduce((s, [, l]) => s + l, 0);
  assert.is(total, st.dataOffset, 'only the length and header were read');
  reads.length = 0;
  const t = st.info('model.norm.weight');
  await st.readRaw('model.norm.weight');
  assert.equal(reads, [[st.dataOffset + t.begin, t.end - t.begin]]);
});

// A file whose header is `header` (an object or raw text) followed by `dataLen` bytes.
function fileWith(header: unknown, dataLen: number, opts: { raw?: Uint8Array; len?: bigint } = {}): Uint8Array {
  const h = opts.raw ?? new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, opts.len ?? BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

const T = (dtype: unknown, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });

const BAD: Array<[string, Uint8Array, RegExp]> = [
  ['shorter than 8 bytes', new Uint8Array(5), /model\.safetensors: the file is too short to be safetensors \(5 bytes/],
  ['header length past the end', fileWith({}, 0, { len: 1000n }), /header length 1000 runs past the end of the file/],
  ['header length over 100 MB', fileWith({}, 0, { len: 200_000_000n }), /header length 200000000 is larger than the 100 MB limit/],
  ['header length with a high word', fileWith({}, 0, { len: 2n ** 40n }), /header length 1099511627776 is larger than the 100 MB limit/],
  ['empty header', fileWith('', 0), /the header is empty/],
  ['invalid UTF-8', fileWith(null, 0, { raw: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }), /the header is not valid UTF-8/],
  ['invalid JSON', fileWith('{"a": ', 0), /the header is not valid JSON/],
  ['header is a list', fileWith([1, 2], 0), /the header is a list, expected a JSON object/],
  ['header is a number', fileWith('42', 0), /the header is number 42, expected a JSON object/],
  ['entry not an object', fileWith({ w: 5 }, 0), /tensor w: the header entry is number 5, expected an object/],
  ['missing dtype', fileWith({ w: { shape: [1], data_offsets: [0, 4] } }, 4), /tensor w: the header entry has no "dtype"/],
  ['missing shape', fileWith({ w: { dtype: 'F32', data_offsets: [0, 4] } }, 4), /tensor w: the header entry has no "shape"/],
  ['missing data_offsets', fileWith({ w: { dtype: 'F32', shape: [1] } }, 4), /tensor w: the header entry has no "data_offsets"/],
  ['unknown dtype', fileWith({ w: T('F8_E4M3', [1], [0, 1]) }, 1), /tensor w: dtype F8_E4M3 is not supported \(expected one of F32, F16, BF16, F64, U8, I8, I16, I32, I64, BOOL, U16, U32, U64\)/],
  ['dtype not a string', fileWith({ w: T(7, [1], [0, 1]) }, 1), /tensor w: dtype number 7 is not supported/],
  ['negative dimension', fileWith({ w: T('F32', [-1], [0, 4]) }, 4), /tensor w: shape \[-1\] is not a list of non-negative integers/],
  ['fractional dimension', fileWith({ w: T('F32', [1.5], [0, 4]) }, 4), /tensor w: shape \[1.5\] is not a list/],
  ['huge dimension', fileWith({ w: T('F32', [1e300], [0, 4]) }, 4), /tensor w: shape \[1e\+300\] is not a list/],
  ['shape not a list', fileWith({ w: T('F32', 4, [0, 16]) }, 16), /tensor w: shape 4 is not a list/],
  ['shape product overflows', fileWith({ w: T('F32', [2 ** 40, 2 ** 40], [0, 4]) }, 4), /tensor w: shape \[1099511627776, 1099511627776\] is too large/],
  ['offsets not a pair', fileWith({ w: T('F32', [1], [0, 4, 8]) }, 4), /tensor w: data_offsets \[0,4,8\] is not a pair of non-negative integers/],
  ['offsets not integers', fileWith({ w: T('F32', [1], ['0', 4]) }, 4), /tensor w: data_offsets \["0",4\] is not a pair/],
  ['offsets reversed', fileWith({ w: T('F32', [0], [4, 0]) }, 4), /tensor w: data_offsets \[4, 0\] end before they begin/],
  ['size mismatch', fileWith({ 'model.norm.weight': T('F32', [64], [0, 128]) }, 128), /model\.safetensors: tensor model\.norm\.weight: dtype F32 × shape \[64\] needs 256 bytes, data_offsets span 128\./],
  ['offsets past the data', fileWith({ w: T('F32', [2], [0, 8]) }, 4), /tensor w: data_offsets \[0, 8\] run past the end of the data \(4 bytes/],
  ['overlapping tensors', fileWith({ a: T('F32', [2], [0, 8]), b: T('F32', [1], [4, 8]) }, 8), /tensors a and b overlap/],
  ['zero-size tensor inside another', fileWith({ a: T('F32', [2], [0, 8]), b: T('F32', [0], [4, 4]) }, 8), /tensors a and b overlap/],
  ['hole between tensors', fileWith({ a: T('F32', [1], [0, 4]), b: T('F32', [1], [8, 12]) }, 12), /bytes 4\.\.8 of the data belong to no tensor \(after a\)/],
  ['hole at the start', fileWith({ a: T('F32', [1], [4, 8]) }, 8), /bytes 0\.\.4 of the data belong to no tensor \(at the start\)/],
  ['trailing bytes', fileWith({ a: T('F32', [1], [0, 4]) }, 9), /the data holds 9 bytes but the tensors cover only 4/],
  ['metadata not an object', fileWith({ __metadata__: 'pt' }, 0), /__metadata__ is the string "pt", expected an object of strings/],
  ['metadata value not a string', fileWith({ __metadata__: { format: 1 } }, 0), /__metadata__\.format is number 1, expected a string/],
];

test('every malformed file is a WebqloraError naming the file, the tensor and the problem', async () => {
  for (const [what, bytes, re] of BAD) {
    try {
      await open(bytes);
      assert.unreachable(`${what}: accepted`);
    } catch (e) {
      if ((e as Error).name === 'Assertion') throw e;
      assert.instance(e, WebqloraError, `${what}: ${(e as Error).message}`);
      assert.match((e as Error).message, /^model\.safetensors: /, what);
      assert.match((e as Error).message, re, what);
      assert.not.match((e as Error).message, /\n/, `${what}: one line`);
    }
  }
  // a valid file next to the bad ones: zero tensors, only metadata
  const ok = await open(fileWith({ __metadata__: { format: 'pt' } }, 0));
  assert.is(ok.tensors.size, 0);
});

test('writer: entries it cannot write are refused with one sentence naming the tensor', () => {
  const ok: SafetensorsEntry = { name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(8) };
  const cases: Array<[SafetensorsEntry[], string]> = [
    [[{ ...ok, name: '__metadata__' }], 'safetensors: a tensor cannot be named __metadata__.'],
    [[ok, { ...ok, dtype: 'U8', shape: [8] }], 'safetensors: tensor w is given twice.'],
    [[{ ...ok, dtype: 'F8_E4M3' as DType }], 'safetensors: tensor w: dtype F8_E4M3 is not supported (expected one of F32, F16, BF16, F64, U8, I8, I16, I32, I64, BOOL, U16, U32, U64).'],
    [[{ ...ok, shape: [-1] }], 'safetensors: tensor w: shape [-1] is not a list of non-negative integers.'],
    [[{ ...ok, shape: [2, 1.5] }], 'safetensors: tensor w: shape [2, 1.5] is not a list of non-negative integers.'],
    [[{ ...ok, shape: [2 ** 53] }], 'safetensors: tensor w: shape [9007199254740992] is not a list of non-negative integers.'],
  ];
  for (const [entries, msg] of cases) {
    assert.throws(() => planSafetensors(entries), (e: unknown) => e instanceof WebqloraError && e.message === msg, msg);
  }
  assert.is(planSafetensors([ok]).dataBytes, 8);
});

test('writer: lazy data is requested one tensor at a time, in file order', async () => {
  const log: string[] = [];
  const mk = (name: string, dtype: DType): SafetensorsEntry => ({
    name, dtype, shape: [2],
    data: async () => { log.push(`get ${name}`); return new Uint8Array(2 * DTYPE_BYTES[dtype]); },
  });
  await writeSafetensors({
    async write(c) { log.push(`write ${c.length}`); },
    async commit() { log.push('commit'); },
    async abort() { log.push('abort'); },
  }, [mk('u', 'U8'), mk('f', 'F32')]);
  assert.equal(log, ['write 120', 'get f', 'write 8', 'get u', 'write 2', 'commit']);
});

test('writer: a failing tensor aborts the file and leaves nothing in the directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'webqlora-st-'));
  try {
    const out = new NodeOutDir(dir);
    const good: SafetensorsEntry = { name: 'a', dtype: 'F32', shape: [4], data: new Uint8Array(16) };
    const failing: SafetensorsEntry = { name: 'b', dtype: 'F32', shape: [4], data: async () => { throw new WebqloraError('disk on fire'); } };
    try {
      await writeSafetensors(await out.create('model.safetensors'), [good, failing]);
      assert.unreachable();
    } catch (e) {
      assert.is((e as Error).message, 'disk on fire');
    }
    assert.equal(readdirSync(dir), []);
    // wrong data length: also aborted
    try {
      await writeSafetensors(await out.create('model.safetensors'), [{ ...good, data: new Uint8Array(15) }]);
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, /tensor a: got 15 bytes/);
    }
    assert.equal(readdirSync(dir), []);
    // duplicate names are refused before anything is written
    try {
      await writeSafetensors(await out.create('model.safetensors'), [good, good]);
      assert.unreachable();
    } catch (e) {
      assert.instance(e, WebqloraError);
      assert.is((e as Error).message, 'safetensors: tensor a is given twice.');
    }
    assert.equal(readdirSync(dir), []);
    await writeSafetensors(await out.create('model.safetensors'), [good]);
    assert.equal(readdirSync(dir), ['model.safetensors']);
    const st = await open(new Uint8Array(readFileSync(join(dir, 'model.safetensors'))));
    assert.equal([...st.tensors.keys()], ['a']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
