// Deploy to llama.cpp, checked by llama.cpp itself (node-llama-cpp 3.21.1, CPU, f32 KV cache):
//   1. stories260K: `webqlora train` (NF4 base, CLI) → `webqlora export` → llama.cpp with the base
//      GGUF and the adapter GGUF gives webqlora's ln p (base in f32 + adapter) at every position
//      (|Δ| ≤ 1e-4 + 1e-5·|ln p| nats) and its 32 greedy tokens; `webqlora merge --out F.gguf`
//      alone gives the same tokens; GGUF adapter → webqlora → GGUF adapter is byte-identical.
//   2. a qwen2-architecture model with a gpt2 (byte-level BPE, SmolLM2) vocabulary written by
//      webqlora: the same checks for an adapter written by the library, and llama.cpp's
//      tokenization of a few strings equals webqlora's for that vocabulary.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { FileSource, NodeDirSource, NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { writeGgufModel } from '../../src/io/gguf-write.ts';
import { configFromHf } from '../../src/io/hf-config.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { readGgufAdapter, writeGgufAdapter } from '../../src/model/gguf-adapter.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { generate } from '../../src/generate/generate.ts';
import { tokenizerFromGguf } from '../../src/tokenizer/load.ts';
import { vocabFromHfDir } from '../../src/tokenizer/to-gguf.ts';
import { FIXTURES, STORIES_GGUF } from '../helpers/index.ts';
import { runCli } from '../helpers/cli.ts';
import { LlamaCppModel, testLlamaCpp } from '../helpers/llamacpp.ts';
import { batchLogits, logSoftmaxRows } from '../helpers/logits.ts';

const ATOL = 1e-4, RTOL = 1e-5;
const cli = (...args: string[]) => {
  const r = runCli(args);
  assert.is(r.code, 0, `webqlora ${args.join(' ')}:\n${r.stderr}`);
  return r;
};

let wasmP: Promise<Backend> | null = null;
const wasm = () => (wasmP ??= createWasmBackend());
test.after(async () => { await (await wasmP)?.destroy(); });

/** webqlora's ln p [T, V] and 32 greedy ids of a model file with an optional adapter (base in f32). */
async function webqlora(modelPath: string, adapter: string | null, ids: number[], prompt: number[]): Promise<{ lp: Float64Array; greedy: number[] }> {
  const be = await wasm();
  const src = await openModelPath(modelPath);
  const model = await loadModel(src, be, { quant: 'none', maxPositions: 128 });
  await src.close();
  let lora: LoraAdapters | null = null;
  if (adapter) {
    const f = await FileSource.open(adapter);
    lora = await readGgufAdapter(f, be, model.config);
    await f.close();
  }
  const lp = logSoftmaxRows(await batchLogits(model, ids, lora), model.config.vocabSize);
  const greedy = (await generate(model, prompt, { maxNewTokens: 32, temperature: 0, adapters: lora, stopIds: [] })).outputIds;
  lora?.free();
  model.free();
  return { lp, greedy };
}

function assertLogProbs(what: string, got: Float64Array, want: Float64Array, V: number): void {
  let worst = 0, at = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i]! < -60) continue;
    const r = Math.abs(got[i]! - want[i]!) / (ATOL + RTOL * Math.abs(want[i]!));
    if (r > worst) { worst = r; at = i; }
  }
  assert.ok(worst <= 1, `${what}: ln p at position ${Math.floor(at / V)}, token ${at % V}: webqlora ${got[at]}, llama.cpp ${want[at]} (${worst.toFixed(2)}× the tolerance)`);
}

/** The same distribution with and without the adapter would make the comparison vacuous. */
function assertAdapterMatters(base: Float64Array, tuned: Float64Array): void {
  let d = 0;
  for (let i = 0; i < base.length; i++) if (base[i]! > -30) d = Math.max(d, Math.abs(base[i]! - tuned[i]!));
  assert.ok(d > 0.05, `the adapter changes ln p by at most ${d}: a useless comparison`);
}

