// Preference data for DPO and ORPO, as TRL reads it: one pair per record, {"prompt", "chosen",
// "rejected"}, in one of two forms (the first record decides; every later one must match):
//   standard        three strings. A pair is prompt + chosen and prompt + rejected, each piece
//                   tokenized on its own (TRL's tokenize_row: the prompt's tokens, then the
//                   response's, then EOS); the prompt gets BOS in front when the tokenizer has one,
//                   as the completion format does (qlora; TRL's ORPO does the same, its DPO does not
//                   for decoder-only models). Only the response tokens, EOS included, are scored.
//   conversational  "prompt" a list of {"role", "content"} messages, "chosen" and "rejected" lists
//                   of assistant messages. prompt + chosen is rendered as one conversation with the
//                   tokenizer's chat template (template.ts, exactly as SFT chat data: Guanaco
//                   fallback, BOS rule, EOS after a Guanaco conversation), and the assistant turns
//                   of the response are scored as SFT scores them (the reply and its end-of-turn
//                   token); the prompt's own assistant turns are not.
// A pair longer than the sequence length keeps the end of its prompt (TRL's max_prompt_length
// keeps the end) and the start of its response (max_completion_length keeps the start); BOS stays.
// Each pair becomes two Examples (chosen, rejected); a batch of P pairs is 2P rows, the chosen rows
// first (TRL's concatenated_forward), each side padded to the longest row of the batch.
import { WebqloraError } from '../errors.ts';
import type { ByteSource } from '../io/source.ts';
import { Batcher, type Batch, type BatcherOptions } from './batch.ts';
import { exampleScored, type DatasetSummary, type Example } from './example.ts';
import { describe, IGNORE_INDEX, type ChatMessage, type ChatRole } from './format.ts';
import { layoutFromName, readRecords, type RawRecord } from './read.ts';
import { splitValidation } from './split.ts';
import { chatAddsBos, chatRendererFor, tokenizeChat, type ChatRenderer } from './template.ts';
import type { DataTokenizer } from './tokenizer.ts';

export type PreferenceFormat = 'standard' | 'conversational';

export type PreferenceRecord =
  | { format: 'standard'; prompt: string; chosen: string; rejected: string }
  | { format: 'conversational'; prompt: ChatMessage[]; chosen: ChatMessage[]; rejected: ChatMessage[] };

/** One preference pair, tokenized: both sequences start with the same prompt (unless truncated). */
export interface PreferencePair {
  chosen: Example;
  rejected: Example;
}

/**
 * A preference file. The counts are of pairs: truncated (either side shortened to the sequence
 * length), dropped (one side has no token left to score), tokens and scored (both sides).
 */
export interface PreferenceDataset extends DatasetSummary {
  format: PreferenceFormat;
  /** Kept pairs in file order; both sides have at least one scored token. */
  pairs: PreferencePair[];
}

const KEYS = ['prompt', 'chosen', 'rejected'] as const;
const ROLES: readonly string[] = ['system', 'user', 'assistant'];

/** Validates raw records as preference pairs; the first record fixes the form. */
export class PreferenceParser {
  private fmt: PreferenceFormat | null = null;
  private from = 0;

  constructor(readonly file: string) {}

  get format(): PreferenceFormat | null { return this.fmt; }

  parse(rec: RawRecord): PreferenceRecord {
    const at = `${this.file}:${rec.line}`;
    const v = rec.value;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new WebqloraError(`${at}: expected a preference pair {"prompt", "chosen", "rejected"}, got ${describe(v)}.`);
    const o = v as Record<string, unknown>;
    const missing = KEYS.filter((k) => !(k in o));
    if (missing.length > 0) {
      throw new WebqloraError(`${at}: a preference pair needs "prompt", "chosen" and "rejected", and ${missing.map((k) => `"${k}"`).join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing.`);
    }
    const fmt: PreferenceFormat = typeof o.prompt === 'string' ? 'standard' : 'conversational';
    if (this.fmt === null) {
      this.fmt = fmt;
      this.from = rec.line;
    } else if (fmt !== this.fmt) {
      throw new WebqloraError(`${at}: a ${fmt} pair in a file of ${this.fmt} pairs (line ${this.from}); every record must have the same form.`);
    }
    if (fmt === 'standard') {
      for (const k of KEYS) if (typeof o[k] !== 'string') throw new WebqloraError(`${at}: "${k}" must be a string in a standard pair (as "prompt" is), got ${describe(o[k])}.`);
      return { format: 'standard', prompt: o.prompt as string, chosen: o.chosen as string, rejected: o.rejected as string };
    }
    return {
      format: 'conversational',
      prompt: messages(at, 'prompt', o.prompt, null),
      chosen: messages(at, 'chosen', o.chosen, 'assistant'),
      rejected: messages(at, 'rejected', o.rejected, 'assistant'),
    };
  }
}

