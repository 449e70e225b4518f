// webqlora generate --model M [--adapter DIR] (--prompt TEXT | --prompt-ids 1,2,3)
//   [--max-new-tokens N] [--temperature 0] [--top-p 1] [--seed 0] [quantization/backend flags] [--json]
// Text streams to stdout as it is generated; --json prints one record at the end.
import { WebqloraError } from '../../errors.ts';
import { generate } from '../../generate/generate.ts';
import { bool, ids, num, str, type Command, type FlagTable } from '../args.ts';
import { adapterConfigAt, backendFrom, backendThreads, checkPaths, contextOf, jsonLine, loadAdapterDir, loadModelFrom, quantFlags } from '../common.ts';
import { estimateInferenceMemory } from '../../model/memory.ts';
import { ADAPTER, MODEL_FLAGS } from '../flags.ts';
import { Progress } from '../progress.ts';

const FLAGS: FlagTable = {
  ...MODEL_FLAGS, adapter: ADAPTER,
  prompt: { kind: 'string', arg: 'TEXT', group: 'generation', help: 'the prompt, tokenized with the model\'s tokenizer (or give --prompt-ids)' },
  'prompt-ids': { kind: 'ids', arg: 'IDS', group: 'generation', help: 'the prompt as token ids, such as 1,415,2501' },
  'max-new-tokens': { kind: 'int', arg: 'N', min: 1, default: 128, group: 'generation', help: 'stop after this many new tokens (or at the end-of-sequence token)' },
  temperature: { kind: 'number', arg: 'T', min: 0, default: 0, group: 'generation', help: 'sampling temperature (0: greedy)' },
  'top-p': { kind: 'number', arg: 'P', min: 0, max: 1, default: 1, group: 'generation', help: 'nucleus sampling: keep the most likely tokens up to this probability mass' },
  seed: { kind: 'int', arg: 'N', min: 0, default: 0, group: 'generation', help: 'seeds the sampler' },
};

export const generateCommand: Command = {
  summary: 'generate text from a prompt (optionally with a LoRA adapter)',
  flags: FLAGS,
  synopsis: '--model PATH (--prompt TEXT | --prompt-ids IDS)',
  example: 'webqlora generate --model TinyLlama-1.1B-Chat --adapter run --prompt "Once upon a time" --max-new-tokens 64',
  async run(p) {
    const json = bool(p, 'json');
    const prompt = str(p, 'prompt'), promptIdsFlag = ids(p, 'prompt-ids');
    if ((prompt === undefined) === (promptIdsFlag === undefined)) throw new WebqloraError('give exactly one of --prompt TEXT or --prompt-ids 1,2,3.');
    const maxNew = num(p, 'max-new-tokens');
    const temperature = num(p, 'temperature');
    const topP = num(p, 'top-p');
    const seed = num(p, 'seed');
    const adapterDir = str(p, 'adapter');
    await checkPaths(p, ['adapter', 'tokenizer']);
    const progress = new Progress(process.stderr, json);
    const backend = await backendFrom(p, progress);
    try {
      // the run's memory before the tokenizer exists: a text prompt has at most one token per
      // UTF-8 byte, plus a few special ones
      const promptMax = promptIdsFlag !== undefined ? promptIdsFlag.length : new TextEncoder().encode(prompt!).length + 8;
      const q = quantFlags(p), loraOf = adapterDir ? await adapterConfigAt(adapterDir) : () => null, threads = backendThreads(backend);
      const { model, tok, spec } = await loadModelFrom(p, backend, progress, {
        memory: (c, _seqLen, pageWeights) => {
          const context = contextOf(c), kvCache = Math.min(promptMax + maxNew, context);
          return estimateInferenceMemory(c, { ...q, lora: loraOf(c), batch: 1, seqLen: Math.min(128, promptMax, context), kvCache, maxPositions: context, pageWeights, threads });
        },
      });
      let promptIds: number[];
      if (promptIdsFlag !== undefined) promptIds = promptIdsFlag;
      else {
        if (!tok) throw new WebqloraError(`${spec}: the model has no tokenizer (give --tokenizer PATH, or --prompt-ids).`);
        promptIds = tok.encode(prompt!);
      }
      const adapters = adapterDir ? await loadAdapterDir(adapterDir, backend, model.config) : null;
      const stream = tok?.createDecodeStream({ prefix: promptIds });
      const t0 = performance.now();
      const res = await generate(model, promptIds, {
        maxNewTokens: maxNew, temperature, topP, seed, adapters,
        onToken: (id) => { if (!json && stream) process.stdout.write(stream.push(id)); },
      });
      const secs = (performance.now() - t0) / 1000;
      if (!json && stream) process.stdout.write(stream.flush() + '\n');
      if (!json && !tok) process.stdout.write(res.outputIds.join(',') + '\n');
      const text = tok ? tok.decode(res.outputIds) : null;
      if (json) jsonLine({ prompt_ids: promptIds, output_ids: res.outputIds, text, stop: res.stop, tokens_per_s: res.outputIds.length / secs });
      else progress.log(`${res.outputIds.length} tokens in ${secs.toFixed(2)}s (${(res.outputIds.length / secs).toFixed(1)} tokens/s, stop: ${res.stop})`);
      return 0;
    } finally {
      await backend.destroy();
    }
  },
};
