// LoRA adapters as llama.cpp reads them (its src/llama-adapter.cpp and convert_lora_to_gguf.py,
// checked against llama.cpp itself in test/llamacpp/): a GGUF with general.type "adapter",
// adapter.type "lora", adapter.lora.alpha (f32), and per adapted weight two tensors named after
// the base tensor, `blk.N.attn_q.weight.lora_a` / `.lora_b`:
//   - lora_a: GGUF dims [n_in, r] = PEFT's row-major A [r, in], stored unchanged;
//   - lora_b: GGUF dims [r, n_out] = PEFT's B [out, r], stored unchanged, except that for the
//     llama architecture the rows of q and k are permuted as the converter permutes q/k weights
//     (heads of D rows to the interleaved RoPE order);
//   - llama.cpp scales every pair by alpha / r (r from the tensor), so a rsLoRA adapter is
//     written with alpha·√r, and an adapter whose modules need different alpha / r ratios
//     (alpha_pattern, or rank_pattern with rsLoRA) cannot be expressed and is refused.
// Phi-3's fused modules map to attn_qkv / ffn_up with B joined, as PEFT saves them.
import type { Backend } from '../backend/backend.ts';
import { WebqloraError } from '../errors.ts';
import { readGguf, readGgufTensor, type GgufFile } from '../io/gguf.ts';
import { ggufArchOf, hfToGgufTensor, type GgufArch } from '../io/gguf-arch.ts';
import { encodeTensor, GGML, ggufBytes, meta, rotateHalfToInterleaved, writeGgufFile, type GgufDtype, type GgufTensorOut, type MetaValue } from '../io/gguf-write.ts';
import type { ByteSink, ByteSource } from '../io/source.ts';
import type { ModelConfig } from './config.ts';
import { LINEAR_NAMES, linearShape, linearSource } from './config.ts';
import { LoraAdapters, type LoraConfig, type LoraModule } from './lora.ts';

export type AdapterDtype = Exclude<GgufDtype, 'q4_0'>;

/** The one alpha llama.cpp applies as alpha / r to every module, or a sentence saying why none fits. */
function llamaCppAlpha(lora: LoraAdapters): number {
  if (lora.useDora) throw new WebqloraError(`it is a DoRA adapter, which llama.cpp's LoRA GGUF cannot express (merge it instead: webqlora merge --out model.gguf).`);
  const alphas = lora.modules.map((m) => m.scaling * m.r);
  const a = alphas[0]!;
  if (!alphas.every((x) => Math.abs(x - a) <= 1e-6 * Math.abs(a))) {
    throw new WebqloraError(`the adapter's modules use different alpha/r ratios (alpha_pattern, or rank_pattern with rsLoRA), which llama.cpp cannot load: it applies one adapter.lora.alpha as alpha/r to every module.`);
  }
  return Math.fround(a);
}

function permuteB(arch: GgufArch, c: ModelConfig, m: LoraModule, b: Float32Array): Float32Array {
  if (!arch.permuteQK || (m.module !== 'q_proj' && m.module !== 'k_proj')) return b;
  const heads = m.module === 'q_proj' ? c.numHeads : c.numKVHeads;
  return rotateHalfToInterleaved(b, heads, c.headDim, m.r);
}