function messages(at: string, key: string, m: unknown, only: ChatRole | null): ChatMessage[] {
  if (!Array.isArray(m) || m.length === 0) {
    throw new WebqloraError(`${at}: "${key}" must be a string or a non-empty array of {"role", "content"} messages, got ${describe(m)}.`);
  }
  return m.map((msg, i): ChatMessage => {
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new WebqloraError(`${at}: ${key}[${i}] must be an object with "role" and "content", got ${describe(msg)}.`);
    const { role, content } = msg as Record<string, unknown>;
    if (only !== null && role !== only) throw new WebqloraError(`${at}: ${key}[${i}].role must be "${only}" (a response is the assistant's), got ${describe(role)}.`);
    if (typeof role !== 'string' || !ROLES.includes(role)) throw new WebqloraError(`${at}: ${key}[${i}].role must be "system", "user" or "assistant", got ${describe(role)}.`);
    if (typeof content !== 'string') throw new WebqloraError(`${at}: ${key}[${i}].content must be a string, got ${describe(content)}.`);
    return { role: role as ChatRole, content };
  });
}

/** Tokenizes preference records into pairs of Examples. */
export class PreferenceBuilder {
  private renderer: ChatRenderer | null = null;

  constructor(private readonly tok: DataTokenizer, private readonly maxLen: number, private readonly file: string, private readonly vocabSize: number | null = null) {
    if (!(Number.isSafeInteger(maxLen) && maxLen >= 2)) throw new WebqloraError(`the sequence length must be a whole number ≥ 2, got ${maxLen}.`);
  }

  get chatRenderer(): ChatRenderer | null { return this.renderer; }

  /**
   * A pair longer than the sequence keeps BOS, the same end of the prompt on both sides (DPO and
   * ORPO compare π(y_c | x) with π(y_r | x) for one x) — as much as the longer response leaves —
   * and the start of each response.
   */
  build(rec: PreferenceRecord, line: number): { pair: PreferencePair; truncated: boolean } {
    const c = this.side(rec, 'chosen', line), r = this.side(rec, 'rejected', line), L = this.maxLen;
    if (c.ids.length <= L && r.ids.length <= L) return { pair: { chosen: { inputIds: c.ids, labels: c.labels }, rejected: { inputIds: r.ids, labels: r.labels } }, truncated: false };
    const bosOf = (s: Side) => (this.tok.bosId !== null && s.promptLen > 0 && s.ids[0] === this.tok.bosId ? 1 : 0);
    const respMax = Math.max(c.ids.length - c.promptLen, r.ids.length - r.promptLen);
    const promptMin = Math.min(c.promptLen, r.promptLen);
    const keepPrompt = Math.min(promptMin, Math.max(Math.min(promptMin, bosOf(c) + 1), L - respMax));
    const cut = (s: Side): Example => {
      const bos = Math.min(bosOf(s), keepPrompt), keepResp = Math.min(s.ids.length - s.promptLen, L - keepPrompt);
      const pick = (a: number[]) => [...a.slice(0, bos), ...a.slice(s.promptLen - (keepPrompt - bos), s.promptLen), ...a.slice(s.promptLen, s.promptLen + keepResp)];
      return { inputIds: pick(s.ids), labels: pick(s.labels) };
    };
    return { pair: { chosen: cut(c), rejected: cut(r) }, truncated: true };
  }

