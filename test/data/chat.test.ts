// Chat data: rendering with real chat templates (TinyLlama/Zephyr, SmolLM2 ChatML, Phi-3, Qwen2.5)
// through @huggingface/jinja, assistant-only labels found by progressive rendering, BOS rules,
// the Guanaco fallback without a template, and the errors for templates that cannot be used.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebqloraError } from '../../src/errors.ts';
import { NodeDirSource } from '../../src/io/node.ts';
import { MemorySource } from '../../src/io/source.ts';
import { loadTokenizerFromDir } from '../../src/tokenizer/load.ts';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import {
  DEFAULT_EXAMPLE_OPTIONS, ExampleBuilder, chatRendererFor, encodeChatPrompt, guanacoRenderer, loadDataset, tokenizeChat,
  type ChatMessage, type DataTokenizer, type Example,
} from '../../src/data/index.ts';
import { FIXTURES } from '../helpers/index.ts';
import { enc, FakeTokenizer, labelText } from './fake.ts';

const TOK = join(FIXTURES, 'tokenizers');
const cache = new Map<string, Tokenizer>();
async function realTokenizer(name: string): Promise<Tokenizer> {
  if (!cache.has(name)) {
    const dir = new NodeDirSource(join(TOK, name));
    cache.set(name, (await loadTokenizerFromDir(dir))!);
    await dir.close();
  }
  return cache.get(name)!;
}

const CONV: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi there' },
  { role: 'assistant', content: 'Hello! How can I help?' },
  { role: 'user', content: '2+2?' },
  { role: 'assistant', content: '4' },
];

function build(tok: DataTokenizer, messages: ChatMessage[], trainOnPrompt = false): Example {
  return new ExampleBuilder(tok, { ...DEFAULT_EXAMPLE_OPTIONS, trainOnPrompt }, 'train.jsonl').build({ format: 'chat', messages }, 1).example;
}

/** Maximal runs of scored labels, as token id arrays. */
function scoredRuns(ex: Example): number[][] {
  const runs: number[][] = [];
  let cur: number[] | null = null;
  for (let t = 0; t < ex.labels.length; t++) {
    if (ex.labels[t] === -100) { cur = null; continue; }
    assert.is(ex.labels[t], ex.inputIds[t], `label ${t} is the input token`);
    if (cur === null) runs.push((cur = []));
    cur.push(ex.labels[t]!);
  }
  return runs;
}

test('TinyLlama (Zephyr template): rendered as transformers does, BOS added, labels on assistant turns only', async () => {
  const tok = await realTokenizer('tinyllama-1.1b-chat');
  const r = chatRendererFor(tok);
  assert.is(r.kind, 'template');
  const text = r.render(CONV, false);
  assert.is(text, '<|system|>\nBe brief.</s>\n<|user|>\nHi there</s>\n<|assistant|>\nHello! How can I help?</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n4</s>\n');
  assert.is(r.render(CONV.slice(0, 2), true), '<|system|>\nBe brief.</s>\n<|user|>\nHi there</s>\n<|assistant|>\n');
  const ex = build(tok, CONV);
  // The tokenizer adds BOS to plain text (its post-processor), so chat text gets one too.
  assert.equal(ex.inputIds, [1, ...tok.encode(text, { addBos: false, addEos: false })]);
  const runs = scoredRuns(ex);
  assert.is(runs.length, 2);
  // Each run is the reply, its </s>, and the template's newline after it.
  assert.is(tok.decode(runs[0]!, { skipSpecial: false }).replace(/\s+$/, ''), 'Hello! How can I help?</s>');
  assert.is(tok.decode(runs[1]!, { skipSpecial: false }).replace(/\s+$/, ''), '4</s>');
  assert.ok(runs[0]!.includes(2) && runs[1]!.includes(2), 'EOS is scored');
  // Generation sees exactly the tokens training saw in front of the reply.
  const prompt = encodeChatPrompt(tok, CONV.slice(0, 4));
  const runStarts = ex.labels.flatMap((l, t) => (l !== -100 && ex.labels[t - 1] === -100 ? [t] : []));
  assert.is(runStarts.length, 2);
  assert.equal(ex.inputIds.slice(0, runStarts[1]), prompt);
});

