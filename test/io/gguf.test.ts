// GGUF loader: the real stories260K file against the same weights as an HF safetensors directory
// (bit-exact), synthetic files with every metadata type and the F16/BF16/Q8_0/Q4_0 tensor types,
// and every error the loader promises.
//
// How the formats correspond (stories260K):
//   GGUF name               HF name                                   layout difference
//   token_embd.weight       model.embed_tokens.weight                 none
//   output.weight           lm_head.weight                            the HF dir ties it: compare with embed_tokens
//   blk.N.attn_q/attn_k     model.layers.N.self_attn.q_proj/k_proj    GGUF rows interleaved, HF rotate-half:
//                                                                     per head of D rows, HF row j·D/2+i = GGUF row 2i+j
//   blk.N.attn_v/attn_output, ffn_gate/up/down, attn_norm/ffn_norm, output_norm: same values, renamed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { STORIES_GGUF, STORIES_HF, assertBitsEqual, mathConfig } from '../helpers/index.ts';
import { m, writeGguf, f32Bytes, f16Bytes, rotateHalfToInterleaved, buildLlama, llamaMeta, type WriterTensor, type MetaValue } from '../helpers/gguf-writer.ts';
import { openGguf, readGguf, GgufType } from '../../src/io/gguf.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { BlobSource, MemorySource, outOfRange, type ByteSource } from '../../src/io/source.ts';
import { WebqloraError } from '../../src/errors.ts';
import { f16ToF32, bf16ToF32, f32ToF16, f32ToBf16 } from '../../src/num.ts';
import { expectedTensors, type ModelConfig } from '../../src/model/config.ts';
import { fileOpener } from '../helpers/files.ts';

/** Files opened by a test; closed after the suite (the loaders leave their source open). */
const file = fileOpener(test);

const F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, IQ2_XXS = 16, BF16 = 30;

// ---------------------------------------------------------------------------------------------
// stories260K

test('stories260K.gguf: header, metadata and tensor infos', async () => {
  const src = await file(STORIES_GGUF);
  const f = await readGguf(src);
  assert.is(f.version, 3);
  assert.is(f.alignment, 32);
  assert.is(f.tensors.length, 48);
  assert.is(f.metadata.size, 19);
  assert.is(f.metadata.get('general.architecture'), 'llama');
  assert.is(f.dataOffset, 14176); // header ends at 14152, padded to 32
  const emb = f.tensors.find((t) => t.name === 'token_embd.weight')!;
  assert.equal(emb.shape, [512, 64]); // ggml ne [64, 512] reversed
  assert.is(emb.offset, 14176);
  assert.is(emb.byteLength, 512 * 64 * 4);
  const down = f.tensors.find((t) => t.name === 'blk.4.ffn_down.weight')!;
  assert.equal(down.shape, [64, 172]);
  assert.is(down.offset, 14176 + 1082880);
  assert.ok(f.metadata.get('tokenizer.ggml.scores') instanceof Float32Array);
  assert.is((f.metadata.get('tokenizer.ggml.tokens') as string[])[259], '▁t');
  assert.ok(f.metadata.get('tokenizer.ggml.token_type') instanceof Int32Array);
  assert.is(f.metadata.get('tokenizer.ggml.padding_token_id'), 0xffffffff);
});

test('stories260K.gguf: config and embedded vocabulary', async () => {
  const w = await openGguf(await file(STORIES_GGUF));
  const c = w.config;
  assert.is(w.format, 'gguf');
  assert.equal(
    [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKVHeads, c.headDim, c.vocabSize],
    [64, 172, 5, 8, 4, 8, 512],
  );
  assert.is(c.rmsNormEps, 1e-5); // stored as float32 9.99999974e-6, reported as the decimal it stands for
  assert.is(c.ropeTheta, 10000); // no llama.rope.freq_base: llama.cpp's default
  assert.is(c.maxPositionEmbeddings, 2048); // llama.context_length in this conversion (the HF dir says 512)
  assert.is(c.tieWordEmbeddings, false); // the GGUF stores output.weight (a copy of token_embd)
  assert.is(c.bosTokenId, 1);
  assert.equal(c.eosTokenIds, [2]);
  assert.is(c.torchDtype, 'F32');
  assert.is(w.tensors.length, 48);
  assert.ok(w.tensors.every((t) => t.dtype === 'F32'));
  const v = w.vocab!;
  assert.is(v.model, 'llama');
  assert.is(v.tokens.length, 512);
  assert.equal([v.tokens[0], v.tokens[1], v.tokens[2], v.tokens[3], v.tokens[258], v.tokens[259]], ['<unk>', '<s>', '</s>', '<0x00>', '<0xFF>', '▁t']);
  assert.equal([v.bosId, v.eosId, v.unkId, v.padId], [1, 2, 0, null]); // padding id stored as u32 -1
  assert.equal(Array.from(v.tokenTypes!.subarray(0, 4)), [2, 3, 3, 6]);
  assert.is(v.scores![260], -1);
  assert.is(v.addBos, true);
  assert.is(v.addEos, false);
  await w.close();
  await w.close(); // idempotent
  await rejects(w.readFloat('model.norm.weight'), 'stories260K.gguf: the model was closed');
});

