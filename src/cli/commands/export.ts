// webqlora export --model M --adapter DIR --out A.gguf [--dtype f32|f16|bf16|q8_0]
// Writes a LoRA adapter as a llama.cpp LoRA adapter GGUF (src/model/gguf-adapter.ts) for the
// base model's architecture: `llama-cli -m base.gguf --lora A.gguf`, Ollama's ADAPTER line.
import { stat } from 'node:fs/promises';
import { basename, dirname, extname } from 'node:path';
import { WebqloraError } from '../../errors.ts';
import { NodeOutDir } from '../../io/node.ts';
import { openModelPath } from '../../io/node-model.ts';
import { writeGgufAdapter, type AdapterDtype } from '../../model/gguf-adapter.ts';
import { createReferenceBackend } from '../../backend/reference/index.ts';
import { bool, choice, required, type Command, type FlagTable } from '../args.ts';
import { jsonLine, loadAdapterDir } from '../common.ts';
import { ADAPTER, JSON_OUT, MODEL } from '../flags.ts';
import { Progress } from '../progress.ts';

const FLAGS: FlagTable = {
  model: { ...MODEL, help: 'the base the adapter was trained on (HF directory, .gguf, llama2.c .bin); only its config is read' },
  adapter: { ...ADAPTER, required: true },
  out: { kind: 'string', arg: 'A.gguf', group: 'output', required: true, help: 'the llama.cpp LoRA adapter to write' },
  dtype: { kind: 'choice', choices: ['f32', 'f16', 'bf16', 'q8_0'], default: 'f32', group: 'output', help: 'tensor type of the adapter matrices' },
  json: JSON_OUT,
};

export const exportCommand: Command = {
  summary: 'write a LoRA adapter as a llama.cpp GGUF adapter (llama-cli --lora, Ollama ADAPTER)',
  flags: FLAGS,
  example: 'webqlora export --model tinyllama-1.1b-chat.Q4_K_M.gguf --adapter run --out adapter.gguf',
  async run(p) {
    const json = bool(p, 'json');
    const spec = required(p, 'model');
    const adapterPath = required(p, 'adapter');
    const out = required(p, 'out');
    const dtype = choice<AdapterDtype>(p, 'dtype');
    if (extname(out).toLowerCase() !== '.gguf') throw new WebqloraError(`--out ${out} must end in .gguf.`);
    if (await stat(out).then(() => true, () => false)) throw new WebqloraError(`${out} already exists (choose another --out).`);
    const progress = new Progress(process.stderr, json);
    // only the model's config is needed (architecture, shapes): no weights are loaded
    const source = await openModelPath(spec);
    const backend = createReferenceBackend();
    try {
      const lora = await loadAdapterDir(adapterPath, backend, source.config);
      const r = await writeGgufAdapter(lora, source.config, await new NodeOutDir(dirname(out)).create(basename(out)), { dtype, what: adapterPath });
      progress.done(`exported ${adapterPath} → ${out} (${r.tensors} tensors, ${dtype}, llama.cpp alpha ${r.alpha})`);
      if (json) jsonLine({ out, tensors: r.tensors, dtype, alpha: r.alpha });
      lora.free();
      return 0;
    } finally {
      await source.close();
      await backend.destroy();
    }
  },
};
