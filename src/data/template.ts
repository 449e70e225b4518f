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

/**
 * The named special tokens a chat template can read, in transformers' order
 * (SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES).
 */
export const SPECIAL_TOKEN_NAMES = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
export type SpecialTokenName = (typeof SPECIAL_TOKEN_NAMES)[number];

/**
 * Special-token strings handed to a chat template: transformers' apply_chat_template renders with
 * `template_kwargs = {**self.special_tokens_map, **kwargs}`, and in transformers 5
 * special_tokens_map holds each named token that is set (bos, eos, unk, sep, pad, cls, mask) as a
 * string; the extra special tokens are not passed (4.x also passed additional_special_tokens).
 */
export type SpecialTokenStrings = Partial<Record<SpecialTokenName, string>>;

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

/**
 * The special tokens the tokenizer names: its `specialTokensMap` when it carries one (the named
 * tokens of tokenizer_config.json), else bos/eos/unk/pad from their ids. A token that is not set
 * is left out, so `{% if unk_token is defined %}` behaves as in transformers.
 */
export function specialTokenStrings(tok: DataTokenizer): SpecialTokenStrings {
  const s: SpecialTokenStrings = {};
  if (tok.specialTokensMap) {
    for (const k of SPECIAL_TOKEN_NAMES) {
      const v = tok.specialTokensMap[k];
      if (typeof v === 'string') s[k] = v;
    }
    return s;
  }
  const str = (id: number | null): string | undefined => (id === null ? undefined : tok.idToToken(id) ?? undefined);
  const named: Array<[SpecialTokenName, number | null]> = [['bos_token', tok.bosId], ['eos_token', tok.eosId], ['unk_token', tok.unkId], ['pad_token', tok.padId]];
  for (const [k, id] of named) {
    const v = str(id);
    if (v !== undefined) s[k] = v;
  }
  return s;
}

/** Token ids of a conversation and the [start, end) token spans of its assistant turns. */
export interface ChatTokens {
  ids: number[];
  /** Assistant-turn spans in `ids`, in order: the tokens that are scored (see tokenizeChat). */
  assistantSpans: Array<[number, number]>;
}

/**
 * Tokenizes a conversation and finds the tokens of each assistant turn that training scores.
 *
 * With a chat template, the rule is transformers' `apply_chat_template(...,
 * return_assistant_tokens_mask=True)` for a template that wraps each reply in
 * `{% generation %}{{ content }}<end-of-turn>{% endgeneration %}`: the reply and the end-of-turn
 * token the template writes right after it, and nothing the template writes after that. transformers
 * marks, for each generation block covering characters [a, b) of the rendered text, the tokens from
 * `char_to_token(a)` to `char_to_token(b − 1)` inclusive, so a token straddling either edge is
 * scored. The end-of-turn token is the first special token after the reply (whitespace between
 * them is scored too); with none, the reply alone is scored. For the templates of our fixtures:
 *   ChatML (SmolLM2, Qwen2.5)  reply + <|im_end|>   not the "\n" after it
 *   Zephyr (TinyLlama)         reply + </s>         not the "\n" after it
 *   Phi-3                      reply + <|end|>      not the "\n" after it (absorbed by <|end|>'s
 *                                                   rstrip) nor the trailing <|endoftext|>
 * (A reply that starts with whitespace which the token before it swallows — Phi-3's <|assistant|>
 * has rstrip — gets that token scored too, as char_to_token gives it.) Checked against transformers
 * 5.18's mask, computed over the `tokenizers` library's ids and offsets for the fixture
 * tokenizer.json files (test/data/chat.test.ts).
 *
 * The reply is found by rendering progressively: the conversation before assistant message i, with
 * the generation prompt, must be a prefix of the whole rendered conversation (otherwise the
 * template rewrites earlier turns, e.g. drops past reasoning, and the reply cannot be located — an
 * error), and the reply's text (as given, or trimmed) must follow it within the turn. Character
 * positions become token positions by tokenizing the text up to them and comparing with the
 * tokens of the whole.
 *
 * The Guanaco fallback has no end-of-turn token: its span is everything written after
 * "### Assistant:" up to the next turn (the EOS that closes the text is the example builder's).
 *
 * BOS: the rendered text is tokenized without special tokens, as apply_chat_template does
 * (add_special_tokens=False: a BOS is there only when the template writes it); `addBos` puts one in
 * front unless the text already starts with it (the Guanaco format: qlora's BOS + source).
 */