test('stories260K.gguf: every tensor is bit-identical to the HF safetensors directory', async () => {
  const w = await openGguf(await file(STORIES_GGUF));
  const st = await openSafetensors(await file(`${STORIES_HF}/model.safetensors`));
  const hfCfg = JSON.parse(readFileSync(`${STORIES_HF}/config.json`, 'utf8'));
  assert.is(hfCfg.tie_word_embeddings, true);
  const names = new Set(w.tensors.map((t) => t.name));
  for (const t of expectedTensors({ ...w.config, tieWordEmbeddings: true })) assert.ok(names.has(t.name), t.name);
  for (const t of w.tensors) {
    const hfName = t.name === 'lm_head.weight' ? 'model.embed_tokens.weight' : t.name;
    assert.equal(t.shape, st.info(hfName).shape, t.name);
    assertBitsEqual(await w.readFloat(t.name), await st.readFloat(hfName), t.name);
  }
  await w.close();
});

test('stories260K.gguf: q/k permutation is real (stored rows are interleaved, not HF order)', async () => {
  const src = await file(STORIES_GGUF);
  const f = await readGguf(src);
  const st = await openSafetensors(await file(`${STORIES_HF}/model.safetensors`));
  for (const [gg, hf, heads] of [['blk.2.attn_q.weight', 'model.layers.2.self_attn.q_proj.weight', 8], ['blk.3.attn_k.weight', 'model.layers.3.self_attn.k_proj.weight', 4]] as const) {
    const info = f.tensors.find((t) => t.name === gg)!;
    const raw = new Float32Array((await src.read(info.offset, info.byteLength)).slice().buffer);
    const want = await st.readFloat(hf);
    assert.not.ok(Buffer.from(raw.buffer).equals(Buffer.from(want.buffer)), `${gg} stored order differs from HF`);
    assertBitsEqual(raw, rotateHalfToInterleaved(want, heads, 8, 64), gg);
  }
});

test('stories260K.gguf: a browser Blob gives the same header and tensors as the file handle', async () => {
  const bytes = readFileSync(STORIES_GGUF);
  const blob = new Blob([bytes]);
  const a = await openGguf(new BlobSource(blob, 'stories260K.gguf'));
  const b = await openGguf(new MemorySource('mem.gguf', new Uint8Array(bytes)));
  assert.equal(mathConfig(a.config), mathConfig(b.config));
  for (const name of ['model.layers.0.self_attn.q_proj.weight', 'model.norm.weight', 'lm_head.weight']) {
    assertBitsEqual(await a.readFloat(name), await b.readFloat(name), name);
  }
});

// ---------------------------------------------------------------------------------------------
// Synthetic files

/** A tiny llama (every row length a multiple of 32 so all block types fit). */
const CFG: ModelConfig = {
  architecture: 'LlamaForCausalLM', hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKVHeads: 2,
  headDim: 16, vocabSize: 40, maxPositionEmbeddings: 128, rmsNormEps: 1e-6, ropeTheta: 500000, ropeScaling: null,
  tieWordEmbeddings: true, attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32',
};

const mem = (bytes: Uint8Array, name = 'test.gguf') => new MemorySource(name, bytes);

test('synthetic F32 llama (v2 and v3): config from metadata, HF names, q/k back in HF order', async () => {
  for (const version of [2, 3]) {
    const b = buildLlama(CFG, F32, { version });
    const w = await openGguf(mem(b.bytes));
    assert.equal(mathConfig(w.config), mathConfig({ ...CFG })); // tied: no output.weight
    assert.equal(w.tensors.map((t) => t.name).sort(), expectedTensors(CFG).map((t) => t.name).sort());
    for (const [name, v] of b.values) assertBitsEqual(await w.readFloat(name), v, name);
  }
});

test('q/k/v biases (attentionBias): detected, renamed, q/k bias rows permuted like the weights', async () => {
  const cfg = { ...CFG, attentionBias: true };
  const b = buildLlama(cfg, F32, { seed: 3 });
  const w = await openGguf(mem(b.bytes));
  assert.is(w.config.attentionBias, true);
  assert.ok(w.tensors.some((t) => t.name === 'model.layers.1.self_attn.k_proj.bias'));
  for (const [name, v] of b.values) assertBitsEqual(await w.readFloat(name), v, name);
});

