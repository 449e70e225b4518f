// llama2.c legacy .bin loader: the real stories260K.bin against the same weights as GGUF and as
// an HF safetensors directory (bit-exact), synthetic shared/unshared files, and the header and
// size errors.
//
// How the formats correspond (stories260K): run.c's arrays stacked over layers map one layer
// slice each to HF names (wq → q_proj, wk → k_proj, wv → v_proj, wo → o_proj, w1 → gate_proj,
// w2 → down_proj, w3 → up_proj, rms_att_weight → input_layernorm, rms_ffn_weight →
// post_attention_layernorm, rms_final_weight → model.norm). wq/wk rows are interleaved like GGUF:
// HF row j·D/2+i = stored row 2i+j per head. The positive vocab_size means a shared classifier,
// so there is no lm_head.weight (the GGUF stores output.weight, a copy of token_embd).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { STORIES_BIN, STORIES_GGUF, STORIES_HF, assertBitsEqual } from '../helpers/index.ts';
import { rotateHalfToInterleaved } from '../helpers/gguf-writer.ts';
import { openLlama2c } from '../../src/io/llama2c.ts';
import { openGguf } from '../../src/io/gguf.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { MemorySource, BlobSource } from '../../src/io/source.ts';
import { WebqloraError } from '../../src/errors.ts';
import { expectedTensors } from '../../src/model/config.ts';
import { fileOpener } from '../helpers/files.ts';

/** Files opened by a test; closed after the suite (the loaders leave their source open). */
const file = fileOpener(test);

test('stories260K.bin: config', async () => {
  const w = await openLlama2c(await file(STORIES_BIN));
  const c = w.config;
  assert.is(w.format, 'llama2c');
  assert.equal(
    [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKVHeads, c.headDim, c.vocabSize, c.maxPositionEmbeddings],
    [64, 172, 5, 8, 4, 8, 512, 512],
  );
  assert.is(c.tieWordEmbeddings, true);
  assert.is(c.rmsNormEps, 1e-5);
  assert.is(c.ropeTheta, 10000);
  assert.is(w.vocab, null);
  assert.equal(w.tensors.map((t) => [t.name, t.shape]), expectedTensors(c).map((t) => [t.name, t.shape]));
  assert.ok(w.tensors.every((t) => t.dtype === 'F32'));
  await w.close();
});

test('stories260K.bin == stories260K.gguf == HF safetensors, bit for bit, every tensor', async () => {
  const bin = await openLlama2c(await file(STORIES_BIN));
  const gguf = await openGguf(await file(STORIES_GGUF));
  const st = await openSafetensors(await file(`${STORIES_HF}/model.safetensors`));
  assert.is(bin.tensors.length, 47); // tied: GGUF has 48 with output.weight
  for (const t of bin.tensors) {
    const a = await bin.readFloat(t.name);
    assertBitsEqual(a, await gguf.readFloat(t.name), `${t.name} vs gguf`);
    assertBitsEqual(a, await st.readFloat(t.name), `${t.name} vs hf`);
  }
  // the GGUF's separate output.weight is the shared classifier
  assertBitsEqual(await gguf.readFloat('lm_head.weight'), await bin.readFloat('model.embed_tokens.weight'), 'lm_head');
  await bin.close();
  await gguf.close();
});

test('stories260K.bin: wq rows are stored interleaved at the offsets run.c uses', async () => {
  const bytes = readFileSync(STORIES_BIN);
  const st = await openSafetensors(await file(`${STORIES_HF}/model.safetensors`));
  // offsets in floats: header 7 int32, then emb 512·64, rms_att 5·64, wq layer 1 starts 64·64 later
  const wq1 = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 28 + 4 * (512 * 64 + 5 * 64 + 64 * 64), bytes.byteOffset + 28 + 4 * (512 * 64 + 5 * 64 + 2 * 64 * 64)));
  const hf = await st.readFloat('model.layers.1.self_attn.q_proj.weight');
  assert.not.ok(Buffer.from(wq1.buffer).equals(Buffer.from(hf.buffer)));
  assertBitsEqual(wq1, rotateHalfToInterleaved(hf, 8, 8, 64), 'wq layer 1');
});

// ---------------------------------------------------------------------------------------------
// Synthetic files

function header(v: number[]): Uint8Array {
  const b = new Uint8Array(28);
  const dv = new DataView(b.buffer);
  v.forEach((x, i) => dv.setInt32(4 * i, x, true));
  return b;
}

/** A legacy .bin with float i at index i of the payload (so every tensor's position is checkable). */
function build(C: number, F: number, L: number, H: number, KVH: number, V: number, seq: number, shared: boolean): { bytes: Uint8Array; floats: number } {
  const D = C / H;
  const floats = V * C + L * C + L * C * H * D + 2 * L * C * KVH * D + L * H * D * C + L * C + 3 * L * F * C + C + seq * D + (shared ? 0 : V * C);
  const payload = new Float32Array(floats);
  for (let i = 0; i < floats; i++) payload[i] = i;
  const out = new Uint8Array(28 + 4 * floats);
  out.set(header([C, F, L, H, KVH, shared ? V : -V, seq]));
  out.set(new Uint8Array(payload.buffer), 28);
  return { bytes: out, floats };
}

