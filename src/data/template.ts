// Prompt templates: the exact Alpaca strings of artidoro/qlora, the Guanaco (OASST1) turn format,
// and chat templates (the tokenizer's Jinja `chat_template`, rendered as transformers'
// apply_chat_template does), plus the token spans of the assistant turns of a conversation.
import { Template } from '@huggingface/jinja';
import { WebqloraError } from '../errors.ts';
import type { ChatMessage } from './format.ts';
import type { DataTokenizer } from './tokenizer.ts';

// qlora.py ALPACA_PROMPT_DICT; QLORA_SPEC §7.5. Note the trailing space after "### Response:",
// which the original Stanford Alpaca template does not have.
export const ALPACA_PROMPT_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: ';
export const ALPACA_PROMPT_NO_INPUT =
  'Below is an instruction that describes a task. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response: ';

/** The Alpaca prompt for a record; qlora uses the with-input template iff input is non-empty. */
export function alpacaPrompt(instruction: string, input: string): string {
  // Split/join rather than String.replace: a "$&" in the data must stay literal.
  return input !== ''
    ? ALPACA_PROMPT_INPUT.split('{instruction}').join(instruction).split('{input}').join(input)
    : ALPACA_PROMPT_NO_INPUT.split('{instruction}').join(instruction);
}

/**
 * Renders a conversation to text. `addGenerationPrompt` appends what opens an assistant turn (as
 * transformers' `add_generation_prompt=True`).
 */
export interface ChatRenderer {
  /** 'template' = the tokenizer's chat_template; 'guanaco' = the fallback below. */
  readonly kind: 'template' | 'guanaco';
  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string;
}

/**
 * The Guanaco / OASST1 format of qlora (QLORA_SPEC §7.5), used for chat data when the tokenizer
 * has no chat_template: "### Human: {user}### Assistant: {assistant}" with no separator between
 * a turn's text and the next marker; a system message is written as plain text followed by one
 * space (as the Guanaco inference prompt "A chat between … questions. ### Human: …"). The
 * generation prompt is "### Assistant:" — the space belongs to the reply, so that the prompt is
 * tokenized as it is inside the whole conversation. The text carries no EOS; the example builder
 * appends the EOS token id after the conversation (qlora: target = output + EOS).
 */
export const guanacoRenderer: ChatRenderer = {
  kind: 'guanaco',
  render(messages, addGenerationPrompt) {
    let s = '';
    for (const m of messages) {
      if (m.role === 'system') s += `${m.content} `;
      else if (m.role === 'user') s += `### Human: ${m.content}`;
      else s += `### Assistant: ${m.content}`;
    }
    return addGenerationPrompt ? `${s}### Assistant:` : s;
  },
};

/** Special-token strings handed to a chat template, as in transformers' special_tokens_map. */
export interface SpecialTokenStrings {
  bos_token?: string;
  eos_token?: string;
  pad_token?: string;
  unk_token?: string;
}

/**
 * A compiled Jinja chat template. Rendering passes `messages`, `add_generation_prompt` and the
 * special-token strings, as transformers' apply_chat_template does (the Jinja runtime already
 * provides `raise_exception` and `strftime_now`, with trim_blocks and lstrip_blocks as in
 * transformers). Template errors become WebqloraError (callers prefix the file and line).
 */
export class JinjaChatRenderer implements ChatRenderer {
  readonly kind = 'template' as const;
  private readonly template: Template;
  constructor(source: string, private readonly special: SpecialTokenStrings) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new WebqloraError(`the tokenizer's chat template does not parse (${(e as Error).message}).`);
    }
  }
  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return this.template.render({
        ...this.special,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
      });
    } catch (e) {
      throw new WebqloraError(`the chat template failed on this conversation (${(e as Error).message}).`);
    }
  }
}

/** The tokenizer's chat template, or the Guanaco fallback when it has none. */
export function chatRendererFor(tok: DataTokenizer): ChatRenderer {
  if (tok.chatTemplate === null || tok.chatTemplate === '') return guanacoRenderer;
  return new JinjaChatRenderer(tok.chatTemplate, specialTokenStrings(tok));
}

export function specialTokenStrings(tok: DataTokenizer): SpecialTokenStrings {
  const s: SpecialTokenStrings = {};
  const str = (id: number | null): string | undefined => (id === null ? undefined : tok.idToToken(id) ?? undefined);
  const bos = str(tok.bosId), eos = str(tok.eosId), pad = str(tok.padId);
  if (bos !== undefined) s.bos_token = bos;
  if (eos !== undefined) s.eos_token = eos;
  if (pad !== undefined) s.pad_token = pad;
  return s;
}

