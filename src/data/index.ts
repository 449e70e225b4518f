// Training data: file → records → validated DataRecords → token Examples → micro-batches.
//   read.ts      streamed records with line numbers (JSONL, JSON array, plain text)
//   format.ts    the five formats and auto-detection
//   template.ts  Alpaca / Guanaco / chat-template rendering, assistant spans
//   example.ts   qlora's tokenization, labels and truncation
//   batch.ts     deterministic padded micro-batches with HF-shifted targets
//   pack.ts      sample packing: examples packed into rows with per-example positions and attention
//   split.ts     the held-out validation split
import { WebqloraError } from '../errors.ts';
import type { ByteSource } from '../io/source.ts';
import { Batcher, type BatcherOptions } from './batch.ts';
import { DEFAULT_EXAMPLE_OPTIONS, ExampleBuilder, exampleScored, type DatasetSummary, type Example, type ExampleOptions } from './example.ts';
import { RecordParser, type DataFormat, type FormatOption } from './format.ts';
import { layoutFromName, readRecords, type FileLayout } from './read.ts';
import { splitValidation } from './split.ts';
import type { DataTokenizer } from './tokenizer.ts';

export * from './batch.ts';
export * from './example.ts';
export * from './format.ts';
export * from './pack.ts';
export * from './read.ts';
export * from './split.ts';
export * from './template.ts';
export type { DataTokenizer } from './tokenizer.ts';
export { seededPermutation, mixSeed } from './shuffle.ts';

export interface LoadDatasetOptions extends Partial<ExampleOptions> {
  /** Default 'auto'. */
  format?: FormatOption;
  /** Needed by every format but `tokens`. */
  tokenizer?: DataTokenizer | null;
  /** The model's vocabulary size: token ids must lie below it. Default: the tokenizer's, else unchecked. */
  vocabSize?: number | null;
  /** Overrides the layout guessed from the file name (read.ts). */
  layout?: FileLayout;
  /** Bytes per read. Default 1 MiB. */
  chunkSize?: number;
}

export interface Dataset extends DatasetSummary {
  format: DataFormat;
  /** Kept examples, in file order (a long text document gives several windows); each has at least one scored token. */
  examples: Example[];
}

/**
 * Reads, validates and tokenizes a whole training or eval file. Errors are WebqloraErrors naming
 * the file and line.
 */
export async function loadDataset(src: ByteSource, opts: LoadDatasetOptions = {}): Promise<Dataset> {
  const tok = opts.tokenizer ?? null;
  const vocabSize = opts.vocabSize ?? tok?.vocabSize ?? null;
  const layout = opts.layout ?? layoutFromName(src.name) ?? undefined;
  let requested = opts.format ?? 'auto';
  if (layout === 'txt') {
    if (requested !== 'auto' && requested !== 'text') {
      throw new WebqloraError(`${src.name}: a plain-text file holds the text format only, not ${requested} (use JSONL for ${requested} records).`);
    }
    requested = 'text';
  }
  const exampleOpts: ExampleOptions = {
    sourceMaxLen: opts.sourceMaxLen ?? DEFAULT_EXAMPLE_OPTIONS.sourceMaxLen,
    targetMaxLen: opts.targetMaxLen ?? DEFAULT_EXAMPLE_OPTIONS.targetMaxLen,
    maxLen: opts.maxLen ?? DEFAULT_EXAMPLE_OPTIONS.maxLen,
    trainOnPrompt: opts.trainOnPrompt ?? DEFAULT_EXAMPLE_OPTIONS.trainOnPrompt,
  };
  const parser = new RecordParser(src.name, requested, vocabSize);
  const builder = new ExampleBuilder(tok, exampleOpts, src.name, vocabSize);
  const examples: Example[] = [];
  let records = 0, truncated = 0, dropped = 0, tokens = 0, scored = 0;
  const readOpts = { ...(layout ? { layout } : {}), ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}) };
  for await (const raw of readRecords(src, readOpts)) {
    records++;
    const { examples: built, truncated: cut } = builder.buildAll(parser.parse(raw), raw.line);
    if (cut) truncated++;
    let kept = 0;
    for (const example of built) {
      const s = exampleScored(example);
      if (s === 0) continue;
      examples.push(example);
      tokens += example.inputIds.length;
      scored += s;
      kept++;
    }
    if (kept === 0) dropped++;
  }
  if (examples.length === 0) {
    throw new WebqloraError(
      `${src.name}: none of the ${records} records leaves a token to train on (responses cut off by the sequence length of ${exampleOpts.maxLen}, or no assistant turn).`,
    );
  }
  const format = parser.format!;
  return { name: src.name, format, examples, records, truncated, dropped, tokens, scored, chatRendering: format === 'chat' ? builder.chatRenderer?.kind ?? null : null };
}

/** Padding id for batches: the tokenizer's pad, else its EOS, else 0 (padding is never scored). */
export function padIdFor(tok: DataTokenizer | null): number {
  return tok?.padId ?? tok?.eosId ?? 0;
}

export interface TrainValidOptions extends LoadDatasetOptions {
  /** Seed of the held-out split. Default 0. */
  seed?: number;
}

/**
 * The training set and the validation set: `valid` when given (read in the training file's
 * format), else a held-out split of the training examples (split.ts: 10%, at most 1024, at least
 * 1, none under 10 examples). For a split, `examples`, `tokens` and `scored` are per part while
 * `records`, `truncated` and `dropped` still describe the whole file.
 */
export async function loadTrainValid(
  train: ByteSource,
  valid: ByteSource | null,
  opts: TrainValidOptions = {},
): Promise<{ train: Dataset; valid: Dataset | null; validSource: 'file' | 'split' | 'none' }> {
  const t = await loadDataset(train, opts);
  if (valid !== null) {
    // The validation file must be in the training file's format (auto or not).
    const v = await loadDataset(valid, { ...opts, format: opts.format && opts.format !== 'auto' ? opts.format : t.format });
    return { train: t, valid: v, validSource: 'file' };
  }
  const { train: tr, valid: va } = splitValidation(t.examples, { seed: opts.seed ?? 0 });
  if (va.length === 0) return { train: t, valid: null, validSource: 'none' };
  const part = (name: string, ex: Example[]): Dataset => {
    let tokens = 0, scored = 0;
    for (const e of ex) { tokens += e.inputIds.length; scored += exampleScored(e); }
    return { ...t, name, examples: ex, tokens, scored };
  };
  return { train: part(t.name, tr), valid: part(`${t.name} (held out)`, va), validSource: 'split' };
}

/** A batcher over a dataset with the padding id of its tokenizer. */
export function batcherFor(ds: Dataset, tok: DataTokenizer | null, opts: Omit<BatcherOptions, 'padId'>): Batcher {
  return new Batcher(ds.examples, { ...opts, padId: padIdFor(tok) });
}
