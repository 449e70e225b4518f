// The families beyond the transformers comparison (archs.test.ts): every config key that would
// change the math is implemented or refused by name; both config layouts read alike; each family
// trains in NF4, generates with its KV cache (and window) exactly as a full forward predicts,
// merges back into its own HF layout, and round-trips through a bnb 4-bit checkpoint.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { WebqloraError } from '../../src/errors.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { writeBnbModel } from '../../src/io/bnb.ts';
import { configFromHf } from '../../src/io/hf-config.ts';
import { Workspace, type LlamaModel } from '../../src/model/llama.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { mergeAdapter } from '../../src/model/merge.ts';
import { generate } from '../../src/generate/generate.ts';
import { evaluate } from '../../src/eval/evaluate.ts';
import { forwardLoss } from '../../src/train/step.ts';
import { Trainer, TRAIN_DEFAULTS } from '../../src/train/trainer.ts';
import { ARCHS, assertLogitsLikeTransformers, FAMILIES, readReference } from './archs.ts';
import { batchLogits } from '../helpers/logits.ts';
import { assertBitsEqual, FIXTURES, loadAdapterAt } from '../helpers/index.ts';

const cfgOf = (fam: string) => JSON.parse(readFileSync(join(ARCHS, fam, 'config.json'), 'utf8')) as Record<string, unknown>;

