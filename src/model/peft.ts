// PEFT LoRA adapters on disk (QLORA_SPEC §5): adapter_config.json (json.dumps(indent=2,
// sort_keys=True) as PEFT's save_pretrained writes it) + adapter_model.safetensors with HF key
// names, lora_A [r, in], lora_B [out, r], float32, metadata {"format": "pt"}.
import type { Backend } from '../backend/backend.ts';
import { WebqloraError } from '../errors.ts';
import { pythonJsonDumps } from '../io/bnb.ts';
import { openSafetensors, writeSafetensors, type SafetensorsEntry, type SafetensorsFile } from '../io/safetensors.ts';
import { parseJson, readText, writeFileTo, type DirSource, type OutDir } from '../io/source.ts';
import type { ModelConfig } from './config.ts';
import { checkLoraConfig, LoraAdapters, peftKey, type LoraConfig } from './lora.ts';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/**
 * adapter_config.json content for a LoRA config (PEFT LoraConfig field names). "all-linear" is
 * written as PEFT writes it after expanding it: the list of adapted module names (`modules`).
 */
export function adapterConfigJson(c: LoraConfig, baseModel: string, modules?: readonly string[]): string {
  const t = c.targets;
  const targetModules = t === 'all-linear' && modules ? [...new Set(modules)].sort() : typeof t === 'string' ? t : [...t];
  const cfg = {
    alpha_pattern: { ...(c.alphaPattern ?? {}) },
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: c.r,
    rank_pattern: { ...(c.rankPattern ?? {}) },
    revision: null,
    target_modules: targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: c.useDora === true,
    use_rslora: c.useRslora,
  };
  return pythonJsonDumps(cfg, { indent: 2, sortKeys: true });
}

/** Writes adapter_config.json and adapter_model.safetensors (each atomically). */
export async function saveAdapter(lora: LoraAdapters, out: OutDir, baseModel: string): Promise<void> {
  const be = lora.backend;
  const entries: SafetensorsEntry[] = [];
  for (const m of lora.modules) {
    entries.push({ name: peftKey(m.path, 'A'), dtype: 'F32', shape: [m.r, m.K], data: await bytesOf(be, m.A) });
    // a fused module's B is its parts' rows stacked in order
    const b = joinBytes(await Promise.all(m.parts.map((p) => bytesOf(be, p.B))));
    entries.push({ name: peftKey(m.path, 'B'), dtype: 'F32', shape: [m.N, m.r], data: b });
    if (lora.useDora) entries.push({ name: peftKey(m.path, 'magnitude'), dtype: 'F32', shape: [m.N], data: joinBytes(await Promise.all(m.parts.map((p) => bytesOf(be, p.dora!.m)))) });
  }
  await writeSafetensors(await out.create(ADAPTER_WEIGHTS), entries, { format: 'pt' });
  await writeFileTo(out, ADAPTER_CONFIG, adapterConfigJson(lora.config, baseModel, lora.modules.map((m) => m.module)) + '\n');
}

function joinBytes(parts: Uint8Array[]): Uint8Array {
  const b = new Uint8Array(parts.reduce((s, x) => s + x.length, 0));
  let o = 0;
  for (const x of parts) { b.set(x, o); o += x.length; }
  return b;
}

async function bytesOf(be: Backend, t: Parameters<Backend['read']>[0]): Promise<Uint8Array> {
  const v = (await be.read(t)) as Float32Array;
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
}

/** PEFT LoraConfig keys that only steer how a fresh adapter is initialised (inert when loading one). */
const INIT_ONLY = new Set(['init_lora_weights', 'loftq_config', 'eva_config', 'corda_config', 'lora_ga_config', 'qalora_group_size', 'megatron_core', 'megatron_config', 'ensure_weight_tying']);
/** Bookkeeping keys. */
const INERT = new Set(['base_model_name_or_path', 'revision', 'task_type', 'inference_mode', 'auto_mapping', 'peft_version', 'peft_type']);