test('F16 and BF16 tensors: exact half/bfloat16 values, reported dtype', async () => {
  for (const [type, dt, round] of [[F16, 'F16', (x: number) => f16ToF32(f32ToF16(x))], [BF16, 'BF16', (x: number) => bf16ToF32(f32ToBf16(x))]] as const) {
    const b = buildLlama(CFG, type);
    const w = await openGguf(mem(b.bytes));
    assert.is(w.config.torchDtype, dt);
    assert.is(w.tensors.find((t) => t.name === 'model.layers.1.mlp.up_proj.weight')!.dtype, dt);
    assert.is(w.tensors.find((t) => t.name === 'model.norm.weight')!.dtype, 'F32');
    for (const [name, v] of b.values) {
      const want = v.length === CFG.hiddenSize ? v : v.map(round); // norms stay F32
      assertBitsEqual(await w.readFloat(name), want, name);
    }
  }
});

test('Q8_0 and Q4_0: hand-built blocks dequantize to the spec values', async () => {
  // Q8_0 block: d = 0.25 (f16 0x3400), qs[j] = j − 16  →  x[j] = (j − 16)·0.25
  const q8 = new Uint8Array(34 * 2);
  const q4 = new Uint8Array(18 * 2);
  const want8 = new Float32Array(64), want4 = new Float32Array(64);
  for (let blk = 0; blk < 2; blk++) {
    const d8 = blk === 0 ? 0x3400 : 0xb800; // 0.25, −0.5
    q8[blk * 34] = d8 & 0xff; q8[blk * 34 + 1] = d8 >> 8;
    for (let j = 0; j < 32; j++) {
      const q = blk === 0 ? j - 16 : [-128, 127, 0, -1][j % 4]!;
      q8[blk * 34 + 2 + j] = q & 0xff;
      want8[blk * 32 + j] = q * (blk === 0 ? 0.25 : -0.5);
    }
    // Q4_0 block: d = 0.5 (f16 0x3800) / 3 (0x4200); byte j = lo | hi<<4 with lo = j, hi = 15 − j:
    // element j = (lo − 8)·d, element j+16 = (hi − 8)·d
    const d4 = blk === 0 ? 0x3800 : 0x4200, dv = blk === 0 ? 0.5 : 3;
    q4[blk * 18] = d4 & 0xff; q4[blk * 18 + 1] = d4 >> 8;
    for (let j = 0; j < 16; j++) {
      q4[blk * 18 + 2 + j] = j | ((15 - j) << 4);
      want4[blk * 32 + j] = (j - 8) * dv;
      want4[blk * 32 + 16 + j] = (15 - j - 8) * dv;
    }
  }
  // Put the blocks into the norm-free 2-D slot of a tiny model: v_proj of layer 0 is [32, 64]; use
  // its first row (64 elements = 2 blocks) and zeros elsewhere.
  for (const [type, blocks, want, bytesPerBlock] of [[Q8_0, q8, want8, 34], [Q4_0, q4, want4, 18]] as const) {
    const b = buildLlama(CFG, type, {
      edit: (ts) => {
        const t = ts.find((x) => x.name === 'blk.0.attn_v.weight')!;
        t.data = new Uint8Array((32 * 64 / 32) * bytesPerBlock);
        t.data.set(blocks, 0);
      },
    });
    const w = await openGguf(mem(b.bytes));
    assert.is(w.tensors.find((t) => t.name === 'model.layers.0.self_attn.v_proj.weight')!.dtype, 'F32');
    const got = await w.readFloat('model.layers.0.self_attn.v_proj.weight');
    assertBitsEqual(got.subarray(0, 64), want, `type ${type} first row`);
    assert.ok(got.subarray(64).every((x) => x === 0));
  }
});

test('Q8_0 and Q4_0: quantized random weights come back within the quantization step, q/k permuted', async () => {
  for (const type of [Q8_0, Q4_0]) {
    const b = buildLlama(CFG, type, { seed: 7 });
    const w = await openGguf(mem(b.bytes));
    assert.is(w.config.torchDtype, 'F32'); // block-quantized tables are held in f32 (a half type would round them)
    for (const [name, v] of b.values) {
      const got = await w.readFloat(name);
      if (v.length === CFG.hiddenSize) { assertBitsEqual(got, v, name); continue; } // norms stay F32
      // Q8_0: d = max|x|/127, error ≤ d/2; plus the f16 rounding of d.
      const blocks = got.length / 32;
      for (let blk = 0; blk < blocks; blk++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(v[blk * 32 + j]!));
        // Q4_0 maps the largest-magnitude value to −8·d, so the other sign clips at 7·d: allow a full step there.
        const step = type === Q8_0 ? amax / 127 / 2 : amax / 8;
        for (let j = 0; j < 32; j++) {
          const i = blk * 32 + j;
          const err = Math.abs(got[i]! - v[i]!);
          if (!(err <= step + amax * 2e-3 + 1e-7)) throw new Error(`${name}[${i}] type ${type}: ${got[i]} vs ${v[i]} (step ${step})`);
        }
      }
    }
  }
});

