// Small synthetic Hugging Face model directories (config.json + safetensors), written with our
// own safetensors writer, for loader tests.
import { Rng } from './index.ts';
import { expectedTensors, type ModelConfig } from '../../src/model/config.ts';
import { configFromHf } from '../../src/io/hf-config.ts';
import { fromFloat32 } from '../../src/io/dtype.ts';
import { serializeSafetensors, type SafetensorsEntry } from '../../src/io/safetensors.ts';

/** HF config.json fields of a tiny Llama (C 16, F 24, L 2, H 4, KVH 2, V 40). */
export function tinyHfConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 40, max_position_embeddings: 64, rms_norm_eps: 1e-5,
    rope_theta: 10000.0, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32', ...over,
  };
}

export interface SynthOptions {
  /** Shard the weights: tensor name → shard file; if given, an index.json is written. */
  shardOf?: (name: string, i: number) => string;
  /** Drop or replace tensors before writing. */
  edit?: (entries: SafetensorsEntry[]) => SafetensorsEntry[];
  extraFiles?: Record<string, string | Uint8Array>;
}

/** Files of a synthetic HF directory with seeded random weights in the config's torch dtype. */
export async function synthHfFiles(cfgJson: Record<string, unknown>, seed = 1, opts: SynthOptions = {}): Promise<{ files: Map<string, Uint8Array>; config: ModelConfig; values: Map<string, Float32Array> }> {
  const config = configFromHf(cfgJson, 'config.json');
  const rng = new Rng(seed);
  const values = new Map<string, Float32Array>();
  let entries: SafetensorsEntry[] = [];
  for (const t of expectedTensors(config)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const v = t.name.endsWith('norm.weight') ? rng.uniform(n, 0.5, 1.5) : rng.f32(n, 0.05);
    const bytes = fromFloat32(v, config.torchDtype);
    values.set(t.name, v);
    entries.push({ name: t.name, dtype: config.torchDtype, shape: t.shape, data: bytes });
  }
  if (opts.edit) entries = opts.edit(entries);
  const files = new Map<string, Uint8Array>();
  const enc = new TextEncoder();
  files.set('config.json', enc.encode(JSON.stringify(cfgJson, null, 2)));
  if (opts.shardOf) {
    const byShard = new Map<string, SafetensorsEntry[]>();
    entries.forEach((e, i) => {
      const s = opts.shardOf!(e.name, i);
      if (!byShard.has(s)) byShard.set(s, []);
      byShard.get(s)!.push(e);
    });
    const weightMap: Record<string, string> = {};
    for (const [s, es] of byShard) {
      files.set(s, await serializeSafetensors(es, { format: 'pt' }));
      for (const e of es) weightMap[e.name] = s;
    }
    files.set('model.safetensors.index.json', enc.encode(JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2)));
  } else {
    files.set('model.safetensors', await serializeSafetensors(entries, { format: 'pt' }));
  }
  for (const [k, v] of Object.entries(opts.extraFiles ?? {})) files.set(k, typeof v === 'string' ? enc.encode(v) : v);
  return { files, config, values };
}
