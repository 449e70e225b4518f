// webqlora eval --model M [--adapter DIR] --data D [--format ...] [--batch-size 1]
//   [--seq-len min(512, the model's context)] [quantization/backend flags] [--json]
// Loss and perplexity = exp(mean NLL over every predicted token).
import { evaluate } from '../../eval/evaluate.ts';
import { FileSource } from '../../io/node.ts';
import { bool, num, parseFlags, required, str } from '../args.ts';
import { adapterConfigAt, backendFrom, backendThreads, jsonLine, loadAdapterDir, loadModelFrom, MODEL_FLAGS, quantFlags } from '../common.ts';
import { estimateInferenceMemory } from '../../model/memory.ts';
import { loadDataFrom } from '../data.ts';
import { evalBatches, padIdFor } from '../../data/index.ts';
import { Progress } from '../progress.ts';
import type { Command } from './index.ts';

export const evalCommand: Command = {
  summary: 'loss and perplexity of a model (and adapter) on a data file',
  async run(argv) {
    const cmd = 'eval';
    const p = parseFlags(cmd, argv, {
      ...MODEL_FLAGS, adapter: { type: 'string' }, data: { type: 'string' }, format: { type: 'string' },
      'batch-size': { type: 'string' }, 'seq-len': { type: 'string' }, 'train-on-prompt': { type: 'boolean' },
    });
    const json = bool(p, 'json', false);
    const dataPath = required(cmd, p, 'data');
    const batch = num(cmd, p, 'batch-size', 1, { int: true, min: 1 });
    // null: min(512, the model's context), known once the model is open
    const seqLenFlag = str(p, 'seq-len') === undefined ? null : num(cmd, p, 'seq-len', 0, { int: true, min: 2 });
    const adapterDir = str(p, 'adapter');
    const progress = new Progress(process.stderr, json);
    const backend = await backendFrom(cmd, p, progress);
    try {
      const q = quantFlags(cmd, p), lora = adapterDir ? await adapterConfigAt(adapterDir) : null, threads = backendThreads(backend);
      const { model, tok, seqLen: resolved } = await loadModelFrom(cmd, p, backend, progress, {
        seqLen: seqLenFlag,
        memory: (c, seqLen, pageWeights) => estimateInferenceMemory(c, { ...q, lora, batch, seqLen: seqLen!, pageWeights, threads }),
      });
      const seqLen = resolved!;
      const dataSrc = await FileSource.open(dataPath);
      const data = await loadDataFrom(cmd, p, dataSrc, tok, model.config.vocabSize, seqLen, progress).finally(() => dataSrc.close());
      const adapters = adapterDir ? await loadAdapterDir(adapterDir, backend, model.config) : null;
      const count = Math.ceil(data.examples.length / batch);
      const res = await evaluate(model, evalBatches(data.examples, { batchSize: batch, padId: padIdFor(tok) }), {
        maxBatch: batch, maxSeqLen: seqLen, adapters,
        onBatch: (done, tokens) => progress.update(`eval [${done}/${count}] ${tokens} tokens`),
      });
      progress.done();
      if (json) jsonLine({ loss: res.loss, perplexity: res.perplexity, tokens: res.tokens });
      else process.stdout.write(`loss ${res.loss.toFixed(4)}  perplexity ${res.perplexity.toFixed(3)}  tokens ${res.tokens}\n`);
      return 0;
    } finally {
      await backend.destroy();
    }
  },
};