test('readGguf: every metadata value type, nested arrays, custom alignment', async () => {
  const meta: Array<[string, MetaValue]> = [
    ['u8', m.u8(200)], ['i8', m.i8(-100)], ['u16', m.u16(65000)], ['i16', m.i16(-30000)], ['u32', m.u32(4000000000)],
    ['i32', m.i32(-2000000000)], ['f32', m.f32(1.5)], ['f64', m.f64(Math.PI)], ['u64', m.u64(2n ** 63n + 5n)], ['i64', m.i64(-(2n ** 62n))],
    ['bool', m.bool(true)], ['str', m.str('héllo ✓')], ['empty', m.str('')],
    ['a.u8', m.arr(GgufType.UINT8, [m.u8(1), m.u8(255)])], ['a.i16', m.arr(GgufType.INT16, [m.i16(-2)])],
    ['a.u64', m.arr(GgufType.UINT64, [m.u64(7n)])], ['a.f64', m.arr(GgufType.FLOAT64, [m.f64(0.1)])],
    ['a.bool', m.arr(GgufType.BOOL, [m.bool(false), m.bool(true)])], ['a.str', m.strs(['x', '', 'yz'])], ['a.empty', m.arr(GgufType.INT32, [])],
    ['a.nested', m.arr(GgufType.ARRAY, [m.arr(GgufType.INT32, [m.i32(1), m.i32(2)]), m.strs(['a']), m.arr(GgufType.ARRAY, [m.arr(GgufType.UINT8, [])])])],
    ['general.alignment', m.u32(64)],
  ];
  const t: WriterTensor = { name: 'w', shape: [3, 2], type: F32, data: f32Bytes(Float32Array.of(1, 2, 3, 4, 5, 6)) };
  const t2: WriterTensor = { name: 'v', shape: [5], type: F16, data: f16Bytes(Float32Array.of(1, 2, 3, 4, 5)) };
  const bytes = writeGguf({ metadata: meta, tensors: [t2, t], alignment: 64 });
  const f = await readGguf(mem(bytes));
  const md = f.metadata;
  assert.is(f.alignment, 64);
  assert.is(f.dataOffset % 64, 0);
  assert.equal([md.get('u8'), md.get('i8'), md.get('u16'), md.get('i16'), md.get('u32'), md.get('i32'), md.get('f32'), md.get('f64')],
    [200, -100, 65000, -30000, 4000000000, -2000000000, 1.5, Math.PI]);
  assert.is(md.get('u64'), 2n ** 63n + 5n);
  assert.is(md.get('i64'), -(2n ** 62n));
  assert.is(md.get('bool'), true);
  assert.is(md.get('str'), 'héllo ✓');
  assert.is(md.get('empty'), '');
  assert.equal(md.get('a.u8'), Uint8Array.of(1, 255));
  assert.equal(md.get('a.i16'), Int16Array.of(-2));
  assert.equal(md.get('a.u64'), BigUint64Array.of(7n));
  assert.equal(md.get('a.f64'), Float64Array.of(0.1));
  assert.equal(md.get('a.bool'), [false, true]);
  assert.equal(md.get('a.str'), ['x', '', 'yz']);
  assert.equal(md.get('a.empty'), new Int32Array(0));
  assert.equal(md.get('a.nested'), [Int32Array.of(1, 2), ['a'], [new Uint8Array(0)]]);
  assert.equal(f.tensors.map((x) => [x.name, x.shape, x.type, x.offset - f.dataOffset, x.byteLength]), [['v', [5], F16, 0, 10], ['w', [3, 2], F32, 64, 24]]);
  const w = f.tensors[1]!;
  assert.equal(new Float32Array((await mem(bytes).read(w.offset, w.byteLength)).slice().buffer), Float32Array.of(1, 2, 3, 4, 5, 6));
});

// ---------------------------------------------------------------------------------------------
// Errors: each is a WebqloraError whose one sentence names the file

async function rejects(p: Promise<unknown>, ...parts: Array<string | RegExp>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof WebqloraError)) throw new Error(`expected a WebqloraError, got ${(e as Error)?.stack ?? e}`);
    for (const part of parts) {
      const ok = typeof part === 'string' ? e.message.includes(part) : part.test(e.message);
      if (!ok) throw new Error(`message ${JSON.stringify(e.message)} lacks ${String(part)}`);
    }
    return e.message;
  }
  throw new Error(`expected rejection with ${parts.join(', ')}`);
}

