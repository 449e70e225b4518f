// stories260K, the real trained tiny Llama, through the whole engine: loaded from the .gguf, the
// llama2.c .bin, the HF fixture directory and an HF directory this test writes from the GGUF,
// greedy decoding in f32 gives the same 200 tokens everywhere, and the text is llama2.c's own
// reference output (TinyStories English). NF4 keeps the text coherent.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { writeSafetensors } from '../../src/io/safetensors.ts';
import { configToHf } from '../../src/io/hf-config.ts';
import { loadModel } from '../../src/model/load.ts';
import { generate } from '../../src/generate/generate.ts';
import { tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import { STORIES_BIN, STORIES_GGUF, STORIES_HF } from '../helpers/index.ts';

/** llama2.c run.c on stories260K with temperature 0 (its own test expectation) starts like this. */
const EXPECTED = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.';

async function writeHfFromGguf(): Promise<string> {
  const src = await openModelPath(STORIES_GGUF);
  const dir = mkdtempSync(join(tmpdir(), 'stories-hf-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...configToHf(src.config), max_position_embeddings: 512 }, null, 2));
  const entries = src.tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: async () => new Uint8Array((await src.readFloat(t.name)).buffer) }));
  await writeSafetensors(await new NodeOutDir(dir).create('model.safetensors'), entries, { format: 'pt' });
  await src.close();
  return dir;
}

test('greedy 200 tokens in f32 are identical from .gguf, .bin, the HF fixture and an HF dir written from the GGUF', async () => {
  const be = await createWasmBackend();
  const outputs: Record<string, number[]> = {};
  for (const [name, path] of [['gguf', STORIES_GGUF], ['bin', STORIES_BIN], ['hf-fixture', STORIES_HF], ['hf-written', await writeHfFromGguf()]] as const) {
    const src = await openModelPath(path);
    const model = await loadModel(src, be, { quant: 'none', maxPositions: 256 });
    outputs[name] = (await generate(model, [1], { maxNewTokens: 200, stopIds: [] })).outputIds;
    model.free();
    await src.close();
  }
  for (const k of ['bin', 'hf-fixture', 'hf-written']) assert.equal(outputs[k], outputs.gguf, `${k} vs gguf`);
  assert.is(outputs.gguf!.length, 200);
  const src = await openModelPath(STORIES_GGUF);
  const tok = tokenizerFromVocab(src.vocab!);
  const text = tok.decode(outputs.gguf!);
  assert.ok(text.startsWith(EXPECTED), text.slice(0, 200));
  // the reference backend agrees with the WASM kernels on the first 60 tokens
  const ref = await loadModel(src, createReferenceBackend(), { quant: 'none', maxPositions: 256 });
  assert.equal((await generate(ref, [1], { maxNewTokens: 60, stopIds: [] })).outputIds, outputs.gguf!.slice(0, 60));
  await src.close();
});

test('NF4 + double quantization keeps TinyStories English', async () => {
  const be = await createWasmBackend();
  const src = await openModelPath(STORIES_GGUF);
  const tok = tokenizerFromVocab(src.vocab!);
  const model = await loadModel(src, be, { quant: 'nf4', doubleQuant: true, maxPositions: 256 });
  const text = tok.decode((await generate(model, tok.encode('Once upon a time'), { maxNewTokens: 60 })).outputIds);
  const words = text.split(/\s+/).filter(Boolean);
  const common = new Set(['the', 'a', 'was', 'she', 'he', 'to', 'and', 'her', 'his', 'with', 'it', 'in', 'they', 'of', 'play', 'day', 'big', 'little']);
  assert.ok(words.filter((w) => common.has(w.toLowerCase().replace(/[^a-z]/g, ''))).length >= 8, text);
  await src.close();
});

test.run();
