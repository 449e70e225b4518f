// Serialized bnb 4-bit checkpoints: the two bnb-written models in test/vectors/bnb load and
// dequantize to bnb's own output bit for bit; quantizing their original weights with our code
// writes the same file; and quantize → write → read → dequantize is lossless through the file
// for every type, double-quant setting and input dtype. writeBnbModel on synthetic models,
// single-file and sharded.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebqloraError } from '../../src/errors.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { Rng, VECTORS, assertBitsEqual, mathConfig } from '../helpers/index.ts';
import { synthHfFiles, tinyHfConfig } from '../helpers/synth-hf.ts';
import { MapDirSource, MemoryOutDir, MemorySource } from '../../src/io/source.ts';
import { fromFloat32, toFloat32, type DType } from '../../src/io/dtype.ts';
import { openSafetensors, serializeSafetensors, type SafetensorsEntry, type SafetensorsFile } from '../../src/io/safetensors.ts';
import { bnbTensorEntries, copyTokenizerFiles, dequantizeToDtype, parseQuantState, readBnbWeights, writeBnbModel, roundToDtype, TOKENIZER_FILES } from '../../src/io/bnb.ts';
import { openHfDir } from '../../src/io/hf.ts';
import { quantize4bit, dequantize4bit, doubleQuantize } from '../../src/quant/quantize.ts';
import type { Quant4Tensor } from '../../src/quant/types.ts';
import { LINEAR_NAMES, linearWeightName } from '../../src/model/config.ts';

const MODELS = [
  { dir: 'model_nf4_dq_bf16', quantType: 'nf4' as const, doubleQuant: true, dtype: 'BF16' as const },
  { dir: 'model_fp4_nodq_f16', quantType: 'fp4' as const, doubleQuant: false, dtype: 'F16' as const },
];

async function load(path: string): Promise<SafetensorsFile> {
  return openSafetensors(new MemorySource(path, new Uint8Array(readFileSync(path))));
}

function assertQuantEqual(a: Quant4Tensor, b: Quant4Tensor, what: string): void {
  assert.is(a.quantType, b.quantType, what);
  assert.is(a.blocksize, b.blocksize, what);
  assert.is(a.dtype, b.dtype, what);
  assert.equal(a.shape, b.shape, what);
  assertBitsEqual(a.packed, b.packed, `${what} packed`);
  assertBitsEqual(a.quantMap, b.quantMap, `${what} quant_map`);
  assert.is(a.absmax === null, b.absmax === null, `${what} absmax presence`);
  if (a.absmax) assertBitsEqual(a.absmax, b.absmax!, `${what} absmax`);
  assert.is(a.dq === null, b.dq === null, `${what} dq presence`);
  if (a.dq) {
    assertBitsEqual(a.dq.codes, b.dq!.codes, `${what} dq codes`);
    assertBitsEqual(a.dq.nestedAbsmax, b.dq!.nestedAbsmax, `${what} nested absmax`);
    assertBitsEqual(a.dq.nestedQuantMap, b.dq!.nestedQuantMap, `${what} nested quant map`);
    assert.is(a.dq.offset, b.dq!.offset, `${what} offset`);
    assert.is(a.dq.nestedBlocksize, b.dq!.nestedBlocksize, `${what} nested blocksize`);
  }
}

test('bnb-written models load and dequantize to bnb\'s expected_dequant bit for bit', async () => {
  for (const m of MODELS) {
    const st = await load(join(VECTORS, m.dir, 'model.safetensors'));
    const expected = await load(join(VECTORS, m.dir, 'expected_dequant.safetensors'));
    const weights = await readBnbWeights(st);
    assert.equal([...weights.keys()].sort(), [...expected.tensors.keys()].sort(), m.dir);
    for (const [name, q] of weights) {
      assert.is(q.quantType, m.quantType);
      assert.is(q.dtype, m.dtype);
      assert.is(q.dq !== null, m.doubleQuant);
      const got = fromFloat32(await dequantize4bit(q), m.dtype);
      assertBitsEqual(got, await expected.readRaw(name), `${m.dir} ${name}`);
      // the convenience path rounds the same way
      assertBitsEqual(fromFloat32(await dequantizeToDtype(q), m.dtype), got, `${m.dir} ${name} dequantizeToDtype`);
    }
  }
});

