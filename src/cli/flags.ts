// Flag definitions shared by several commands (one object each, so a flag reads the same in every
// command's help and in one README row). Defaults come from the library's own constants.
import { DEFAULT_EXAMPLE_OPTIONS } from '../data/example.ts';
import type { FormatOption } from '../data/index.ts';
import { DEFAULT_LORA } from '../model/lora.ts';
import { ALLOWED_BLOCKSIZES } from '../quant/types.ts';
import { TRAIN_DEFAULTS } from '../train/trainer.ts';
import type { FlagDef, FlagTable } from './args.ts';

export const FORMATS = ['auto', 'text', 'completion', 'alpaca', 'chat', 'tokens'] as const satisfies readonly FormatOption[];

export const MODEL: FlagDef = {
  kind: 'string', arg: 'PATH', group: 'model', required: true,
  help: 'the base model: a Hugging Face directory, a .gguf, a llama2.c .bin, or synthetic:NAME',
};
export const TOKENIZER: FlagDef = {
  kind: 'string', arg: 'PATH', group: 'model', defaultText: "the model's own",
  help: 'tokenizer.json, tokenizer.model (SentencePiece), a llama2.c tokenizer.bin, a .gguf vocabulary, or a directory with one',
};
export const QUANT: FlagDef = {
  kind: 'choice', choices: ['nf4', 'fp4', 'int4', 'none'], default: 'nf4', group: 'model',
  help: 'how the base linear layers are held: 4-bit NF4 (QLoRA), FP4, int4, or none (float32, as plain LoRA)',
};
export const DOUBLE_QUANT: FlagDef = {
  kind: 'bool', default: true, group: 'model',
  help: "quantize the 4-bit blocks' absmax constants too (QLoRA's double quantization)",
};
export const BLOCKSIZE: FlagDef = {
  kind: 'choice', choices: ALLOWED_BLOCKSIZES.map(String), default: '64', arg: 'N', group: 'model',
  help: 'weights per 4-bit block (one absmax constant each)',
};
export const BACKEND: FlagDef = {
  kind: 'choice', choices: ['auto', 'wasm', 'webgpu'], default: 'auto', group: 'backend',
  help: 'auto: WebGPU on a real GPU, else WASM (one line says which and why)',
};
export const THREADS: FlagDef = {
  kind: 'int', arg: 'N', min: 1, max: 256, group: 'backend', defaultText: 'every core',
  help: 'WASM worker threads (results are bit-identical for any count)',
};
export const PAGE_WEIGHTS: FlagDef = {
  kind: 'bool', group: 'memory', defaultText: 'only when the run would not fit',
  help: 'keep the 4-bit base layers in host memory and stream them in one layer at a time',
};
export const JSON_OUT: FlagDef = { kind: 'bool', group: 'output', help: 'print JSON records on stdout (one per line) instead of text' };
export const VERBOSE: FlagDef = { kind: 'bool', group: 'output', help: 'also show what the WebGPU driver (Dawn) prints while it looks for a GPU' };

/** The flags of every command that loads a model onto a backend. */
export const MODEL_FLAGS: FlagTable = {
  model: MODEL, tokenizer: TOKENIZER, quant: QUANT, 'double-quant': DOUBLE_QUANT, blocksize: BLOCKSIZE,
  'page-weights': PAGE_WEIGHTS, backend: BACKEND, threads: THREADS, json: JSON_OUT, verbose: VERBOSE,
};

export const ADAPTER: FlagDef = { kind: 'string', arg: 'DIR', group: 'LoRA', help: 'a LoRA adapter: a PEFT directory or a llama.cpp adapter .gguf' };

export const DATA: FlagDef = {
  kind: 'string', arg: 'FILE', group: 'data', required: true,
  help: 'JSONL or JSON records: {"text"}, {"prompt","completion"}, alpaca, chat {"messages"}, ShareGPT {"conversations"}, or {"input_ids"}',
};
export const FORMAT: FlagDef = {
  kind: 'choice', choices: FORMATS, default: 'auto', arg: 'FORMAT', group: 'data',
  help: 'the records\' format (auto: from the first record\'s keys)',
};
export const SEQ_LEN: FlagDef = {
  kind: 'int', arg: 'N', min: 2, group: 'data', defaultText: `min(${TRAIN_DEFAULTS.seqLen}, the model's context)`,
  help: 'tokens per sequence; longer examples are truncated',
};
export const TRAIN_ON_PROMPT: FlagDef = {
  kind: 'bool', group: 'data', defaultText: 'responses only',
  help: 'score the prompt tokens as well as the responses',
};

// The LoRA settings of a fresh adapter (train) and of inspect's memory estimate.
export const LORA_R: FlagDef = { kind: 'int', arg: 'N', min: 1, default: DEFAULT_LORA.r, group: 'LoRA', help: 'LoRA rank r' };
export const TARGET: FlagDef = {
  kind: 'string', arg: 'LIST', default: 'all-linear', group: 'LoRA',
  help: 'modules that get adapters: all-linear, or a comma list such as q_proj,v_proj',
};
export const BATCH_SIZE: FlagDef = { kind: 'int', arg: 'N', min: 1, default: TRAIN_DEFAULTS.batchSize, group: 'optimization', help: 'sequences per micro-batch' };
export const OPTIMIZER: FlagDef = {
  kind: 'choice', choices: ['adamw', 'paged-adamw', 'sgd'], default: TRAIN_DEFAULTS.optimizer, group: 'optimization',
  help: 'paged-adamw keeps the AdamW moments in host memory',
};
export const CHECKPOINTING: FlagDef = { kind: 'bool', group: 'memory', help: 'gradient checkpointing: recompute each layer in the backward instead of keeping its activations' };

export { DEFAULT_EXAMPLE_OPTIONS, DEFAULT_LORA, TRAIN_DEFAULTS };
