// webqlora merge --model M --adapter DIR --out DIR|F.gguf [--dtype …] [quantization flags]
// Writes deq(W4) + s·B·A as an HF directory, or with an --out ending in .gguf as a standalone
// GGUF for llama.cpp / Ollama (the model's vocabulary, chat template and special tokens
// included). See src/model/merge.ts for why the HF output is not re-quantized.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { WebqloraError } from '../../errors.ts';
import { NodeDirSource, NodeOutDir } from '../../io/node.ts';
import { openModelPath } from '../../io/node-model.ts';
import { mergeAdapter, mergedValues } from '../../model/merge.ts';
import { writeGgufModel, type GgufDtype } from '../../io/gguf-write.ts';
import { ggufArchOf } from '../../io/gguf-arch.ts';
import { vocabFromHfDir } from '../../tokenizer/to-gguf.ts';
import type { EmbeddedVocab } from '../../io/weights.ts';
import { basename, dirname, extname } from 'node:path';
import { bool, choice, required, type Command, type FlagTable } from '../args.ts';
import { backendFrom, checkPaths, jsonLine, loadAdapterDir, quantFlags } from '../common.ts';
import { ADAPTER, BACKEND, BLOCKSIZE, DOUBLE_QUANT, JSON_OUT, MODEL, QUANT, THREADS, VERBOSE } from '../flags.ts';
import { Progress } from '../progress.ts';

const HF_DTYPES = ['f16', 'bf16', 'f32'] as const;
const FLAGS: FlagTable = {
  model: MODEL, quant: { ...QUANT, help: `${QUANT.help}; the adapter merges into the dequantized base it was trained on` },
  'double-quant': DOUBLE_QUANT, blocksize: BLOCKSIZE,
  adapter: { ...ADAPTER, required: true },
  out: { kind: 'string', arg: 'OUT', group: 'output', required: true, help: 'an HF model directory, or a standalone GGUF when it ends in .gguf' },
  dtype: {
    kind: 'choice', choices: ['f16', 'bf16', 'f32', 'q8_0', 'q4_0'], default: 'f16', group: 'output',
    help: 'weight type of the merged model (q8_0 and q4_0 only for a .gguf --out)',
  },
  backend: BACKEND, threads: THREADS, json: JSON_OUT, verbose: VERBOSE,
};

export const mergeCommand: Command = {
  summary: 'merge a LoRA adapter into the (dequantized) base: an HF model directory or a standalone GGUF',
  flags: FLAGS,
  example: 'webqlora merge --model TinyLlama-1.1B-Chat --adapter run --out merged.gguf --dtype q8_0',
  async run(p) {
    const json = bool(p, 'json');
    const spec = required(p, 'model');
    const adapterDir = required(p, 'adapter');
    const out = required(p, 'out');
    const toGguf = extname(out).toLowerCase() === '.gguf';
    const picked = choice<GgufDtype>(p, 'dtype');
    if (!toGguf && !(HF_DTYPES as readonly string[]).includes(picked)) throw new WebqloraError(`--dtype ${picked} is for a .gguf --out; an HF directory takes ${HF_DTYPES.join(', ')}.`);
    const ggufDtype = toGguf ? picked : null;
    const dtype = ({ f16: 'F16', bf16: 'BF16', f32: 'F32' } as const)[toGguf ? 'f32' : picked as (typeof HF_DTYPES)[number]];
    const q = quantFlags(p);
    await checkPaths(p, ['adapter']);
    if (toGguf && await stat(out).then(() => true, () => false)) throw new WebqloraError(`${out} already exists (choose another --out).`);
    if (!toGguf && await stat(join(out, 'config.json')).then(() => true, () => false)) throw new WebqloraError(`${out} already holds a model (choose another --out).`);
    const progress = new Progress(process.stderr, json);
    const backend = await backendFrom(p, progress);
    const source = await openModelPath(spec);
    const copyFrom = (await stat(spec).catch(() => null))?.isDirectory() ? new NodeDirSource(spec) : null;
    try {
      if (ggufDtype) ggufArchOf(source.config, spec); // refuse what llama.cpp would compute differently first
      const lora = await loadAdapterDir(adapterDir, backend, source.config);
      if (ggufDtype) {
        const vocab = await ggufVocabOf(spec, source.vocab, copyFrom);
        const merged = mergedValues(source, lora, backend, { quant: q.quant, doubleQuant: q.doubleQuant, blocksize: q.blocksize });
        try {
          const r = await writeGgufModel(source, await new NodeOutDir(dirname(out)).create(basename(out)), {
            dtype: ggufDtype, vocab, values: merged.values,
            onProgress: (d, t, name) => progress.update(`merging [${d}/${t}] ${name}`),
          });
          progress.done(`merged ${adapterDir} into ${spec} → ${out} (${r.tensors} tensors, GGUF ${ggufDtype})`);
          if (json) jsonLine({ out, tensors: r.tensors, dtype: ggufDtype });
        } finally {
          merged.free();
        }
        return 0;
      }
      const r = await mergeAdapter(source, lora, backend, new NodeOutDir(out), {
        dtype, quant: q.quant, doubleQuant: q.doubleQuant, blocksize: q.blocksize, copyFrom,
        onProgress: (d, t, name) => progress.update(`merging [${d}/${t}] ${name}`),
      });
      progress.done(`merged ${adapterDir} into ${spec} → ${out} (${r.tensors} tensors, ${dtype})`);
      if (json) jsonLine({ out, tensors: r.tensors, dtype });
      return 0;
    } finally {
      await copyFrom?.close();
      await source.close();
      await backend.destroy();
    }
  },
};

/**
 * The vocabulary (with its chat template) a GGUF output carries: the GGUF source's own, or one
 * built from an HF directory's tokenizer files.
 */
async function ggufVocabOf(spec: string, vocab: EmbeddedVocab | null, dir: NodeDirSource | null): Promise<EmbeddedVocab> {
  if (vocab) return vocab;
  if (dir) {
    const v = await vocabFromHfDir(dir);
    return { ...v.vocab, chatTemplate: v.chatTemplate };
  }
  throw new WebqloraError(`${spec} carries no vocabulary, so a standalone GGUF cannot be written (merge from the HF directory or GGUF that has one).`);
}