/** Writes `lora` (on a model of config `c`) as a llama.cpp LoRA adapter GGUF into `sink`. */
export async function writeGgufAdapter(lora: LoraAdapters, c: ModelConfig, sink: ByteSink, opts: { dtype: AdapterDtype; what: string }): Promise<{ tensors: number; alpha: number }> {
  let arch: GgufArch, alpha: number;
  try {
    arch = ggufArchOf(c, opts.what);
    alpha = llamaCppAlpha(lora);
  } catch (e) {
    await sink.abort();
    throw e instanceof WebqloraError && !e.message.startsWith(opts.what) ? new WebqloraError(`${opts.what}: ${e.message}`) : e;
  }
  const be: Backend = lora.backend;
  const md: Array<[string, MetaValue]> = [
    ['general.architecture', meta.str(arch.name)],
    ['general.type', meta.str('adapter')],
    ['adapter.type', meta.str('lora')],
    ['adapter.lora.alpha', meta.f32(alpha)],
  ];
  const tensors: GgufTensorOut[] = [];
  const type = (dtype: GgufDtype) => ({ f32: GGML.F32, f16: GGML.F16, bf16: GGML.BF16, q8_0: GGML.Q8_0, q4_0: GGML.Q4_0 })[dtype];
  for (const m of lora.modules) {
    const base = hfToGgufTensor(arch, `${m.path}.weight`)!;
    // ggml quantizes rows of 32: a row that does not divide is kept f16, as the converter does
    const dt = (cols: number): GgufDtype => (opts.dtype === 'q8_0' && cols % 32 !== 0 ? 'f16' : opts.dtype);
    const da = dt(m.K), db = dt(m.r);
    tensors.push({
      name: `${base}.lora_a`, shape: [m.r, m.K], type: type(da), bytes: ggufBytes(da, m.r * m.K),
      data: async () => encodeTensor((await be.read(m.A)) as Float32Array, da),
    });
    tensors.push({
      name: `${base}.lora_b`, shape: [m.N, m.r], type: type(db), bytes: ggufBytes(db, m.N * m.r),
      data: async () => {
        const b = new Float32Array(m.N * m.r);
        for (const p of m.parts) b.set((await be.read(p.B)) as Float32Array, p.row0 * m.r);
        return encodeTensor(permuteB(arch, c, m, b), db);
      },
    });
  }
  await writeGgufFile(sink, md, tensors);
  return { tensors: tensors.length, alpha };
}

/** HF rotate-half rows ← interleaved rows (inverse of rotateHalfToInterleaved). */
function interleavedToRotateHalf(w: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length), half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const il = (h * headDim + 2 * i + j) * cols, hf = (h * headDim + j * half + i) * cols;
        out.set(w.subarray(il, il + cols), hf);
      }
    }
  }
  return out;
}

/**
 * Reads a llama.cpp LoRA adapter GGUF onto `backend` for a model of config `c` (the inverse of
 * writeGgufAdapter): the architecture must be the model's, every tensor a lora_a/lora_b pair of a
 * linear weight of the model with matching shapes. The adapter's config: the adapted modules as
 * full PEFT module paths, alpha = adapter.lora.alpha, the first module's rank as r and the others'
 * in rank_pattern (llama.cpp's alpha / r semantics are kept exactly).
 */
export async function readGgufAdapter(src: ByteSource, backend: Backend, c: ModelConfig, opts: { withGrads?: boolean; dropout?: number } = {}): Promise<LoraAdapters> {
  const file = await readGguf(src);
  const config = ggufAdapterConfig(file, src.name, c, opts.dropout ?? 0);
  const arch = ggufArchOf(c, src.name);
  const lora = new LoraAdapters(backend, c, config, opts.withGrads ?? false);
  try {
    for (const m of lora.modules) {
      const g = hfToGgufTensor(arch, `${m.path}.weight`)!;
      backend.write(m.A, await readGgufTensor(src, file, `${g}.lora_a`));
      const b = await readGgufTensor(src, file, `${g}.lora_b`);
      const hb = arch.permuteQK && (m.module === 'q_proj' || m.module === 'k_proj')
        ? interleavedToRotateHalf(b, m.module === 'q_proj' ? c.numHeads : c.numKVHeads, c.headDim, m.r)
        : b;
      for (const p of m.parts) backend.write(p.B, hb.subarray(p.row0 * m.r, (p.row0 + p.N) * m.r));
    }
  } catch (e) {
    lora.free();
    throw e;
  }
  return lora;
}