  private side(rec: PreferenceRecord, which: 'chosen' | 'rejected', line: number): Side {
    const tok = this.tok;
    let ids: number[], labels: number[], promptLen: number;
    if (rec.format === 'standard') {
      const encode = (s: string) => tok.encode(s, { addBos: false, addEos: false });
      const prompt = [...(tok.bosId === null ? [] : [tok.bosId]), ...encode(rec.prompt)];
      const resp = [...encode(rec[which]), ...(tok.eosId === null ? [] : [tok.eosId])];
      ids = [...prompt, ...resp];
      labels = [...new Array<number>(prompt.length).fill(IGNORE_INDEX), ...resp];
      promptLen = prompt.length;
    } else {
      try {
        this.renderer ??= chatRendererFor(tok);
        const addBos = chatAddsBos(tok, this.renderer);
        const chat = tokenizeChat(tok, this.renderer, [...rec.prompt, ...rec[which]], addBos);
        ids = chat.ids;
        // the prompt ends where the conversation rendered up to its generation prompt stops agreeing with the whole
        const head = tok.encode(this.renderer.render(rec.prompt, true), { addBos: false, addEos: false });
        if (addBos && head[0] !== tok.bosId) head.unshift(tok.bosId!);
        promptLen = 0;
        while (promptLen < head.length && promptLen < ids.length && head[promptLen] === ids[promptLen]) promptLen++;
        labels = new Array<number>(ids.length).fill(IGNORE_INDEX);
        for (const [a, b] of chat.assistantSpans) if (b > promptLen) for (let t = a; t < b; t++) labels[t] = ids[t]!;
        if (this.renderer.kind === 'guanaco' && tok.eosId !== null) {
          // as SFT chat data: EOS closes a Guanaco conversation, scored after an assistant turn
          ids.push(tok.eosId);
          labels.push(tok.eosId);
        }
      } catch (e) {
        if (e instanceof WebqloraError) throw new WebqloraError(`${this.file}:${line}: ${e.message}`);
        throw e;
      }
    }
    if (this.vocabSize !== null) {
      const bad = ids.find((t) => t >= this.vocabSize!);
      if (bad !== undefined) throw new WebqloraError(`${this.file}:${line}: the tokenizer produced id ${bad}, outside the model's vocabulary of ${this.vocabSize} (tokenizer and model do not match).`);
    }
    return { ids, labels, promptLen };
  }
}

/** One side of a pair before truncation: prompt then response, the first promptLen ids the prompt. */
interface Side {
  ids: number[];
  labels: number[];
  promptLen: number;
}

export interface LoadPreferenceOptions {
  tokenizer: DataTokenizer | null;
  /** The model's vocabulary size. Default: the tokenizer's. */
  vocabSize?: number | null;
  /** Tokens per sequence (the training --seq-len). */
  maxLen: number;
  chunkSize?: number;
}

/** Reads, validates and tokenizes a preference file; errors name the file and line. */
export async function loadPreferenceDataset(src: ByteSource, opts: LoadPreferenceOptions): Promise<PreferenceDataset> {
  const tok = opts.tokenizer;
  if (layoutFromName(src.name) === 'txt') throw new WebqloraError(`${src.name}: preference pairs are JSON records {"prompt", "chosen", "rejected"} (JSONL or a JSON array), not plain text.`);
  if (tok === null) throw new WebqloraError(`${src.name}: preference pairs need a tokenizer (the model has none: give one with --tokenizer PATH).`);
  const vocabSize = opts.vocabSize ?? tok.vocabSize;
  const parser = new PreferenceParser(src.name);
  const builder = new PreferenceBuilder(tok, opts.maxLen, src.name, vocabSize);
  const pairs: PreferencePair[] = [];
  let records = 0, truncated = 0, dropped = 0, tokens = 0, scored = 0;
  for await (const raw of readRecords(src, opts.chunkSize ? { chunkSize: opts.chunkSize } : {})) {
    records++;
    const { pair, truncated: cut } = builder.build(parser.parse(raw), raw.line);
    if (cut) truncated++;
    const sc = exampleScored(pair.chosen), sr = exampleScored(pair.rejected);
    if (sc === 0 || sr === 0) { dropped++; continue; }
    pairs.push(pair);
    tokens += pair.chosen.inputIds.length + pair.rejected.inputIds.length;
    scored += sc + sr;
  }
  if (pairs.length === 0) {
    throw new WebqloraError(`${src.name}: none of the ${records} pairs leaves a response token to score on both sides (responses cut off by the sequence length of ${opts.maxLen}?).`);
  }
  const format = parser.format!;
  return { name: src.name, format, pairs, records, truncated, dropped, tokens, scored, chatRendering: format === 'conversational' ? builder.chatRenderer?.kind ?? null : null };
}

/**
 * The training pairs and the validation pairs: `valid` when given (same form required), else a
 * held-out split of the training pairs (split.ts: 10%, at most 1024, none under 10 pairs).
 */
