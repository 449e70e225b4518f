// webqlora quantize --model M --out DIR: writes a bitsandbytes 4-bit HF checkpoint (the layout
// transformers + bnb save), loadable by transformers and by webqlora.
import { readdir, stat } from 'node:fs/promises';
import { WebqloraError } from '../../errors.ts';
import { writeBnbModel } from '../../io/bnb.ts';
import { NodeDirSource, NodeOutDir, openModelPath } from '../../io/node.ts';
import { checkBlocksize } from '../../quant/quantize.ts';
import { bool, choice, num, parseFlags, required, str } from '../args.ts';
import { fmtBytes, Progress } from '../progress.ts';

export const quantize = {
  summary: 'write a bnb 4-bit (NF4/FP4) Hugging Face checkpoint',
  async run(argv: string[]): Promise<number> {
    const p = parseFlags('quantize', argv, {
      model: { type: 'string' },
      out: { type: 'string' },
      quant: { type: 'string' },
      'double-quant': { type: 'boolean' },
      blocksize: { type: 'string' },
      json: { type: 'boolean' },
    });
    const model = required('quantize', p, 'model');
    const out = required('quantize', p, 'out');
    if (str(p, 'quant') === 'int4' || str(p, 'quant') === 'none') {
      throw new WebqloraError(`webqlora quantize: --quant ${str(p, 'quant')} cannot be saved as a bitsandbytes checkpoint (use nf4 or fp4).`);
    }
    const quantType = choice('quantize', p, 'quant', ['nf4', 'fp4'] as const, 'nf4');
    // QLoRA defaults: NF4, double quantization, blocksize 64.
    const doubleQuant = bool(p, 'double-quant', true);
    const blocksize = num('quantize', p, 'blocksize', 64, { int: true });
    checkBlocksize(blocksize, 'webqlora quantize: --blocksize');
    const json = bool(p, 'json', false);

    const outStat = await stat(out).catch(() => null);
    if (outStat && !outStat.isDirectory()) throw new WebqloraError(`${out}: exists and is not a directory (choose another --out).`);
    if (outStat && (await readdir(out)).includes('config.json')) throw new WebqloraError(`${out} already holds a model (choose another --out).`);

    const src = await openModelPath(model);
    const modelIsDir = await stat(model).then((s) => s.isDirectory(), () => false);
    const copyFrom = modelIsDir ? new NodeDirSource(model) : null;
    const progress = new Progress(process.stderr, json);
    try {
      const t0 = performance.now();
      const res = await writeBnbModel(src, new NodeOutDir(out), {
        quantType, doubleQuant, blocksize, copyFrom,
        onProgress: (done, total, name) => progress.update(`quantize: ${done}/${total} ${name}`, done === total),
      });
      progress.done();
      const seconds = (performance.now() - t0) / 1000;
      if (json) {
        process.stdout.write(JSON.stringify({
          out, format: 'bnb-4bit', quant_type: quantType, double_quant: doubleQuant, blocksize,
          tensors: res.tensors, quantized: res.quantized, bytes: res.bytes, files: res.files, seconds,
        }) + '\n');
      } else {
        process.stdout.write(`wrote ${out} (${res.files.join(', ')}): `
          + `${res.tensors} tensors, ${res.quantized} quantized ${quantType}${doubleQuant ? ' + double quant' : ''} (blocksize ${blocksize}), `
          + `${fmtBytes(res.bytes)} of weights in ${seconds.toFixed(1)} s\n`);
      }
      return 0;
    } finally {
      await src.close();
      await copyFrom?.close();
    }
  },
};