test('quantizing original_weights with our code writes the same model.safetensors', async () => {
  for (const m of MODELS) {
    const path = join(VECTORS, m.dir, 'model.safetensors');
    const want = new Uint8Array(readFileSync(path));
    const stored = await readBnbWeights(await load(path));
    const orig = await load(join(VECTORS, m.dir, 'original_weights.safetensors'));
    const ours: SafetensorsEntry[] = [];
    const withStoredOffsets: SafetensorsEntry[] = [];
    for (const [name, t] of orig.tensors) {
      if (!stored.has(name)) {
        const e = { name, dtype: t.dtype, shape: t.shape, data: await orig.readRaw(name) };
        ours.push(e); withStoredOffsets.push(e);
        continue;
      }
      const plain = await quantize4bit(await orig.readFloat(name), { quantType: m.quantType, blocksize: 64, shape: t.shape, dtype: m.dtype });
      const q = m.doubleQuant ? await doubleQuantize(plain) : plain;
      ours.push(...bnbTensorEntries(name, q));
      const qs = m.doubleQuant ? await doubleQuantize(plain, undefined, stored.get(name)!.dq!.offset) : plain;
      assertQuantEqual(qs, stored.get(name)!, `${m.dir} ${name}`);
      withStoredOffsets.push(...bnbTensorEntries(name, qs));
    }
    // With bnb's offsets (torch's float32 mean) the file is identical byte for byte.
    assertBitsEqual(await serializeSafetensors(withStoredOffsets, { format: 'pt' }), want, `${m.dir} with stored offsets`);
    // With our own offsets: same keys, dtypes and shapes; identical bytes where the offsets agree.
    const mine = await openSafetensors(new MemorySource('ours', await serializeSafetensors(ours, { format: 'pt' })));
    const theirs = await load(path);
    assert.equal([...mine.tensors.keys()].sort(), [...theirs.tensors.keys()].sort());
    for (const [k, t] of theirs.tensors) {
      assert.is(mine.info(k).dtype, t.dtype, k);
      if (!k.includes('quant_state')) assert.equal(mine.info(k).shape, t.shape, k);
    }
    for (const [name, q] of stored) {
      const own = ours.find((e) => e.name === `${name}.quant_state.bitsandbytes__${m.quantType}`)!;
      const ownOffset = parseQuantState(own.data as Uint8Array, name).nested?.offset;
      if (ownOffset === q.dq?.offset) {
        for (const part of ['', '.absmax', '.nested_absmax', `.quant_state.bitsandbytes__${m.quantType}`]) {
          if (!theirs.tensors.has(name + part)) continue;
          assertBitsEqual(await mine.readRaw(name + part), await theirs.readRaw(name + part), name + part);
        }
      }
    }
  }
});

test('quantize → write → read → dequantize is exact for nf4/fp4 × double quant × f32/f16/bf16', async () => {
  const rng = new Rng(21);
  for (const quantType of ['nf4', 'fp4'] as const) {
    for (const doubleQuant of [false, true]) {
      for (const dtype of ['F32', 'F16', 'BF16'] as const) {
        for (const blocksize of [64, 128]) {
          const shapes = [[37, 29], [64, 64], [3, 1000]];
          const made = new Map<string, Quant4Tensor>();
          const entries: SafetensorsEntry[] = [];
          for (const [i, shape] of shapes.entries()) {
            const x = roundToDtype(rng.f32(shape[0]! * shape[1]!, 0.03), dtype);
            const q = await quantize4bit(x, { quantType, blocksize, doubleQuant, shape, dtype });
            const name = `model.layers.${i}.mlp.up_proj.weight`;
            made.set(name, q);
            entries.push(...bnbTensorEntries(name, q));
          }
          const st = await openSafetensors(new MemorySource('rt', await serializeSafetensors(entries, { format: 'pt' })));
          const back = await readBnbWeights(st);
          const what = `${quantType} dq=${doubleQuant} ${dtype} bs${blocksize}`;
          assert.is(back.size, made.size, what);
          for (const [name, q] of made) {
            assertQuantEqual(back.get(name)!, q, `${what} ${name}`);
            assertBitsEqual(await dequantize4bit(back.get(name)!), await dequantize4bit(q), `${what} ${name} dequant`);
          }
        }
      }
    }
  }
});

