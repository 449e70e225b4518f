// DataRecord → token ids and labels, following artidoro/qlora's data pipeline (QLORA_SPEC §7.4):
//
//   source/target formats (alpaca, completion):
//     source = BOS + source text, target = target text + EOS, tokenized separately without
//     special tokens, then truncated independently: source to its first sourceMaxLen tokens,
//     target to its first targetMaxLen tokens (so a cut target loses its EOS, as in qlora).
//     input_ids = source ++ target; labels = −100 over the source, the target ids after it
//     (labels = input_ids with trainOnPrompt, qlora's train_on_source).
//   text:    BOS + text + EOS, every token labelled (nothing is a prompt).
//   chat:    the conversation rendered by the tokenizer's chat template and tokenized as
//            transformers' apply_chat_template does (template.ts); labels on each assistant reply
//            and its end-of-turn token only (everything with trainOnPrompt).
//   tokens:  input_ids and labels as given (labels absent = a copy of input_ids).
//
// Then every format is cut to maxLen tokens (the training sequence length), keeping the start:
// the tail goes, which for source/target formats is the end of the target. buildAll() instead
// splits a plain-text document longer than maxLen into consecutive windows of maxLen tokens (the
// usual language-modelling "group texts" treatment: no text is lost, and each window's first
// token is context only). Labels are aligned with input_ids (HF convention); the shift to
// next-token targets happens in the batcher.
import { WebqloraError } from '../errors.ts';
import { IGNORE_INDEX, type DataRecord } from './format.ts';
import { alpacaPrompt, chatAddsBos, chatRendererFor, tokenizeChat, type ChatRenderer, type ChatTokens } from './template.ts';
import type { DataTokenizer } from './tokenizer.ts';

/** What a loaded dataset (Dataset in index.ts, PreferenceDataset in preference.ts) says about its file. */
export interface DatasetSummary {
  /** The source's name, as used in messages. */
  name: string;
  /** Records read from the file. */
  records: number;
  /** Examples shortened by sourceMaxLen / targetMaxLen / maxLen (ExampleBuilder says where). */
  truncated: number;
  /** Records left out because no token of them is scored (after truncation, or no assistant turn). */
  dropped: number;
  /** Tokens in the kept examples. */
  tokens: number;
  /** Scored tokens (next-token targets ≠ −100) in the kept examples. */
  scored: number;
  /** For chat data: 'template' (the tokenizer's chat_template) or 'guanaco' (the fallback, template.ts); else null. */
  chatRendering: 'template' | 'guanaco' | null;
}

/** One training sequence: token ids and aligned labels (−100 = not scored), equal lengths. */
export interface Example {
  inputIds: number[];
  labels: number[];
}

export interface ExampleOptions {
  /** Source (prompt) tokens kept, BOS included. qlora.py default 1024. */
  sourceMaxLen: number;
  /** Target (response) tokens kept, EOS included. qlora.py default 256. */
  targetMaxLen: number;
  /** Every example is cut to this many tokens (the training --seq-len). */
  maxLen: number;
  /** Score the prompt too (qlora's train_on_source; all turns of a chat). */
  trainOnPrompt: boolean;
}

/** qlora.py's source_max_len / target_max_len defaults; maxLen is the CLI's --seq-len default. */
export const DEFAULT_EXAMPLE_OPTIONS: ExampleOptions = { sourceMaxLen: 1024, targetMaxLen: 256, maxLen: 512, trainOnPrompt: false };

const PREFIX_CHARS_PER_TOKEN = 64;
const PREFIX_SLACK = 64;

/** Builds Examples for one file; `vocabSize` (the model's) bounds tokenizer output when known. */
export class ExampleBuilder {
  private renderer: ChatRenderer | null = null;

  constructor(
    private readonly tok: DataTokenizer | null,
    private readonly opts: ExampleOptions,
    private readonly file: string,
    private readonly vocabSize: number | null = null,
  ) {
    for (const k of ['sourceMaxLen', 'targetMaxLen', 'maxLen'] as const) {
      const v = opts[k];
      if (!(Number.isSafeInteger(v) && v >= 1)) throw new WebqloraError(`${k} must be a positive integer, got ${v}.`);
    }
  }

  /** The chat renderer in use (after the first chat record), for reporting the Guanaco fallback. */
  get chatRenderer(): ChatRenderer | null { return this.renderer; }

  /**
   * Every example of one record: one for most formats (as build()), several windows for a
   * plain-text document longer than maxLen (windows without a scored position are left out).
   */
  buildAll(rec: DataRecord, line: number): { examples: Example[]; truncated: boolean } {
    if (rec.format !== 'text' || this.tok === null) {
      const { example, truncated } = this.build(rec, line);
      return { examples: [example], truncated };
    }
    const tok = this.tok;
    const ids = [...(tok.bosId === null ? [] : [tok.bosId]), ...tok.encode(rec.text, { addBos: false, addEos: false }), ...(tok.eosId === null ? [] : [tok.eosId])];
    this.checkVocab(ids, line);
    const L = this.opts.maxLen;
    const examples: Example[] = [];
    for (let s = 0; s < ids.length; s += L) {
      const w = ids.slice(s, s + L);
      if (w.length >= 2) examples.push({ inputIds: w, labels: w.slice() });
    }
    return { examples, truncated: false };
  }

