// webqlora generate --model M [--adapter DIR] (--prompt TEXT | --prompt-ids 1,2,3)
//   [--max-new-tokens N] [--temperature 0] [--top-p 1] [--seed 0] [quantization/backend flags] [--json]
// Text streams to stdout as it is generated; --json prints one record at the end.
import { WebqloraError } from '../../errors.ts';
import { generate } from '../../generate/generate.ts';
import { bool, num, parseFlags, str } from '../args.ts';
import { adapterConfigAt, backendFrom, backendThreads, contextOf, jsonLine, loadAdapterDir, loadModelFrom, MODEL_FLAGS, quantFlags } from '../common.ts';
import { estimateInferenceMemory } from '../../model/memory.ts';
import { Progress } from '../progress.ts';
import type { Command } from './index.ts';

export const generateCommand: Command = {
  summary: 'generate text from a prompt (optionally with a LoRA adapter)',
  async run(argv) {
    const cmd = 'generate';
    const p = parseFlags(cmd, argv, {
      ...MODEL_FLAGS, adapter: { type: 'string' }, prompt: { type: 'string' }, 'prompt-ids': { type: 'string' },
      'max-new-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-p': { type: 'string' }, seed: { type: 'string' },
    });
    const json = bool(p, 'json', false);
    const prompt = str(p, 'prompt'), promptIdsFlag = str(p, 'prompt-ids');
    if ((prompt === undefined) === (promptIdsFlag === undefined)) throw new WebqloraError('webqlora generate: give exactly one of --prompt TEXT or --prompt-ids 1,2,3.');
    const maxNew = num(cmd, p, 'max-new-tokens', 128, { int: true, min: 1 });
    const temperature = num(cmd, p, 'temperature', 0, { min: 0 });
    const topP = num(cmd, p, 'top-p', 1, { min: 0, max: 1 });
    const seed = num(cmd, p, 'seed', 0, { int: true, min: 0 });
    const adapterDir = str(p, 'adapter');
    const progress = new Progress(process.stderr, json);
    const backend = await backendFrom(cmd, p, progress);
    try {
      // the run's memory before the tokenizer exists: a text prompt has at most one token per
      // UTF-8 byte, plus a few special ones
      const promptMax = promptIdsFlag !== undefined ? promptIdsFlag.split(',').length : new TextEncoder().encode(prompt!).length + 8;
      const q = quantFlags(cmd, p), lora = adapterDir ? await adapterConfigAt(adapterDir) : null, threads = backendThreads(backend);
      const { model, tok, spec } = await loadModelFrom(cmd, p, backend, progress, {
        memory: (c, _seqLen, pageWeights) => {
          const context = contextOf(c), kvCache = Math.min(promptMax + maxNew, context);
          return estimateInferenceMemory(c, { ...q, lora, batch: 1, seqLen: Math.min(128, promptMax, context), kvCache, maxPositions: context, pageWeights, threads });
        },
      });
      let promptIds: number[];
      if (promptIdsFlag !== undefined) {
        promptIds = promptIdsFlag.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
          const v = Number(s);
          if (!Number.isInteger(v)) throw new WebqloraError(`webqlora generate: --prompt-ids: '${s}' is not an integer.`);
          return v;
        });
      } else {
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