/** Reads and validates adapter_config.json into a LoraConfig. */
export function parseAdapterConfig(text: string, file: string): LoraConfig & { baseModel: string | null } {
  const j = parseJson(text, file) as Record<string, unknown>;
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw new WebqloraError(`${file}: expected a JSON object.`);
  const peftType = j.peft_type ?? 'LORA';
  if (peftType !== 'LORA') throw new WebqloraError(`${file}: peft_type ${String(peftType)} is not supported (only LORA adapters are).`);
  const unsupported = (key: string, ok: (v: unknown) => boolean, why: string) => {
    if (key in j && !ok(j[key])) throw new WebqloraError(`${file}: ${key} = ${JSON.stringify(j[key])} is not supported (${why}).`);
  };
  const off = (v: unknown) => v == null || v === false || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && Object.keys(v as object).length === 0);
  const handled = new Set(['r', 'lora_alpha', 'lora_dropout', 'target_modules', 'use_rslora', 'layers_to_transform', 'layers_pattern', 'rank_pattern', 'alpha_pattern', 'use_dora', 'bias', 'fan_in_fan_out', 'modules_to_save']);
  unsupported('use_dora', (v) => typeof v === 'boolean' || v == null, 'use_dora must be true or false');
  unsupported('bias', (v) => v === 'none' || v == null, 'only bias "none" is');
  unsupported('fan_in_fan_out', (v) => !v, 'the linear layers are stored [out, in]');
  unsupported('modules_to_save', off, 'only LoRA tensors are loaded');
  unsupported('layers_pattern', (v) => v == null || v === 'layers' || (Array.isArray(v) && v.length === 1 && v[0] === 'layers'), 'the decoder layers are model.layers');
  // any other key that is switched on may change the adapter's math (lora_bias, exclude_modules,
  // layer_replication, target_parameters, trainable tokens, aLoRA, QALoRA, …): refuse it
  for (const [k, v] of Object.entries(j)) {
    if (handled.has(k) || INIT_ONLY.has(k) || INERT.has(k) || off(v)) continue;
    throw new WebqloraError(`${file}: ${k} = ${JSON.stringify(v)} is not supported (webqlora implements LoRA and DoRA with target_modules, layers_to_transform, rank_pattern, alpha_pattern and rsLoRA).`);
  }
  const r = j.r, alpha = j.lora_alpha ?? r;
  if (typeof r !== 'number') throw new WebqloraError(`${file}: "r" must be a positive integer.`);
  if (typeof alpha !== 'number') throw new WebqloraError(`${file}: "lora_alpha" must be a positive number.`);
  if (j.lora_dropout != null && typeof j.lora_dropout !== 'number') throw new WebqloraError(`${file}: "lora_dropout" must be a number.`);
  const dropout = typeof j.lora_dropout === 'number' ? j.lora_dropout : 0;
  let targets: readonly string[] | string;
  const tm = j.target_modules;
  if (typeof tm === 'string') targets = tm;
  else if (Array.isArray(tm) && tm.every((x) => typeof x === 'string')) targets = [...new Set(tm as string[])].sort();
  else throw new WebqloraError(`${file}: "target_modules" must be a list of module names, "all-linear" or a regex string.`);
  if (targets.length === 0) throw new WebqloraError(`${file}: "target_modules" is empty.`);
  let layersToTransform: number[] | null = null;
  const ltt = j.layers_to_transform;
  if (typeof ltt === 'number') layersToTransform = [ltt];
  else if (Array.isArray(ltt)) layersToTransform = ltt as number[];
  else if (ltt != null) throw new WebqloraError(`${file}: "layers_to_transform" must be a layer index or a list of them.`);
  const pattern = (k: string): Record<string, number> => {
    const v = j[k];
    if (v == null) return {};
    if (typeof v !== 'object' || Array.isArray(v) || !Object.values(v as object).every((x) => typeof x === 'number')) throw new WebqloraError(`${file}: "${k}" must map module patterns to numbers.`);
    return { ...(v as Record<string, number>) };
  };
  const config: LoraConfig = {
    r, alpha, dropout, targets, useRslora: j.use_rslora === true, useDora: j.use_dora === true, layersToTransform, rankPattern: pattern('rank_pattern'), alphaPattern: pattern('alpha_pattern'),
  };
  checkLoraConfig(config, file);
  return { ...config, baseModel: typeof j.base_model_name_or_path === 'string' ? j.base_model_name_or_path : null };
}

