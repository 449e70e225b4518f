// Every user-facing error of the model, adapter, checkpoint, trainer, generation and data layers
// is one WebqloraError sentence naming the file or setting; each message is asserted here.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { WebqloraError } from '../../src/errors.ts';
import { MapDirSource, MemoryOutDir } from '../../src/io/source.ts';
import { serializeSafetensors } from '../../src/io/safetensors.ts';
import { configFromHf } from '../../src/io/hf-config.ts';
import { loadModel } from '../../src/model/load.ts';
import { checkLoraConfig, DEFAULT_LORA, LoraAdapters, parseTargets, peftKey } from '../../src/model/lora.ts';
import { adapterConfigJson, loadAdapter, parseAdapterConfig } from '../../src/model/peft.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { generate } from '../../src/generate/generate.ts';
import { readTrainerState, restoreCheckpoint, saveCheckpoint, STATE_VERSION } from '../../src/train/checkpoint.ts';
import { Trainer, TRAIN_DEFAULTS } from '../../src/train/trainer.ts';
import { Batcher } from '../../src/data/batch.ts';
import { readRecords } from '../../src/data/read.ts';
import type { ByteSource } from '../../src/io/source.ts';
import { Workspace } from '../../src/model/llama.ts';
import { TINY } from './tiny.ts';

function throwsUser(fn: () => unknown, re: RegExp, what = re.source): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, WebqloraError, what);
    assert.match((e as Error).message, re, what);
    return;
  }
  assert.unreachable(`${what}: no error`);
}
async function rejectsUser(p: Promise<unknown>, re: RegExp, what = re.source): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, WebqloraError, what);
    assert.match((e as Error).message, re, what);
    return;
  }
  assert.unreachable(`${what}: no error`);
}
const enc = (s: string) => new TextEncoder().encode(s);

