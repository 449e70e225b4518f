// Seeded mutation fuzzing of every parser in io/safetensors.ts, io/hf.ts, io/bnb.ts and
// configFromHf: thousands of corrupted files (bit flips, header byte overwrites, truncation,
// length-field changes, JSON token swaps, inserted/deleted bytes). Any exception other than
// WebqloraError, or a case slower than its limit, fails with the case and its bytes saved.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, STORIES_HF, VECTORS } from '../helpers/index.ts';
import { fuzzParser, mutate } from '../helpers/mutate.ts';
import { synthHfFiles, tinyHfConfig } from '../helpers/synth-hf.ts';
import { MapDirSource, MemoryOutDir, MemorySource } from '../../src/io/source.ts';
import { openSafetensors, serializeSafetensors, type SafetensorsEntry } from '../../src/io/safetensors.ts';
import { openHfDir } from '../../src/io/hf.ts';
import { readBnbWeights, writeBnbModel } from '../../src/io/bnb.ts';
import { dequantize4bit } from '../../src/quant/quantize.ts';

const FLOAT = new Set(['F32', 'F16', 'BF16', 'F64']);
let total = 0;

async function parseSafetensors(bytes: Uint8Array): Promise<void> {
  const st = await openSafetensors(new MemorySource('fuzz.safetensors', bytes));
  for (const [name, t] of st.tensors) {
    await st.readRaw(name);
    if (FLOAT.has(t.dtype)) await st.readFloat(name);
  }
  // bnb parts, if the file has any
  for (const q of (await readBnbWeights(st)).values()) await dequantize4bit(q);
}

async function parseDir(files: Map<string, Uint8Array>): Promise<void> {
  const src = await openHfDir(new MapDirSource('fuzz', files));
  try {
    for (const t of src.tensors) {
      await src.readQuant(t.name);
      await src.readFloat(t.name);
    }
  } finally {
    await src.close();
  }
}

/** A directory in which one file is replaced by the mutated bytes. */
const withFile = (files: Map<string, Uint8Array>, name: string) => (bytes: Uint8Array) => parseDir(new Map(files).set(name, bytes));

test('mutated small safetensors files (vector cases and a synthetic every-dtype file)', async () => {
  const seeds = [
    new Uint8Array(readFileSync(join(VECTORS, 'cases', 'q8_bs64_n200_bf16.safetensors'))),
    new Uint8Array(readFileSync(join(VECTORS, 'model_fp4_nodq_f16', 'model.safetensors'))),
    new Uint8Array(readFileSync(join(VECTORS, 'model_nf4_dq_bf16', 'model.safetensors'))),
    await serializeSafetensors(['F32', 'F16', 'BF16', 'F64', 'U8', 'I64', 'BOOL'].map((dt, i) => ({ name: `t${i}`, dtype: dt as 'F32', shape: [2, 3], data: new Uint8Array(6 * ({ F32: 4, F16: 2, BF16: 2, F64: 8, U8: 1, I64: 8, BOOL: 1 } as Record<string, number>)[dt]!) })), { format: 'pt' }),
  ];
  for (const s of seeds) await parseSafetensors(s); // the seeds themselves are valid
  const r = await fuzzParser('safetensors', seeds, 1500, parseSafetensors, { seed: 1 });
  assert.ok(r.rejected > r.cases / 4, `only ${r.rejected} of ${r.cases} rejected`);
  total += r.cases;
});

test('mutated stories260K model.safetensors through openHfDir', async () => {
  const files = new Map([
    ['config.json', new Uint8Array(readFileSync(join(STORIES_HF, 'config.json')))],
    ['model.safetensors', new Uint8Array(readFileSync(join(STORIES_HF, 'model.safetensors')))],
  ]);
  await parseDir(files);
  const r = await fuzzParser('stories260K model.safetensors', [files.get('model.safetensors')!], 400, withFile(files, 'model.safetensors'), { seed: 2 });
  total += r.cases;
});

test('mutated config.json and index.json of a sharded synthetic model', async () => {
  const { files } = await synthHfFiles(tinyHfConfig({ torch_dtype: 'bfloat16', rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }), 3, {
    shardOf: (_, i) => `model-0000${1 + (i % 2)}-of-00002.safetensors`,
  });
  await parseDir(files);
  let r = await fuzzParser('config.json', [files.get('config.json')!], 600, withFile(files, 'config.json'), { seed: 3 });
  total += r.cases;
  r = await fuzzParser('index.json', [files.get('model.safetensors.index.json')!], 500, withFile(files, 'model.safetensors.index.json'), { seed: 4 });
  total += r.cases;
  r = await fuzzParser('shard', [files.get('model-00001-of-00002.safetensors')!], 300, withFile(files, 'model-00001-of-00002.safetensors'), { seed: 5 });
  total += r.cases;
});

test('mutated bnb 4-bit checkpoints written by our code (nf4+DQ, fp4 plain)', async () => {
  for (const [quantType, doubleQuant, seed] of [['nf4', true, 6], ['fp4', false, 7]] as const) {
    const { files } = await synthHfFiles(tinyHfConfig({ torch_dtype: 'float16' }), seed);
    const out = new MemoryOutDir();
    await writeBnbModel(await openHfDir(new MapDirSource('s', files)), out, { quantType, doubleQuant, blocksize: 64 });
    await parseDir(out.files);
    const r = await fuzzParser(`bnb ${quantType}`, [out.files.get('model.safetensors')!], 400, withFile(out.files, 'model.safetensors'), { seed });
    total += r.cases;
    const rc = await fuzzParser(`bnb ${quantType} config.json`, [out.files.get('config.json')!], 200, withFile(out.files, 'config.json'), { seed: seed + 100 });
    total += rc.cases;

    // Corrupt only the quant_state JSON of one weight and re-wrap it in a valid safetensors
    // file, so the bnb parser (not the container parser) sees the damage.
    const st = await openSafetensors(new MemorySource('m', out.files.get('model.safetensors')!));
    const qsKey = [...st.tensors.keys()].find((k) => k.includes('quant_state'))!;
    const entries: SafetensorsEntry[] = [];
    for (const [name, t] of st.tensors) entries.push({ name, dtype: t.dtype, shape: t.shape, data: await st.readRaw(name) });
    const rewrap = async (json: Uint8Array) => {
      const es = entries.map((e) => (e.name === qsKey ? { ...e, shape: [json.length], data: json } : e));
      return withFile(out.files, 'model.safetensors')(await serializeSafetensors(es, { format: 'pt' }));
    };
    const rq = await fuzzParser(`bnb ${quantType} quant_state`, [await st.readRaw(qsKey)], 400, rewrap, { seed: seed + 200 });
    assert.ok(rq.rejected > 0);
    total += rq.cases;
  }
});

test('mutate() is deterministic for a seed', () => {
  const base = new Uint8Array(readFileSync(join(VECTORS, 'cases', 'q8_bs64_n200_bf16.safetensors')));
  const a = new Rng(9), b = new Rng(9);
  for (let i = 0; i < 50; i++) assert.equal(mutate(base, a), mutate(base, b));
});

test('at least 3000 mutated cases ran', () => {
  assert.ok(total >= 3000, `${total} cases`);
});

test.run();
