// llama.cpp itself (node-llama-cpp 3.21.1, CPU, f32 KV cache) reads the GGUF files webqlora
// writes, for every family it can represent (test/io/gguf-families.test.ts shows the others are
// refused), and the Q4_K_M-mix fixture; webqlora's logits on the same files (--quant none, WASM)
// must give the same ln p of every token at every position of the transformers reference batch.
// The arch fixtures carry no vocabulary; stories260K's 512-piece SentencePiece vocabulary (the
// fixtures' vocabulary size) is written into each file so llama.cpp has one; ids are fed directly.
// Tolerance: |Δ ln p| ≤ 2e-4 + 2e-5·|ln p| nats (f32 on both sides, different summation orders,
// logits up to ±30 on these random-weight models); Gemma 2 5e-3 + 5e-4·|ln p|: ggml's CPU GELU
// reads a float16 table (GGML_GELU_FP16), ~1e-3 relative off the tanh formula transformers and
// webqlora compute (measured worst 1.3e-3 nats).
// llama.cpp's phi3 vocabulary loader looks its chat tokens up by text, so five of the placeholder
// pieces are renamed to them (ids are fed directly; the texts change nothing else).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { writeGgufModel } from '../../src/io/gguf-write.ts';
import { loadModel } from '../../src/model/load.ts';
import { ARCHS, readReference } from '../model/archs.ts';
import { FIXTURES, STORIES_GGUF } from '../helpers/index.ts';
import { LlamaCppModel, testLlamaCpp } from '../helpers/llamacpp.ts';
import { batchLogits, logSoftmaxRows } from '../helpers/logits.ts';

const TOL: Record<string, [number, number]> = { gemma2: [5e-3, 5e-4] };
const ATOL = 2e-4, RTOL = 2e-5;
const GGUF_FAMILIES = ['llama3', 'qwen2', 'qwen3', 'gemma2', 'phi3'];

let wasmP: Promise<Backend> | null = null;
const wasm = () => (wasmP ??= createWasmBackend());
test.after(async () => { await (await wasmP)?.destroy(); });

/** webqlora's ln p [T, V] of one sequence from a model file (--quant none). */
async function webqloraLogProbs(path: string, ids: number[]): Promise<Float64Array> {
  const be = await wasm();
  const src = await openModelPath(path);
  const model = await loadModel(src, be, { quant: 'none', maxPositions: ids.length });
  await src.close();
  const out = logSoftmaxRows(await batchLogits(model, ids), model.config.vocabSize);
  model.free();
  return out;
}

async function compare(what: string, file: string, ids: number[], V: number, [atol, rtol] = TOL[what] ?? [ATOL, RTOL]): Promise<void> {
  const llama = await testLlamaCpp();
  if (!llama) return;
  const cpp = await LlamaCppModel.load(llama, file);
  try {
    const want = await cpp.logProbs(ids, V);
    const got = await webqloraLogProbs(file, ids);
    let worst = 0, at = 0;
    for (let i = 0; i < want.length; i++) {
      if (want[i]! < -60) continue; // p below e^-60: llama.cpp's f32 softmax underflows towards it
      const r = Math.abs(got[i]! - want[i]!) / (atol + rtol * Math.abs(want[i]!));
      if (r > worst) { worst = r; at = i; }
    }
    assert.ok(worst <= 1, `${what}: ln p at position ${Math.floor(at / V)}, token ${at % V}: webqlora ${got[at]}, llama.cpp ${want[at]} (${worst.toFixed(2)}× the tolerance)`);
  } finally {
    await cpp.dispose();
  }
}

for (const fam of GGUF_FAMILIES) {
  test(`${fam}: the GGUF webqlora writes runs in llama.cpp with webqlora's logits`, async () => {
    if (!(await testLlamaCpp())) return;
    const dir = join(ARCHS, fam), ref = await readReference(dir);
    const tmp = mkdtempSync(join(tmpdir(), `webqlora-llamacpp-${fam}-`));
    try {
      const vocabSrc = await openModelPath(STORIES_GGUF);
      const vocab = { ...vocabSrc.vocab!, tokens: vocabSrc.vocab!.tokens.slice(), tokenTypes: Int32Array.from(vocabSrc.vocab!.tokenTypes!) };
      await vocabSrc.close();
      ['<|endoftext|>', '<|assistant|>', '<|system|>', '<|end|>', '<|user|>'].forEach((t, i) => { vocab.tokens[507 + i] = t; vocab.tokenTypes[507 + i] = 3; });
      const src = await openModelPath(dir);
      await writeGgufModel(src, await new NodeOutDir(tmp).create('model.gguf'), { dtype: 'f32', vocab });
      await src.close();
      await compare(fam, join(tmp, 'model.gguf'), [...ref.batch.ids.subarray(0, ref.batch.T)], 512);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

// llama.cpp's CPU K-quant matmuls quantize the activations to 8 bits (Q8_K) before the dot
// product, so on this random-weight model (logits in the thousands) its logits are no float32
// reference: the block values themselves are checked bit-exact against gguf-py (test/io/
// kquants.test.ts). What llama.cpp can confirm is the layout (names, q/k order, which tensor is
// which): its greedy choice must agree with webqlora's at nearly every position (a layout error
// agrees at almost none).
test('llama_kquant_mix.gguf (Q4_K / Q5_K / Q6_K, as llama.cpp quantizes Q4_K_M): llama.cpp picks the tokens webqlora picks', async () => {
  const llama = await testLlamaCpp();
  if (!llama) return;
  const file = join(FIXTURES, 'gguf-kquants', 'llama_kquant_mix.gguf');
  const ids = [1, 415, 261, 261, 300, 275, 389, 35, 266, 411, 307, 286, 291, 265, 288, 466, 270, 297, 13, 341, 499, 270, 279, 276, 284, 315, 29];
  const cpp = await LlamaCppModel.load(llama, file);
  const want = await cpp.logProbs(ids, 512);
  await cpp.dispose();
  const got = await webqloraLogProbs(file, ids);
  const argmax = (a: Float64Array, t: number) => { let b = 0; for (let j = 1; j < 512; j++) if (a[t * 512 + j]! > a[t * 512 + b]!) b = j; return b; };
  let same = 0;
  for (let t = 0; t < ids.length; t++) if (argmax(got, t) === argmax(want, t)) same++;
  assert.ok(same >= 0.85 * ids.length, `llama.cpp and webqlora agree on the next token at ${same} of ${ids.length} positions`);
});

test.run();