/** An adapter directory, opened: its parsed config and its (unread) weights file. */
export interface AdapterFiles {
  config: LoraConfig & { baseModel: string | null };
  weights: SafetensorsFile;
}

export async function openAdapter(dir: DirSource): Promise<AdapterFiles> {
  const cfgSrc = await dir.open(ADAPTER_CONFIG);
  if (!cfgSrc) throw new WebqloraError(`${dir.name}: no ${ADAPTER_CONFIG} (is this a PEFT adapter directory?).`);
  const config = parseAdapterConfig(await readText(cfgSrc), cfgSrc.name);
  const wSrc = await dir.open(ADAPTER_WEIGHTS);
  if (!wSrc) {
    const hasBin = (await dir.list()).includes('adapter_model.bin');
    throw new WebqloraError(`${dir.name}: no ${ADAPTER_WEIGHTS}${hasBin ? ' (adapter_model.bin is a pickle; re-save it with safetensors)' : ''}.`);
  }
  return { config, weights: await openSafetensors(wSrc) };
}

/**
 * Reads an adapter's A and B tensors into `lora` (which must have the file's rank and targets).
 * Every targeted module of every layer must be present with the right shape; F32, F16 and BF16
 * are accepted, and keys saved with the adapter name (".lora_A.default.weight") too.
 */
export async function readAdapterWeights(st: SafetensorsFile, lora: LoraAdapters): Promise<void> {
  const names = new Map<string, string>();
  for (const k of st.tensors.keys()) names.set(k.replace('.default.weight', '.weight'), k);
  const used = new Set<string>();
  for (const m of lora.modules) {
    for (const which of lora.useDora ? (['A', 'B', 'magnitude'] as const) : (['A', 'B'] as const)) {
      const key = peftKey(m.path, which);
      const stored = names.get(key) ?? (which === 'magnitude' ? names.get(`${key}.weight`) : undefined);
      if (!stored) throw new WebqloraError(`${st.name}: missing tensor ${key}.`);
      used.add(stored);
      const info = st.info(stored);
      const want = which === 'A' ? [m.r, m.K] : which === 'B' ? [m.N, m.r] : [m.N];
      if (info.shape.length !== want.length || info.shape.some((d, i) => d !== want[i])) {
        throw new WebqloraError(`${st.name}: ${key}: expected [${want.join(', ')}], got [${info.shape.join(', ')}] (does the adapter belong to this model?).`);
      }
      if (!['F32', 'F16', 'BF16'].includes(info.dtype)) throw new WebqloraError(`${st.name}: ${key}: dtype ${info.dtype} is not supported (expected F32, F16 or BF16).`);
      const v = await st.readFloat(stored);
      if (which === 'A') lora.backend.write(m.A, v);
      else if (which === 'B') for (const p of m.parts) lora.backend.write(p.B, v.subarray(p.row0 * m.r, (p.row0 + p.N) * m.r));
      else {
        for (const p of m.parts) {
          lora.backend.write(p.dora!.m, v.subarray(p.row0, p.row0 + p.N));
          p.dora!.mReady = true;
        }
      }
    }
  }
  const extra = [...st.tensors.keys()].filter((k) => !used.has(k));
  if (extra.length) {
    const why = !lora.useDora && extra.some((k) => k.includes('lora_magnitude_vector')) ? ' (DoRA magnitudes, but adapter_config.json does not set use_dora)' : '';
    throw new WebqloraError(`${st.name}: tensor ${extra[0]} is not a LoRA weight of a targeted module (${extra.length} such tensors)${why}.`);
  }
}

/** Loads a PEFT LoRA adapter directory onto the backend (see readAdapterWeights for what is accepted). */
export async function loadAdapter(dir: DirSource, backend: Backend, model: ModelConfig, opts: { withGrads?: boolean; dropout?: number } = {}): Promise<LoraAdapters> {
  const { config, weights } = await openAdapter(dir);
  const { baseModel: _, ...cfg } = config;
  const lora = new LoraAdapters(backend, model, { ...cfg, dropout: opts.dropout ?? cfg.dropout }, opts.withGrads ?? false);
  try {
    await readAdapterWeights(weights, lora);
  } catch (e) {
    lora.free();
    throw e;
  }
  return lora;
}