test('LoRA settings: one check wherever they come from', () => {
  throwsUser(() => checkLoraConfig({ ...DEFAULT_LORA, r: 0 }, 'x'), /^x: LoRA rank r must be a positive integer, got 0\.$/);
  throwsUser(() => checkLoraConfig({ ...DEFAULT_LORA, alpha: 0 }, 'x'), /^x: lora_alpha must be a positive number, got 0\.$/);
  throwsUser(() => checkLoraConfig({ ...DEFAULT_LORA, dropout: 1 }, 'x'), /^x: lora_dropout must be in \[0, 1\), got 1\.$/);
  throwsUser(() => checkLoraConfig({ ...DEFAULT_LORA, dropout: -0.1 }, 'x'), /lora_dropout must be in \[0, 1\), got -0\.1/);
  throwsUser(() => new LoraAdapters(createReferenceBackend(), TINY, { ...DEFAULT_LORA, dropout: 2 }, false), /^LoRA: lora_dropout must be in/);
  throwsUser(() => parseTargets(' , '), /--target: no module named/);
  throwsUser(() => parseTargets('q_proj,a-b'), /--target: 'a-b' is not a module name/);
  throwsUser(() => parseTargets('q_proj,lm_head'), /^--target: LoRA on 'lm_head' is not implemented/);
  throwsUser(() => new LoraAdapters(createReferenceBackend(), TINY, { ...DEFAULT_LORA, targets: ['q_proj', 'lm_head'] }, false), /^LoRA: target module "lm_head" matches no linear layer \(LoRA on the embedding or lm_head is not implemented\)\.$/);
  throwsUser(() => new LoraAdapters(createReferenceBackend(), TINY, { ...DEFAULT_LORA, targets: ['qkv_proj'] }, false), /^LoRA: target module "qkv_proj" matches no linear layer \(this model's linear modules are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj\)\.$/);
  throwsUser(() => new LoraAdapters(createReferenceBackend(), TINY, { ...DEFAULT_LORA, layersToTransform: [7] }, false), /layers_to_transform names layer 7, but the model has 2 layers/);
  throwsUser(() => new LoraAdapters(createReferenceBackend(), TINY, { ...DEFAULT_LORA, targets: '(?P<x>q)_proj' }, false), /uses Python-only regex syntax/);
});

test('adapter_config.json: every refusal names the file and the key', () => {
  const ok = JSON.parse(adapterConfigJson(DEFAULT_LORA, 'base')) as Record<string, unknown>;
  const bad = (patch: Record<string, unknown>, re: RegExp) => throwsUser(() => parseAdapterConfig(JSON.stringify({ ...ok, ...patch }), 'a/adapter_config.json'), re);
  throwsUser(() => parseAdapterConfig('{', 'a/adapter_config.json'), /^a\/adapter_config\.json: not valid JSON/);
  throwsUser(() => parseAdapterConfig('[1]', 'a/adapter_config.json'), /expected a JSON object/);
  bad({ peft_type: 'IA3' }, /peft_type IA3 is not supported \(only LORA adapters are\)/);
  bad({ use_dora: 'yes' }, /use_dora = "yes" is not supported \(use_dora must be true or false\)/);
  bad({ bias: 'all' }, /bias = "all" is not supported/);
  bad({ fan_in_fan_out: true }, /fan_in_fan_out = true is not supported/);
  bad({ modules_to_save: ['lm_head'] }, /modules_to_save = \["lm_head"\] is not supported/);
  bad({ layers_to_transform: 'x' }, /"layers_to_transform" must be a layer index or a list of them/);
  bad({ rank_pattern: { q_proj: 0 } }, /LoRA rank rank_pattern\["q_proj"\] must be a positive integer, got 0/);
  bad({ alpha_pattern: { q_proj: 'x' } }, /"alpha_pattern" must map module patterns to numbers/);
  bad({ layers_pattern: 'blocks' }, /layers_pattern = "blocks" is not supported/);
  bad({ lora_bias: true }, /lora_bias = true is not supported/);
  bad({ exclude_modules: ['q_proj'] }, /exclude_modules = \["q_proj"\] is not supported/);
  bad({ target_modules: '(unclosed' }, /target_modules "\(unclosed" is not a valid regular expression/);
  bad({ r: 'big' }, /"r" must be a positive integer/);
  bad({ r: 2.5 }, /LoRA rank r must be a positive integer, got 2\.5/);
  bad({ lora_alpha: 'x' }, /"lora_alpha" must be a positive number/);
  bad({ lora_alpha: -1 }, /lora_alpha must be a positive number, got -1/);
  bad({ lora_dropout: 'x' }, /"lora_dropout" must be a number/);
  bad({ lora_dropout: 1.5 }, /^a\/adapter_config\.json: lora_dropout must be in \[0, 1\), got 1\.5\.$/);
  bad({ target_modules: 3 }, /"target_modules" must be a list of module names, "all-linear" or a regex string/);
  bad({ target_modules: [] }, /"target_modules" is empty/);
});

test('adapter directories: missing files, tensors, shapes and dtypes', async () => {
  const be = createReferenceBackend();
  const cfg = { r: 2, alpha: 4, dropout: 0, targets: ['q_proj'], useRslora: false };
  const conf = enc(adapterConfigJson(cfg, 'base'));
  const tensors = (edit: (e: Array<{ name: string; dtype: 'F32' | 'U8'; shape: number[]; data: Uint8Array }>) => void) => {
    const e: Array<{ name: string; dtype: 'F32' | 'U8'; shape: number[]; data: Uint8Array }> = [];
    for (let l = 0; l < TINY.numLayers; l++) {
      e.push({ name: peftKey(`model.layers.${l}.self_attn.q_proj`, 'A'), dtype: 'F32', shape: [2, 16], data: new Uint8Array(2 * 16 * 4) });
      e.push({ name: peftKey(`model.layers.${l}.self_attn.q_proj`, 'B'), dtype: 'F32', shape: [16, 2], data: new Uint8Array(16 * 2 * 4) });
    }
    edit(e);
    return serializeSafetensors(e);
  };
  const dir = async (files: Record<string, Uint8Array>) => new MapDirSource('ad', new Map(Object.entries(files)));
  await rejectsUser(loadAdapter(await dir({}), be, TINY), /^ad: no adapter_config\.json \(is this a PEFT adapter directory\?\)\.$/);
  await rejectsUser(loadAdapter(await dir({ 'adapter_config.json': conf }), be, TINY), /^ad: no adapter_model\.safetensors\.$/);
  await rejectsUser(loadAdapter(await dir({ 'adapter_config.json': conf, 'adapter_model.bin': new Uint8Array(4) }), be, TINY), /adapter_model\.bin is a pickle; re-save it with safetensors/);
  const withW = async (w: Uint8Array) => loadAdapter(await dir({ 'adapter_config.json': conf, 'adapter_model.safetensors': w }), be, TINY);
  await rejectsUser(withW(await tensors((e) => e.splice(1, 1))), /missing tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_B\.weight/);
  await rejectsUser(withW(await tensors((e) => { e[0]!.shape = [16, 2]; })), /lora_A\.weight: expected \[2, 16\], got \[16, 2\] \(does the adapter belong to this model\?\)/);
  await rejectsUser(withW(await tensors((e) => { e[0]!.dtype = 'U8'; e[0]!.data = new Uint8Array(32); })), /dtype U8 is not supported \(expected F32, F16 or BF16\)/);
  await rejectsUser(withW(await tensors((e) => e.push({ name: 'base_model.model.lm_head.lora_A.weight', dtype: 'F32', shape: [1], data: new Uint8Array(4) }))), /tensor base_model\.model\.lm_head\.lora_A\.weight is not a LoRA weight of a targeted module \(1 such tensors\)\.$/);
  // DoRA magnitudes in the weights while adapter_config.json leaves use_dora out: the refusal says why
  const magnitudes = (e: Array<{ name: string; dtype: 'F32' | 'U8'; shape: number[]; data: Uint8Array }>) => {
    for (let l = 0; l < TINY.numLayers; l++) e.push({ name: peftKey(`model.layers.${l}.self_attn.q_proj`, 'magnitude'), dtype: 'F32', shape: [16], data: new Uint8Array(16 * 4) });
  };
  await rejectsUser(withW(await tensors(magnitudes)), /^ad\/adapter_model\.safetensors: tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_magnitude_vector is not a LoRA weight of a targeted module \(2 such tensors\) \(DoRA magnitudes, but adapter_config\.json does not set use_dora\)\.$/);
  const lora = await withW(await tensors(() => {}));
  assert.is(lora.pairs.length, TINY.numLayers);
});

test('checkpoints: incomplete, foreign or mismatched state is refused', async () => {
  const dir = (files: Record<string, string>) => new MapDirSource('run/checkpoint-4', new Map(Object.entries(files).map(([k, v]) => [k, enc(v)])));
  await rejectsUser(readTrainerState(dir({})), /^run\/checkpoint-4: no trainer_state\.json \(the checkpoint is incomplete\)\.$/);
  await rejectsUser(readTrainerState(dir({ 'trainer_state.json': '{' })), /trainer_state\.json: not valid JSON/);
  await rejectsUser(readTrainerState(dir({ 'trainer_state.json': '{"version": 99}' })), /trainer_state\.json: not a webqlora trainer state \(version 99\)/);
  const be = createReferenceBackend();
  const model = await loadModel(syntheticFromConfig(TINY, 1), be, { quant: 'none' });
  const lora = new LoraAdapters(be, TINY, { ...DEFAULT_LORA, r: 2 }, true);
  const noData = { next: () => { throw new Error('unused'); }, state: () => null, restore: () => {} };
  const trainer = new Trainer(model, lora, noData, { ...TRAIN_DEFAULTS, batchSize: 1, seqLen: 4, totalSteps: 1 });
  const other = enc(adapterConfigJson({ ...DEFAULT_LORA, r: 4 }, 'base'));
  const state = { version: STATE_VERSION, step: 1, data: null, options: trainer.o, lora: lora.config, baseModel: 'b', history: [] };
  const ck = new MapDirSource('run/checkpoint-1', new Map([['adapter_config.json', other], ['adapter_model.safetensors', await serializeSafetensors([])]]));
  await rejectsUser(restoreCheckpoint(ck, trainer, state), /^run\/checkpoint-1: the checkpoint's adapter \(r 4, alpha 32, targets .*\) does not match this run's LoRA settings\.$/);
  throwsUser(() => trainer.importOptimizer(new Map()), /^optimizer state: layers\.0\.q_proj\.lora_A\.exp_avg is missing or has the wrong size \(expected \d+ values\)\.$/);
});

test('trainer: sample packing with a preference method is refused', async () => {
  const be = createReferenceBackend();
  const model = await loadModel(syntheticFromConfig(TINY, 1), be, { quant: 'none' });
  const lora = new LoraAdapters(be, TINY, { ...DEFAULT_LORA, r: 2 }, true);
  const noData = { next: () => { throw new Error('unused'); }, state: () => null, restore: () => {} };
  for (const method of ['dpo', 'orpo'] as const) {
    throwsUser(() => new Trainer(model, lora, noData, { ...TRAIN_DEFAULTS, batchSize: 1, seqLen: 4, totalSteps: 1, method, packing: true }),
      /^sample packing is for SFT examples: preference pairs are not packed \(drop --packing\)\.$/, method);
  }
  // SFT packs
  new Trainer(model, lora, noData, { ...TRAIN_DEFAULTS, batchSize: 1, seqLen: 4, totalSteps: 1, packing: true }).free();
});

test('checkpoints: a saved checkpoint resumes only with the method and beta it was trained with', async () => {
  const be = createReferenceBackend();
  const model = await loadModel(syntheticFromConfig(TINY, 1), be, { quant: 'none' });
  const noData = { next: () => { throw new Error('unused'); }, state: () => null, restore: () => {} };
  const trainer = (o: { method?: 'sft' | 'dpo' | 'orpo'; beta?: number }) =>
    new Trainer(model, new LoraAdapters(be, TINY, { ...DEFAULT_LORA, r: 2 }, true), noData, { ...TRAIN_DEFAULTS, batchSize: 1, seqLen: 4, totalSteps: 2, ...o });
  // a run saves checkpoint-1 the way the CLI and the browser page do, into memory
  const saved = async (o: { method?: 'sft' | 'dpo' | 'orpo'; beta?: number }) => {
    const t = trainer(o);
    t.step = 1;
    const out = new MemoryOutDir('run');
    const name = await saveCheckpoint(out, t, [], 'base');
    t.free();
    const files = new Map([...out.files].filter(([k]) => k.startsWith(`${name}/`)).map(([k, v]) => [k.slice(name.length + 1), v]));
    const dir = new MapDirSource(`run/${name}`, files);
    return { dir, state: await readTrainerState(dir) };
  };
  const resume = async (from: { method?: 'sft' | 'dpo' | 'orpo'; beta?: number }, to: { method?: 'sft' | 'dpo' | 'orpo'; beta?: number }) => {
    const { dir, state } = await saved(from);
    const t = trainer(to);
    try {
      await restoreCheckpoint(dir, t, state);
      return t.step;
    } finally {
      t.free();
    }
  };
  await rejectsUser(resume({}, { method: 'dpo' }), /^run\/checkpoint-1: the checkpoint was trained with --method sft, not dpo \(beta 0\.1\); resume with the same method and beta\.$/);
  await rejectsUser(resume({ method: 'dpo' }, {}), /^run\/checkpoint-1: the checkpoint was trained with --method dpo \(beta 0\.1\), not sft; resume with the same method and beta\.$/);
  await rejectsUser(resume({ method: 'dpo', beta: 0.1 }, { method: 'dpo', beta: 0.5 }), /^run\/checkpoint-1: the checkpoint was trained with --method dpo \(beta 0\.1\), not dpo \(beta 0\.5\); resume with the same method and beta\.$/);
  await rejectsUser(resume({ method: 'orpo' }, { method: 'dpo' }), /^run\/checkpoint-1: the checkpoint was trained with --method orpo \(beta 0\.1\), not dpo \(beta 0\.1\); resume with the same method and beta\.$/);
  // the same method and beta (β given or left at its default) resume
  assert.is(await resume({ method: 'dpo' }, { method: 'dpo', beta: 0.1 }), 1);
  assert.is(await resume({}, { method: 'sft' }), 1);
});

test('model configs, generation and data: the remaining sentences', async () => {
  throwsUser(() => configFromHf({ architectures: [] }, 'm/config.json'), /^m\/config\.json: "architectures" must be a non-empty list of names\.$/);
  throwsUser(() => configFromHf({ architectures: ['GPT2LMHeadModel'] }, 'm/config.json'), /architecture GPT2LMHeadModel is not supported/);
  const be = createReferenceBackend();
  const model = await loadModel(syntheticFromConfig(TINY, 1), be, { quant: 'none', maxPositions: 8 });
  await rejectsUser(generate(model, []), /^the prompt is empty/);
  await rejectsUser(generate(model, [1, 2, 3, 4, 5, 6, 7, 8]), /^the prompt has 8 tokens; the model's context holds 8\.$/);
  await rejectsUser(generate(model, [1, 99]), /prompt token id 99 is outside the vocabulary \[0, 37\)/);
  const ex = [{ inputIds: [1, 2, 3], labels: [1, 2, 3] }];
  throwsUser(() => new Batcher(ex, { batchSize: 0 }), /^batch size must be a positive integer, got 0\.$/);
  throwsUser(() => new Batcher(ex, { batchSize: 1, gradAccum: 1.5 }), /^gradient accumulation must be a positive integer, got 1\.5\.$/);
  throwsUser(() => new Batcher(ex, { batchSize: 1, order: 'random' as 'grouped' }), /^unknown batch order "random"\.$/);
  throwsUser(() => new Batcher([], { batchSize: 1 }), /^there are no examples to batch\.$/);
  throwsUser(() => new Batcher(ex, { batchSize: 2, dropLast: true }), /^1 examples cannot fill one batch of 2 \(lower the batch size\)\.$/);
  throwsUser(() => new Batcher([{ inputIds: [1], labels: [] }], { batchSize: 1 }), /^example 0: input ids and labels must be non-empty and of equal length\.$/);
  // a 300 MiB '[', newline, spaces — without holding it
  const huge: ByteSource = { name: 'big.json', size: 300 * 2 ** 20, read: async (o, n) => new Uint8Array(n).fill(32).map((c, i) => (o + i === 0 ? 91 : o + i === 1 ? 10 : c)) };
  await rejectsUser(readRecords(huge, { layout: 'json' }).next(), /^big\.json: a JSON array of 300 MiB is too large to read whole \(write one record per line as JSONL instead\)\.$/);
});

test('a fused Phi-3 module whose row split falls inside a quantization block is refused in one sentence', async () => {
  const { openModelPath } = await import('../../src/io/node-model.ts');
  const { join } = await import('node:path');
  const { FIXTURES } = await import('../helpers/index.ts');
  const src = await openModelPath(join(FIXTURES, 'archs', 'phi3'));
  await rejectsUser(loadModel(src, createReferenceBackend(), { quant: 'nf4', blocksize: 4096 }), /qkv_proj\.weight: the fused module is quantized whole .* its split at row 96 falls inside a block of 4096 values; use a blocksize that divides 6144/);
  await src.close();
});

test('a forward with LoRA dropout refuses a workspace made for another rate (it would train without the adapter\'s dropout)', async () => {
  const be = createReferenceBackend();
  const model = await loadModel(syntheticFromConfig(TINY, 1), be, { quant: 'nf4', blocksize: 32 });
  const lora = new LoraAdapters(be, TINY, { ...DEFAULT_LORA, r: 2, dropout: 0.1 }, true);
  const ws = new Workspace(be, TINY, { batch: 1, seqLen: 4, training: true, checkpointing: false, loraRank: 2 });
  be.write(ws.ids, Int32Array.of(1, 2, 3, 4));
  assert.throws(() => model.forward(ws, 1, 4, { lora, seed: 7 }), /^the workspace was made for LoRA dropout 0, the adapter's is 0\.1 \(Workspace option loraDropout\)$/);
  model.forward(ws, 1, 4, { lora }); // no seed: no dropout, as in eval
});

test.run();
