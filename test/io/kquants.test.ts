// GGUF block types against gguf-py: every tensor of the two fixture files (one 2×512 tensor per
// type, and a llama model quantized like llama.cpp's Q4_K_M mix) must dequantize to exactly the
// float32 values gguf-py 0.19.0 produced (test/fixtures/gguf-kquants/README.md). Tolerance: none,
// float32 bit patterns are compared (gguf-py computes in float32 and so do we).
// Then the errors: a truncated tensor of each block type, in the file and in the bytes handed to
// the dequantizer, and mutated copies of both files (WebqloraError or success, nothing else); and
// `webqlora inspect` on both files.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { FIXTURES, REPO } from '../helpers/index.ts';
import { fileOpener } from '../helpers/files.ts';
import { fuzzParser } from '../helpers/mutate.ts';
import { dequantizeGguf, ggmlTypeName, openGguf, readGguf, readGgufTensor, rotateHalfQK } from '../../src/io/gguf.ts';
import { openSafetensors, type SafetensorsFile } from '../../src/io/safetensors.ts';
import { MemorySource } from '../../src/io/source.ts';
import { WebqloraError } from '../../src/errors.ts';
import { dequantizeQ4_K } from '../../src/io/ggml-quants.ts';

const DIR = join(FIXTURES, 'gguf-kquants');
const TENSORS = 'kquants_tensors.gguf', MIX = 'llama_kquant_mix.gguf';
const file = fileOpener(test);

/** ggml type of each tensor of kquants_tensors.gguf (gguf-py GGMLQuantizationType). */
const TYPES: Record<string, number> = {
  t_q2_k: 10, t_q3_k: 11, t_q4_k: 12, t_q5_k: 13, t_q6_k: 14, t_q4_0: 2, t_q4_1: 3, t_q5_0: 6, t_q5_1: 7,
  t_q8_0: 8, t_iq4_nl: 20, t_f16: 1, t_bf16: 30,
};
/** The block types added with ggml-quants.ts (Q4_0 and Q8_0 were read before). */
const NEW_TYPES = ['t_q2_k', 't_q3_k', 't_q4_k', 't_q5_k', 't_q6_k', 't_q4_1', 't_q5_0', 't_q5_1', 't_iq4_nl'];

let expectedFile: SafetensorsFile | null = null;
async function expected(): Promise<SafetensorsFile> {
  expectedFile ??= await openSafetensors(await file(join(DIR, 'expected_dequant.safetensors')));
  return expectedFile;
}

/** Float32 bit-exact equality; a failure names the first differing index with both values and bits. */
function assertSameBits(actual: Float32Array, want: Float32Array, what: string): void {
  assert.is(actual.length, want.length, `${what}: length`);
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const e = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) {
      const hex = (x: number) => `0x${x.toString(16).padStart(8, '0')}`;
      assert.unreachable(`${what}: element ${i} differs: expected ${want[i]} (${hex(e[i]!)}), got ${actual[i]} (${hex(a[i]!)})`);
    }
  }
}

for (const name of [TENSORS, MIX]) {
  test(`${name}: every tensor dequantizes bit-exactly as gguf-py`, async () => {
    const src = await file(join(DIR, name));
    const f = await readGguf(src);
    const st = await expected();
    const keys = [...st.tensors.keys()].filter((k) => k.startsWith(`${name}/`));
    assert.equal(keys.sort(), f.tensors.map((t) => `${name}/${t.name}`).sort(), 'expected_dequant covers exactly the file\'s tensors');
    for (const t of f.tensors) {
      const key = `${name}/${t.name}`;
      assert.equal(st.info(key).shape, t.shape, `${key}: shape`);
      assertSameBits(await readGgufTensor(src, f, t.name), await st.readFloat(key), `${key} (${ggmlTypeName(t.type)})`);
    }
    if (name === TENSORS) {
      assert.equal(Object.fromEntries(f.tensors.map((t) => [t.name, t.type])), TYPES);
    } else {
      const types = new Set(f.tensors.map((t) => ggmlTypeName(t.type)));
      assert.equal([...types].sort(), ['F32', 'Q4_K', 'Q5_K', 'Q6_K']);
    }
  });
}

test(`${MIX}: loads as a llama model; readFloat is the raw values, q/k rows in rotate-half order`, async () => {
  const src = await file(join(DIR, MIX));
  const f = await readGguf(src);
  const w = await openGguf(src);
  const c = w.config;
  assert.equal([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKVHeads, c.vocabSize], [256, 768, 2, 4, 2, 512]);
  assert.ok(w.tensors.every((t) => t.dtype === 'F32'));
  const st = await expected();
  const byHf: Record<string, string> = {
    'model.embed_tokens.weight': 'token_embd.weight', 'lm_head.weight': 'output.weight',
    'model.layers.0.self_attn.q_proj.weight': 'blk.0.attn_q.weight', 'model.layers.1.self_attn.k_proj.weight': 'blk.1.attn_k.weight',
    'model.layers.0.self_attn.v_proj.weight': 'blk.0.attn_v.weight', 'model.layers.1.mlp.down_proj.weight': 'blk.1.ffn_down.weight',
  };
  for (const [hf, gg] of Object.entries(byHf)) {
    assert.ok(f.tensors.some((t) => t.name === gg));
    const raw = await st.readFloat(`${MIX}/${gg}`);
    assertSameBits(await w.readFloat(hf), rotateHalfQK(hf, raw, c), hf);
  }
  await w.close();
});