  private checkVocab(ids: number[], line: number): void {
    if (this.vocabSize === null) return;
    const V = this.vocabSize;
    const bad = ids.find((t) => t >= V);
    if (bad !== undefined) {
      throw new WebqloraError(`${this.file}:${line}: the tokenizer produced id ${bad}, outside the model's vocabulary of ${V} (tokenizer and model do not match).`);
    }
  }

  build(rec: DataRecord, line: number): { example: Example; truncated: boolean } {
    let ids: number[], labels: number[], truncated = false;
    if (rec.format === 'tokens') {
      ids = rec.inputIds;
      labels = rec.labels ?? rec.inputIds.slice();
    } else {
      const tok = this.tok;
      if (tok === null) {
        throw new WebqloraError(`${this.file}:${line}: the ${rec.format} format needs a tokenizer (the model has none: give one with --tokenizer PATH, or use pre-tokenized {"input_ids"} lines).`);
      }
      const bos = tok.bosId === null ? [] : [tok.bosId];
      const eos = tok.eosId === null ? [] : [tok.eosId];
      const encode = (s: string): number[] => tok.encode(s, { addBos: false, addEos: false });
      // Only the first `keep` tokens of a text can survive truncation. A text of more than
      // PREFIX_CHARS_PER_TOKEN·keep characters (a whole book as one document) is tokenized from a
      // prefix of that many characters when the prefix alone gives `keep` + PREFIX_SLACK tokens:
      // tokens that far from the cut do not depend on it, and the rest would be thrown away.
      const encodeFirst = (s: string, keep: number): number[] => {
        const chars = keep * PREFIX_CHARS_PER_TOKEN;
        if (s.length > chars) {
          const head = encode(s.slice(0, chars));
          if (head.length >= keep + PREFIX_SLACK) return head;
        }
        return encode(s);
      };
      switch (rec.format) {
        case 'text':
          ids = [...bos, ...encodeFirst(rec.text, this.opts.maxLen), ...eos];
          labels = ids.slice();
          break;
        case 'completion':
        case 'alpaca': {
          const source = rec.format === 'alpaca' ? alpacaPrompt(rec.instruction, rec.input) : rec.prompt;
          const target = rec.format === 'alpaca' ? rec.output : rec.completion;
          let s = [...bos, ...encodeFirst(source, this.opts.sourceMaxLen)];
          let t = [...encodeFirst(target, this.opts.targetMaxLen), ...eos];
          if (s.length > this.opts.sourceMaxLen) { s = s.slice(0, this.opts.sourceMaxLen); truncated = true; }
          if (t.length > this.opts.targetMaxLen) { t = t.slice(0, this.opts.targetMaxLen); truncated = true; }
          ids = [...s, ...t];
          labels = this.opts.trainOnPrompt ? ids.slice() : [...new Array<number>(s.length).fill(IGNORE_INDEX), ...t];
          break;
        }
        case 'chat': {
          let chat: ChatTokens;
          try {
            this.renderer ??= chatRendererFor(tok);
            chat = tokenizeChat(tok, this.renderer, rec.messages, chatAddsBos(tok, this.renderer));
          } catch (e) {
            if (e instanceof WebqloraError) throw new WebqloraError(`${this.file}:${line}: ${e.message}`);
            throw e;
          }
          const guanaco = this.renderer.kind === 'guanaco';
          ids = chat.ids;
          if (this.opts.trainOnPrompt) {
            labels = ids.slice();
          } else {
            labels = new Array<number>(ids.length).fill(IGNORE_INDEX);
            for (const [a, b] of chat.assistantSpans) for (let t = a; t < b; t++) labels[t] = ids[t]!;
          }
          if (guanaco && tok.eosId !== null) {
            // The Guanaco text has no end marker: EOS closes the conversation (scored when the
            // assistant has the last word), as qlora's target = output + EOS.
            ids.push(tok.eosId);
            const lastIsAssistant = rec.messages[rec.messages.length - 1]!.role === 'assistant';
            labels.push(this.opts.trainOnPrompt || lastIsAssistant ? tok.eosId : IGNORE_INDEX);
          }
          break;
        }
      }
      this.checkVocab(ids, line);
    }
    if (ids.length > this.opts.maxLen) {
      ids = ids.slice(0, this.opts.maxLen);
      labels = labels.slice(0, this.opts.maxLen);
      truncated = true;
    }
    return { example: { inputIds: ids, labels }, truncated };
  }
}

/** Positions scored in training: t ≥ 1 with labels[t] ≠ −100 (position t−1 predicts token t). */
export function exampleScored(ex: Example): number {
  let n = 0;
  for (let t = 1; t < ex.labels.length; t++) if (ex.labels[t] !== IGNORE_INDEX) n++;
  return n;
}
