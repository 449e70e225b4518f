// The five training-data formats (DESIGN.md "Formats") and their validation. A raw JSON record
// becomes a typed DataRecord here, or a one-sentence WebqloraError naming file and line.
//
//   text        {"text"}
//   completion  {"prompt", "completion"}
//   alpaca      {"instruction", "input"?, "output"}
//   chat        {"messages": [{"role": "system"|"user"|"assistant", "content"}]}, or ShareGPT's
//               {"conversations": [{"from": "system"|"human"|"gpt", "value"}]} (also "user" and
//               "assistant" for from, as axolotl accepts), read as the same messages
//   tokens      {"input_ids", "labels"?}   integers; labels aligned with input_ids, −100 ignored
//
// Unknown keys are ignored. `auto` picks the format from the keys of the first record, in this
// order: "messages" or "conversations" → chat, "input_ids" → tokens, "instruction" → alpaca,
// "prompt" and "completion" → completion, "text" → text; every later record must then match that
// format.
import { WebqloraError } from '../errors.ts';
import type { RawRecord } from './read.ts';

export type DataFormat = 'text' | 'completion' | 'alpaca' | 'chat' | 'tokens';
export type FormatOption = DataFormat | 'auto';
export const DATA_FORMATS: readonly DataFormat[] = ['text', 'completion', 'alpaca', 'chat', 'tokens'];

export type ChatRole = 'system' | 'user' | 'assistant';
export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** Label value that is never scored (PyTorch CrossEntropyLoss ignore_index, HF convention). */
export const IGNORE_INDEX = -100;

export type DataRecord =
  | { format: 'text'; text: string }
  | { format: 'completion'; prompt: string; completion: string }
  | { format: 'alpaca'; instruction: string; input: string; output: string }
  | { format: 'chat'; messages: ChatMessage[] }
  | { format: 'tokens'; inputIds: number[]; labels: number[] | null };

/** The format a record's keys point to, or null if none (see the order in the file comment). */
export function detectFormat(value: object): DataFormat | null {
  if ('messages' in value || 'conversations' in value) return 'chat';
  if ('input_ids' in value) return 'tokens';
  if ('instruction' in value) return 'alpaca';
  if ('prompt' in value && 'completion' in value) return 'completion';
  if ('text' in value) return 'text';
  return null;
}

const SHAPE: Record<DataFormat, string> = {
  text: 'a "text" string',
  completion: '"prompt" and "completion" strings',
  alpaca: '"instruction" and "output" strings',
  chat: 'a "messages" or "conversations" array',
  tokens: 'an "input_ids" array',
};

const ROLES: readonly string[] = ['system', 'user', 'assistant'];

/**
 * ShareGPT speaker names ("from") → roles: FastChat's human/gpt/system, plus the user/assistant
 * spellings axolotl's chat_template strategy maps to the same roles. Anything else (tool,
 * function_call, observation, bing, ...) is refused rather than guessed.
 */
const SHAREGPT_ROLES: Readonly<Record<string, ChatRole>> = {
  system: 'system', human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant',
};

/**
 * Validates records one by one against a fixed or auto-detected format. `vocabSize`, when known,
 * bounds the token ids of the tokens format.
 */
export class RecordParser {
  private fmt: DataFormat | null;
  private detectedFrom: number | null = null;

  constructor(readonly file: string, requested: FormatOption, readonly vocabSize: number | null = null) {
    if (requested !== 'auto' && !DATA_FORMATS.includes(requested)) {
      throw new WebqloraError(`unknown data format "${requested}" (expected auto, ${DATA_FORMATS.join(', ')}).`);
    }
    this.fmt = requested === 'auto' ? null : requested;
  }

  /** The format in force: the requested one, or the one detected from the first record. */
  get format(): DataFormat | null { return this.fmt; }

