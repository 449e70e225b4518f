// Chat data: rendering with real chat templates (TinyLlama/Zephyr, SmolLM2 ChatML, Phi-3, Qwen2.5)
// through @huggingface/jinja, labels as transformers' assistant-token mask gives them (the reply
// and its end-of-turn token), no BOS beyond what the template writes, the special tokens a template
// sees, the Guanaco fallback without a template, and the errors for templates that cannot be used.
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

// The 2-turn conversation of the per-template tests below.
const TWO: ChatMessage[] = CONV.slice(1);

/** Positions t with a scored label. */
function scoredAt(ex: Example): number[] {
  return ex.labels.flatMap((l, t) => (l === -100 ? [] : [t]));
}

// Expected labels: what transformers 5.18 marks with apply_chat_template(TWO,
// return_assistant_tokens_mask=True) when each template's assistant branch is rewritten as
// `...header...{% generation %}{{ content + <end-of-turn> }}{% endgeneration %}<rest>` (the rendered
// text is unchanged), its char_to_token rule applied to the tokenizer.json token stream (the
// `tokenizers` library's ids and offsets, which ours reproduce). Per template, the end-of-turn token
// is the one written right after the reply; what follows it is not scored.

test('TinyLlama (Zephyr): 2 turns; reply + </s> scored, not the "\\n" after it; no BOS (the template writes none)', async () => {
  const tok = await realTokenizer('tinyllama-1.1b-chat');
  const r = chatRendererFor(tok);
  assert.is(r.kind, 'template');
  const text = r.render(TWO, false);
  assert.is(text, '<|user|>\nHi there</s>\n<|assistant|>\nHello! How can I help?</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n4</s>\n');
  assert.is(r.render(TWO.slice(0, 1), true), '<|user|>\nHi there</s>\n<|assistant|>\n');
  const ex = build(tok, TWO);
  // apply_chat_template tokenizes with add_special_tokens=False: no <s> although add_bos_token is true.
  assert.equal(ex.inputIds, [
    529, 29989, 1792, 29989, 29958, 13, 18567, 727, 2, 29871, 13, 29966, 29989, 465, 22137, 29989, 29958, 13, 10994, 29991, 1128, 508, 306,
    1371, 29973, 2, 29871, 13, 29966, 29989, 1792, 29989, 29958, 13, 29906, 29974, 29906, 29973, 2, 29871, 13, 29966, 29989, 465, 22137, 29989,
    29958, 13, 29946, 2, 29871, 13,
  ]);
  assert.equal(scoredAt(ex), [18, 19, 20, 21, 22, 23, 24, 25, 48, 49]);
  assert.equal(scoredRuns(ex).map((run) => run.map((t) => tok.idToToken(t))), [
    ['Hello', '!', '▁How', '▁can', '▁I', '▁help', '?', '</s>'],
    ['4', '</s>'],
  ]);
  // Generation sees exactly the tokens training saw in front of the reply.
  assert.equal(encodeChatPrompt(tok, TWO.slice(0, 3)), ex.inputIds.slice(0, 48));
});

test('SmolLM2 (ChatML): 2 turns; reply + <|im_end|> scored, not the "\\n" after it', async () => {
  const tok = await realTokenizer('smollm2-135m');
  const text = chatRendererFor(tok).render(TWO, false);
  assert.is(text, '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n');
  const ex = build(tok, TWO);
  assert.equal(ex.inputIds, [
    1, 4093, 198, 26843, 665, 2, 198, 1, 520, 9531, 198, 19556, 17, 1073, 416, 339, 724, 47, 2, 198, 1, 4093, 198, 34, 27, 34, 47, 2, 198,
    1, 520, 9531, 198, 36, 2, 198,
  ]);
  assert.equal(scoredAt(ex), [11, 12, 13, 14, 15, 16, 17, 18, 33, 34]);
  assert.equal(scoredRuns(ex).map((run) => tok.decode(run, { skipSpecial: false })), ['Hello! How can I help?<|im_end|>', '4<|im_end|>']);
  assert.equal(encodeChatPrompt(tok, TWO.slice(0, 3)), ex.inputIds.slice(0, 33));
});

