// Record formats: auto-detection from the first record, forced formats, and every shape error
// with its file:line message.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebqloraError } from '../../src/errors.ts';
import { MemorySource } from '../../src/io/source.ts';
import { detectFormat, loadDataset, RecordParser, type DataRecord, type FormatOption } from '../../src/data/index.ts';
import { enc, FakeTokenizer } from './fake.ts';

function parseAll(lines: unknown[], format: FormatOption = 'auto', vocab: number | null = null): DataRecord[] {
  const p = new RecordParser('train.jsonl', format, vocab);
  return lines.map((value, i) => p.parse({ line: i + 1, value }));
}

function throwsMsg(fn: () => unknown, message: string): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.is((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected the error: ${message}`);
}

test('detection from keys, in order messages > input_ids > instruction > prompt+completion > text', () => {
  assert.is(detectFormat({ text: 'a' }), 'text');
  assert.is(detectFormat({ prompt: 'a', completion: 'b' }), 'completion');
  assert.is(detectFormat({ instruction: 'a', input: '', output: 'b' }), 'alpaca');
  assert.is(detectFormat({ messages: [] }), 'chat');
  assert.is(detectFormat({ input_ids: [1] }), 'tokens');
  assert.is(detectFormat({ prompt: 'a', completion: 'b', text: 'c' }), 'completion');
  assert.is(detectFormat({ text: 'x', prompt: 'p', input: 'i', output: 'o' }), 'text'); // the OASST1 sample's keys
  assert.is(detectFormat({ prompt: 'a', answer: 'b' }), null);
});

test('every format parses, auto and forced, unknown keys ignored', () => {
  const cases: Array<[FormatOption, unknown, DataRecord]> = [
    ['text', { text: 'hello', meta: 1 }, { format: 'text', text: 'hello' }],
    ['completion', { prompt: 'p', completion: 'c', id: 'x' }, { format: 'completion', prompt: 'p', completion: 'c' }],
    ['alpaca', { instruction: 'i', input: 'n', output: 'o', extra: [] }, { format: 'alpaca', instruction: 'i', input: 'n', output: 'o' }],
    ['alpaca', { instruction: 'i', output: 'o' }, { format: 'alpaca', instruction: 'i', input: '', output: 'o' }],
    ['alpaca', { instruction: 'i', input: null, output: 'o' }, { format: 'alpaca', instruction: 'i', input: '', output: 'o' }],
    ['chat', { messages: [{ role: 'system', content: 's', name: 'n' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] },
      { format: 'chat', messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] }],
    ['tokens', { input_ids: [1, 2, 3] }, { format: 'tokens', inputIds: [1, 2, 3], labels: null }],
    ['tokens', { input_ids: [1, 2, 3], labels: [-100, 2, 3] }, { format: 'tokens', inputIds: [1, 2, 3], labels: [-100, 2, 3] }],
  ];
  for (const [fmt, value, want] of cases) {
    assert.equal(parseAll([value], 'auto')[0], want, `auto ${fmt}`);
    assert.equal(parseAll([value], fmt)[0], want, `forced ${fmt}`);
  }
  // Forcing a format reads those keys even when others would win detection.
  assert.equal(parseAll([{ text: 'x', prompt: 'p', completion: 'c' }], 'text')[0], { format: 'text', text: 'x' });
});

test('auto: later records must match the format of line 1', () => {
  throwsMsg(() => parseAll([{ instruction: 'a', output: 'b' }, { text: 'x' }]),
    'train.jsonl:2: expected "instruction" and "output" strings (alpaca format, detected from line 1).');
  throwsMsg(() => parseAll([{ text: 'a' }, { text: 'b' }, { prompt: 'p', completion: 'c' }]),
    'train.jsonl:3: expected a "text" string (text format, detected from line 1).');
  throwsMsg(() => parseAll([{ messages: [{ role: 'user', content: 'u' }] }, { text: 'x' }]),
    'train.jsonl:2: expected a "messages" or "conversations" array (chat format, detected from line 1).');
  throwsMsg(() => parseAll([{ input_ids: [1] }, { text: 'x' }]),
    'train.jsonl:2: expected an "input_ids" array (tokens format, detected from line 1).');
  throwsMsg(() => parseAll([{ prompt: 'p', completion: 'c' }, { prompt: 'p' }]),
    'train.jsonl:2: expected "prompt" and "completion" strings (completion format, detected from line 1).');
});

test('forced format: missing keys say the format', () => {
  throwsMsg(() => parseAll([{ text: 'x' }], 'alpaca'), 'train.jsonl:1: expected "instruction" and "output" strings (alpaca format).');
  throwsMsg(() => parseAll([{ instruction: 'x', output: 'y' }], 'chat'), 'train.jsonl:1: expected a "messages" or "conversations" array (chat format).');
});

test('records that are not objects, unknown shapes, unknown format names', () => {
  throwsMsg(() => parseAll([[1, 2]]), 'train.jsonl:1: expected an object, got an array.');
  throwsMsg(() => parseAll([{ text: 'a' }, 'str']), 'train.jsonl:2: expected an object, got the string "str".');
  throwsMsg(() => parseAll([null]), 'train.jsonl:1: expected an object, got null.');
  throwsMsg(() => parseAll([{ prompt: 'a', answer: 'b' }]),
    'train.jsonl:1: cannot tell the data format from the keys ("prompt", "answer"); expected "text", "prompt" and "completion", "instruction" and "output", "messages", "conversations" or "input_ids" (or pass the format explicitly).');
  throwsMsg(() => new RecordParser('x', 'sharegpt' as FormatOption), 'unknown data format "sharegpt" (expected auto, text, completion, alpaca, chat, tokens).');
});

test('wrong value types', () => {
  throwsMsg(() => parseAll([{ text: 'a' }, { text: 'b' }, { text: 5 }]), 'train.jsonl:3: "text" must be a string, got the number 5.');
  throwsMsg(() => parseAll([{ prompt: 'a', completion: null }]), 'train.jsonl:1: "completion" must be a string, got null.');
  throwsMsg(() => parseAll([{ instruction: 'a', input: 3, output: 'b' }]), 'train.jsonl:1: "input" must be a string, got the number 3.');
  throwsMsg(() => parseAll([{ instruction: ['a'], output: 'b' }]), 'train.jsonl:1: "instruction" must be a string, got an array.');
});

test('chat: message errors', () => {
  throwsMsg(() => parseAll([{ messages: [] }]), 'train.jsonl:1: "messages" must be a non-empty array of {"role", "content"} objects, got an array.');
  throwsMsg(() => parseAll([{ messages: 'hi' }]), 'train.jsonl:1: "messages" must be a non-empty array of {"role", "content"} objects, got the string "hi".');
  throwsMsg(() => parseAll([{ messages: [{ role: 'user', content: 'u' }, 'x'] }]), 'train.jsonl:1: messages[1] must be an object with "role" and "content", got the string "x".');
  throwsMsg(() => parseAll([{ messages: [{ role: 'tool', content: 'u' }] }]), 'train.jsonl:1: messages[0].role must be "system", "user" or "assistant", got the string "tool".');
  throwsMsg(() => parseAll([{ messages: [{ from: 'human', value: 'u' }] }]),
    'train.jsonl:1: messages[0].role must be "system", "user" or "assistant", got nothing (ShareGPT {"from", "value"} turns go in "conversations").');
  throwsMsg(() => parseAll([{ messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: null }] }]), 'train.jsonl:1: messages[1].content must be a string, got null.');
});

test('ShareGPT: "conversations" of {"from", "value"} is chat; human/gpt/system and user/assistant roles', () => {
  assert.is(detectFormat({ conversations: [] }), 'chat');
  assert.is(detectFormat({ conversations: [], text: 'x' }), 'chat');
  const turns = [
    { from: 'system', value: 's' }, { from: 'human', value: 'h' }, { from: 'gpt', value: 'g', weight: 1 },
    { from: 'user', value: 'u' }, { from: 'assistant', value: 'a' },
  ];
  const want: DataRecord = {
    format: 'chat',
    messages: [
      { role: 'system', content: 's' }, { role: 'user', content: 'h' }, { role: 'assistant', content: 'g' },
      { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' },
    ],
  };
  assert.equal(parseAll([{ conversations: turns, id: 'x' }])[0], want);
  assert.equal(parseAll([{ conversations: turns }], 'chat')[0], want);
  // ShareGPT and "messages" lines mix in one chat file; "messages" wins when a record has both.
  const mixed = parseAll([{ conversations: turns.slice(1, 3) }, { messages: [{ role: 'user', content: 'm' }], conversations: 'ignored' }]);
  assert.equal(mixed.map((r) => (r as { messages: unknown[] }).messages.length), [2, 1]);
});

test('ShareGPT: unknown roles and bad turns name file, line and turn', () => {
  throwsMsg(() => parseAll([{ conversations: [{ from: 'human', value: 'h' }] }, { conversations: [{ from: 'human', value: 'h' }, { from: 'tool', value: 't' }] }]),
    'train.jsonl:2: conversations[1].from must be "human", "gpt" or "system" (or "user", "assistant"), got the string "tool" (other roles are not supported).');
  throwsMsg(() => parseAll([{ conversations: [{ from: 'bing', value: 'b' }] }]),
    'train.jsonl:1: conversations[0].from must be "human", "gpt" or "system" (or "user", "assistant"), got the string "bing" (other roles are not supported).');
  throwsMsg(() => parseAll([{ conversations: [{ role: 'user', content: 'u' }] }]),
    'train.jsonl:1: conversations[0].from must be "human", "gpt" or "system" (or "user", "assistant"), got nothing (other roles are not supported).');
  throwsMsg(() => parseAll([{ conversations: [{ from: 'constructor', value: 'x' }] }]),
    'train.jsonl:1: conversations[0].from must be "human", "gpt" or "system" (or "user", "assistant"), got the string "constructor" (other roles are not supported).');
  throwsMsg(() => parseAll([{ conversations: [{ from: 'gpt', value: 3 }] }]), 'train.jsonl:1: conversations[0].value must be a string, got the number 3.');
  throwsMsg(() => parseAll([{ conversations: [] }]), 'train.jsonl:1: "conversations" must be a non-empty array of {"from", "value"} objects, got an array.');
  throwsMsg(() => parseAll([{ conversations: [null] }]), 'train.jsonl:1: conversations[0] must be an object with "from" and "value", got null.');
  throwsMsg(() => parseAll([{ conversations: [{ from: 'human', value: 'h' }] }, { text: 'x' }]),
    'train.jsonl:2: expected a "messages" or "conversations" array (chat format, detected from line 1).');
});

test('tokens: integers, aligned labels, −100, vocabulary bounds', () => {
  throwsMsg(() => parseAll([{ input_ids: 'abc' }]), 'train.jsonl:1: "input_ids" must be an array of integers, got the string "abc".');
  throwsMsg(() => parseAll([{ input_ids: [1, 2, 1.5] }]), 'train.jsonl:1: "input_ids" must be an array of integers (element 2 is the number 1.5).');
  throwsMsg(() => parseAll([{ input_ids: [] }]), 'train.jsonl:1: "input_ids" must not be empty.');
  throwsMsg(() => parseAll([{ input_ids: [1, 2], labels: [2] }]), 'train.jsonl:1: "labels" has 1 entries but "input_ids" has 2 (labels are aligned with input_ids).');
  throwsMsg(() => parseAll([{ input_ids: [1, 2], labels: [1, '2'] }]), 'train.jsonl:1: "labels" must be an array of integers (element 1 is the string "2").');
  throwsMsg(() => parseAll([{ input_ids: [1, -1] }]), 'train.jsonl:1: input_ids[1] = -1 is not a token id.');
  throwsMsg(() => parseAll([{ input_ids: [1, 2] }, { input_ids: [5, 512] }], 'auto', 512), 'train.jsonl:2: input_ids[1] = 512 is not a token id in [0, 512).');
  throwsMsg(() => parseAll([{ input_ids: [1, 2], labels: [-100, 600] }], 'tokens', 512), 'train.jsonl:1: labels[1] = 600 is neither -100 nor a token id in [0, 512).');
  throwsMsg(() => parseAll([{ input_ids: [1, 2], labels: [-1, 2] }], 'tokens'), 'train.jsonl:1: labels[0] = -1 is neither -100 nor a token id.');
  assert.equal(parseAll([{ input_ids: [0, 511], labels: [-100, 511] }], 'tokens', 512)[0], { format: 'tokens', inputIds: [0, 511], labels: [-100, 511] });
});

test('loadDataset: errors name the file; a plain-text file is text only; formats need a tokenizer', async () => {
  const src = (name: string, text: string) => new MemorySource(name, enc(text));
  const rejects = async (p: Promise<unknown>, message: string) => {
    try { await p; } catch (e) { assert.instance(e, WebqloraError); assert.is((e as Error).message, message); return; }
    assert.unreachable(message);
  };
  await rejects(loadDataset(src('train.jsonl', '{"text":"a"}\n{"text":"b"}\n\n{"text": 7}\n'), { tokenizer: new FakeTokenizer() }),
    'train.jsonl:4: "text" must be a string, got the number 7.');
  await rejects(loadDataset(src('train.txt', 'hello'), { format: 'alpaca', tokenizer: new FakeTokenizer() }),
    'train.txt: a plain-text file holds the text format only, not alpaca (use JSONL for alpaca records).');
  await rejects(loadDataset(src('train.jsonl', '{"text":"a"}\n'), { tokenizer: null }),
    'train.jsonl:1: the text format needs a tokenizer (the model has none: give one with --tokenizer PATH, or use pre-tokenized {"input_ids"} lines).');
  await rejects(loadDataset(src('train.jsonl', ''), { tokenizer: new FakeTokenizer() }), 'train.jsonl: no records.');
  // Pre-tokenized data needs no tokenizer; vocabSize bounds it.
  const ds = await loadDataset(src('t.jsonl', '{"input_ids":[1,2,3]}\n'), { vocabSize: 4 });
  assert.is(ds.format, 'tokens');
  await rejects(loadDataset(src('t.jsonl', '{"input_ids":[1,2,3]}\n'), { vocabSize: 3 }), 't.jsonl:1: input_ids[2] = 3 is not a token id in [0, 3).');
});

test.run();
