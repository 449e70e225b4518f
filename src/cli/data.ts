// Data flags shared by train and eval.
import { loadDataset, type Dataset, type FormatOption } from '../data/index.ts';
import type { ByteSource } from '../io/source.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { bool, choice, type Parsed } from './args.ts';
import type { Progress } from './progress.ts';

export const FORMATS: readonly FormatOption[] = ['auto', 'text', 'completion', 'alpaca', 'chat', 'tokens'];

export async function loadDataFrom(cmd: string, p: Parsed, src: ByteSource, tok: Tokenizer | null, vocabSize: number, seqLen: number, progress: Progress): Promise<Dataset> {
  const format = choice(cmd, p, 'format', FORMATS, 'auto');
  const ds = await loadDataset(src, { format, tokenizer: tok, vocabSize, maxLen: seqLen, trainOnPrompt: bool(p, 'train-on-prompt', false) });
  progress.log(describeDataset(ds));
  return ds;
}

export function describeDataset(ds: Dataset): string {
  let s = `data ${ds.name}: ${ds.examples.length} examples (${ds.format}${ds.chatRendering ? `, ${ds.chatRendering} rendering` : ''}), ${ds.tokens} tokens, ${ds.scored} scored`;
  if (ds.truncated) s += `, ${ds.truncated} truncated`;
  if (ds.dropped) s += `, ${ds.dropped} dropped (nothing left to score)`;
  return s;
}
