// webqlora merge --model M --adapter DIR --out DIR [--dtype f16|bf16|f32] [quantization flags]
// Writes deq(W4) + s·B·A as an HF directory; see src/model/merge.ts for why not re-quantized.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { WebqloraError } from '../../errors.ts';
import { NodeDirSource, NodeOutDir, openModelPath } from '../../io/node.ts';
import { mergeAdapter } from '../../model/merge.ts';
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
    const dtype = ({ f16: 'F16', bf16: 'BF16', f32: 'F32' } as const)[choice(cmd, p, 'dtype', ['f16', 'bf16', 'f32'], 'f16')];
    const q = quantFlags(cmd, p);
    if (await stat(join(out, 'config.json')).then(() => true, () => false)) throw new WebqloraError(`${out} already holds a model (choose another --out).`);
    const progress = new Progress(process.stderr, json);
    const backend = await backendFrom(cmd, p, progress);
    const source = await openModelPath(spec);
    const copyFrom = (await stat(spec).catch(() => null))?.isDirectory() ? new NodeDirSource(spec) : null;
    try {
      const lora = await loadAdapterDir(adapterDir, backend, source.config);
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