export function tokenizeChat(tok: DataTokenizer, renderer: ChatRenderer, messages: readonly ChatMessage[], addBos: boolean): ChatTokens {
  const encode = (s: string): number[] => tok.encode(s, { addBos: false, addEos: false });
  const full = renderer.render(messages, false);
  const ids = encode(full);
  // char_to_token(c): the index of the token holding character c of `full`, found by tokenizing
  // the text before c. The first token that differs from the whole's holds c (when it starts
  // before c it straddles the boundary, and is counted as transformers counts it) — unless the
  // text before c is whole tokens and the last of them swallows c too (an added token with
  // rstrip, as Phi-3's <|assistant|> takes the whitespace after it), which adding c reveals.
  const tokenAt = (c: number): number => {
    if (c >= full.length) return ids.length;
    const head = encode(full.slice(0, c));
    const k = commonPrefix(head, ids);
    if (k > 0 && k === head.length && /\s/.test(full[c]!)) {
      const next = encode(full.slice(0, c + 1));
      if (next.length === k && commonPrefix(next, ids) === k) return k - 1;
    }
    return k;
  };
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
    // The turn ends where the conversation up to message i stops agreeing with the whole (a
    // trailer such as Phi-3's eos_token after the last message does not count).
    let upTo: string | null = null;
    if (i < messages.length - 1) {
      upTo = renderer.render(messages.slice(0, i + 1), false);
      if (!upTo.startsWith(prompt)) {
        throw new WebqloraError(
          `the chat template renders messages[${i}] differently with and without the generation prompt, ` +
            `so the assistant turns cannot be located (use --train-on-prompt, or another format).`,
        );
      }
    }
    let start: number, end: number;
    if (renderer.kind === 'guanaco') {
      start = commonPrefix(encode(prompt), ids);
      end = upTo === null ? ids.length : commonPrefix(encode(upTo), ids);
    } else {
      const bound = upTo === null ? full.length : commonPrefixLength(upTo, full);
      const reply = locate(full, messages[i]!.content, prompt.length, bound);
      if (reply === null) {
        throw new WebqloraError(
          `the chat template does not write the content of messages[${i}] as given, so its reply cannot be located ` +
            `(use --train-on-prompt, or another format).`,
        );
      }
      start = tokenAt(reply.start);
      // The end-of-turn token: the token holding the first non-space character after the reply,
      // if it is a special token; else the reply ends with the token holding its last character.
      const eot = reply.end + /^\s*/.exec(full.slice(reply.end, bound))![0].length;
      const t = eot < bound ? tokenAt(eot) : ids.length;
      end = t < ids.length && tok.isSpecial(ids[t]!) ? t + 1 : reply.end > reply.start ? tokenAt(reply.end - 1) + 1 : start;
    }
    if (end > start) spans.push([start, end]);
  }
  if (addBos && tok.bosId !== null && ids[0] !== tok.bosId) {
    ids.unshift(tok.bosId);
    for (const s of spans) { s[0]++; s[1]++; }
  }
  return { ids, assistantSpans: spans };
}

/** Where `content` (else its trimmed text) is written in text[from, to), or null. */
function locate(text: string, content: string, from: number, to: number): { start: number; end: number } | null {
  for (const c of content.trim() === content ? [content] : [content, content.trim()]) {
    const at = text.indexOf(c, from);
    if (at >= 0 && at + c.length <= to) return { start: at, end: at + c.length };
  }
  return null;
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
 * Whether a rendered conversation gets a BOS in front (unless the text starts with one). Not with a
 * chat template: transformers 5's apply_chat_template tokenizes the rendered text with
 * add_special_tokens=False, so a template that wants BOS writes `{{ bos_token }}` (Llama 3, Mistral)
 * and one that does not (TinyLlama's Zephyr template, Phi-3, ChatML) gets none. The Guanaco fallback
 * is qlora's own format and gets BOS whenever there is one (qlora: BOS + source).
 */
export function chatAddsBos(tok: DataTokenizer, renderer: ChatRenderer): boolean {
  return tok.bosId !== null && renderer.kind === 'guanaco';
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}
