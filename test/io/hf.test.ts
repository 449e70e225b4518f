// HF model directories: config.json normalization, single-file and sharded weights, every
// tensor checked against the config, and one-sentence errors for each way a directory can be
// wrong. Synthetic directories are written with our own safetensors writer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, STORIES_HF, STORIES_BIN, assertBitsEqual } from '../helpers/index.ts';
import { synthHfFiles, tinyHfConfig, type SynthOptions } from '../helpers/synth-hf.ts';
import { WebqloraError } from '../../src/errors.ts';
import { MapDirSource, MemorySource, writeFileTo } from '../../src/io/source.ts';
import { NodeDirSource, NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { openHfDir } from '../../src/io/hf.ts';
import { openModel } from '../../src/io/open.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { configFromHf, configToHf } from '../../src/io/hf-config.ts';
import { mathConfig } from '../helpers/index.ts';
import type { DType } from '../../src/io/dtype.ts';
import type { ByteSource, DirSource } from '../../src/io/source.ts';

async function rejects(p: Promise<unknown> | (() => unknown), re: RegExp, what = String(re)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (!(e instanceof WebqloraError)) throw new Error(`${what}: expected a WebqloraError, got ${(e as Error).name}: ${(e as Error).message}`);
    assert.match(e.message, re, what);
    assert.not.match(e.message, /\n/, `${what}: one line`);
    return e.message;
  }
  throw new Error(`${what}: no error`);
}

async function synthDir(cfg: Record<string, unknown> = tinyHfConfig(), opts: SynthOptions = {}, seed = 1) {
  const { files, config, values } = await synthHfFiles(cfg, seed, opts);
  return { dir: new MapDirSource('synth', files), files, config, values };
}

test('stories260K HF directory: config, tensors and values', async () => {
  const dir = new NodeDirSource(STORIES_HF);
  const src = await openHfDir(dir);
  try {
    assert.is(src.format, 'hf');
    assert.equal(mathConfig(src.config), mathConfig({
      architecture: 'LlamaForCausalLM', hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKVHeads: 4, headDim: 8,
      vocabSize: 512, maxPositionEmbeddings: 512, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: true,
      attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32',
    } satisfies ModelConfig));
    assert.is(src.tensors.length, 48);
    assert.equal(src.tensors[0], { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [512, 64] });
    assert.equal(src.tensors.find((t) => t.name === 'model.layers.3.mlp.down_proj.weight'), { name: 'model.layers.3.mlp.down_proj.weight', dtype: 'F32', shape: [64, 172] });
    assert.ok(src.tensors.some((t) => t.name === 'lm_head.weight'), 'a stored lm_head is listed even when tied');
    const st = await openSafetensors(new MemorySource('m', new Uint8Array(readFileSync(join(STORIES_HF, 'model.safetensors')))));
    for (const t of src.tensors) assertBitsEqual(await src.readFloat(t.name), await st.readFloat(t.name), t.name);
    assert.is(await src.readQuant('model.layers.0.self_attn.q_proj.weight'), null);
    await rejects(src.readFloat('model.layers.9.mlp.up_proj.weight'), /no tensor named model\.layers\.9\.mlp\.up_proj\.weight/);
  } finally {
    await src.close();
    await dir.close();
  }
});

test('configFromHf: SmolLM2-135M (explicit head_dim, tied embeddings)', () => {
  const j = JSON.parse(readFileSync(join(FIXTURES, 'models', 'smollm2-135m', 'config.json'), 'utf8'));
  assert.equal(mathConfig(configFromHf(j, 'config.json')), mathConfig({
    architecture: 'LlamaForCausalLM', hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKVHeads: 3, headDim: 64,
    vocabSize: 49152, maxPositionEmbeddings: 8192, rmsNormEps: 1e-5, ropeTheta: 100000, ropeScaling: null, tieWordEmbeddings: true,
    attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32',
  } satisfies ModelConfig));
});