const valid = buildLlama(CFG, F32);
const header = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

test('errors: magic, version, endianness', async () => {
  await rejects(openGguf(mem(writeGguf({ magic: 'GGML' }), 'm.gguf')), 'm.gguf:', 'not a GGUF file', '"GGML"');
  await rejects(openGguf(mem(new Uint8Array([0x47, 0x47]), 'short.gguf')), 'short.gguf:', 'too small');
  await rejects(openGguf(mem(writeGguf({ version: 1 }))), 'test.gguf:', 'version 1 is not supported');
  await rejects(openGguf(mem(writeGguf({ version: 4 }))), 'version 4 is not supported');
  const be = valid.bytes.slice();
  header(be).setUint32(4, 3, false);
  await rejects(openGguf(mem(be)), 'big-endian');
});

test('errors: truncated anywhere in the header or the data', async () => {
  const small = buildLlama({ ...CFG, numLayers: 1, vocabSize: 8 }, Q4_0).bytes;
  const headerEnd = (await readGguf(mem(small))).dataOffset;
  let n = 0;
  // every cut inside the header, then a stride through the data
  for (let cut = 0; cut < small.length; cut += cut < headerEnd ? 1 : 97) {
    const msg = await rejects(openGguf(mem(small.subarray(0, cut), 'cut.gguf')), 'cut.gguf:');
    assert.ok(/truncated|too small|outside the file|cannot fit/.test(msg), msg);
    n++;
  }
  assert.ok(n > headerEnd);
});

test('errors: tensor type not supported, unknown type, bad row length', async () => {
  // IQ2_XXS rows are 256 long, so widen the model for a well-formed IQ2_XXS ffn_up [96, 256]
  const cfg = { ...CFG, hiddenSize: 256, numHeads: 16 };
  const iq2 = buildLlama(cfg, F32, {
    edit: (ts) => { const t = ts.find((x) => x.name === 'blk.1.ffn_up.weight')!; t.type = IQ2_XXS; t.data = new Uint8Array(96 * 66); },
  });
  await rejects(openGguf(mem(iq2.bytes)), 'test.gguf: tensor "blk.1.ffn_up.weight" has type IQ2_XXS (16), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL).');
  const unk = buildLlama(CFG, F32, { edit: (ts) => { ts[0]!.type = 99; } });
  await rejects(openGguf(mem(unk.bytes)), 'token_embd.weight', 'unknown ggml type 99');
  const bad = writeGguf({ metadata: llamaMeta(CFG), tensors: [{ name: 'token_embd.weight', shape: [40, 40], type: Q8_0, data: new Uint8Array(40 * 40 / 32 * 34) }] });
  await rejects(openGguf(mem(bad)), 'token_embd.weight', 'not a multiple of the Q8_0 block size 32');
});

test('errors: tensor data out of range or misaligned', async () => {
  const far = buildLlama(CFG, F32, { edit: (ts) => { ts[5]!.offset = 1n << 40n; } });
  await rejects(openGguf(mem(far.bytes)), `"${far.tensors[5]!.name}"`, 'outside the file');
  const last = buildLlama(CFG, F32);
  await rejects(openGguf(mem(last.bytes.subarray(0, last.bytes.length - 32))), 'outside the file');
  const mis = buildLlama(CFG, F32, { edit: (ts) => { ts[2]!.offset = 4n; } });
  await rejects(openGguf(mem(mis.bytes)), 'not a multiple of the alignment 32');
  const align = buildLlama(CFG, F32, { meta: [['general.alignment', m.u32(24)]] });
  await rejects(openGguf(mem(align.bytes)), 'general.alignment is 24, expected a power of two');
});

