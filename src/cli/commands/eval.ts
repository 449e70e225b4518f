// webqlora eval --model M [--adapter DIR] --data D [--format ...] [--batch-size 1]
//   [--seq-len min(512, the model's context)] [quantization/backend flags] [--json]
// Loss and perplexity = exp(mean NLL over every predicted token).
import { evaluate } from '../../eval/evaluate.ts';
import { FileSource } from '../../io/node.ts';
import { bool, given, num, optNum, required, str, type Command, type FlagTable } from '../args.ts';
import { adapterConfigAt, backendFrom, checkPaths, backendThreads, jsonLine, loadAdapterDir, loadModelFrom, quantFlags } from '../common.ts';
import { estimateInferenceMemory } from '../../model/memory.ts';
import { loadDataFrom } from '../data.ts';
import { evalBatches, padIdFor } from '../../data/index.ts';
import { ADAPTER, DATA, FORMAT, MODEL_FLAGS, SEQ_LEN, TRAIN_ON_PROMPT } from '../flags.ts';
import { Progress } from '../progress.ts';

const FLAGS: FlagTable = {
  ...MODEL_FLAGS, adapter: ADAPTER, data: { ...DATA, help: `the data to score: ${DATA.help}` }, format: FORMAT, 'seq-len': SEQ_LEN,
  'train-on-prompt': TRAIN_ON_PROMPT,
  'batch-size': { kind: 'int', arg: 'N', min: 1, default: 1, group: 'memory', help: 'sequences per forward pass (the result does not depend on it)' },
};

export const evalCommand: Command = {
  summary: 'loss and perplexity of a model (and adapter) on a data file',
  flags: FLAGS,
  example: 'webqlora eval --model TinyLlama-1.1B-Chat --adapter run --data valid.jsonl',
  async run(p) {
    const json = bool(p, 'json');
    const dataPath = required(p, 'data');
    const batch = num(p, 'batch-size');
    // undefined: min(512, the model's context), known once the model is open
    const seqLenFlag = optNum(p, 'seq-len') ?? null;
    const adapterDir = str(p, 'adapter');
    const progress = new Progress(process.stderr, json);
    const q = quantFlags(p);
    await checkPaths(p, ['adapter', 'tokenizer']);
    const dataSrc = await FileSource.open(dataPath);
    // what is being scored, said once: QLoRA's 4-bit base is not the float model PEFT would score
    if (!given(p, 'quant') && q.quant !== 'none') {
      progress.log(`the base is held as ${q.quant.toUpperCase()}${q.doubleQuant ? ' with double quantization' : ''}, as QLoRA trains it; --quant none scores the unquantized base, as plain PEFT does`);
    }
    let backend;
    try {
      backend = await backendFrom(p, progress);
    } catch (e) {
      await dataSrc.close();
      throw e;
    }
    try {
      const loraOf = adapterDir ? await adapterConfigAt(adapterDir) : () => null, threads = backendThreads(backend);
      const { model, tok, seqLen: resolved } = await loadModelFrom(p, backend, progress, {
        seqLen: seqLenFlag,
        memory: (c, seqLen, pageWeights) => estimateInferenceMemory(c, { ...q, lora: loraOf(c), batch, seqLen: seqLen!, pageWeights, threads }),
      });
      const seqLen = resolved!;
      const data = await loadDataFrom(p, dataSrc, tok, model.config.vocabSize, seqLen, progress).finally(() => dataSrc.close());
      const adapters = adapterDir ? await loadAdapterDir(adapterDir, backend, model.config) : null;
      const count = Math.ceil(data.examples.length / batch);
      const res = await evaluate(model, evalBatches(data.examples, { batchSize: batch, padId: padIdFor(tok) }), {
        maxBatch: batch, maxSeqLen: seqLen, adapters,
        onBatch: (done, tokens) => progress.update(`eval [${done}/${count}] ${tokens} tokens`),
      });
      progress.done();
      if (json) jsonLine({ loss: res.loss, perplexity: res.perplexity, tokens: res.tokens, quant: q.quant, double_quant: q.quant !== 'none' && q.doubleQuant });
      else process.stdout.write(`loss ${res.loss.toFixed(4)}  perplexity ${res.perplexity.toFixed(3)}  tokens ${res.tokens}\n`);
      return 0;
    } finally {
      await dataSrc.close();
      await backend.destroy();
    }
  },
};