/** Token ids of a conversation and the [start, end) token spans of its assistant turns. */
export interface ChatTokens {
  ids: number[];
  /** Assistant-turn spans in `ids`, in order; each covers the reply and what closes it. */
  assistantSpans: Array<[number, number]>;
}

/**
 * Tokenizes a conversation and finds each assistant turn, by rendering it progressively: for an
 * assistant message i, the conversation up to i with the generation prompt must be a prefix of
 * the whole rendered conversation (otherwise the template rewrites earlier turns, e.g. drops past
 * reasoning, and we cannot tell which tokens are the reply — that is an error). The turn's span
 * starts where the tokens of that prefix stop agreeing with the tokens of the whole, and ends
 * where the tokens of the conversation up to and including i stop agreeing; comparing tokens
 * rather than characters puts a token that straddles a boundary on the far side, and lets a
 * template close the rendered text with a trailer (Phi-3 appends eos_token when
 * add_generation_prompt is false) without breaking the search. The last assistant message runs to
 * the end of the conversation, trailer included. The span therefore holds the reply and whatever
 * the template writes after it (end-of-turn token, newline).
 *
 * BOS: the rendered text is tokenized without special tokens; a BOS is then put in front when
 * `addBos` is set and the template did not already write it (so Llama-3-style templates that
 * start with bos_token do not get two).
 */
export function tokenizeChat(tok: DataTokenizer, renderer: ChatRenderer, messages: readonly ChatMessage[], addBos: boolean): ChatTokens {
  const encode = (s: string): number[] => tok.encode(s, { addBos: false, addEos: false });
  const full = renderer.render(messages, false);
  const ids = encode(full);
  const spans: Array<[number, number]> = [];
  for (let i = 0; i < messages.length; i++) {
    if (messages[i]!.role !== 'assistant') continue;
    const prompt = renderer.render(messages.slice(0, i), true);
    if (!full.startsWith(prompt)) {
      throw new WebqloraError(
        `the chat template does not render conversations incrementally: the prompt before messages[${i}] ` +
          `is not a prefix of the whole conversation, so the assistant turns cannot be located (use --train-on-prompt, or another format).`,
      );
    }
    const start = commonPrefix(encode(prompt), ids);
    let end = ids.length;
    if (i < messages.length - 1) {
      const upTo = renderer.render(messages.slice(0, i + 1), false);
      if (!upTo.startsWith(prompt)) {
        throw new WebqloraError(
          `the chat template renders messages[${i}] differently with and without the generation prompt, ` +
            `so the assistant turns cannot be located (use --train-on-prompt, or another format).`,
        );
      }
      end = commonPrefix(encode(upTo), ids);
    }
    if (end > start) spans.push([start, end]);
  }
  if (addBos && tok.bosId !== null && ids[0] !== tok.bosId) {
    ids.unshift(tok.bosId);
    for (const s of spans) { s[0]++; s[1]++; }
  }
  return { ids, assistantSpans: spans };
}

/**
 * The token ids of a chat prompt for generation: the conversation rendered with the generation
 * prompt, BOS handled as in `tokenizeChat`, so an application generating from a conversation feeds
 * the model exactly what training showed it (the CLI's generate takes a raw prompt).
 */
export function encodeChatPrompt(tok: DataTokenizer, messages: readonly ChatMessage[]): number[] {
  const renderer = chatRendererFor(tok);
  const ids = tok.encode(renderer.render(messages, true), { addBos: false, addEos: false });
  if (chatAddsBos(tok, renderer) && ids[0] !== tok.bosId) ids.unshift(tok.bosId!);
  return ids;
}

/**
 * Whether a rendered conversation gets a BOS in front (unless the template wrote one). With a
 * chat template: when the tokenizer puts BOS in front of plain text by default (HF
 * `tokenizer(text)`, its post-processor or add_bos_token: yes for Llama/TinyLlama, no for Phi-3,
 * Qwen2, GPT-2), which is what transformers' text-generation pipeline feeds a chat model. The
 * Guanaco fallback is qlora's own format and gets BOS whenever there is one (qlora: BOS + source).
 */
export function chatAddsBos(tok: DataTokenizer, renderer: ChatRenderer): boolean {
  if (tok.bosId === null) return false;
  return renderer.kind === 'guanaco' ? true : tok.addBos;
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