test('errors: absurd counts and lengths are caught before allocating', async () => {
  const edit = (at: number, v: bigint) => { const b = valid.bytes.slice(); header(b).setBigUint64(at, v, true); return b; };
  await rejects(openGguf(mem(edit(8, 1n << 40n))), 'tensor count is 1099511627776', 'cannot fit');
  await rejects(openGguf(mem(edit(16, 2n ** 64n - 1n))), 'metadata count', 'cannot fit');
  await rejects(openGguf(mem(edit(24, 1n << 60n))), 'metadata key #0', 'bytes but only');
  // array length of tokenizer.ggml.tokens
  const f = writeGguf({ metadata: [['x', m.strs(['a', 'b'])]] });
  const at = 24 + 8 + 1 + 4 + 4; // key length, "x", value type, elem type
  const b = f.slice();
  header(b).setBigUint64(at, 1n << 50n, true);
  await rejects(readGguf(mem(b)), 'the length of metadata "x"', 'cannot fit');
  const deep = writeGguf({ metadata: [['d', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].reduce<MetaValue>((v) => m.arr(GgufType.ARRAY, [v]), m.arr(GgufType.UINT8, []))]] });
  await rejects(readGguf(mem(deep)), 'nests arrays more than 8 deep');
  const ty = writeGguf({ metadata: [['t', { type: 13 as 0, value: 0 }]] });
  await rejects(readGguf(mem(ty)), 'metadata "t" has unknown value type 13');
  const dims = writeGguf({ tensors: [{ name: 'x', shape: [1, 1, 1, 1, 1], type: F32, data: new Uint8Array(4) }] });
  await rejects(readGguf(mem(dims)), 'tensor "x" has 5 dimensions');
  const huge = writeGguf({ tensors: [{ name: 'x', shape: [1 << 30, 1 << 30], type: F32, data: new Uint8Array(4) }] });
  await rejects(readGguf(mem(huge)), 'tensor "x"', 'larger than the file could hold');
});

/** `bytes` followed by `pad` zero bytes that are never allocated as a whole (a huge, mostly empty file). */
function padded(bytes: Uint8Array, pad: number, name = 'big.gguf'): ByteSource {
  const src = {
    name,
    size: bytes.length + pad,
    async read(offset: number, length: number): Promise<Uint8Array> {
      if (!(offset >= 0 && length >= 0 && offset + length <= src.size)) throw outOfRange(src, offset, length);
      const out = new Uint8Array(length);
      if (offset < bytes.length) out.set(bytes.subarray(offset, Math.min(offset + length, bytes.length)));
      return out;
    },
  };
  return src;
}

test('errors: metadata arrays and strings over the limits, unknown array element type', async () => {
  // u8 array "big": 24-byte header, key (8 + 3), value type (4), element type (4), then the u64 count at 43
  const arr = writeGguf({ metadata: [['big', m.arr(GgufType.UINT8, [])]] });
  const setCount = (n: bigint) => { const b = arr.slice(); header(b).setBigUint64(43, n, true); return b; };
  const LIMIT = 1 << 24;
  // the file is big enough to hold the elements, so only the element limit stops the read
  await rejects(readGguf(padded(setCount(BigInt(LIMIT + 1)), LIMIT + 64)),
    'big.gguf: metadata "big" is an array of 16777217 elements, more than the 16777216-element limit (the header is corrupt).');
  await rejects(readGguf(padded(setCount(2n ** 40n), LIMIT + 64)), 'the length of metadata "big" is 1099511627776, which cannot fit');
  // exactly at the limit is read
  const at = await readGguf(padded(setCount(BigInt(LIMIT)), LIMIT));
  assert.is((at.metadata.get('big') as Uint8Array).length, LIMIT);
  // strings: the 64 MiB limit, also in a file large enough to hold them
  const str = writeGguf({ metadata: [['s', m.str('')]] });
  header(str).setBigUint64(24 + 8 + 1 + 4, BigInt((64 << 20) + 1), true);
  await rejects(readGguf(padded(str, (64 << 20) + 64)),
    'big.gguf: metadata "s" is 67108865 bytes long, more than the 67108864-byte limit (the header is corrupt).');
  await rejects(readGguf(mem(writeGguf({ metadata: [['a', m.arr(13, [])]] }))), 'test.gguf: metadata "a" is an array of unknown value type 13.');
});