test('SmolLM2 (ChatML): no BOS added (the template starts with it), spans end after <|im_end|>\\n', async () => {
  const tok = await realTokenizer('smollm2-135m');
  const ex = build(tok, CONV);
  assert.is(ex.inputIds[0], tok.bosId); // <|im_start|> is SmolLM2's bos_token, written by the template
  assert.is.not(ex.inputIds[1], tok.bosId);
  assert.is(tok.decode(ex.inputIds, { skipSpecial: false }),
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n');
  const runs = scoredRuns(ex).map((r) => tok.decode(r, { skipSpecial: false }));
  assert.equal(runs, ['Hello! How can I help?<|im_end|>\n', '4<|im_end|>\n']);
});

test('Phi-3: the eos_token trailer the template adds without a generation prompt does not break the search', async () => {
  const tok = await realTokenizer('phi-3-mini');
  const ex = build(tok, CONV);
  assert.is.not(ex.inputIds[0], tok.bosId); // add_bos_token false
  const runs = scoredRuns(ex).map((r) => tok.decode(r, { skipSpecial: false }).trim());
  assert.equal(runs, ['Hello! How can I help?<|end|>', '4<|end|><|endoftext|>']);
});

test('Qwen2.5 template (default system prompt inserted) with a fake tokenizer', () => {
  const cfg = JSON.parse(readFileSync(join(TOK, 'qwen2.5', 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
  const tok = new FakeTokenizer({ chatTemplate: cfg.chat_template, specials: { '<|endoftext|>': 1, '<|im_start|>': 2, '<|im_end|>': 3 }, bos: null, eos: '<|im_end|>', pad: '<|endoftext|>', addBos: false });
  const ex = build(tok, CONV.slice(1));
  assert.is(tok.decode(ex.inputIds),
    '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n');
  assert.is(labelText(tok, ex.labels), '|Hello! How can I help?<|im_end|>\n|4<|im_end|>\n');
});

test('trainOnPrompt scores the whole conversation; a conversation without a reply scores nothing', async () => {
  const tok = await realTokenizer('smollm2-135m');
  const all = build(tok, CONV, true);
  assert.equal(all.labels, all.inputIds);
  const none = build(tok, CONV.slice(0, 2));
  assert.ok(none.labels.every((l) => l === -100));
});

test('Guanaco fallback without a chat template: "### Human: …### Assistant: …", system as plain text, EOS at the end', () => {
  const tok = new FakeTokenizer();
  assert.is(chatRendererFor(tok), guanacoRenderer);
  assert.is(guanacoRenderer.render(CONV, false), 'Be brief. ### Human: Hi there### Assistant: Hello! How can I help?### Human: 2+2?### Assistant: 4');
  assert.is(guanacoRenderer.render(CONV.slice(0, 2), true), 'Be brief. ### Human: Hi there### Assistant:');
  const ex = build(tok, CONV);
  assert.is(tok.decode(ex.inputIds), '<s>Be brief. ### Human: Hi there### Assistant: Hello! How can I help?### Human: 2+2?### Assistant: 4</s>');
  assert.is(labelText(tok, ex.labels), '| Hello! How can I help?| 4</s>');
  // Ending on a user turn: the EOS is not scored.
  assert.is(labelText(tok, build(tok, CONV.slice(0, 4)).labels), '| Hello! How can I help?|');
  // The generation prompt is the conversation up to the reply, ending in "### Assistant:".
  assert.is(tok.decode(encodeChatPrompt(tok, CONV.slice(0, 4))), '<s>Be brief. ### Human: Hi there### Assistant: Hello! How can I help?### Human: 2+2?### Assistant:');
});

test('Guanaco fallback with a real tokenizer: the space after "### Assistant:" goes with the reply', async () => {
  const real = await realTokenizer('tinyllama-1.1b-chat');
  const tok: DataTokenizer = { encode: (s, o) => real.encode(s, o), idToToken: (i) => real.idToToken(i), bosId: real.bosId, eosId: real.eosId, padId: real.padId, vocabSize: real.vocabSize, addBos: real.addBos, chatTemplate: null };
  const ex = build(tok, [{ role: 'user', content: 'Name a color.' }, { role: 'assistant', content: 'Blue.' }]);
  assert.is(ex.inputIds[0], 1);
  assert.is(ex.inputIds.filter((t) => t === 1).length, 1);
  assert.is(real.decode(ex.inputIds, { skipSpecial: false }), '<s> ### Human: Name a color.### Assistant: Blue.</s>');
  const runs = scoredRuns(ex);
  assert.is(runs.length, 1);
  assert.is(real.decode(runs[0]!, { skipSpecial: false }), 'Blue.</s>');
  assert.equal(runs[0]!.map((t) => real.idToToken(t)), ['▁Blue', '.', '</s>']);
});

test('templates that cannot be used give one-sentence errors naming file and line', async () => {
  const tryLoad = async (template: string, messages: ChatMessage[]): Promise<string> => {
    const tok = new FakeTokenizer({ chatTemplate: template });
    const src = new MemorySource('chat.jsonl', enc(`${JSON.stringify({ messages: CONV })}\n${JSON.stringify({ messages })}\n`));
    try {
      await loadDataset(src, { tokenizer: tok });
    } catch (e) {
      assert.instance(e, WebqloraError);
      return (e as Error).message;
    }
    return 'no error';
  };
  // Rewrites earlier assistant turns (as reasoning templates drop past thoughts): not incremental.
  const rewriting = "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[{{ m.content | length }}]{% else %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
  assert.is(await tryLoad(rewriting, CONV),
    'chat.jsonl:1: the chat template does not render conversations incrementally: the prompt before messages[2] is not a prefix of the whole conversation, so the assistant turns cannot be located (use --train-on-prompt, or another format).');
  const alternating = "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ m.content }}{% endfor %}";
  assert.is(await tryLoad(alternating, [{ role: 'assistant', content: 'x' }]),
    'chat.jsonl:1: the chat template failed on this conversation (Conversation roles must alternate user/assistant/user/assistant/...).');
  assert.match(await tryLoad('{% if %}', CONV), /^chat\.jsonl:1: the tokenizer's chat template does not parse \(.+\)\.$/);
});

test('loadDataset on chat JSONL reports the rendering used and drops reply-less conversations', async () => {
  const tok = await realTokenizer('smollm2-135m');
  const lines = [{ messages: CONV }, { messages: CONV.slice(0, 2) }, { messages: CONV.slice(1, 3) }].map((l) => JSON.stringify(l)).join('\n');
  const ds = await loadDataset(new MemorySource('chat.jsonl', enc(lines)), { tokenizer: tok });
  assert.is(ds.format, 'chat');
  assert.is(ds.chatRendering, 'template');
  assert.is(ds.records, 3);
  assert.is(ds.examples.length, 2);
  assert.is(ds.dropped, 1);
  const fake = await loadDataset(new MemorySource('chat.jsonl', enc(lines)), { tokenizer: new FakeTokenizer() });
  assert.is(fake.chatRendering, 'guanaco');
});

test('tokenizeChat spans are in token units of the whole conversation', async () => {
  const tok = await realTokenizer('tinyllama-1.1b-chat');
  const c = tokenizeChat(tok, chatRendererFor(tok), CONV, false);
  assert.equal(c.ids, tok.encode(chatRendererFor(tok).render(CONV, false), { addBos: false }));
  for (const [a, b] of c.assistantSpans) assert.ok(0 < a && a < b && b <= c.ids.length);
  assert.is(c.assistantSpans[1]![1], c.ids.length);
});

test.run();