/**
 * The LoraConfig of a llama.cpp LoRA adapter GGUF (its header and tensor list, `readGguf`) for a
 * model of config `c`, every tensor checked against the model: what readGgufAdapter loads, and
 * what sizes a run's memory before any weight is read.
 */
export function ggufAdapterConfig(file: GgufFile, name: string, c: ModelConfig, dropout = 0): LoraConfig {
  const md = file.metadata;
  const bad = (msg: string) => new WebqloraError(`${name}: ${msg}`);
  if (md.get('general.type') !== 'adapter') throw bad(`general.type is ${JSON.stringify(md.get('general.type') ?? null)}, not "adapter" (is this a model rather than a LoRA adapter?).`);
  if (md.get('adapter.type') !== 'lora') throw bad(`adapter.type ${JSON.stringify(md.get('adapter.type') ?? null)} is not supported (only "lora").`);
  const arch = ggufArchOf(c, name);
  if (md.get('general.architecture') !== arch.name) throw bad(`the adapter is for architecture "${String(md.get('general.architecture'))}", the model is "${arch.name}".`);
  const alphaV = md.get('adapter.lora.alpha');
  if (typeof alphaV !== 'number' || !(alphaV > 0)) throw bad('adapter.lora.alpha is missing or not a positive number.');
  // stored module weight (GGUF name) → module path and rows
  const modules = new Map<string, { path: string; module: string; rows: number; K: number }>();
  for (let l = 0; l < c.numLayers; l++) {
    for (const lin of LINEAR_NAMES) {
      const ls = linearSource(c, l, lin);
      const g = hfToGgufTensor(arch, `${ls.path}.weight`)!;
      if (!modules.has(g)) modules.set(g, { path: ls.path, module: ls.module, rows: ls.rows, K: linearShape(c, lin)[1] });
    }
  }
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const found: Array<{ g: string; path: string; module: string; r: number }> = [];
  for (const t of file.tensors) {
    const m = /^(.+)\.lora_([ab])$/.exec(t.name);
    if (!m) throw bad(`tensor "${t.name}" is not a LoRA tensor (expected <base>.lora_a / .lora_b).`);
    const mod = modules.get(m[1]!);
    if (!mod) throw bad(`tensor "${t.name}" adapts "${m[1]}", which is not a linear weight of this ${arch.name} model.`);
    if (m[2] === 'b') continue;
    const b = byName.get(`${m[1]}.lora_b`);
    if (!b) throw bad(`tensor "${m[1]}.lora_b" is missing (its lora_a is present).`);
    const r = t.shape[0]!;
    if (t.shape.length !== 2 || t.shape[1] !== mod.K) throw bad(`tensor "${t.name}" has shape [${t.shape.join(', ')}], expected [r, ${mod.K}].`);
    if (b.shape.length !== 2 || b.shape[0] !== mod.rows || b.shape[1] !== r) throw bad(`tensor "${b.name}" has shape [${b.shape.join(', ')}], expected [${mod.rows}, ${r}].`);
    found.push({ g: m[1]!, path: mod.path, module: mod.module, r });
  }
  for (const t of file.tensors) if (t.name.endsWith('.lora_b') && !byName.has(t.name.replace(/_b$/, '_a'))) throw bad(`tensor "${t.name.replace(/_b$/, '_a')}" is missing (its lora_b is present).`);
  if (found.length === 0) throw bad('holds no LoRA tensors.');
  // module order as the model lists them, so the adapter is the same whatever the file's order
  const order = [...modules.keys()];
  found.sort((a, b) => order.indexOf(a.g) - order.indexOf(b.g));
  const r0 = found[0]!.r;
  const rankPattern: Record<string, number> = {};
  for (const f of found) if (f.r !== r0) rankPattern[f.path.replace(/\./g, '\\.')] = f.r;
  return {
    r: r0, alpha: Math.fround(alphaV), dropout, useRslora: false,
    targets: found.map((f) => f.path), rankPattern,
  };
}