test('Phi-3: 2 turns; reply + <|end|> scored, not the trailing <|endoftext|> the template adds', async () => {
  const tok = await realTokenizer('phi-3-mini');
  const text = chatRendererFor(tok).render(TWO, false);
  assert.is(text, '<|user|>\nHi there<|end|>\n<|assistant|>\nHello! How can I help?<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n4<|end|>\n<|endoftext|>');
  const ex = build(tok, TWO);
  // <|user|>, <|assistant|> and <|end|> take the "\n" after them (rstrip), so it has no token.
  assert.equal(ex.inputIds, [32010, 6324, 727, 32007, 32001, 15043, 29991, 1128, 508, 306, 1371, 29973, 32007, 32010, 29871, 29906, 29974, 29906, 29973, 32007, 32001, 29871, 29946, 32007, 32000]);
  // 21 is the "▁" the normalizer puts in front of "4": its offsets are those of "4", so
  // char_to_token gives it for the reply's first character.
  assert.equal(scoredAt(ex), [5, 6, 7, 8, 9, 10, 11, 12, 21, 22, 23]);
  assert.equal(scoredRuns(ex).map((run) => run.map((t) => tok.idToToken(t))), [
    ['▁Hello', '!', '▁How', '▁can', '▁I', '▁help', '?', '<|end|>'],
    ['▁', '4', '<|end|>'],
  ]);
  assert.equal(encodeChatPrompt(tok, TWO.slice(0, 3)), ex.inputIds.slice(0, 21));
});

test('Phi-3: a reply that starts with whitespace <|assistant|> swallows scores <|assistant|> too, as char_to_token does', async () => {
  const tok = await realTokenizer('phi-3-mini');
  const ex = build(tok, [
    { role: 'user', content: 'Code?' }, { role: 'assistant', content: ' Sure.\n```py\nx = 1\n```\n' },
    { role: 'user', content: 'More' }, { role: 'assistant', content: '\n\nhéllo 🙂  ' },
  ]);
  assert.equal(ex.inputIds, [32010, 5920, 29973, 32007, 32001, 18585, 29889, 13, 28956, 2272, 13, 29916, 353, 29871, 29896, 13, 28956, 13, 32007, 32010, 5853, 32007, 32001, 298, 3610, 417, 29871, 243, 162, 156, 133, 259, 32007, 32000]);
  assert.equal(scoredAt(ex), [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]);
});

