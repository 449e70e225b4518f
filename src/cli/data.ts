// Data flags shared by train and eval, and the lines that say what was read.
import { loadDataset, type Dataset, type FormatOption } from '../data/index.ts';
import type { ByteSource } from '../io/source.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { bool, choice, type Parsed } from './args.ts';
import type { Progress } from './progress.ts';

export { FORMATS } from './flags.ts';

export async function loadDataFrom(p: Parsed, src: ByteSource, tok: Tokenizer | null, vocabSize: number, seqLen: number, progress: Progress): Promise<Dataset> {
  const ds = await loadDataset(src, { format: choice<FormatOption>(p, 'format'), tokenizer: tok, vocabSize, maxLen: seqLen, trainOnPrompt: bool(p, 'train-on-prompt') });
  logDataset(ds, progress);
  return ds;
}

export function describeDataset(ds: Dataset): string {
  let s = `data ${ds.name}: ${ds.examples.length} examples (${ds.format}${ds.chatRendering ? `, ${ds.chatRendering} rendering` : ''}), ${ds.tokens} tokens, ${ds.scored} scored`;
  if (ds.truncated) s += `, ${ds.truncated} truncated`;
  if (ds.dropped) s += `, ${ds.dropped} dropped (nothing left to score)`;
  return s;
}

/** The data line, and one more when chat records fall back to the Guanaco format. */
export function logDataset(ds: Dataset, progress: Progress): void {
  progress.log(describeDataset(ds));
  if (ds.chatRendering === 'guanaco') {
    progress.log('the tokenizer has no chat template: chat records are rendered in the Guanaco format ("### Human: … ### Assistant: …") instead');
  }
}