test('a truncated tensor of each block type: one-sentence WebqloraError naming the tensor', async () => {
  const bytes = new Uint8Array(readFileSync(join(DIR, TENSORS)));
  const f = await readGguf(new MemorySource(TENSORS, bytes));
  const byOffset = f.tensors.slice().sort((a, b) => a.offset - b.offset);
  for (const name of NEW_TYPES) {
    const t = f.tensors.find((x) => x.name === name)!;
    const n = t.shape[0]! * t.shape[1]!;
    // the bytes handed to the dequantizer are one short
    const what = `${TENSORS}: tensor "${name}"`;
    const data = bytes.subarray(t.offset, t.offset + t.byteLength - 1);
    const msg = await rejects(() => dequantizeGguf(t.type, data, n, what));
    assert.ok(msg.startsWith(`${what}: ${n} ${ggmlTypeName(t.type)} values need ${t.byteLength} bytes`), msg);
    assert.ok(msg.includes('truncated'), msg);
    // the file ends inside the tensor: the header check names it (it is the first one cut off)
    assert.is(byOffset.find((x) => x.offset + x.byteLength > t.offset + t.byteLength - 1), t);
    const cut = bytes.subarray(0, t.offset + t.byteLength - 1);
    const fmsg = await rejects(() => readGguf(new MemorySource('cut.gguf', cut)));
    assert.ok(fmsg.startsWith(`cut.gguf: tensor "${name}" data`) && fmsg.includes('truncated'), fmsg);
  }
});

/** The message of the WebqloraError `fn` throws: one sentence (a single line ending in a period). */
async function rejects(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof WebqloraError)) throw new Error(`expected a WebqloraError, got ${(e as Error)?.stack ?? e}`);
    assert.ok(!e.message.includes('\n') && e.message.endsWith('.'), e.message);
    return e.message;
  }
  throw new Error('expected a WebqloraError');
}

test('mutated fixture files: every tensor reads or a WebqloraError, nothing else', async () => {
  const seeds = [readFileSync(join(DIR, TENSORS)), readFileSync(join(DIR, MIX))].map((b) => new Uint8Array(b));
  const res = await fuzzParser('gguf-kquants', seeds, 600, async (bytes) => {
    const src = new MemorySource('fuzz.gguf', bytes);
    const f = await readGguf(src);
    for (const t of f.tensors) await readGgufTensor(src, f, t.name);
  }, { seed: 0x4b51 });
  assert.is(res.cases, 600);
  assert.ok(res.rejected > 0 && res.accepted > 0, JSON.stringify(res));
});

test('webqlora inspect describes both files (the tensor file as not a loadable model)', () => {
  const inspect = (path: string) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), 'inspect', path, '--json'], { encoding: 'utf8', cwd: REPO });
    assert.is(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const t = inspect(join(DIR, TENSORS));
  assert.is(t.model, null);
  assert.match(t.not_loadable, /kquants_tensors\.gguf: /);
  assert.equal(Object.fromEntries(t.gguf.tensors.map((x: { name: string; type: string }) => [x.name, x.type])), Object.fromEntries(Object.entries(TYPES).map(([k, v]) => [k, ggmlTypeName(v)])));
  const m = inspect(join(DIR, MIX));
  assert.is(m.format, 'gguf');
  assert.is(m.config.hiddenSize, 256);
  assert.is(m.gguf.tensors.find((x: { name: string }) => x.name === 'output.weight').type, 'Q6_K');
});

test('dequantizeQ4_K: decodes into a given output, a short source is a RangeError', () => {
  const out = new Float32Array(512).fill(NaN);
  const blocks = new Uint8Array(2 * 144);
  blocks[0] = 0x00; blocks[1] = 0x3c; // d = 1
  blocks[16] = 0x21; // first byte of qs: q = 1 (element 0), 2 (element 32)
  blocks[4] = 3; // scale of sub-block 0 is 3, min 0
  const r = dequantizeQ4_K(blocks, 512, out);
  assert.is(r, out);
  assert.is(out[0], 3);
  assert.is(out[32], 0); // sub-block 1 has scale 0
  assert.ok(out.every((x) => !Number.isNaN(x)));
  assert.throws(() => dequantizeQ4_K(blocks.subarray(0, 143), 256), (e: unknown) => e instanceof RangeError);
});

test.run();