test('errors: every model metadata check, one sentence naming the key', async () => {
  const meta = (edit: (md: Array<[string, MetaValue]>) => void, tensors: WriterTensor[] = valid.tensors) => {
    const md = llamaMeta(CFG);
    edit(md);
    return mem(writeGguf({ metadata: md, tensors }));
  };
  const set = (key: string, v: MetaValue) => (md: Array<[string, MetaValue]>) => {
    const i = md.findIndex(([k]) => k === key);
    if (i >= 0) md[i] = [key, v]; else md.push([key, v]);
  };
  const cases: Array<[(md: Array<[string, MetaValue]>) => void, string]> = [
    [set('llama.rope.freq_base', m.f32(0)), 'test.gguf: metadata llama.rope.freq_base is 0, expected a positive number.'],
    [set('llama.attention.layer_norm_rms_epsilon', m.f32(-0.5)), 'test.gguf: metadata llama.attention.layer_norm_rms_epsilon is -0.5, expected a positive number.'],
    [(md) => { set('llama.rope.scaling.type', m.str('linear'))(md); set('llama.rope.scaling.factor', m.f32(-2))(md); }, 'test.gguf: metadata llama.rope.scaling.factor is -2, expected a positive number.'],
    [set('llama.attention.key_length', m.u32(15)), 'test.gguf: the head dimension llama.attention.key_length 15 is not an even integer (RoPE needs it even).'],
    [(md) => { set('llama.attention.head_count', m.u32(6))(md); set('llama.attention.head_count_kv', m.u32(6))(md); }, 'test.gguf: the head dimension 64/6 is not an even integer (RoPE needs it even).'],
    [(md) => { set('llama.attention.head_count', m.u32(64))(md); set('llama.attention.head_count_kv', m.u32(64))(md); }, 'test.gguf: the head dimension 64/64 is not an even integer (RoPE needs it even).'],
    [set('llama.block_count', m.u32(1000)), `test.gguf: llama.block_count is 1000 but the file has only ${valid.tensors.length} tensors (6002 or more expected).`],
    [set('tokenizer.ggml.model', m.u32(1)), 'test.gguf: tokenizer.ggml.model is missing or not a string.'],
    [(md) => { md.splice(md.findIndex(([k]) => k === 'tokenizer.ggml.model'), 1); }, 'test.gguf: tokenizer.ggml.model is missing or not a string.'],
    [set('tokenizer.ggml.tokens', m.i32s([1, 2, 3])), 'test.gguf: tokenizer.ggml.tokens is missing or not an array of strings.'],
    [(md) => { md.splice(md.findIndex(([k]) => k === 'tokenizer.ggml.tokens'), 1); }, 'test.gguf: tokenizer.ggml.tokens is missing or not an array of strings.'],
    [set('tokenizer.ggml.token_type', m.f32s(new Float32Array(40))), 'test.gguf: tokenizer.ggml.token_type must be 40 int32 values (one per token).'],
    [set('tokenizer.ggml.token_type', m.i32s(new Int32Array(39))), 'test.gguf: tokenizer.ggml.token_type must be 40 int32 values (one per token).'],
    [set('tokenizer.ggml.merges', m.i32s([1])), 'test.gguf: tokenizer.ggml.merges must be an array of strings.'],
    [set('tokenizer.ggml.bos_token_id', m.f32(1.5)), 'test.gguf: tokenizer.ggml.bos_token_id is 1.5, expected a token id.'],
    [set('tokenizer.ggml.eos_token_id', m.str('2')), 'test.gguf: tokenizer.ggml.eos_token_id is 2, expected a token id.'],
    [set('tokenizer.ggml.unknown_token_id', m.i32(-2)), 'test.gguf: tokenizer.ggml.unknown_token_id is -2, outside the 40-token vocabulary.'],
    [set('tokenizer.ggml.add_bos_token', m.u8(1)), 'test.gguf: tokenizer.ggml.add_bos_token is 1, expected a boolean.'],
    [set('tokenizer.ggml.add_eos_token', m.str('true')), 'test.gguf: tokenizer.ggml.add_eos_token is true, expected a boolean.'],
  ];
  for (const [edit, msg] of cases) await rejects(openGguf(meta(edit)), msg);
  // the vocabulary size: from llama.vocab_size, the token list or token_embd.weight; none of them is an error
  const noTokenizer = (md: Array<[string, MetaValue]>) => { md.splice(md.findIndex(([k]) => k === 'tokenizer.ggml.model')); };
  const noEmbd = valid.tensors.filter((t) => t.name !== 'token_embd.weight');
  await rejects(openGguf(meta(noTokenizer, noEmbd)), 'test.gguf: the vocabulary size is unknown (no llama.vocab_size, token list or token_embd.weight).');
  const fromEmbd = await openGguf(meta(noTokenizer));
  assert.is(fromEmbd.config.vocabSize, 40);
  assert.is(fromEmbd.vocab, null);
  // u64 and i64 ids and a -1 (LLAMA_TOKEN_NULL) are accepted
  const ids = await openGguf(meta((md) => { set('tokenizer.ggml.bos_token_id', m.u64(1n))(md); set('tokenizer.ggml.eos_token_id', m.i32(-1))(md); set('tokenizer.ggml.add_eos_token', m.bool(true))(md); }));
  assert.equal([ids.vocab!.bosId, ids.vocab!.eosId, ids.vocab!.addEos], [1, null, true]);
});

