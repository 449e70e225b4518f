// Mutation fuzzing of the GGUF and llama2.c loaders: corrupted copies of real and synthetic files
// must either load (and then every tensor must read) or fail with a WebqloraError; nothing else
// may escape and no case may hang. Seeded, so a failure is reproducible from its case number.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { STORIES_BIN, STORIES_GGUF } from '../helpers/index.ts';
import { fuzzParser } from '../helpers/mutate.ts';
import { buildLlama, m } from '../helpers/gguf-writer.ts';
import { openGguf } from '../../src/io/gguf.ts';
import { openLlama2c } from '../../src/io/llama2c.ts';
import { MemorySource } from '../../src/io/source.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import type { WeightSource } from '../../src/io/weights.ts';

const CASES = 3000;

const TINY: ModelConfig = {
  architecture: 'LlamaForCausalLM', hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKVHeads: 1,
  headDim: 16, vocabSize: 6, maxPositionEmbeddings: 16, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null,
  tieWordEmbeddings: true, attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32',
};

async function readAll(w: WeightSource): Promise<void> {
  for (const t of w.tensors) {
    const v = await w.readFloat(t.name);
    if (v.length !== t.shape.reduce((a, b) => a * b, 1)) throw new Error(`${t.name}: ${v.length} values for shape [${t.shape}]`);
  }
  await w.close();
}

test(`openGguf + every tensor: ${CASES} mutated files`, async () => {
  // Small synthetic seeds keep the whole header inside the region the mutator targets; the real
  // file covers a 512-token vocabulary and a 14 KB header.
  const seeds = [
    new Uint8Array(readFileSync(STORIES_GGUF)),
    buildLlama(TINY, 8).bytes, // Q8_0
    buildLlama({ ...TINY, tieWordEmbeddings: false }, 2, { version: 2 }).bytes, // Q4_0, GGUF v2, output.weight
    buildLlama(TINY, 1, { meta: [['general.alignment', m.u32(64)], ['x.nested', m.arr(9, [m.strs(['a', 'b']), m.arr(4, [m.u32(1)])])]] }).bytes, // F16
    buildLlama(TINY, 30).bytes, // BF16
  ];
  for (const s of seeds) await readAll(await openGguf(new MemorySource('seed.gguf', s))); // seeds are valid
  const t0 = performance.now();
  const res = await fuzzParser('gguf', seeds, CASES, async (bytes) => readAll(await openGguf(new MemorySource('fuzz.gguf', bytes))), { seed: 0x6767 });
  const ms = performance.now() - t0;
  assert.is(res.cases, CASES);
  assert.ok(res.rejected > CASES / 3, `only ${res.rejected} rejected`);
  assert.ok(ms < 20000, `${ms} ms`);
  console.log(`  gguf: ${res.cases} cases, ${res.accepted} accepted, ${res.rejected} rejected, slowest ${res.slowestMs.toFixed(1)} ms, total ${(ms / 1000).toFixed(1)} s`);
});

test(`openLlama2c + every tensor: ${CASES} mutated files`, async () => {
  const header = (v: number[], floats: number) => {
    const b = new Uint8Array(28 + 4 * floats);
    const dv = new DataView(b.buffer);
    v.forEach((x, i) => dv.setInt32(4 * i, x, true));
    for (let i = 0; i < floats; i++) dv.setFloat32(28 + 4 * i, i * 0.01, true);
    return b;
  };
  // C 8, F 12, L 2, H 2, KVH 1, V 5, seq 3 (D 4): shared 1104 floats; unshared +40
  const shared = 5 * 8 + 2 * 8 + 2 * 64 + 2 * 2 * 32 + 2 * 64 + 2 * 8 + 3 * 2 * 96 + 8 + 3 * 4;
  const seeds = [
    new Uint8Array(readFileSync(STORIES_BIN)),
    header([8, 12, 2, 2, 1, 5, 3], shared),
    header([8, 12, 2, 2, 1, -5, 3], shared + 40),
  ];
  for (const s of seeds) await readAll(await openLlama2c(new MemorySource('seed.bin', s)));
  const t0 = performance.now();
  const res = await fuzzParser('llama2c', seeds, CASES, async (bytes) => readAll(await openLlama2c(new MemorySource('fuzz.bin', bytes))), { seed: 0x2c2c });
  const ms = performance.now() - t0;
  assert.is(res.cases, CASES);
  assert.ok(ms < 20000, `${ms} ms`);
  console.log(`  llama2c: ${res.cases} cases, ${res.accepted} accepted, ${res.rejected} rejected, slowest ${res.slowestMs.toFixed(1)} ms, total ${(ms / 1000).toFixed(1)} s`);
});

test.run();