test('Qwen2.5 (ChatML, default system prompt): 2 turns with SmolLM2\'s ChatML vocabulary; reply + <|im_end|> scored', async () => {
  const cfg = JSON.parse(readFileSync(join(TOK, 'qwen2.5', 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
  const real = await realTokenizer('smollm2-135m'); // the fixture has no Qwen tokenizer.json; the template's tokens are SmolLM2's too
  const tok: DataTokenizer = {
    encode: (s, o) => real.encode(s, o), idToToken: (i) => real.idToToken(i), isSpecial: (i) => real.isSpecial(i), bosId: real.bosId,
    eosId: real.eosId, padId: real.padId, unkId: real.unkId, vocabSize: real.vocabSize, addBos: real.addBos, chatTemplate: cfg.chat_template,
  };
  const ex = build(tok, TWO);
  assert.is(real.decode(ex.inputIds, { skipSpecial: false }),
    '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n');
  assert.equal(ex.inputIds, [
    1, 9690, 198, 2683, 359, 1606, 30219, 28, 2312, 411, 1065, 505, 20534, 14698, 30, 1206, 359, 253, 5356, 11173, 30, 2, 198, 1, 4093, 198,
    26843, 665, 2, 198, 1, 520, 9531, 198, 19556, 17, 1073, 416, 339, 724, 47, 2, 198, 1, 4093, 198, 34, 27, 34, 47, 2, 198, 1, 520, 9531,
    198, 36, 2, 198,
  ]);
  assert.equal(scoredAt(ex), [34, 35, 36, 37, 38, 39, 40, 41, 56, 57]);
});

test('Qwen2.5 template with a fake tokenizer: labels read as text', () => {
  const cfg = JSON.parse(readFileSync(join(TOK, 'qwen2.5', 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
  const tok = new FakeTokenizer({ chatTemplate: cfg.chat_template, specials: { '<|endoftext|>': 1, '<|im_start|>': 2, '<|im_end|>': 3 }, bos: null, eos: '<|im_end|>', pad: '<|endoftext|>', addBos: false });
  const ex = build(tok, TWO);
  assert.is(tok.decode(ex.inputIds),
    '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n');
  assert.is(labelText(tok, ex.labels), '|Hello! How can I help?<|im_end|>|4<|im_end|>|');
});

test('with a system message: the same rule for all four templates', async () => {
  const runs = async (name: string): Promise<string[]> => {
    const tok = await realTokenizer(name);
    return scoredRuns(build(tok, CONV)).map((r) => tok.decode(r, { skipSpecial: false }));
  };
  assert.equal(await runs('tinyllama-1.1b-chat'), ['Hello! How can I help?</s>', '4</s>']);
  assert.equal(await runs('smollm2-135m'), ['Hello! How can I help?<|im_end|>', '4<|im_end|>']);
  assert.equal((await runs('phi-3-mini')).map((s) => s.trim()), ['Hello! How can I help?<|end|>', '4<|end|>']);
});

test('special tokens reach the template as transformers passes them (bos, eos, unk, pad; sep, cls, mask when named)', async () => {
  const probe = '[{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ pad_token }}|{{ sep_token }}|{{ cls_token }}|{{ mask_token }}|{{ additional_special_tokens }}]';
  const withProbe = (t: Tokenizer): DataTokenizer => ({
    encode: (s, o) => t.encode(s, o), idToToken: (i) => t.idToToken(i), isSpecial: (i) => t.isSpecial(i), bosId: t.bosId, eosId: t.eosId,
    padId: t.padId, unkId: t.unkId, vocabSize: t.vocabSize, addBos: t.addBos, chatTemplate: probe,
  });
  // transformers 5.18 renders exactly these with the fixtures' tokenizer_config.json.
  assert.is(chatRendererFor(withProbe(await realTokenizer('tinyllama-1.1b-chat'))).render([], false), '[<s>|</s>|<unk>|</s>||||]');
  assert.is(chatRendererFor(withProbe(await realTokenizer('smollm2-135m'))).render([], false), '[<|im_start|>|<|im_end|>|<|endoftext|>|<|im_end|>||||]');
  assert.is(chatRendererFor(withProbe(await realTokenizer('phi-3-mini'))).render([], false), '[<s>|<|endoftext|>|<unk>|<|endoftext|>||||]');
  // A tokenizer that carries the whole named map passes sep/cls/mask too; extra special tokens are not passed (transformers 5).
  const fake = new FakeTokenizer({ chatTemplate: probe, specialTokensMap: { bos_token: '<s>', eos_token: '</s>', sep_token: '[SEP]', cls_token: '[CLS]', mask_token: '[MASK]', additional_special_tokens: '<x>' } });
  assert.is(chatRendererFor(fake).render([], false), '[<s>|</s>|||[SEP]|[CLS]|[MASK]|]');
});

test('a template without an end-of-turn token scores the reply alone; one that rewrites the reply is refused', () => {
  const plain = "{% for m in messages %}{% if m.role == 'user' %}User: {{ m.content }}\n{% else %}Bot: {{ m.content }}\n\n{% endif %}{% endfor %}{% if add_generation_prompt %}Bot: {% endif %}";
  const tok = new FakeTokenizer({ chatTemplate: plain, addBos: false });
  assert.is(labelText(tok, build(tok, TWO).labels), '|Hello! How can I help?|4|');
  // Whitespace between the reply and a special token is scored with it.
  const spaced = "{% for m in messages %}{% if m.role == 'user' %}[U]{{ m.content }}</s>{% else %}[A]{{ m.content }} </s>{% endif %}{% endfor %}{% if add_generation_prompt %}[A]{% endif %}";
  const tok2 = new FakeTokenizer({ chatTemplate: spaced });
  assert.is(labelText(tok2, build(tok2, TWO).labels), '|Hello! How can I help? </s>|4 </s>');
  // A reply written trimmed is found by its trimmed text.
  assert.is(labelText(tok2, build(tok2, [{ role: 'user', content: 'q' }, { role: 'assistant', content: '  a  ' }]).labels), '|  a   </s>');
  const upper = "{% for m in messages %}<{{ m.role }}>{{ m.content | upper }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
  try {
    build(new FakeTokenizer({ chatTemplate: upper }), TWO);
    assert.unreachable('expected an error');
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.is((e as Error).message, 'train.jsonl:1: the chat template does not write the content of messages[1] as given, so its reply cannot be located (use --train-on-prompt, or another format).');
  }
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
  const tok: DataTokenizer = { encode: (s, o) => real.encode(s, o), idToToken: (i) => real.idToToken(i), isSpecial: (i) => real.isSpecial(i), unkId: real.unkId, bosId: real.bosId, eosId: real.eosId, padId: real.padId, vocabSize: real.vocabSize, addBos: real.addBos, chatTemplate: null };
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
  // The last reply ends at its </s>; the "\n" after it ("▁", "<0x0A>") is not in the span.
  assert.is(c.assistantSpans[1]![1], c.ids.length - 2);
  assert.is(c.ids[c.ids.length - 3], 2);
});

test.run();