test('errors: duplicate names, missing tensors, wrong shapes, unexpected tensors', async () => {
  const dupT = buildLlama(CFG, F32, { edit: (ts) => { ts.push({ ...ts[4]! }); } });
  await rejects(openGguf(mem(dupT.bytes)), `tensor "${dupT.tensors[4]!.name}" appears twice`);
  const dupK = buildLlama(CFG, F32, { meta: [['llama.block_count', m.u32(2)]] });
  await rejects(openGguf(mem(dupK.bytes)), 'metadata key "llama.block_count" appears twice');
  const missing = buildLlama(CFG, F32, { edit: (ts) => { ts.splice(ts.findIndex((t) => t.name === 'blk.1.attn_v.weight'), 1); } });
  await rejects(openGguf(mem(missing.bytes)), 'test.gguf:', 'blk.1.attn_v.weight', 'model.layers.1.self_attn.v_proj.weight', '[32, 64]', 'missing');
  // the message names the GGUF tensor for every kind of HF name: top-level, norms, mlp
  for (const [gg, hf, shape] of [['output_norm.weight', 'model.norm.weight', '[64]'], ['blk.0.ffn_norm.weight', 'model.layers.0.post_attention_layernorm.weight', '[64]'], ['blk.1.ffn_gate.weight', 'model.layers.1.mlp.gate_proj.weight', '[96, 64]']]) {
    const gone = buildLlama(CFG, F32, { edit: (ts) => { ts.splice(ts.findIndex((t) => t.name === gg), 1); } });
    await rejects(openGguf(mem(gone.bytes)), `test.gguf: tensor ${gg} (${hf}, shape ${shape}) is missing.`);
  }
  const shape = buildLlama(CFG, F32, { edit: (ts) => { const t = ts.find((x) => x.name === 'blk.0.ffn_down.weight')!; t.shape = [96, 64]; } });
  await rejects(openGguf(mem(shape.bytes)), 'blk.0.ffn_down.weight', 'model.layers.0.mlp.down_proj.weight', 'shape [96, 64], expected [64, 96]');
  const extra = buildLlama(CFG, F32, { edit: (ts) => { ts.push({ name: 'blk.2.attn_q.weight', shape: [64, 64], type: F32, data: new Uint8Array(64 * 64 * 4) }); } });
  await rejects(openGguf(mem(extra.bytes)), 'unexpected tensor "blk.2.attn_q.weight"');
  const freqs = buildLlama(CFG, F32, { edit: (ts) => { ts.push({ name: 'rope_freqs.weight', shape: [8], type: F32, data: new Uint8Array(32) }); } });
  await rejects(openGguf(mem(freqs.bytes)), 'rope_freqs', 'not a positive number');
});

test('errors: architecture and metadata', async () => {
  const meta = (edit: (md: Array<[string, MetaValue]>) => void) => {
    const md = llamaMeta(CFG);
    edit(md);
    return writeGguf({ metadata: md, tensors: valid.tensors });
  };
  await rejects(openGguf(mem(meta((md) => { md[0] = ['general.architecture', m.str('falcon')]; }))), 'architecture "falcon" is not supported (expected one of llama, qwen2, qwen3, gemma2, gemma3, phi3)');
  await rejects(openGguf(mem(meta((md) => { md.shift(); }))), 'general.architecture is missing');
  await rejects(openGguf(mem(meta((md) => { md.splice(1, 1); }))), 'llama.embedding_length is missing');
  await rejects(openGguf(mem(meta((md) => { md[4] = ['llama.attention.head_count', m.u32(0)]; }))), 'llama.attention.head_count is 0');
  await rejects(openGguf(mem(meta((md) => { md[5] = ['llama.attention.head_count_kv', m.u32(3)]; }))), 'not a multiple of head_count_kv 3');
  await rejects(openGguf(mem(meta((md) => { md[11] = ['tokenizer.ggml.scores', m.f32s([1, 2])]; }))), 'tokenizer.ggml.scores must be 40 float32 values');
  await rejects(openGguf(mem(meta((md) => { md[13] = ['tokenizer.ggml.bos_token_id', m.u32(40)]; }))), 'tokenizer.ggml.bos_token_id is 40, outside the 40-token vocabulary');
  await rejects(openGguf(mem(meta((md) => { md.push(['llama.rope.scaling.type', m.str('yarn')]); }))), 'llama.rope.scaling.type "yarn" is not supported (only linear)');
  // linear scaling is carried into the config
  const lin = await openGguf(mem(meta((md) => { md.push(['llama.rope.scaling.type', m.str('linear')], ['llama.rope.scaling.factor', m.f32(4)]); })));
  assert.equal(lin.config.ropeScaling, { ropeType: 'linear', factor: 4 });
  // untied output, vocab size from llama.vocab_size
  const untied = buildLlama({ ...CFG, tieWordEmbeddings: false }, F32, { meta: [['llama.vocab_size', m.u32(40)]] });
  const w = await openGguf(mem(untied.bytes));
  assert.is(w.config.tieWordEmbeddings, false);
  assertBitsEqual(await w.readFloat('lm_head.weight'), untied.values.get('lm_head.weight')!, 'lm_head');
  await rejects(w.readFloat('nope'), 'no tensor named "nope"');
  assert.is(await w.readQuant('lm_head.weight'), null);
});

test.run();