  parse(rec: RawRecord): DataRecord {
    const at = `${this.file}:${rec.line}`;
    const v = rec.value;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      throw new WebqloraError(`${at}: expected an object, got ${describe(v)}.`);
    }
    if (this.fmt === null) {
      const f = detectFormat(v);
      if (f === null) {
        const keys = Object.keys(v).map((k) => `"${k}"`).join(', ') || 'none';
        throw new WebqloraError(
          `${at}: cannot tell the data format from the keys (${keys}); expected "text", "prompt" and "completion", ` +
            `"instruction" and "output", "messages", "conversations" or "input_ids" (or pass the format explicitly).`,
        );
      }
      this.fmt = f;
      this.detectedFrom = rec.line;
    }
    const o = v as Record<string, unknown>;
    const fmt = this.fmt;
    const missing = (): WebqloraError => {
      const why = this.detectedFrom === null ? `${fmt} format` : `${fmt} format, detected from line ${this.detectedFrom}`;
      return new WebqloraError(`${at}: expected ${SHAPE[fmt]} (${why}).`);
    };
    const str = (key: string): string => {
      const s = o[key];
      if (typeof s !== 'string') throw new WebqloraError(`${at}: "${key}" must be a string, got ${describe(s)}.`);
      return s;
    };
    switch (fmt) {
      case 'text':
        if (!('text' in o)) throw missing();
        return { format: 'text', text: str('text') };
      case 'completion':
        if (!('prompt' in o) || !('completion' in o)) throw missing();
        return { format: 'completion', prompt: str('prompt'), completion: str('completion') };
      case 'alpaca': {
        if (!('instruction' in o) || !('output' in o)) throw missing();
        const input = o.input === undefined || o.input === null ? '' : str('input');
        return { format: 'alpaca', instruction: str('instruction'), input, output: str('output') };
      }
      case 'chat':
        if ('messages' in o) return { format: 'chat', messages: this.messages(at, o.messages) };
        if ('conversations' in o) return { format: 'chat', messages: this.shareGpt(at, o.conversations) };
        throw missing();
      case 'tokens':
        if (!('input_ids' in o)) throw missing();
        return this.tokens(at, o.input_ids, o.labels);
    }
  }

  /** ShareGPT `conversations`: {"from", "value"} turns, roles mapped by SHAREGPT_ROLES. */
  private shareGpt(at: string, c: unknown): ChatMessage[] {
    if (!Array.isArray(c) || c.length === 0) {
      throw new WebqloraError(`${at}: "conversations" must be a non-empty array of {"from", "value"} objects, got ${describe(c)}.`);
    }
    return c.map((turn, i): ChatMessage => {
      if (turn === null || typeof turn !== 'object' || Array.isArray(turn)) {
        throw new WebqloraError(`${at}: conversations[${i}] must be an object with "from" and "value", got ${describe(turn)}.`);
      }
      const { from, value } = turn as Record<string, unknown>;
      const role = typeof from === 'string' && Object.hasOwn(SHAREGPT_ROLES, from) ? SHAREGPT_ROLES[from]! : null;
      if (role === null) {
        throw new WebqloraError(
          `${at}: conversations[${i}].from must be "human", "gpt" or "system" (or "user", "assistant"), got ${describe(from)} (other roles are not supported).`,
        );
      }
      if (typeof value !== 'string') {
        throw new WebqloraError(`${at}: conversations[${i}].value must be a string, got ${describe(value)}.`);
      }
      return { role, content: value };
    });
  }

  private messages(at: string, m: unknown): ChatMessage[] {
    if (!Array.isArray(m) || m.length === 0) {
      throw new WebqloraError(`${at}: "messages" must be a non-empty array of {"role", "content"} objects, got ${describe(m)}.`);
    }
    return m.map((msg, i): ChatMessage => {
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
        throw new WebqloraError(`${at}: messages[${i}] must be an object with "role" and "content", got ${describe(msg)}.`);
      }
      const { role, content } = msg as Record<string, unknown>;
      if (typeof role !== 'string' || !ROLES.includes(role)) {
        const hint = role === undefined && 'from' in msg ? ' (ShareGPT {"from", "value"} turns go in "conversations")' : '';
        throw new WebqloraError(`${at}: messages[${i}].role must be "system", "user" or "assistant", got ${describe(role)}${hint}.`);
      }
      if (typeof content !== 'string') {
        throw new WebqloraError(`${at}: messages[${i}].content must be a string, got ${describe(content)}.`);
      }
      return { role: role as ChatRole, content };
    });
  }

  private tokens(at: string, ids: unknown, labels: unknown): DataRecord {
    const V = this.vocabSize;
    const inVocab = V === null ? '' : ` in [0, ${V})`;
    const inputIds = intArray(at, 'input_ids', ids);
    if (inputIds.length === 0) throw new WebqloraError(`${at}: "input_ids" must not be empty.`);
    for (let i = 0; i < inputIds.length; i++) {
      const t = inputIds[i]!;
      if (t < 0 || (V !== null && t >= V)) {
        throw new WebqloraError(`${at}: input_ids[${i}] = ${t} is not a token id${inVocab}.`);
      }
    }
    if (labels === undefined || labels === null) return { format: 'tokens', inputIds, labels: null };
    const lab = intArray(at, 'labels', labels);
    if (lab.length !== inputIds.length) {
      throw new WebqloraError(`${at}: "labels" has ${lab.length} entries but "input_ids" has ${inputIds.length} (labels are aligned with input_ids).`);
    }
    for (let i = 0; i < lab.length; i++) {
      const t = lab[i]!;
      if (t !== IGNORE_INDEX && (t < 0 || (V !== null && t >= V))) {
        throw new WebqloraError(`${at}: labels[${i}] = ${t} is neither ${IGNORE_INDEX} nor a token id${inVocab}.`);
      }
    }
    return { format: 'tokens', inputIds, labels: lab };
  }
}

function intArray(at: string, key: string, a: unknown): number[] {
  if (!Array.isArray(a)) throw new WebqloraError(`${at}: "${key}" must be an array of integers, got ${describe(a)}.`);
  for (let i = 0; i < a.length; i++) {
    if (!Number.isSafeInteger(a[i])) {
      throw new WebqloraError(`${at}: "${key}" must be an array of integers (element ${i} is ${describe(a[i])}).`);
    }
  }
  return a as number[];
}

/** A short description of a JSON value for error messages. */
export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return v.length > 40 ? `the string "${v.slice(0, 37)}..."` : `the string "${v}"`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v === 'number' ? 'the number' : 'the boolean'} ${String(v)}`;
}