async function memoryDir(files: Map<string, Uint8Array>, name = 'synth'): Promise<MapDirSource> {
  return new MapDirSource(name, files);
}

test('writeBnbModel: a synthetic model round-trips through openHfDir as bnb-4bit', async () => {
  for (const dtype of ['float32', 'bfloat16', 'float16']) {
    for (const [quantType, doubleQuant] of [['nf4', true], ['fp4', false], ['nf4', false], ['fp4', true]] as const) {
      const { files, config } = await synthHfFiles(tinyHfConfig({ torch_dtype: dtype }), 5, { extraFiles: { 'tokenizer.json': '{"model":{}}', 'generation_config.json': '{}' } });
      const srcDir = await memoryDir(files);
      const src = await openHfDir(srcDir);
      const out = new MemoryOutDir('out');
      const progress: number[] = [];
      const res = await writeBnbModel(src, out, { quantType, doubleQuant, blocksize: 64, copyFrom: srcDir, onProgress: (d, t) => progress.push(d / t) });
      assert.equal([...out.files.keys()].sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json']);
      assert.is(progress[progress.length - 1], 1);
      assert.is(res.quantized, 14);
      const cfg = JSON.parse(new TextDecoder().decode(out.files.get('config.json')));
      assert.is(cfg.quantization_config.bnb_4bit_quant_type, quantType);
      assert.is(cfg.quantization_config.bnb_4bit_use_double_quant, doubleQuant);
      assert.is(cfg.torch_dtype, dtype);
      const bnb = await openHfDir(new MapDirSource('out', out.files));
      assert.is(bnb.format, 'bnb-4bit');
      assert.equal(mathConfig(bnb.config), mathConfig(config));
      assert.equal(bnb.tensors.map((t) => t.name), src.tensors.map((t) => t.name));
      for (const t of src.tensors) {
        const isLinear = LINEAR_NAMES.some((l) => [0, 1].some((layer) => linearWeightName(layer, l) === t.name));
        const got = await bnb.readFloat(t.name);
        const orig = await src.readFloat(t.name);
        if (!isLinear) {
          assert.is(await bnb.readQuant(t.name), null);
          assertBitsEqual(got, orig, t.name);
          continue;
        }
        const q = (await bnb.readQuant(t.name))!;
        assert.is(q.quantType, quantType);
        assert.is(q.dq !== null, doubleQuant);
        assert.equal(bnb.tensors.find((r) => r.name === t.name)!.shape, t.shape);
        // the stored weight is exactly what quantize4bit makes of the source values
        const direct = await quantize4bit(orig, { quantType, blocksize: 64, doubleQuant, shape: t.shape, dtype: config.torchDtype });
        assertQuantEqual(q, direct, t.name);
        assertBitsEqual(got, await dequantizeToDtype(direct), `${t.name} readFloat`);
      }
      await bnb.close();
      await src.close();
    }
  }
});

test('copyTokenizerFiles: the tokenizer files the directory has, byte for byte; nothing from null', async () => {
  const enc = (t: string) => new TextEncoder().encode(t);
  const files = new Map<string, Uint8Array>([
    ['tokenizer.model', Uint8Array.of(0, 1, 2, 255)], ['tokenizer.json', enc('{"model":{}}')], ['special_tokens_map.json', enc('{}')],
    ['model.safetensors', new Uint8Array(8)], ['README.md', enc('# x')],
  ]);
  const out = new MemoryOutDir();
  const copied: string[] = [];
  await copyTokenizerFiles(new MapDirSource('d', files), out, copied);
  assert.equal(copied, TOKENIZER_FILES.filter((f) => files.has(f))); // in TOKENIZER_FILES order
  assert.equal([...out.files.keys()].sort(), ['special_tokens_map.json', 'tokenizer.json', 'tokenizer.model']);
  for (const f of copied) assertBitsEqual(out.files.get(f)!, files.get(f)!, f);
  const none = new MemoryOutDir();
  await copyTokenizerFiles(null, none);
  await copyTokenizerFiles(new MapDirSource('empty', new Map()), none);
  assert.is(none.files.size, 0);
});

test('writeBnbModel: sharded output with index.json loads back identically', async () => {
  const { files } = await synthHfFiles(tinyHfConfig({ torch_dtype: 'bfloat16', tie_word_embeddings: true }), 9);
  const src = await openHfDir(await memoryDir(files));
  const single = new MemoryOutDir('single'), sharded = new MemoryOutDir('sharded');
  await writeBnbModel(src, single, { quantType: 'nf4', doubleQuant: true, blocksize: 64 });
  const res = await writeBnbModel(src, sharded, { quantType: 'nf4', doubleQuant: true, blocksize: 64, maxShardBytes: 1500 });
  const shardFiles = [...sharded.files.keys()].filter((f) => f.endsWith('.safetensors')).sort();
  assert.ok(shardFiles.length > 2, `${shardFiles.length} shards`);
  assert.match(shardFiles[0]!, /^model-00001-of-000\d\d\.safetensors$/);
  const index = JSON.parse(new TextDecoder().decode(sharded.files.get('model.safetensors.index.json')));
  assert.is(index.metadata.total_size, res.bytes);
  // every part of a quantized weight lives in the same shard as the weight
  for (const [k, f] of Object.entries(index.weight_map as Record<string, string>)) {
    const base = k.replace(/\.weight\..*$/, '.weight');
    assert.is(f, index.weight_map[base], k);
  }
  const a = await openHfDir(new MapDirSource('single', single.files));
  const b = await openHfDir(new MapDirSource('sharded', sharded.files));
  assert.equal(b.tensors, a.tensors);
  for (const t of a.tensors) assertBitsEqual(await b.readFloat(t.name), await a.readFloat(t.name), t.name);
  assert.ok(!a.tensors.some((t) => t.name === 'lm_head.weight'), 'tied lm_head is not written');
});

test('writeBnbModel: float tensors keep the model dtype; values are rounded to it before quantizing', async () => {
  const { files } = await synthHfFiles(tinyHfConfig({ torch_dtype: 'float16' }), 3);
  const src = await openHfDir(new MapDirSource('s', files));
  const out = new MemoryOutDir();
  await writeBnbModel(src, out, { quantType: 'nf4', doubleQuant: false, blocksize: 64 });
  const st = await openSafetensors(new MemorySource('m', out.files.get('model.safetensors')!));
  const dtypes = new Set<DType>();
  for (const [k, t] of st.tensors) if (!/\.weight(\.|$)/.test(k) || k.includes('norm') || k.includes('embed') || k.includes('lm_head')) dtypes.add(t.dtype);
  assert.equal([...dtypes], ['F16']);
  assertBitsEqual(toFloat32(await st.readRaw('model.norm.weight'), 'F16', 'n'), await src.readFloat('model.norm.weight'));
});

test('writeBnbModel: a failure while writing leaves no file behind (no partial model.safetensors, no temp files)', async () => {
  const { files } = await synthHfFiles(tinyHfConfig(), 12);
  const src = await openHfDir(new MapDirSource('s', files));
  let reads = 0;
  const failing = { ...src, readFloat: async (name: string) => { if (++reads === 20) throw new WebqloraError(`${name}: read error`); return src.readFloat(name); } };
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-bnbw-'));
  try {
    for (const doubleQuant of [true, false]) {
      reads = 0;
      try {
        await writeBnbModel(failing, new NodeOutDir(tmp), { quantType: 'nf4', doubleQuant, blocksize: 64, copyFrom: new MapDirSource('s', files) });
        assert.unreachable();
      } catch (e) {
        assert.instance(e, WebqloraError);
        assert.match((e as Error).message, /read error/);
      }
      assert.equal(readdirSync(tmp), []);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('writeBnbModel refuses int4 and unsupported blocksizes before writing anything', async () => {
  const { files } = await synthHfFiles(tinyHfConfig(), 13);
  const src = await openHfDir(new MapDirSource('s', files));
  const out = new MemoryOutDir();
  for (const [opts, re] of [
    [{ quantType: 'int4' as 'nf4', doubleQuant: false, blocksize: 64 }, /int4 is not a bitsandbytes 4-bit type/],
    [{ quantType: 'nf4' as const, doubleQuant: false, blocksize: 100 }, /blocksize 100 is not supported/],
  ] as const) {
    try {
      await writeBnbModel(src, out, opts);
      assert.unreachable();
    } catch (e) {
      assert.instance(e, WebqloraError);
      assert.match((e as Error).message, re);
    }
  }
  assert.is(out.files.size, 0);
});

test.run();
