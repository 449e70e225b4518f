// The synthetic shapes of real checkpoints (`synthetic:NAME`): each opens, has the published
// dimensions and its family's switches (set by configFromHf from the real config.json), lists
// the family's tensors, and generates the same weights on every read.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { expectedTensors, paramCount, variantOf, type FamilyId, type ModelConfig } from '../../src/model/config.ts';
import { SYNTHETIC_CONFIGS, syntheticSource } from '../../src/model/synthetic.ts';

interface Published {
  family: FamilyId; C: number; F: number; L: number; H: number; KVH: number; D: number; V: number; context: number;
  ropeTheta: number; tied: boolean; dtype: ModelConfig['torchDtype'];
  /** parameters as the model cards give them (rounded), ±1% */
  params: number;
}

// The dimensions of the model cards / config.json files on the Hugging Face Hub.
const PUBLISHED: Record<string, Published> = {
  'llama-3.2-1b': { family: 'llama', C: 2048, F: 8192, L: 16, H: 32, KVH: 8, D: 64, V: 128256, context: 131072, ropeTheta: 500000, tied: true, dtype: 'BF16', params: 1.24e9 },
  'qwen2.5-0.5b': { family: 'qwen2', C: 896, F: 4864, L: 24, H: 14, KVH: 2, D: 64, V: 151936, context: 32768, ropeTheta: 1e6, tied: true, dtype: 'BF16', params: 0.49e9 },
  'qwen3-0.6b': { family: 'qwen3', C: 1024, F: 3072, L: 28, H: 16, KVH: 8, D: 128, V: 151936, context: 40960, ropeTheta: 1e6, tied: true, dtype: 'BF16', params: 0.6e9 },
  'gemma-3-1b': { family: 'gemma3', C: 1152, F: 6912, L: 26, H: 4, KVH: 1, D: 256, V: 262144, context: 32768, ropeTheta: 1e6, tied: true, dtype: 'BF16', params: 1.0e9 },
  'smollm2-135m': { family: 'llama', C: 576, F: 1536, L: 30, H: 9, KVH: 3, D: 64, V: 49152, context: 8192, ropeTheta: 1e5, tied: true, dtype: 'BF16', params: 0.135e9 },
  'phi-3.5-mini': { family: 'phi3', C: 3072, F: 8192, L: 32, H: 32, KVH: 32, D: 96, V: 32064, context: 131072, ropeTheta: 1e4, tied: false, dtype: 'BF16', params: 3.82e9 },
};

for (const [name, p] of Object.entries(PUBLISHED)) {
  test(`synthetic:${name} opens with the published shape and the ${p.family} family`, async () => {
    const src = syntheticSource(`synthetic:${name}`);
    const c = src.config;
    assert.is(src.format, 'synthetic');
    assert.equal(
      [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKVHeads, c.headDim, c.vocabSize, c.maxPositionEmbeddings, c.ropeTheta, c.tieWordEmbeddings, c.torchDtype],
      [p.C, p.F, p.L, p.H, p.KVH, p.D, p.V, p.context, p.ropeTheta, p.tied, p.dtype],
    );
    assert.ok(c.variant, 'the variant is set (by configFromHf)');
    assert.is(variantOf(c).family, p.family);
    const n = paramCount(c);
    assert.ok(Math.abs(n / p.params - 1) <= 0.01, `${n} parameters, published ${p.params}`);
    assert.equal(src.tensors.map((t) => t.name), expectedTensors(c).map((t) => t.name));
    assert.ok(src.tensors.every((t) => t.dtype === p.dtype));
    // a norm and a small weight read twice: the same seeded values
    const norm = src.tensors.find((t) => t.name === 'model.norm.weight')!;
    const a = await src.readFloat(norm.name), b = await src.readFloat(norm.name);
    assert.equal(Array.from(a), Array.from(b));
    await src.close();
  });
}

test('family switches of the new shapes', () => {
  const v = (n: string) => variantOf(SYNTHETIC_CONFIGS[n]!);
  const llama = SYNTHETIC_CONFIGS['llama-3.2-1b']!;
  assert.equal(llama.ropeScaling, { ropeType: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.is(SYNTHETIC_CONFIGS['qwen2.5-0.5b']!.attentionBias, true, 'Qwen2 q/k/v biases');
  assert.is(v('qwen2.5-0.5b').slidingWindow, 0, 'use_sliding_window false');
  assert.is(v('qwen3-0.6b').qkNorm, true);
  assert.is(SYNTHETIC_CONFIGS['qwen3-0.6b']!.attentionBias, false);
  const g = v('gemma-3-1b');
  assert.equal([g.normPlusOne, g.embedScale, g.qkNorm, g.sandwichNorms, g.activation], [true, true, true, true, 'gelu_tanh']);
  assert.is(g.attnScale, 256 ** -0.5, 'query_pre_attn_scalar 256');
  assert.is(g.slidingWindow, 512);
  // sliding_window_pattern 6: every sixth layer is global
  assert.equal(g.slidingLayers.map((s, i) => (s ? -1 : i)).filter((i) => i >= 0), [5, 11, 17, 23]);
  assert.equal(g.ropeLocal, { theta: 10000, scaling: null });
  assert.equal([g.attnSoftcap, g.finalSoftcap], [0, 0]);
  assert.is(v('phi-3.5-mini').fused, true);
  assert.is(SYNTHETIC_CONFIGS['phi-3.5-mini']!.ropeScaling, null, 'no LongRoPE: plain RoPE');
  assert.is(v('phi-3.5-mini').slidingWindow, 0, 'a window longer than the context masks nothing');
  assert.is(v('smollm2-135m').family, 'llama');
});

test('Gemma norm weights are stored near 0 (the loader adds 1), others near 1', async () => {
  const gemma = syntheticSource('synthetic:gemma-3-1b'), smol = syntheticSource('synthetic:smollm2-135m');
  const g = await gemma.readFloat('model.layers.0.self_attn.q_norm.weight');
  const s = await smol.readFloat('model.layers.0.input_layernorm.weight');
  assert.ok(g.every((x) => Math.abs(x) <= 0.05), 'gemma');
  assert.ok(s.every((x) => Math.abs(x - 1) <= 0.05), 'smollm2');
});

test('an unknown name lists the shapes', () => {
  assert.throws(() => syntheticSource('synthetic:nope'), /synthetic:nope: unknown synthetic model \(expected one of .*synthetic:gemma-3-1b/);
});


test('readFloatRows: row slices, in order or not, equal the rows of the whole tensor (synthetic and HF safetensors)', async () => {
  const { openModelPath } = await import('../../src/io/node-model.ts');
  const { FIXTURES } = await import('../helpers/index.ts');
  const { join } = await import('node:path');
    for (const src of [syntheticSource('synthetic:stories260K'), await openModelPath(join(FIXTURES, 'archs', 'gemma2'))]) {
    const name = 'model.embed_tokens.weight', [V, C] = src.tensors.find((t) => t.name === name)!.shape as [number, number];
    const whole = await src.readFloat(name);
    for (const [r0, rows] of [[0, 7], [7, 100], [107, V - 107], [300, 5], [0, V]] as const) {
      assert.equal(await src.readFloatRows!(name, r0, rows), whole.subarray(r0 * C, (r0 + rows) * C), `${src.name} rows ${r0}+${rows}`);
    }
    await src.close();
  }
});

test.run();