function refused(json: Record<string, unknown>, re: RegExp, what: string): void {
  try {
    configFromHf(json, 'm/config.json');
  } catch (e) {
    assert.ok(e instanceof WebqloraError, `${what}: not a WebqloraError: ${String(e)}`);
    assert.match((e as Error).message, /^m\/config\.json: /, what);
    assert.match((e as Error).message, re, what);
    assert.not.match((e as Error).message, /\n/, `${what}: one line`);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

test('config: every fixture config reads; an unknown key is refused by name, for every family', () => {
  for (const fam of FAMILIES) {
    const j = cfgOf(fam);
    configFromHf(j, 'm/config.json');
    // walk the keys: each key the fixture has is understood (removing it is fine or required), and
    // any key the family does not know is refused, whatever its value
    for (const k of ['num_experts', 'num_local_experts', 'moe_intermediate_size', 'attn_implementation_of_future', 'logit_scale', 'residual_multiplier']) {
      refused({ ...j, [k]: 1 }, new RegExp(`key "${k}" is not known for \\w+ models`), `${fam} ${k}`);
    }
  }
});

test('config: each unimplemented setting that changes the math is refused, naming its key', () => {
  const llama = cfgOf('llama3'), gemma2 = cfgOf('gemma2'), gemma3 = cfgOf('gemma3'), phi3 = cfgOf('phi3'), qwen2 = cfgOf('qwen2'), mistral = cfgOf('mistral'), qwen3 = cfgOf('qwen3');
  for (const type of ['yarn', 'longrope', 'dynamic', 'su', 'ntk']) {
    refused({ ...llama, rope_parameters: { rope_type: type, rope_theta: 1e4, factor: 2 } }, new RegExp(`rope_parameters rope type "${type}" is not supported`), `v5 ${type}`);
    const v4: Record<string, unknown> = { ...llama, rope_theta: 1e4, rope_scaling: { rope_type: type, factor: 2 } };
    delete v4.rope_parameters;
    refused(v4, new RegExp(`rope_scaling rope type "${type}" is not supported`), `v4 ${type}`);
    refused({ ...gemma3, rope_parameters: { ...(gemma3.rope_parameters as object), full_attention: { rope_type: type, rope_theta: 1e6 } } }, /rope_parameters\.full_attention rope type/, `gemma3 ${type}`);
  }
  refused({ ...llama, rope_parameters: { rope_type: 'default', rope_theta: 1e4, beta_fast: 32 } }, /rope_parameters\.beta_fast is not supported with rope type "default"/, 'stray rope key');
  refused({ ...llama, attention_bias: true }, /"attention_bias": true is not supported/, 'llama attention_bias');
  refused({ ...qwen3, attention_bias: true }, /"attention_bias": true is not supported/, 'qwen3 attention_bias');
  refused({ ...llama, mlp_bias: true }, /"mlp_bias": true is not supported/, 'mlp_bias');
  refused({ ...qwen2, use_mrope: true }, /"use_mrope": true is not supported \(multimodal RoPE/, 'mrope');
  refused({ ...phi3, attention_bias: true }, /"attention_bias": true is not supported/, 'phi3 attention_bias');
  configFromHf({ ...qwen2, use_mrope: false }, 'm'); // Qwen2.5's own config carries it
  configFromHf({ ...phi3, attention_bias: false }, 'm'); // Phi-3.5's own config carries it
  refused({ ...llama, attention_dropout: 0.1 }, /"attention_dropout": 0\.1 is not supported/, 'attention_dropout');
  refused({ ...llama, rope_interleaved: true }, /"rope_interleaved": true is not supported/, 'rope_interleaved');
  refused({ ...llama, hidden_act: 'gelu' }, /hidden_act "gelu" is not supported \(expected "silu"\)/, 'hidden_act');
  refused({ ...gemma2, hidden_activation: 'gelu' }, /hidden_activation "gelu" is not supported/, 'hidden_activation');
  refused({ ...gemma3, use_bidirectional_attention: true }, /"use_bidirectional_attention": true is not supported/, 'bidirectional');
  refused({ ...phi3, rope_parameters: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.75 } }, /partial_rotary_factor 0\.75 is not supported/, 'partial rotary (v5)');
  refused({ ...phi3, partial_rotary_factor: 0.5 }, /"partial_rotary_factor": 0\.5 is not supported/, 'partial rotary (v4)');
  refused({ ...phi3, embd_pdrop: 0.1 }, /"embd_pdrop": 0\.1 is not supported/, 'embd_pdrop');
  refused({ ...phi3, resid_pdrop: 0.1 }, /"resid_pdrop": 0\.1 is not supported/, 'resid_pdrop');
  refused({ ...gemma2, layer_types: ['sliding_attention', 'chunked_attention'] }, /layer_types\[1\] "chunked_attention" is not supported/, 'layer type');
  refused({ ...gemma2, layer_types: ['sliding_attention'] }, /"layer_types" must list one type per layer \(2\)/, 'layer_types length');
  refused({ ...qwen2, use_sliding_window: true, layer_types: ['sliding_attention', 'full_attention'] }, /"layer_types" has sliding layers but "sliding_window" is not set/, 'qwen2 window without size');
  refused({ ...llama, sliding_window: 8 }, /key "sliding_window" is not known for LlamaForCausalLM models/, 'llama window');
  refused({ ...mistral, rope_parameters: { full_attention: { rope_theta: 1e4 }, sliding_attention: { rope_theta: 1e3 } } }, /a separate RoPE for sliding layers is only implemented for Gemma 3/, 'per-type rope elsewhere');
  refused({ ...llama, architectures: ['Gemma3ForConditionalGeneration'] }, /architecture Gemma3ForConditionalGeneration is not supported/, 'multimodal');
});

test('config: the transformers 4 layout reads exactly as the transformers 5 one', () => {
  const same = (v5: Record<string, unknown>, v4: Record<string, unknown>, what: string) => {
    const a = configFromHf(v5, 'a'), b = configFromHf(v4, 'b');
    delete a.hfConfig;
    delete b.hfConfig;
    assert.equal(b, a, what);
  };
  const llama = cfgOf('llama3');
  const { rope_type: _t, rope_theta, ...scaling } = llama.rope_parameters as Record<string, unknown>;
  const llamaV4: Record<string, unknown> = { ...llama, rope_theta, rope_scaling: { rope_type: 'llama3', ...scaling } };
  delete llamaV4.rope_parameters;
  same(llama, llamaV4, 'llama3');
  const gemma3 = cfgOf('gemma3');
  const rp = gemma3.rope_parameters as Record<string, Record<string, unknown>>;
  const gemma3V4: Record<string, unknown> = { ...gemma3, rope_theta: rp.full_attention!.rope_theta, rope_local_base_freq: rp.sliding_attention!.rope_theta, sliding_window_pattern: 2 };
  delete gemma3V4.rope_parameters;
  delete gemma3V4.layer_types;
  delete gemma3V4._sliding_window_pattern;
  same(gemma3, gemma3V4, 'gemma3 (pattern 2 = sliding, full)');
  const gemma2 = cfgOf('gemma2');
  const gemma2V4: Record<string, unknown> = { ...gemma2, rope_theta: 10000, hidden_act: 'gelu_pytorch_tanh' };
  delete gemma2V4.rope_parameters;
  delete gemma2V4.layer_types;
  same(gemma2, gemma2V4, 'gemma2 (alternating window by default)');
  const qwen2 = cfgOf('qwen2');
  const qwen2V4: Record<string, unknown> = { ...qwen2, rope_theta: 1e6 };
  delete qwen2V4.rope_parameters;
  delete qwen2V4.layer_types;
  same(qwen2, qwen2V4, 'qwen2');
});

let wasm: Backend;
test.before(async () => { wasm = await createWasmBackend(); });
test.after(async () => { await wasm.destroy(); });

async function open(dir: string, quant: 'none' | 'nf4', maxPositions = 32): Promise<LlamaModel> {
  const src = await openModelPath(dir);
  try {
    return await loadModel(src, wasm, { quant, maxPositions });
  } finally {
    await src.close();
  }
}

for (const fam of FAMILIES) {
  test(`${fam}: NF4 base + LoRA trains and its loss falls`, async () => {
    const dir = join(ARCHS, fam), ref = await readReference(dir);
    const model = await open(dir, 'nf4');
    const lora = new LoraAdapters(wasm, model.config, { r: 4, alpha: 8, dropout: 0.05, targets: 'all-linear', useRslora: false }, true);
    let seed = 1;
    lora.initPeft(() => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32));
    const data = { next: () => ref.batch, state: () => null, restore: () => {} };
    const trainer = new Trainer(model, lora, data, { ...TRAIN_DEFAULTS, batchSize: 2, seqLen: 24, totalSteps: 12, lr: 5e-3, warmupRatio: 0 });
    const losses: number[] = [];
    for (let i = 0; i < 12; i++) losses.push((await trainer.trainStep()).loss);
    assert.ok(losses[11]! < 0.9 * losses[0]!, `${fam}: loss ${losses[0]} → ${losses[11]}`);
    trainer.free();
    lora.free();
    model.free();
  });

  test(`${fam}: greedy generation with the KV cache equals the argmax of full forwards`, async () => {
    const dir = join(ARCHS, fam), ref = await readReference(dir);
    const model = await open(dir, 'none');
    const lora = await loadAdapterAt(join(dir, 'adapter'), wasm, model.config);
    // 12 prompt tokens + 12 generated: past the window of 8 for the sliding families
    const prompt = [...ref.batch.ids.subarray(0, 12)];
    const res = await generate(model, prompt, { maxNewTokens: 12, temperature: 0, adapters: lora, stopIds: [], prefillChunk: 5 });
    const seq = [...prompt];
    const V = model.config.vocabSize;
    for (let i = 0; i < 12; i++) {
      const T = seq.length;
      const ws = new Workspace(wasm, model.config, { batch: 1, seqLen: T, training: false, checkpointing: false, loraRank: lora.maxRank });
      forwardLoss(model, ws, lora, { ids: Int32Array.from(seq), targets: new Int32Array(T).fill(-100), B: 1, T }, undefined);
      model.headLastRow(ws, T - 1);
      const l = (await wasm.read(ws.lastLogits)) as Float32Array;
      let best = 0;
      for (let j = 1; j < V; j++) if (l[j]! > l[best]!) best = j;
      seq.push(best);
      ws.free();
    }
    assert.equal(res.outputIds, seq.slice(12), `${fam}: cached generation`);
    lora.free();
    model.free();
  });

  test(`${fam}: merge writes the family's own HF layout; the merged model's logits are transformers + PEFT's`, async () => {
    const dir = join(ARCHS, fam), ref = await readReference(dir);
    const out = mkdtempSync(join(tmpdir(), `webqlora-merge-${fam}-`));
    const src = await openModelPath(dir);
    const model = await loadModel(src, wasm, { quant: 'none', maxPositions: 24 });
    const lora = await loadAdapterAt(join(dir, 'adapter'), wasm, model.config);
    await mergeAdapter(src, lora, wasm, new NodeOutDir(out), { dtype: 'F32', quant: 'none', doubleQuant: false, blocksize: 64 });
    await src.close();
    const merged = await openModelPath(out);
    const theirs = await openModelPath(dir);
    assert.equal(merged.tensors.map((t) => [t.name, t.shape]), theirs.tensors.map((t) => [t.name, t.shape]), `${fam}: tensor names and shapes`);
    const cfgIn = cfgOf(fam), cfgOut = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    for (const k of Object.keys(cfgIn)) if (k !== 'dtype') assert.equal(cfgOut[k], cfgIn[k], `${fam}: config key ${k}`);
    await theirs.close();
    const mm = await loadModel(merged, wasm, { quant: 'none', maxPositions: 24 });
    await merged.close();
    assertLogitsLikeTransformers(await batchLogits(mm, ref.batch), ref.loraLogits, `${fam} merged`);
    const a = await evaluate(model, [ref.batch], { maxBatch: 2, maxSeqLen: 24, adapters: lora });
    const b = await evaluate(mm, [ref.batch], { maxBatch: 2, maxSeqLen: 24 });
    assert.ok(Math.abs(b.loss / a.loss - 1) < 1e-5, `${fam}: merged loss ${b.loss}, adapter loss ${a.loss}`);
    mm.free();
    lora.free();
    model.free();
    rmSync(out, { recursive: true, force: true });
  });

  test(`${fam}: a bnb 4-bit checkpoint (sharded) written by quantize loads to the same model as NF4 on load`, async () => {
    const dir = join(ARCHS, fam), ref = await readReference(dir);
    const out = mkdtempSync(join(tmpdir(), `webqlora-bnb-${fam}-`));
    const src = await openModelPath(dir);
    // sharded (a few tensors per file), as save_pretrained shards large checkpoints
    await writeBnbModel(src, new NodeOutDir(out), { quantType: 'nf4', doubleQuant: true, blocksize: 64, maxShardBytes: 100_000 });
    assert.ok(readFileSync(join(out, 'model.safetensors.index.json')).length > 0, `${fam}: sharded`);
    await src.close();
    const a = await open(dir, 'nf4', 24), b = await open(out, 'nf4', 24);
    const ea = await evaluate(a, [ref.batch], { maxBatch: 2, maxSeqLen: 24 }), eb = await evaluate(b, [ref.batch], { maxBatch: 2, maxSeqLen: 24 });
    assert.is(eb.loss, ea.loss, `${fam}: the same NF4 weights`);
    a.free();
    b.free();
    rmSync(out, { recursive: true, force: true });
  });
}

test('llama_kquant_mix.gguf (Q4_K_M mix): loads as NF4 (default) and as f32, generates, trains and its loss falls', async () => {
  const file = join(FIXTURES, 'gguf-kquants', 'llama_kquant_mix.gguf');
  const ids = Int32Array.from([1, 415, 261, 261, 300, 275, 389, 35, 266, 411, 307, 286, 291, 265, 288, 466]);
  const batch = { ids, targets: Int32Array.from(ids, (_, i) => (i + 1 < ids.length ? ids[i + 1]! : -100)), B: 1, T: ids.length };
  for (const quant of ['nf4', 'none'] as const) {
    const model = await open(file, quant, 32);
    assert.is(model.quant.mode, quant);
    const out = await generate(model, [1, 415, 261], { maxNewTokens: 6, temperature: 0, stopIds: [] });
    assert.is(out.outputIds.length, 6);
    const lora = new LoraAdapters(wasm, model.config, { r: 8, alpha: 16, dropout: 0, targets: 'all-linear', useRslora: false }, true);
    let seed = 5;
    lora.initPeft(() => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32));
    const trainer = new Trainer(model, lora, { next: () => batch, state: () => null, restore: () => {} }, { ...TRAIN_DEFAULTS, batchSize: 1, seqLen: 16, totalSteps: 6, lr: 1e-2, warmupRatio: 0, maxGradNorm: 0 });
    const losses: number[] = [];
    for (let i = 0; i < 6; i++) losses.push((await trainer.trainStep()).loss);
    assert.ok(losses.every(Number.isFinite) && losses[5]! < losses[0]!, `${quant}: loss ${losses.join(' → ')}`);
    trainer.free();
    lora.free();
    model.free();
  }
});