test('configFromHf: defaults, architectures, dtypes, rope scaling, eos lists', () => {
  const base = tinyHfConfig();
  const c = configFromHf({ ...base, num_key_value_heads: undefined, rope_theta: undefined, tie_word_embeddings: undefined, torch_dtype: undefined }, 'c');
  assert.is(c.numKVHeads, 4);
  assert.is(c.headDim, 4);
  assert.is(c.ropeTheta, 10000);
  assert.is(c.tieWordEmbeddings, false);
  assert.is(c.torchDtype, 'F32');
  const q = configFromHf({ ...base, architectures: ['Qwen2ForCausalLM'], eos_token_id: [151643, 151645], torch_dtype: 'bfloat16' }, 'c');
  assert.is(q.architecture, 'Qwen2ForCausalLM');
  assert.is(q.attentionBias, true);
  assert.equal(q.eosTokenIds, [151643, 151645]);
  assert.is(q.torchDtype, 'BF16');
  const m = configFromHf({ ...base, architectures: ['MistralForCausalLM'], torch_dtype: undefined, dtype: 'float16' }, 'c');
  assert.is(m.architecture, 'MistralForCausalLM');
  assert.is(m.torchDtype, 'F16');
  const l3 = configFromHf({ ...base, rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, 'c');
  assert.equal(l3.ropeScaling, { ropeType: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.equal(configFromHf({ ...base, rope_scaling: { type: 'linear', factor: 2 } }, 'c').ropeScaling, { ropeType: 'linear', factor: 2 });
  assert.is(configFromHf({ ...base, rope_scaling: { rope_type: 'default' } }, 'c').ropeScaling, null);
  assert.is(configFromHf({ ...base, architectures: undefined, model_type: 'llama' }, 'c').architecture, 'LlamaForCausalLM');
  assert.is(configFromHf({ ...base, eos_token_id: null, bos_token_id: null }, 'c').eosTokenIds.length, 0);
});

test('configFromHf: one-sentence errors naming the key', async () => {
  const base = tinyHfConfig();
  const cases: Array<[unknown, RegExp]> = [
    [{ ...base, hidden_size: undefined }, /^config\.json: missing "hidden_size"\.$/],
    [{ ...base, vocab_size: undefined }, /^config\.json: missing "vocab_size"\.$/],
    [{ ...base, architectures: ['GPT2LMHeadModel'] }, /^config\.json: architecture GPT2LMHeadModel is not supported \(expected one of LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM\)\.$/],
    [{ ...base, architectures: undefined, model_type: undefined }, /missing "architectures"/],
    [{ ...base, architectures: undefined, model_type: 'gpt2' }, /model_type "gpt2" is not supported/],
    [{ ...base, hidden_size: '16' }, /"hidden_size" must be an integer >= 1, got "16"/],
    [{ ...base, num_hidden_layers: 1.5 }, /"num_hidden_layers" must be an integer/],
    [{ ...base, num_key_value_heads: 3 }, /num_attention_heads 4 is not a multiple of num_key_value_heads 3/],
    [{ ...base, hidden_size: 18 }, /hidden_size 18 is not a multiple of num_attention_heads 4/],
    [{ ...base, rms_norm_eps: -1 }, /"rms_norm_eps" must be a positive number/],
    [{ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling rope type "yarn" is not supported/],
    [{ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /rope_scaling\.low_freq_factor must be a positive number/],
    [{ ...base, rope_scaling: 'linear' }, /"rope_scaling" must be an object or null/],
    [{ ...base, torch_dtype: 'float64' }, /torch_dtype "float64" is not supported/],
    [{ ...base, eos_token_id: 'x' }, /"eos_token_id" must be a token id/],
    [{ ...base, eos_token_id: [1, -2] }, /"eos_token_id" must be a token id or a list/],
    [{ ...base, tie_word_embeddings: 'yes' }, /"tie_word_embeddings" must be true or false/],
    [{ ...base, mlp_bias: true }, /"mlp_bias": true is not supported/],
    [{ ...base, hidden_act: 'gelu' }, /hidden_act "gelu" is not supported/],
    [[1, 2], /config\.json: expected a JSON object/],
    [null, /config\.json: expected a JSON object/],
  ];
  for (const [j, re] of cases) await rejects(() => configFromHf(j, 'config.json'), re);
});

test('configToHf round-trips through configFromHf', () => {
  const j = JSON.parse(readFileSync(join(FIXTURES, 'models', 'smollm2-135m', 'config.json'), 'utf8'));
  const configs: ModelConfig[] = [
    configFromHf(j, 'c'),
    configFromHf(tinyHfConfig({ architectures: ['Qwen2ForCausalLM'], eos_token_id: [3, 4], torch_dtype: 'bfloat16' }), 'c'),
    configFromHf(tinyHfConfig({ architectures: ['MistralForCausalLM'], bos_token_id: null, eos_token_id: null }), 'c'),
    configFromHf(tinyHfConfig({ rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }), 'c'),
    configFromHf(tinyHfConfig({ rope_scaling: { type: 'linear', factor: 4 }, torch_dtype: 'float16' }), 'c'),
  ];
  for (const c of configs) {
    assert.equal(mathConfig(configFromHf(JSON.parse(JSON.stringify(configToHf(c))), 'c')), mathConfig(c));
    // and from a config made without a config.json (GGUF, synthetic): the same math
    const { hfConfig: _, ...bare } = c;
    assert.equal(mathConfig(configFromHf(JSON.parse(JSON.stringify(configToHf(bare))), 'c')), mathConfig(c));
  }
});

test('synthetic directory on disk: single file and sharded give the same tensors', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-hf-'));
  try {
    const single = await synthHfFiles(tinyHfConfig({ torch_dtype: 'bfloat16' }), 4);
    const sharded = await synthHfFiles(tinyHfConfig({ torch_dtype: 'bfloat16' }), 4, { shardOf: (_, i) => `model-0000${1 + (i % 3)}-of-00003.safetensors` });
    for (const [name, { files }] of [['single', single], ['sharded', sharded]] as const) {
      const out = await new NodeOutDir(tmp).sub(name);
      for (const [f, b] of files) await writeFileTo(out, f, b);
    }
    const a = await openModelPath(join(tmp, 'single'));
    const b = await openModelPath(join(tmp, 'sharded'));
    try {
      assert.is(b.format, 'hf');
      assert.equal(b.config, a.config);
      assert.equal(b.tensors, a.tensors);
      assert.is(a.tensors.length, 2 * 9 + 3);
      assert.equal((b as unknown as { files: string[] }).files.length, 3);
      for (const t of a.tensors) {
        assert.is(t.dtype, 'BF16');
        assertBitsEqual(await b.readFloat(t.name), await a.readFloat(t.name), t.name);
      }
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('directory errors: wrong shapes, missing tensors and shards, bad index, bad quantization_config', async () => {
  const cfg = tinyHfConfig();
  // transposed weight
  let d = await synthDir(cfg, { edit: (es) => es.map((e) => (e.name === 'model.layers.1.mlp.up_proj.weight' ? { ...e, shape: [16, 24] } : e)) });
  await rejects(openHfDir(d.dir), /^synth\/model\.safetensors: model\.layers\.1\.mlp\.up_proj\.weight: expected \[24, 16\], got \[16, 24\] \(is the checkpoint transposed\?\)\.$/);
  // wrong shape, not a transpose
  d = await synthDir(cfg, { edit: (es) => es.map((e) => (e.name === 'model.norm.weight' ? { ...e, shape: [4, 4] } : e)) });
  await rejects(openHfDir(d.dir), /model\.norm\.weight: expected \[16\], got \[4, 4\] \(does config\.json match the weights\?\)/);
  // missing tensor
  d = await synthDir(cfg, { edit: (es) => es.filter((e) => e.name !== 'model.layers.0.self_attn.k_proj.weight') });
  await rejects(openHfDir(d.dir), /model\.layers\.0\.self_attn\.k_proj\.weight is missing \(the config expects shape \[8, 16\]\)/);
  // lm_head missing: fine when tied, an error when not
  d = await synthDir(tinyHfConfig({ tie_word_embeddings: true }), { edit: (es) => es.filter((e) => e.name !== 'lm_head.weight') });
  await (await openHfDir(d.dir)).close();
  d = await synthDir(cfg, { edit: (es) => es.filter((e) => e.name !== 'lm_head.weight') });
  await rejects(openHfDir(d.dir), /lm_head\.weight is missing/);
  // integer dtype
  d = await synthDir(cfg, { edit: (es) => es.map((e) => (e.name === 'model.norm.weight' ? { ...e, dtype: 'I32' } : e)) });
  await rejects(openHfDir(d.dir), /model\.norm\.weight: dtype I32 is not a floating-point type/);
  // missing shard
  d = await synthDir(cfg, { shardOf: (_, i) => (i < 5 ? 'a.safetensors' : 'b.safetensors') });
  d.files.delete('b.safetensors');
  await rejects(openHfDir(d.dir), /model\.safetensors\.index\.json: shard b\.safetensors \(listed for tensor .*\) does not exist in synth\./);
  // index naming a tensor its shard lacks
  d = await synthDir(cfg, { shardOf: () => 'a.safetensors' });
  const idx = JSON.parse(new TextDecoder().decode(d.files.get('model.safetensors.index.json')));
  idx.weight_map['model.layers.7.mlp.up_proj.weight'] = 'a.safetensors';
  d.files.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify(idx)));
  await rejects(openHfDir(d.dir), /tensor model\.layers\.7\.mlp\.up_proj\.weight is listed in shard a\.safetensors, but a\.safetensors has no such tensor/);
  // index pointing outside the directory / malformed
  idx.weight_map['model.layers.7.mlp.up_proj.weight'] = '../x.safetensors';
  d.files.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify(idx)));
  await rejects(openHfDir(d.dir), /maps to "\.\.\/x\.safetensors", expected a file name in the same directory/);
  d.files.set('model.safetensors.index.json', new TextEncoder().encode('{"weight_map": [1]}'));
  await rejects(openHfDir(d.dir), /expected an object with a "weight_map"/);
  d.files.set('model.safetensors.index.json', new TextEncoder().encode('{"metadata": {}, "weight_map": {}}'));
  await rejects(openHfDir(d.dir), /^synth\/model\.safetensors\.index\.json: the weight_map is empty\.$/);
  d.files.set('model.safetensors.index.json', new TextEncoder().encode('{"weight_map": '));
  await rejects(openHfDir(d.dir), /model\.safetensors\.index\.json: not valid JSON/);
  // no config, no weights, pickled weights
  await rejects(openHfDir(new MapDirSource('empty', new Map())), /^empty: no config\.json \(expected a Hugging Face model directory\)\.$/);
  const onlyCfg = new Map([['config.json', new TextEncoder().encode(JSON.stringify(cfg))]]);
  await rejects(openHfDir(new MapDirSource('m', onlyCfg)), /m: no model\.safetensors or model\.safetensors\.index\.json/);
  onlyCfg.set('pytorch_model.bin', new Uint8Array(4));
  await rejects(openHfDir(new MapDirSource('m', onlyCfg)), /has pytorch_model\.bin but no model\.safetensors; pickled PyTorch checkpoints are not supported/);
  // bad config.json
  d = await synthDir(cfg);
  d.files.set('config.json', new TextEncoder().encode('{"hidden_size": 16,'));
  await rejects(openHfDir(d.dir), /synth\/config\.json: not valid JSON/);
  d.files.set('config.json', new TextEncoder().encode(JSON.stringify({ ...cfg, hidden_size: undefined })));
  await rejects(openHfDir(d.dir), /^synth\/config\.json: missing "hidden_size"\.$/);
  // quantization configs we cannot read
  for (const [qc, re] of [
    [{ quant_method: 'gptq', bits: 4 }, /quant_method "gptq" is not supported/],
    [{ quant_method: 'bitsandbytes', load_in_8bit: true }, /8-bit bitsandbytes checkpoints are not supported/],
    [{ quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_storage: 'bfloat16' }, /bnb_4bit_quant_storage "bfloat16" is not supported/],
    [{ quant_method: 'bitsandbytes', load_in_4bit: true }, /says bitsandbytes 4-bit, but the weights hold no quant_state tensors/],
    ['bitsandbytes', /^synth\/config\.json: "quantization_config" must be an object\.$/],
    [[{ load_in_4bit: true }], /^synth\/config\.json: "quantization_config" must be an object\.$/],
    [{ quant_method: 'bitsandbytes' }, /^synth\/config\.json: quantization_config has neither load_in_4bit nor load_in_8bit set\.$/],
    [{ load_in_4bit: false, load_in_8bit: false }, /^synth\/config\.json: quantization_config has neither load_in_4bit nor load_in_8bit set\.$/],
  ] as const) {
    d = await synthDir({ ...cfg, quantization_config: qc });
    await rejects(openHfDir(d.dir), re);
  }
});

test('bnb directory errors: parts missing or with the wrong shape', async () => {
  const { MemoryOutDir } = await import('../../src/io/source.ts');
  const { writeBnbModel } = await import('../../src/io/bnb.ts');
  const d = await synthDir();
  const out = new MemoryOutDir();
  await writeBnbModel(await openHfDir(d.dir), out, { quantType: 'nf4', doubleQuant: true, blocksize: 64 });
  const st = await openSafetensors(new MemorySource('m', out.files.get('model.safetensors')!));
  const rewrite = async (edit: (name: string) => { drop?: boolean; shape?: number[]; dtype?: DType; copyAs?: string } | null) => {
    const { serializeSafetensors } = await import('../../src/io/safetensors.ts');
    const entries = [];
    for (const [name, t] of st.tensors) {
      const e = edit(name);
      if (e?.drop) continue;
      entries.push({ name, dtype: e?.dtype ?? t.dtype, shape: e?.shape ?? t.shape, data: await st.readRaw(name) });
      if (e?.copyAs) entries.push({ name: e.copyAs, dtype: t.dtype, shape: t.shape, data: await st.readRaw(name) });
    }
    const files = new Map(out.files);
    files.set('model.safetensors', await serializeSafetensors(entries, { format: 'pt' }));
    return new MapDirSource('q', files);
  };
  const w = 'model.layers.0.mlp.down_proj.weight';
  await rejects(openHfDir(await rewrite((n) => (n === `${w}.nested_absmax` ? { drop: true } : null))), new RegExp(`${w.replace(/\./g, '\\.')}\\.nested_absmax is missing`));
  await rejects(openHfDir(await rewrite((n) => (n === w ? { drop: true } : null))), new RegExp(`${w.replace(/\./g, '\\.')} is missing \\(its quant_state is present`));
  await rejects(openHfDir(await rewrite((n) => (n === `${w}.absmax` ? { shape: [2, 3] } : null))), /down_proj\.weight\.absmax: shape \[2, 3\], expected \[6\] for a nf4 weight of shape \[16, 24\] with blocksize 64/);
  await rejects(openHfDir(await rewrite((n) => (n === `${w}.quant_map` ? { shape: [4, 4] } : null))), /quant_map: shape \[4, 4\], expected \[16\]/);
  const esc = (x: string) => x.replace(/\./g, '\\.');
  // a weight with quant_states of both types
  await rejects(openHfDir(await rewrite((n) => (n === `${w}.quant_state.bitsandbytes__nf4` ? { copyAs: `${w}.quant_state.bitsandbytes__fp4` } : null))),
    new RegExp(`^${esc(w)}: has both a quant_state\\.bitsandbytes__nf4 and a __fp4 \\(expected exactly one\\)\\.$`));
  // the quant_state must be U8 JSON bytes
  await rejects(openHfDir(await rewrite((n) => (n === `${w}.quant_state.bitsandbytes__nf4` ? { dtype: 'I8' } : null))),
    new RegExp(`^q/model\\.safetensors: ${esc(w)}\\.quant_state\\.bitsandbytes__nf4: dtype I8, expected U8 \\(UTF-8 JSON bytes\\)\\.$`));
  // packed weights in another quant_storage dtype; other parts in the wrong dtype
  await rejects(openHfDir(await rewrite((n) => (n === w ? { dtype: 'I8' } : null))),
    new RegExp(`^q/model\\.safetensors: ${esc(w)}: dtype I8, expected U8 \\(only bnb_4bit_quant_storage uint8 is supported\\)\\.$`));
  await rejects(openHfDir(await rewrite((n) => (n === `${w}.quant_map` ? { dtype: 'I32' } : null))),
    new RegExp(`^q/model\\.safetensors: ${esc(w)}\\.quant_map: dtype I32, expected F32\\.$`));
  const ok = await openHfDir(await rewrite(() => null));
  assert.is(ok.format, 'bnb-4bit');
  assert.equal((ok as unknown as { quantInfo(n: string): unknown }).quantInfo(w), { quantType: 'nf4', blocksize: 64, doubleQuant: true, dtype: 'F32' });
});

test('openModel closes the config.json it opens only to detect a directory; every file is closed by close()', async () => {
  const d = await synthDir(tinyHfConfig(), { shardOf: (_, i) => (i < 5 ? 'a.safetensors' : 'b.safetensors') });
  const open = new Map<string, number>();
  const bump = (rel: string, by: number) => open.set(rel, (open.get(rel) ?? 0) + by);
  const counting: DirSource = {
    name: 'counting',
    list: () => d.dir.list(),
    async open(rel: string): Promise<ByteSource | null> {
      const s = await d.dir.open(rel);
      if (!s) return null;
      bump(rel, 1);
      let closed = false;
      return { name: s.name, size: s.size, read: (o, l) => s.read(o, l), close: async () => { if (!closed) { closed = true; bump(rel, -1); } } } as ByteSource;
    },
  };
  const ws = await openModel(counting);
  // open now: config.json once (openHfDir's own), the index and both shards
  assert.equal(Object.fromEntries(open), { 'config.json': 1, 'model.safetensors.index.json': 1, 'a.safetensors': 1, 'b.safetensors': 1 });
  await ws.close();
  assert.ok([...open.values()].every((n) => n === 0), JSON.stringify(Object.fromEntries(open)));
});

test('openModel / openModelPath: format detection and errors', async () => {
  await rejects(openModelPath('synthetic:tiny'), /synthetic:tiny: unknown synthetic model \(expected one of synthetic:stories260K, /);
  assert.is((await openModelPath('synthetic:stories15M')).config.hiddenSize, 288);
  await rejects(openModelPath('/nonexistent/model'), /^\/nonexistent\/model: no such file or directory\.$/);
  await rejects(openModel(new MemorySource('weights.safetensors', new Uint8Array(16))), /a bare \.safetensors file has no model config; pass the directory/);
  await rejects(openModel(new MemorySource('model.onnx', new Uint8Array(16))), /model\.onnx: unknown model format \(expected a Hugging Face model directory .*a \.gguf file, or a llama2\.c \.bin file\)/);
  await rejects(openModel(new MapDirSource('d', new Map())), /d: no config\.json, so this is not a Hugging Face model directory/);
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-open-'));
  try {
    writeFileSync(join(tmp, 'x.txt'), 'hello');
    await rejects(openModelPath(join(tmp, 'x.txt')), /x\.txt: unknown model format/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const hf = await openModelPath(STORIES_HF);
  assert.is(hf.format, 'hf');
  await hf.close();
  // llama2.c and GGUF come from the other loaders; only dispatch is checked here.
  try {
    const bin = await openModelPath(STORIES_BIN);
    assert.is(bin.format, 'llama2c');
    await bin.close();
  } catch (e) {
    if (!(e instanceof WebqloraError) || e.message !== 'not implemented') throw e;
  }
});

test.run();
