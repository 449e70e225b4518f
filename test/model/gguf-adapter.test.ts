// llama.cpp LoRA adapters (src/model/gguf-adapter.ts): what cannot be written or read is refused
// in one sentence naming the file and the reason, and nothing is left behind. (llama.cpp itself
// loads what is written in test/llamacpp/deploy.test.ts; dtypes and round trips in test/cli/export.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { MemorySource } from '../../src/io/source.ts';
import { f32Bytes, GGML, meta, writeGgufFile, type MetaValue } from '../../src/io/gguf-write.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { readGgufAdapter, writeGgufAdapter } from '../../src/model/gguf-adapter.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { ARCHS } from './archs.ts';
import { rejectsUser } from '../helpers/index.ts';

async function config(fam: string): Promise<ModelConfig> {
  const src = await openModelPath(join(ARCHS, fam));
  await src.close();
  return src.config;
}

/** An adapter GGUF in memory with the given metadata and (name, [rows, cols]) f32 tensors. */
async function adapterFile(md: Array<[string, MetaValue]>, tensors: Array<[string, number[]]>): Promise<MemorySource> {
  const chunks: Uint8Array[] = [];
  const sink = { write: async (b: Uint8Array) => { chunks.push(b.slice()); }, commit: async () => {}, abort: async () => {} };
  await writeGgufFile(sink, md, tensors.map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { name, shape, type: GGML.F32, bytes: 4 * n, data: async () => f32Bytes(new Float32Array(n).fill(0.01)) };
  }));
  const all = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  return new MemorySource('a.gguf', all);
}

test('write: modules that need different alpha/r ratios are refused (llama.cpp has one alpha), no file left', async () => {
  const c = await config('llama3'), be = createReferenceBackend();
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-gguf-adapter-'));
  try {
    const lora = new LoraAdapters(be, c, { r: 4, alpha: 8, dropout: 0, useRslora: false, targets: ['q_proj', 'v_proj'], alphaPattern: { v_proj: 4 } }, false);
    await rejectsUser(async () => writeGgufAdapter(lora, c, await new NodeOutDir(tmp).create('a.gguf'), { dtype: 'f32', what: 'run' }), 'run: ', 'different alpha/r ratios');
    assert.equal(readdirSync(tmp), []);
    // rsLoRA with one rank is one ratio: written, with alpha·√r
    const rs = new LoraAdapters(be, c, { r: 4, alpha: 8, dropout: 0, useRslora: true, targets: ['q_proj'] }, false);
    const res = await writeGgufAdapter(rs, c, await new NodeOutDir(tmp).create('rs.gguf'), { dtype: 'f32', what: 'rs' });
    assert.is(res.alpha, Math.fround(8 * Math.sqrt(4)));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('read: not an adapter, another architecture, foreign or half pairs, wrong shapes — one sentence each', async () => {
  const c = await config('llama3'), be = createReferenceBackend();
  const base: Array<[string, MetaValue]> = [['general.architecture', meta.str('llama')], ['general.type', meta.str('adapter')], ['adapter.type', meta.str('lora')], ['adapter.lora.alpha', meta.f32(8)]];
  const q: Array<[string, number[]]> = [['blk.0.attn_q.weight.lora_a', [4, 64]], ['blk.0.attn_q.weight.lora_b', [64, 4]]];
  const read = async (md: typeof base, t: typeof q) => readGgufAdapter(await adapterFile(md, t), be, c);
  const ok = await read(base, q);
  assert.equal(ok.modules.map((m) => [m.path, m.r, m.alpha]), [['model.layers.0.self_attn.q_proj', 4, 8]]);
  await rejectsUser(() => read([base[0]!, ['general.type', meta.str('model')], ...base.slice(2)], q), 'a.gguf: general.type is "model", not "adapter"');
  await rejectsUser(() => read([base[0]!, base[1]!, ['adapter.type', meta.str('ia3')], base[3]!], q), 'adapter.type "ia3" is not supported');
  await rejectsUser(() => read([['general.architecture', meta.str('qwen2')], ...base.slice(1)], q), 'the adapter is for architecture "qwen2", the model is "llama"');
  await rejectsUser(() => read(base.slice(0, 3), q), 'adapter.lora.alpha is missing');
  await rejectsUser(() => read(base, [q[0]!]), 'tensor "blk.0.attn_q.weight.lora_b" is missing');
  await rejectsUser(() => read(base, [q[1]!]), 'tensor "blk.0.attn_q.weight.lora_a" is missing');
  await rejectsUser(() => read(base, [['token_embd.weight.lora_a', [4, 64]], ['token_embd.weight.lora_b', [512, 4]]]), 'adapts "token_embd.weight", which is not a linear weight');
  await rejectsUser(() => read(base, [['blk.0.attn_q.weight.lora_a', [4, 32]], q[1]!]), 'has shape [4, 32], expected [r, 64]');
  await rejectsUser(() => read(base, [q[0]!, ['blk.0.attn_q.weight.lora_b', [32, 4]]]), 'has shape [32, 4], expected [64, 4]');
  await rejectsUser(() => read(base, []), 'holds no LoRA tensors');
});

test.run();
