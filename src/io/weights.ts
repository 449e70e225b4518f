// WeightSource: a model file of any supported format seen one tensor at a time, with HF names
// and HF layouts. Loaders in this folder produce it; src/model/ consumes it and never needs to
// know which format a tensor came from.
import type { ModelConfig } from '../model/config.ts';
import type { Quant4Tensor } from '../quant/types.ts';
import type { DType } from './dtype.ts';

export interface TensorRef {
  /** HF name, e.g. model.layers.0.self_attn.q_proj.weight */
  name: string;
  /** dtype as stored (GGUF quantized types are reported as their dequantized float type F32). */
  dtype: DType;
  shape: number[];
}

export type WeightFormat = 'hf' | 'bnb-4bit' | 'gguf' | 'llama2c' | 'synthetic';

/** Vocabulary carried inside a model file (GGUF tokenizer.ggml.*, llama2.c has none). */
export interface EmbeddedVocab {
  model: 'llama' | 'gpt2' | string;
  /**
   * tokenizer.ggml.pre: llama.cpp's name for how a gpt2 (byte-level BPE) vocabulary splits text
   * before merging ('llama-bpe', 'qwen2', 'smollm', 'gpt-2', ...); null when the file has none.
   */
  pre: string | null;
  tokens: string[];
  scores: Float32Array | null;
  /** GGUF token types (1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte). */
  tokenTypes: Int32Array | null;
  merges: string[] | null;
  bosId: number | null;
  eosId: number | null;
  unkId: number | null;
  padId: number | null;
  addBos: boolean;
  addEos: boolean;
  /**
   * tokenizer.ggml.add_space_prefix: a SentencePiece vocabulary prepends '▁' to the text (the
   * dummy prefix). llama.cpp's default is true for 'llama' vocabularies; Gemma files say false.
   */
  addSpacePrefix: boolean;
  /** tokenizer.chat_template of the file, when it has one. */
  chatTemplate?: string | null;
}

/** readFloatRows' range check: rows [row0, row0 + rows) must lie in the tensor (an internal error otherwise). */
export function checkRowRange(name: string, shape: readonly number[], row0: number, rows: number): void {
  if (!(Number.isInteger(row0) && Number.isInteger(rows) && row0 >= 0 && rows >= 0 && row0 + rows <= shape[0]!)) throw new Error(`readFloatRows: rows [${row0}, ${row0 + rows}) of ${name} [${shape.join(', ')}]`);
}

export interface WeightSource {
  readonly format: WeightFormat;
  /** Path or name, for messages. */
  readonly name: string;
  readonly config: ModelConfig;
  /** Every tensor, by HF name. For bnb checkpoints: one entry per quantized weight (not its parts). */
  readonly tensors: TensorRef[];
  /** Vocabulary stored in the model file itself, if any. */
  readonly vocab: EmbeddedVocab | null;
  /**
   * Float32 values of one tensor in HF layout: rotate-half order of q/k rows (GGUF and llama2.c
   * store them interleaved and are permuted here), dequantized if stored quantized. A loader may
   * write the values into `into` (when it has exactly the tensor's element count) and return it,
   * so one buffer serves a whole load; callers must use the returned array either way.
   */
  readFloat(name: string, into?: Float32Array): Promise<Float32Array>;
  /**
   * Rows [row0, row0 + rows) of a 2-D float tensor as float32, when the format can read part of a
   * tensor (HF safetensors, synthetic). Loading reads the [V, C] tables this way so that a large
   * vocabulary's table never exists whole in float32 next to its half-precision copy.
   */
  readFloatRows?(name: string, row0: number, rows: number, into?: Float32Array): Promise<Float32Array>;
  /** A bnb 4-bit weight exactly as stored (never re-quantized), or null if the tensor is not 4-bit. */
  readQuant(name: string): Promise<Quant4Tensor | null>;
  close(): Promise<void>;
}