test('stories260K: train → export → llama.cpp base + adapter = webqlora; merged GGUF alone = the same tokens; GGUF round trip byte-stable', async () => {
  const llama = await testLlamaCpp();
  if (!llama) return;
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-deploy-'));
  try {
    const data = join(tmp, 'stories.jsonl');
    writeFileSync(data, readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').slice(0, 24).map((t) => JSON.stringify({ text: t.trim() })).join('\n') + '\n');
    cli('train', '--model', STORIES_GGUF, '--data', data, '--out', join(tmp, 'run'), '--steps', '12', '--lr', '3e-3', '--seq-len', '128', '--batch-size', '2', '--lora-r', '8', '--lora-alpha', '16', '--backend', 'wasm');
    const adapter = join(tmp, 'adapter.gguf');
    cli('export', '--model', STORIES_GGUF, '--adapter', join(tmp, 'run'), '--out', adapter);
    cli('merge', '--model', STORIES_GGUF, '--adapter', join(tmp, 'run'), '--out', join(tmp, 'merged.gguf'), '--quant', 'none', '--dtype', 'f32', '--backend', 'wasm');
    // GGUF adapter in, GGUF adapter out: the same bytes
    cli('export', '--model', STORIES_GGUF, '--adapter', adapter, '--out', join(tmp, 'again.gguf'));
    assert.ok(readFileSync(adapter).equals(readFileSync(join(tmp, 'again.gguf'))), 'GGUF adapter → webqlora → GGUF adapter changed bytes');

    const vsrc = await openModelPath(STORIES_GGUF);
    const tok = (await import('../../src/tokenizer/load.ts')).tokenizerFromVocab(vsrc.vocab!);
    await vsrc.close();
    const ids = tok.encode('Once upon a time, there was a little girl named Lily. She loved to play outside with her dog and her big red ball.', { addBos: true });
    const prompt = tok.encode('Once upon a time', { addBos: true });
    const V = 512;
    const mine = await webqlora(STORIES_GGUF, adapter, ids, prompt);
    const base = await webqlora(STORIES_GGUF, null, ids, prompt);
    assertAdapterMatters(base.lp, mine.lp);
    const withAdapter = await LlamaCppModel.load(llama, STORIES_GGUF, { adapters: [{ filePath: adapter }] });
    try {
      assertLogProbs('base + adapter', mine.lp, await withAdapter.logProbs(ids, V), V);
      assert.equal(await withAdapter.greedy(prompt, 32), mine.greedy, 'llama.cpp with the adapter: greedy tokens');
    } finally {
      await withAdapter.dispose();
    }
    const merged = await LlamaCppModel.load(llama, join(tmp, 'merged.gguf'));
    try {
      assertLogProbs('merged GGUF', mine.lp, await merged.logProbs(ids, V), V);
      assert.equal(await merged.greedy(prompt, 32), mine.greedy, 'llama.cpp on the merged GGUF: greedy tokens');
      assert.equal(merged.tokenize('Once upon a time'), tok.encode('Once upon a time', { addBos: false }), 'the merged GGUF carries the vocabulary');
    } finally {
      await merged.dispose();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('qwen2 with a gpt2 vocabulary (SmolLM2\'s byte-level BPE): llama.cpp base + webqlora adapter = webqlora; tokenization agrees', async () => {
  const llama = await testLlamaCpp();
  if (!llama) return;
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-deploy-qwen2-'));
  try {
    const tokDir = new NodeDirSource(join(FIXTURES, 'tokenizers', 'smollm2-135m'));
    const { vocab } = await vocabFromHfDir(tokDir);
    await tokDir.close();
    const V = vocab.tokens.length;
    const cfg = configFromHf({
      architectures: ['Qwen2ForCausalLM'], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, vocab_size: V, max_position_embeddings: 256, rms_norm_eps: 1e-6, rope_theta: 1e6, tie_word_embeddings: true,
      bos_token_id: vocab.bosId, eos_token_id: vocab.eosId,
    }, 'qwen2');
    const base = join(tmp, 'qwen2.gguf');
    await writeGgufModel(syntheticFromConfig(cfg, 11), await new NodeOutDir(tmp).create('qwen2.gguf'), { dtype: 'f32', vocab });
    // an adapter with values that matter (PEFT's B = 0 would change nothing)
    const be = await wasm();
    const lora = new LoraAdapters(be, cfg, { r: 4, alpha: 8, dropout: 0, targets: 'all-linear', useRslora: false }, false);
    let s = 9;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5);
    for (const p of lora.params) be.write(p.value, new Float32Array(p.value.length).map(() => 0.3 * rnd()));
    const adapter = join(tmp, 'adapter.gguf');
    await writeGgufAdapter(lora, cfg, await new NodeOutDir(tmp).create('adapter.gguf'), { dtype: 'f32', what: 'adapter' });
    lora.free();
    const f = await FileSource.open(base);
    const tok = await tokenizerFromGguf(f);
    await f.close();
    const ids = tok.encode('def add(a, b):\n    return a + b  # 123 ünïcödé 🙂', { addBos: false });
    const prompt = ids.slice(0, 6);
    const mine = await webqlora(base, adapter, ids, prompt);
    const plain = await webqlora(base, null, ids, prompt);
    assertAdapterMatters(plain.lp, mine.lp);
    const cpp = await LlamaCppModel.load(llama, base, { adapters: [{ filePath: adapter }] });
    try {
      assertLogProbs('qwen2 base + adapter', mine.lp, await cpp.logProbs(ids, V), V);
      assert.equal(await cpp.greedy(prompt, 32), mine.greedy, 'qwen2: greedy tokens');
      for (const text of ['Hello world', ' leading space and  two', 'digits 2024 and 3.14159', 'naïve café — ünïcödé', 'emoji 🙂🚀 and 中文']) {
        assert.equal(cpp.tokenize(text), tok.encode(text, { addBos: false }), `tokenization of ${JSON.stringify(text)}`);
      }
    } finally {
      await cpp.dispose();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