export async function loadPreferenceTrainValid(
  train: ByteSource,
  valid: ByteSource | null,
  opts: LoadPreferenceOptions & { seed?: number },
): Promise<{ train: PreferenceDataset; valid: PreferenceDataset | null; validSource: 'file' | 'split' | 'none' }> {
  const t = await loadPreferenceDataset(train, opts);
  if (valid !== null) {
    const v = await loadPreferenceDataset(valid, opts);
    if (v.format !== t.format) throw new WebqloraError(`${valid.name}: ${v.format} pairs, but the training pairs are ${t.format} (use one form for both).`);
    return { train: t, valid: v, validSource: 'file' };
  }
  const { train: tr, valid: va } = splitValidation(t.pairs, { seed: opts.seed ?? 0 });
  if (va.length === 0) return { train: t, valid: null, validSource: 'none' };
  const part = (name: string, pairs: PreferencePair[]): PreferenceDataset => {
    let tokens = 0, scored = 0;
    for (const p of pairs) {
      tokens += p.chosen.inputIds.length + p.rejected.inputIds.length;
      scored += exampleScored(p.chosen) + exampleScored(p.rejected);
    }
    return { ...t, name, pairs, tokens, scored };
  };
  return { train: part(t.name, tr), valid: part(`${t.name} (held out)`, va), validSource: 'split' };
}

/** A micro-batch of P pairs: B = 2P rows, rows 0..P−1 the chosen sides, P..2P−1 the rejected ones. */
export interface PreferenceBatch extends Batch {
  pairs: number;
}

/**
 * Micro-batches of pairs in the Batcher's order (batch.ts: grouped by the longer side's length,
 * shuffled, or sequential) with its exact state()/restore(); batchSize counts pairs.
 */
export class PreferenceBatcher {
  private readonly inner: Batcher;
  private readonly padId: number;

  /** opts as the Batcher's, without packing: a pair's two rows stay whole sequences */
  constructor(private readonly pairs: readonly PreferencePair[], opts: Omit<BatcherOptions, 'packing'>) {
    // the Batcher orders and positions; each pair stands in as its longer side
    const proxies = pairs.map((p) => (p.chosen.inputIds.length >= p.rejected.inputIds.length ? p.chosen : p.rejected));
    this.inner = new Batcher(proxies, opts);
    this.padId = opts.padId ?? 0;
  }

  get batchesPerEpoch(): number { return this.inner.batchesPerEpoch; }
  get epoch(): number { return this.inner.epoch; }

  next(): PreferenceBatch {
    const b = this.inner.next();
    return assemblePairs(b.indices.map((i) => this.pairs[i]!), this.padId, b.epoch, b.indices);
  }

  state(): unknown { return this.inner.state(); }
  restore(state: unknown): void { this.inner.restore(state); }
}

/** One pass over the pairs in file order, `batchSize` pairs at a time (an evaluation's batches). */
export function* preferenceEvalBatches(pairs: readonly PreferencePair[], opts: { batchSize: number; padId?: number }): Generator<PreferenceBatch> {
  const b = new PreferenceBatcher(pairs, { batchSize: opts.batchSize, order: 'sequential', padId: opts.padId ?? 0 });
  for (let i = 0; i < b.batchesPerEpoch; i++) yield b.next();
}

/** The 2P rows of P pairs (chosen rows first), right-padded to the longest, targets shifted as batch.ts. */
export function assemblePairs(pairs: readonly PreferencePair[], padId: number, epoch = 0, indices: number[] = []): PreferenceBatch {
  const P = pairs.length, rows = [...pairs.map((p) => p.chosen), ...pairs.map((p) => p.rejected)];
  const B = 2 * P;
  let T = 0;
  for (const ex of rows) T = Math.max(T, ex.inputIds.length);
  const ids = new Int32Array(B * T).fill(padId);
  const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
  let scored = 0;
  rows.forEach((ex, b) => {
    const Lb = ex.inputIds.length;
    for (let t = 0; t < Lb; t++) ids[b * T + t] = ex.inputIds[t]!;
    for (let t = 0; t + 1 < Lb; t++) targets[b * T + t] = ex.labels[t + 1]!;
    scored += exampleScored(ex);
  });
  return { ids, targets, B, T, scored, epoch, indices, pairs: P };
}