test('loss head in chunks: a chunk of 3 rows gives the loss and gradients of one chunk for all rows', async () => {
  const dir = join(ARCHS, 'gemma2'), ref = await readReference(dir); // final soft-cap on
  const model = await open(dir, 'none', 24);
  const lora = await loadAdapterAt(join(dir, 'adapter'), wasm, model.config, { withGrads: true, dropout: 0 });
  const run = async (headRows: number | undefined) => {
    const ws = new Workspace(wasm, model.config, { batch: 2, seqLen: 24, training: true, checkpointing: false, loraRank: lora.maxRank, headRows });
    const acc = wasm.alloc('f32', 48, 'acc');
    wasm.fill(acc, 0);
    lora.zeroGrads();
    const { forwardBackward, scoredTokens } = await import('../../src/train/step.ts');
    forwardBackward(model, ws, lora, ref.batch, 1 / scoredTokens(ref.batch), undefined, acc);
    const out = { losses: (await wasm.read(acc)) as Float32Array, grads: [] as Float32Array[], rows: ws.headRows };
    for (const p of lora.params) out.grads.push((await wasm.read(p.grad)) as Float32Array);
    wasm.free(acc);
    ws.free();
    return out;
  };
  const whole = await run(undefined), chunked = await run(3);
  assert.is(whole.rows, 48);
  assert.is(chunked.rows, 3);
  for (let i = 0; i < 48; i++) assert.ok(Math.abs(whole.losses[i]! - chunked.losses[i]!) <= 1e-6 * (1 + Math.abs(whole.losses[i]!)), `loss of row ${i}`);
  whole.grads.forEach((g, k) => {
    for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i]! - chunked.grads[k]![i]!) <= 1e-6 + 1e-5 * Math.abs(g[i]!), `gradient ${k}[${i}]: ${g[i]} whole, ${chunked.grads[k]![i]} chunked`);
  });
  lora.free();
  model.free();
});