test('synthetic: every tensor at its run.c offset, shared and unshared classifier', async () => {
  const [C, F, L, H, KVH, V, seq] = [8, 12, 2, 2, 1, 5, 3];
  const D = C / H;
  for (const shared of [true, false]) {
    const { bytes, floats } = build(C, F, L, H, KVH, V, seq, shared);
    const w = await openLlama2c(new MemorySource('s.bin', bytes));
    assert.is(w.config.tieWordEmbeddings, shared);
    assert.is(w.tensors.some((t) => t.name === 'lm_head.weight'), !shared);
    let off = 0;
    const expectAt = async (name: string, n: number, perm?: number) => {
      const got = await w.readFloat(name);
      assert.is(got.length, n, name);
      const base = Float32Array.from({ length: n }, (_, i) => off + i);
      // q/k: HF row j·D/2+i holds stored row 2i+j; so stored = rotateHalfToInterleaved(HF)
      const stored = perm ? rotateHalfToInterleaved(got, perm, D, C) : got;
      assertBitsEqual(stored, base, name);
      off += n;
    };
    await expectAt('model.embed_tokens.weight', V * C);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.input_layernorm.weight`, C);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.self_attn.q_proj.weight`, H * D * C, H);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.self_attn.k_proj.weight`, KVH * D * C, KVH);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.self_attn.v_proj.weight`, KVH * D * C);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.self_attn.o_proj.weight`, C * H * D);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.post_attention_layernorm.weight`, C);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.mlp.gate_proj.weight`, F * C);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.mlp.down_proj.weight`, C * F);
    for (let l = 0; l < L; l++) await expectAt(`model.layers.${l}.mlp.up_proj.weight`, F * C);
    await expectAt('model.norm.weight', C);
    off += seq * D; // freq_cis_real + freq_cis_imag, seq × D/2 each
    if (!shared) await expectAt('lm_head.weight', V * C);
    assert.is(off, floats);
    // the Blob path reads the same bytes
    const wb = await openLlama2c(new BlobSource(new Blob([bytes as Uint8Array<ArrayBuffer>]), 's.bin'));
    assertBitsEqual(await wb.readFloat('model.layers.1.mlp.up_proj.weight'), await w.readFloat('model.layers.1.mlp.up_proj.weight'));
  }
});

// ---------------------------------------------------------------------------------------------
// Errors

async function rejects(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof WebqloraError)) throw new Error(`expected a WebqloraError, got ${(e as Error)?.stack ?? e}`);
    for (const part of parts) if (!e.message.includes(part)) throw new Error(`message ${JSON.stringify(e.message)} lacks ${JSON.stringify(part)}`);
    return;
  }
  throw new Error(`expected rejection with ${parts.join(', ')}`);
}

test('errors: header values, divisibility, file size', async () => {
  const open = (b: Uint8Array) => openLlama2c(new MemorySource('bad.bin', b));
  await rejects(open(new Uint8Array(10)), 'bad.bin:', 'too small');
  const good = build(8, 12, 2, 2, 1, 5, 3, true).bytes;
  const withHeader = (h: number[]) => { const b = good.slice(); b.set(header(h)); return b; };
  await rejects(open(withHeader([0, 12, 2, 2, 1, 5, 3])), 'bad.bin:', 'implausible header (dim 0,');
  await rejects(open(withHeader([8, 12, -2, 2, 1, 5, 3])), 'implausible');
  await rejects(open(withHeader([8, 12, 2, 2, 1, 5, 0])), 'implausible');
  await rejects(open(withHeader([8, 12, 2, 2, 1, -(2 ** 31), 3])), 'implausible');
  await rejects(open(withHeader([8, 12, 2, 3, 1, 5, 3])), 'dim 8 is not a multiple of n_heads 3');
  await rejects(open(withHeader([8, 12, 2, 4, 3, 5, 3])), 'n_heads 4 is not a multiple of n_kv_heads 3');
  await rejects(open(withHeader([8, 12, 2, 8, 1, 5, 3])), 'head dimension 1 is odd');
  await rejects(open(good.subarray(0, good.length - 4)), 'bad.bin:', 'implies', `the file has ${good.length - 4}`, 'truncated');
  const longer = new Uint8Array(good.length + 4); longer.set(good);
  await rejects(open(longer), 'implies', 'is this a llama2.c legacy .bin file?');
  // a file with the classifier whose header says shared (or the reverse): the sign is wrong
  const unshared = build(8, 12, 2, 2, 1, 5, 3, false).bytes;
  const flip = (b: Uint8Array) => { const c = b.slice(); new DataView(c.buffer).setInt32(20, -new DataView(c.buffer).getInt32(20, true), true); return c; };
  await rejects(open(flip(unshared)), 'fits an unshared classifier');
  await rejects(open(flip(good)), 'fits a shared classifier');
  const v1 = good.slice(); new DataView(v1.buffer).setUint32(0, 0x616b3432, true); new DataView(v1.buffer).setInt32(4, 1, true);
  await rejects(open(v1), 'version 1 export', 'legacy');
  const w = await open(good);
  await rejects(w.readFloat('lm_head.weight'), 'no tensor named "lm_head.weight"');
  assert.is(await w.readQuant('model.norm.weight'), null);
});

test.run();
