// `synthetic:NAME` models: the shapes of real Llama-family models with seeded random weights,
// generated one tensor at a time on request (no file on disk). For benchmarks and memory tests.
import { WebqloraError } from '../errors.ts';
import type { TensorRef, WeightSource } from '../io/weights.ts';
import { expectedTensors, type ModelConfig } from './config.ts';

const base = {
  architecture: 'LlamaForCausalLM' as const,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  attentionBias: false,
  bosTokenId: 1,
  eosTokenIds: [2],
};

/** Shapes of well-known checkpoints (llama2.c tinyllamas, TinyLlama, Llama 2, Llama 3). */
export const SYNTHETIC_CONFIGS: Record<string, ModelConfig> = {
  'stories260K': { ...base, hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKVHeads: 4, headDim: 8, vocabSize: 512, maxPositionEmbeddings: 512, tieWordEmbeddings: true, torchDtype: 'F32' },
  'stories15M': { ...base, hiddenSize: 288, intermediateSize: 768, numLayers: 6, numHeads: 6, numKVHeads: 6, headDim: 48, vocabSize: 32000, maxPositionEmbeddings: 256, tieWordEmbeddings: true, torchDtype: 'F32' },
  'stories110M': { ...base, hiddenSize: 768, intermediateSize: 2048, numLayers: 12, numHeads: 12, numKVHeads: 12, headDim: 64, vocabSize: 32000, maxPositionEmbeddings: 1024, tieWordEmbeddings: true, torchDtype: 'F32' },
  'tinyllama-1.1b': { ...base, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKVHeads: 4, headDim: 64, vocabSize: 32000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false, torchDtype: 'BF16' },
  'llama-2-7b': { ...base, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKVHeads: 32, headDim: 128, vocabSize: 32000, maxPositionEmbeddings: 4096, tieWordEmbeddings: false, torchDtype: 'F16' },
  'llama-3-8b': { ...base, hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKVHeads: 8, headDim: 128, vocabSize: 128256, maxPositionEmbeddings: 8192, ropeTheta: 500000, tieWordEmbeddings: false, torchDtype: 'BF16', bosTokenId: 128000, eosTokenIds: [128001] },
};

export function isSynthetic(spec: string): boolean {
  return spec.startsWith('synthetic:');
}

/** The WeightSource of `synthetic:NAME` (seed 0 unless given). */
export function syntheticSource(spec: string, seed = 0): WeightSource {
  const name = spec.replace(/^synthetic:/, '');
  const config = SYNTHETIC_CONFIGS[name];
  if (!config) throw new WebqloraError(`${spec}: unknown synthetic model (expected one of ${Object.keys(SYNTHETIC_CONFIGS).map((n) => 'synthetic:' + n).join(', ')}).`);
  return syntheticFromConfig(config, seed, spec);
}

/** Seeded random weights in the shapes of any config (tests use tiny ones). */
export function syntheticFromConfig(config: ModelConfig, seed = 0, spec = 'synthetic:custom'): WeightSource {
  const tensors: TensorRef[] = expectedTensors(config).map((t) => ({ name: t.name, dtype: config.torchDtype, shape: t.shape }));
  const byName = new Map(tensors.map((t) => [t.name, t]));
  return {
    format: 'synthetic',
    name: spec,
    config,
    tensors,
    vocab: null,
    async readFloat(tname: string, into?: Float32Array): Promise<Float32Array> {
      const t = byName.get(tname);
      if (!t) throw new WebqloraError(`${spec}: no tensor ${tname}.`);
      const n = t.shape.reduce((a, b) => a * b, 1);
      const out = into && into.length === n ? into : new Float32Array(n);
      // xorshift32 seeded by the tensor name: the same tensor is the same on every read
      let s = (hashName(tname) ^ Math.imul(seed + 1, 0x9e3779b9)) >>> 0 || 1;
      if (tname.endsWith('norm.weight')) {
        // RMSNorm gains near 1
        for (let i = 0; i < n; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; out[i] = 1 + ((s >>> 0) / 4294967296 - 0.5) * 0.1; }
      } else {
        // uniform with the standard deviation 0.02 of Llama's initializer_range
        const a = 0.02 * Math.sqrt(3) * 2;
        for (let i = 0; i < n; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; out[i] = ((s >>> 0) / 4294967296 - 0.5) * a; }
      }
      return out;
    },
    async readQuant(): Promise<null> {
      return null;
    },
    async close(): Promise<void> {},
  };
}

function hashName(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
