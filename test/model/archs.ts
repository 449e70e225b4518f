// The architecture fixtures (test/fixtures/archs/, written by transformers 5.18 + PEFT 0.21):
// paths, the reference batch and the float64 perplexity of reference logits.
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { FileSource } from '../../src/io/node.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import type { MicroBatch } from '../../src/train/step.ts';
import { FIXTURES } from '../helpers/index.ts';

export const ARCHS = join(FIXTURES, 'archs');
export const FAMILIES = readdirSync(ARCHS, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
/** The DoRA fixtures (test/fixtures/dora/: the same generator, PEFT adapters with use_dora). */
export const DORA = join(FIXTURES, 'dora');
export const DORA_FAMILIES = readdirSync(DORA, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
/** Every fixture as [label, directory]: the families' LoRA adapters, then the DoRA ones. */
/** The fixture dirs the tests expect: a missing one fails here instead of shrinking the loops. */
const EXPECTED = { archs: ['gemma2', 'gemma3', 'llama3', 'mistral', 'phi3', 'qwen2', 'qwen3'], dora: ['llama3', 'qwen2'] };
if (FAMILIES.join() !== EXPECTED.archs.join() || DORA_FAMILIES.join() !== EXPECTED.dora.join()) {
  throw new Error(`test/fixtures: expected archs ${EXPECTED.archs.join(', ')} and dora ${EXPECTED.dora.join(', ')}; found ${FAMILIES.join(', ')} and ${DORA_FAMILIES.join(', ')}`);
}
export const ORACLES: Array<[string, string]> = [...FAMILIES.map((f): [string, string] => [f, join(ARCHS, f)]), ...DORA_FAMILIES.map((f): [string, string] => [`dora/${f}`, join(DORA, f)])];

/** PEFT's gradient of an adapter tensor (a magnitude's gradient is named with ".weight"). */
export function peftGrad(ref: Reference, key: string): Float32Array | undefined {
  return ref.grads.get(key) ?? ref.grads.get(`${key}.weight`);
}

export interface Reference {
  batch: MicroBatch;
  baseLogits: Float32Array;
  loraLogits: Float32Array;
  loss: number;
  grads: Map<string, Float32Array>;
}

/** reference.safetensors as a micro-batch (targets shifted as HF does) and the expected outputs. */
export async function readReference(dir: string): Promise<Reference> {
  const f = await FileSource.open(join(dir, 'reference.safetensors'));
  const st = await openSafetensors(f);
  const raw = async (n: string) => st.readRaw(n);
  const i64 = async (n: string) => {
    const b = await raw(n);
    const v = new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    return Int32Array.from(v, (x) => Number(x));
  };
  const ids = await i64('input_ids'), labels = await i64('labels');
  const [B, T] = st.info('input_ids').shape as [number, number];
  const targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? labels[b * T + t + 1]! : -100;
  const grads = new Map<string, Float32Array>();
  for (const k of st.tensors.keys()) if (k.startsWith('grad.')) grads.set(k.slice(5), await st.readFloat(k));
  const out = {
    batch: { ids, targets, B, T },
    baseLogits: await st.readFloat('base_logits'), loraLogits: await st.readFloat('lora_logits'),
    loss: (await st.readFloat('loss'))[0]!, grads,
  };
  await f.close();
  return out;
}

/** Perplexity of float logits [R, V] (float64), the mean over scored rows. */
export function perplexity64(logits: Float32Array, targets: Int32Array, V: number): number {
  let sum = 0, n = 0;
  for (let r = 0; r < targets.length; r++) {
    const t = targets[r]!;
    if (t === -100) continue;
    let mx = -Infinity;
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[r * V + j]!);
    let z = 0;
    for (let j = 0; j < V; j++) z += Math.exp(logits[r * V + j]! - mx);
    sum += mx + Math.log(z) - logits[r * V + t]!;
    n++;
  }
  return Math.exp(sum / n);
}

/** Logits within transformers' float32 result: |got − want| ≤ 2e-4 + 1e-4·|want| everywhere. */
export function assertLogitsLikeTransformers(got: Float32Array, want: Float32Array, what: string): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} logits, transformers has ${want.length}`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (2e-4 + 1e-4 * Math.abs(want[i]!)));
  if (!(worst <= 1)) throw new Error(`${what}: logits differ from transformers' by ${worst.toFixed(2)}× the tolerance`);
}
