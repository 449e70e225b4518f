// webqlora merge --model M --adapter DIR --out DIR|F.gguf [--dtype …] [quantization flags]
// Writes deq(W4) + s·B·A as an HF directory, or with an --out ending in .gguf as a standalone
// GGUF for llama.cpp / Ollama (the model's vocabulary, chat template and special tokens
// included). See src/model/merge.ts for why the HF output is not re-quantized.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { WebqloraError } from '../../errors.ts';
import { NodeDirSource, NodeOutDir, openModelPath } from '../../io/node.ts';
import { mergeAdapter, mergedValues } from '../../model/merge.ts';
import { writeGgufModel, meta, type GgufDtype, type MetaValue } from '../../io/gguf-write.ts';
import { readGguf } from '../../io/gguf.ts';
import { ggufArchOf } from '../../io/gguf-arch.ts';
import { FileSource } from '../../io/node.ts';
import { vocabFromHfDir } from '../../tokenizer/to-gguf.ts';
import type { EmbeddedVocab } from '../../io/weights.ts';
import { basename, dirname, extname } from 'node:path';
import { bool, choice, parseFlags, required } from '../args.ts';
import { backendFrom, jsonLine, loadAdapterDir, MODEL_FLAGS, quantFlags } from '../common.ts';
import { Progress } from '../progress.ts';
import type { Command } from './index.ts';

export const mergeCommand: Command = {
  summary: 'merge a LoRA adapter into the (dequantized) base and write an HF model directory',
  async run(argv) {
    const cmd = 'merge';
    const p = parseFlags(cmd, argv, { ...MODEL_FLAGS, adapter: { type: 'string' }, out: { type: 'string' }, dtype: { type: 'string' } });
    const json = bool(p, 'json', false);
    const spec = required(cmd, p, 'model');
    const adapterDir = required(cmd, p, 'adapter');
    const out = required(cmd, p, 'out');
    const toGguf = extname(out).toLowerCase() === '.gguf';
    const ggufDtype = toGguf ? choice<GgufDtype>(cmd, p, 'dtype', ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'], 'f16') : null;
    const dtype = ({ f16: 'F16', bf16: 'BF16', f32: 'F32' } as const)[toGguf ? 'f32' : choice(cmd, p, 'dtype', ['f16', 'bf16', 'f32'], 'f16')];
    const q = quantFlags(cmd, p);
    if (toGguf && await stat(out).then(() => true, () => false)) throw new WebqloraError(`${out} already exists (choose another --out).`);
    if (!toGguf && await stat(join(out, 'config.json')).then(() => true, () => false)) throw new WebqloraError(`${out} already holds a model (choose another --out).`);
    const progress = new Progress(process.stderr, json);
    const backend = await backendFrom(cmd, p, progress);
    const source = await openModelPath(spec);
    const copyFrom = (await stat(spec).catch(() => null))?.isDirectory() ? new NodeDirSource(spec) : null;
    try {
      if (ggufDtype) ggufArchOf(source.config, spec); // refuse what llama.cpp would compute differently first
      const lora = await loadAdapterDir(adapterDir, backend, source.config);
      if (ggufDtype) {
        const { vocab, metadata } = await ggufVocabOf(spec, source.vocab, copyFrom);
        const merged = mergedValues(source, lora, backend, { quant: q.quant, doubleQuant: q.doubleQuant, blocksize: q.blocksize });
        try {
          const r = await writeGgufModel(source, await new NodeOutDir(dirname(out)).create(basename(out)), {
            dtype: ggufDtype, vocab, metadata, values: merged.values,
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
 * The vocabulary and tokenizer metadata a GGUF output carries: the GGUF source's own (with its chat
 * template), or one built from an HF directory's tokenizer files.
 */
async function ggufVocabOf(spec: string, vocab: EmbeddedVocab | null, dir: NodeDirSource | null): Promise<{ vocab: EmbeddedVocab; metadata: Array<[string, MetaValue]> }> {
  if (vocab && extname(spec).toLowerCase() === '.gguf') {
    const f = await FileSource.open(spec);
    try {
      const tpl = (await readGguf(f)).metadata.get('tokenizer.chat_template');
      return { vocab, metadata: typeof tpl === 'string' ? [['tokenizer.chat_template', meta.str(tpl)]] : [] };
    } finally {
      await f.close();
    }
  }
  if (dir) {
    const v = await vocabFromHfDir(dir);
    return { vocab: v.vocab, metadata: v.chatTemplate ? [['tokenizer.chat_template', meta.str(v.chatTemplate)]] : [] };
  }
  throw new WebqloraError(`${spec} carries no vocabulary, so a standalone GGUF cannot be written (merge from the HF directory or GGUF that has one).`);
}