test('loss head chunks run in groups: the losses and gradients of one chunk at a time, bit for bit (a short last chunk runs alone)', async () => {
  const dir = join(ARCHS, 'gemma2'), ref = await readReference(dir); // final soft-cap on
  const model = await open(dir, 'none', 24);
  const lora = await loadAdapterAt(join(dir, 'adapter'), wasm, model.config, { withGrads: true, dropout: 0 });
  const { forwardBackward, scoredTokens } = await import('../../src/train/step.ts');
  const run = async (headRows: number, headGroup: number) => {
    const ws = new Workspace(wasm, model.config, { batch: 2, seqLen: 24, training: true, checkpointing: false, loraRank: lora.maxRank, headRows, headGroup });
    const acc = wasm.alloc('f32', 48, 'acc');
    wasm.fill(acc, 0);
    lora.zeroGrads();
    forwardBackward(model, ws, lora, ref.batch, 1 / scoredTokens(ref.batch), undefined, acc);
    const out = [(await wasm.read(acc)) as Float32Array];
    for (const p of lora.params) out.push((await wasm.read(p.grad)) as Float32Array);
    const group = ws.headGroup;
    wasm.free(acc);
    ws.free();
    return { out, group };
  };
  // a chunk size whose last group ends in a chunk of 1–3 rows after whole ones (lossHead splits it off)
  const s = scoredTokens(ref.batch);
  const H = [4, 5, 6, 7, 8, 9, 10, 11].find((h) => { const n = s % (4 * h); return n > h && n % h > 0 && n % h < 4; });
  assert.ok(H !== undefined, `no chunk size gives a short last chunk for ${s} scored rows`);
  for (const h of [H!, 4]) {
    const one = await run(h, 1), grouped = await run(h, 4);
    assert.is(one.group, 1);
    assert.is(grouped.group, 4);
    one.out.forEach((a, k) => assertBitsEqual(grouped.out[k]!, a, `${h}-row chunks: ${k === 0 ? 'losses' : `gradient ${k - 1}`}`));
  }
  lora.free();
  model.free();
});

