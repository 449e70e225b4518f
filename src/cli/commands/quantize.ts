// webqlora quantize --model M --out DIR: writes a bitsandbytes 4-bit HF checkpoint (the layout
// transformers + bnb save), loadable by transformers and by webqlora.
import { readdir, stat } from 'node:fs/promises';
import { WebqloraError } from '../../errors.ts';
import { writeBnbModel } from '../../io/bnb.ts';
import { NodeDirSource, NodeOutDir } from '../../io/node.ts';
import { openModelPath } from '../../io/node-model.ts';
import { bool, choice, required, type Command, type FlagTable } from '../args.ts';
import { BLOCKSIZE, DOUBLE_QUANT, JSON_OUT, MODEL } from '../flags.ts';
import { fmtBytes, Progress } from '../progress.ts';

const FLAGS: FlagTable = {
  model: MODEL,
  quant: { kind: 'choice', choices: ['nf4', 'fp4'], default: 'nf4', group: 'model', help: 'the 4-bit data type (bitsandbytes stores NF4 and FP4)' },
  'double-quant': DOUBLE_QUANT, blocksize: BLOCKSIZE,
  out: { kind: 'string', arg: 'DIR', group: 'output', required: true, help: 'the checkpoint directory to write (transformers + bitsandbytes load it)' },
  json: JSON_OUT,
};

export const quantizeCommand: Command = {
  summary: 'write a bnb 4-bit (NF4/FP4) Hugging Face checkpoint',
  flags: FLAGS,
  example: 'webqlora quantize --model Llama-3.2-1B --out Llama-3.2-1B-bnb-4bit',
  async run(p) {
    const model = required(p, 'model');
    const out = required(p, 'out');
    // QLoRA defaults: NF4, double quantization, blocksize 64.
    const quantType = choice<'nf4' | 'fp4'>(p, 'quant');
    const doubleQuant = bool(p, 'double-quant');
    const blocksize = Number(choice(p, 'blocksize'));
    const json = bool(p, 'json');

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