test('PEFT targeting: full paths, regex, layers_to_transform, rank_pattern and alpha_pattern pick PEFT\'s modules and ranks; save and load round-trip', async () => {
  const model = await open(join(ARCHS, 'phi3'), 'none', 8);
  const c = model.config;
  const lora = new LoraAdapters(wasm, c, {
    r: 4, alpha: 8, dropout: 0, useRslora: false, targets: '.*\\.(qkv_proj|down_proj)', layersToTransform: [1],
    rankPattern: { qkv_proj: 2 }, alphaPattern: { 'layers\\.1\\.mlp\\.down_proj': 32 },
  }, false);
  assert.equal(lora.modules.map((m) => [m.path, m.r, m.alpha, m.scaling, m.parts.map((p) => p.name)]), [
    ['model.layers.1.self_attn.qkv_proj', 2, 8, 4, ['q_proj', 'k_proj', 'v_proj']],
    ['model.layers.1.mlp.down_proj', 4, 32, 8, ['down_proj']],
  ]);
  const paths = new LoraAdapters(wasm, c, { r: 4, alpha: 8, dropout: 0, useRslora: false, targets: ['model.layers.0.mlp.gate_up_proj', 'o_proj'] }, false);
  assert.equal(paths.modules.map((m) => m.path), ['model.layers.0.self_attn.o_proj', 'model.layers.0.mlp.gate_up_proj', 'model.layers.1.self_attn.o_proj']);
  let seed = 3;
  lora.initPeft(() => ((seed = (seed * 69069 + 1) >>> 0) / 2 ** 32));
  for (const m of lora.modules) for (const p of m.parts) wasm.write(p.B, new Float32Array(p.N * p.r).map((_, i) => i * 0.01 + p.row0));
  const out = mkdtempSync(join(tmpdir(), 'webqlora-peft-'));
  const { saveAdapter } = await import('../../src/model/peft.ts');
  await saveAdapter(lora, new NodeOutDir(out), 'phi3');
  const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal([cfg.target_modules, cfg.layers_to_transform, cfg.rank_pattern, cfg.alpha_pattern], ['.*\\.(qkv_proj|down_proj)', [1], { qkv_proj: 2 }, { 'layers\\.1\\.mlp\\.down_proj': 32 }]);
  const back = await loadAdapterAt(out, wasm, c);
  for (let k = 0; k < lora.params.length; k++) assert.equal(await wasm.read(back.params[k]!.value), await wasm.read(lora.params[k]!.value), `param ${k}`);
  rmSync(out, { recursive: true, force: true });
  back.free();
  paths.free();
  lora.free();
  model.free();
});

test.run();
