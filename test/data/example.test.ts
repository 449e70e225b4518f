// Tokenization into examples, following qlora (QLORA_SPEC §7.4/7.5): the exact Alpaca strings,
// BOS + source / target + EOS tokenized separately, independent truncation, −100 over the
// source, train-on-prompt, the maxLen cut, and the dataset counts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemorySource } from '../../src/io/source.ts';
import {
  ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, DEFAULT_EXAMPLE_OPTIONS, ExampleBuilder, alpacaPrompt, exampleScored, loadDataset, loadTrainValid,
  type DataRecord, type ExampleOptions,
} from '../../src/data/index.ts';
import { enc, FakeTokenizer, labelText } from './fake.ts';

const opts = (o: Partial<ExampleOptions> = {}): ExampleOptions => ({ ...DEFAULT_EXAMPLE_OPTIONS, ...o });
const build = (tok: FakeTokenizer, rec: DataRecord, o: Partial<ExampleOptions> = {}) => new ExampleBuilder(tok, opts(o), 'train.jsonl').build(rec, 1);

test('Alpaca templates are qlora\'s strings exactly (trailing space after "### Response:")', () => {
  assert.is(ALPACA_PROMPT_INPUT,
    'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: ');
  assert.is(ALPACA_PROMPT_NO_INPUT,
    'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response: ');
  assert.is(alpacaPrompt('Add.', '2 and 3'),
    'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response: ');
  assert.is(alpacaPrompt('Say hi.', ''),
    'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response: ');
  // Replacement patterns in the data stay literal.
  assert.is(alpacaPrompt('$& {input} $1', ''), ALPACA_PROMPT_NO_INPUT.replace('{instruction}', () => '$& {input} $1'));
});

test('alpaca: BOS + prompt (unscored) ++ output + EOS (scored), tokenized separately without special tokens', () => {
  const tok = new FakeTokenizer();
  const { example, truncated } = build(tok, { format: 'alpaca', instruction: 'Say hi.', input: '', output: 'Hi!' });
  const prompt = alpacaPrompt('Say hi.', '');
  assert.equal(example.inputIds, [1, ...tok.encode(prompt, { addBos: false }), ...tok.encode('Hi!', { addBos: false }), 2]);
  assert.equal(example.labels, [...new Array(1 + prompt.length).fill(-100), ...tok.encode('Hi!', { addBos: false }), 2]);
  assert.is(labelText(tok, example.labels), '|Hi!</s>');
  assert.not.ok(truncated);
  // Source and target were separate encode calls: nothing merges across the boundary.
  assert.equal(tok.calls.slice(0, 2), [prompt, 'Hi!']);
});

test('completion: source = prompt, target = completion; trainOnPrompt labels everything', () => {
  const tok = new FakeTokenizer();
  const rec: DataRecord = { format: 'completion', prompt: 'Q: 2+2?', completion: ' 4' };
  const a = build(tok, rec).example;
  assert.is(tok.decode(a.inputIds), '<s>Q: 2+2? 4</s>');
  assert.is(labelText(tok, a.labels), '| 4</s>');
  assert.is(exampleScored(a), 3);
  const b = build(tok, rec, { trainOnPrompt: true }).example;
  assert.equal(b.labels, b.inputIds);
  assert.is(exampleScored(b), b.inputIds.length - 1);
});

test('text: BOS + text + EOS, all scored; no BOS/EOS when the tokenizer has none', () => {
  const tok = new FakeTokenizer();
  const { example } = build(tok, { format: 'text', text: 'abc' });
  assert.equal(example.inputIds, [1, 197, 198, 199, 2]);
  assert.equal(example.labels, example.inputIds);
  const bare = new FakeTokenizer({ bos: null, eos: null });
  assert.equal(build(bare, { format: 'text', text: 'abc' }).example.inputIds, [197, 198, 199]);
});

test('truncation: source and target cut independently (target loses its EOS), then maxLen keeps the start', () => {
  const tok = new FakeTokenizer();
  const rec: DataRecord = { format: 'completion', prompt: 'abcdefgh', completion: 'ABCDEFGH' };
  // source = <s>abcdefgh (9), target = ABCDEFGH</s> (9)
  let r = build(tok, rec, { sourceMaxLen: 4, targetMaxLen: 5 });
  assert.is(tok.decode(r.example.inputIds), '<s>abcABCDE');
  assert.is(labelText(tok, r.example.labels), '|ABCDE');
  assert.ok(r.truncated);
  r = build(tok, rec, { sourceMaxLen: 100, targetMaxLen: 100, maxLen: 12 });
  assert.is(tok.decode(r.example.inputIds), '<s>abcdefghABC');
  assert.is(labelText(tok, r.example.labels), '|ABC');
  assert.ok(r.truncated);
  r = build(tok, rec, { maxLen: 18 });
  assert.is(tok.decode(r.example.inputIds), '<s>abcdefghABCDEFGH</s>');
  assert.not.ok(r.truncated);
  r = build(tok, { format: 'text', text: 'x'.repeat(20) }, { maxLen: 8 });
  assert.is(tok.decode(r.example.inputIds), '<s>xxxxxxx');
  assert.ok(r.truncated);
  // A prompt that fills maxLen leaves nothing scored.
  r = build(tok, rec, { maxLen: 9 });
  assert.is(exampleScored(r.example), 0);
});

test('a huge text is tokenized from a prefix only, with the same first maxLen tokens', () => {
  const tok = new FakeTokenizer();
  const text = 'word '.repeat(20000);
  const r = build(tok, { format: 'text', text }, { maxLen: 100 });
  assert.ok(r.truncated);
  assert.equal(r.example.inputIds, [1, ...tok.encode(text, { addBos: false }).slice(0, 99)]);
  assert.is(tok.calls[0]!.length, 6400); // 64 characters per kept token
  // A short text is tokenized whole.
  const short = new FakeTokenizer();
  build(short, { format: 'text', text: 'abc' }, { maxLen: 100 });
  assert.equal(short.calls, ['abc']);
});

test('tokens: as given, labels absent = copy; cut at maxLen; trainOnPrompt does not touch given labels', () => {
  const tok = new FakeTokenizer();
  let r = build(tok, { format: 'tokens', inputIds: [5, 6, 7, 8], labels: null });
  assert.equal(r.example, { inputIds: [5, 6, 7, 8], labels: [5, 6, 7, 8] });
  r = build(tok, { format: 'tokens', inputIds: [5, 6, 7, 8], labels: [-100, -100, 7, 8] }, { trainOnPrompt: true, maxLen: 3 });
  assert.equal(r.example, { inputIds: [5, 6, 7], labels: [-100, -100, 7] });
  assert.ok(r.truncated);
  const noTok = new ExampleBuilder(null, opts(), 't.jsonl').build({ format: 'tokens', inputIds: [1, 2], labels: null }, 1);
  assert.equal(noTok.example.inputIds, [1, 2]);
});

test('loadDataset: counts of records, truncated, dropped, tokens and scored', async () => {
  const tok = new FakeTokenizer();
  const lines = [
    { prompt: 'ab', completion: 'cd' }, // 3 + 3 tokens, 3 scored
    { prompt: 'x'.repeat(20), completion: 'y' }, // 21 + 2 → cut to 10: nothing scored → dropped
    { prompt: 'a', completion: 'bcdefghijk' }, // 2 + 11 → cut to 10: 8 scored
  ];
  const src = new MemorySource('train.jsonl', enc(lines.map((l) => JSON.stringify(l)).join('\n')));
  const ds = await loadDataset(src, { tokenizer: tok, maxLen: 10 });
  assert.is(ds.format, 'completion');
  assert.is(ds.records, 3);
  assert.is(ds.examples.length, 2);
  assert.is(ds.dropped, 1);
  assert.is(ds.truncated, 2);
  assert.is(ds.tokens, 6 + 10);
  assert.is(ds.scored, 3 + 8);
  assert.is(ds.chatRendering, null);
});

test('loadDataset: model vocabulary smaller than the tokenizer output is an error', async () => {
  const src = new MemorySource('train.jsonl', enc('{"text":"hi"}\n'));
  try {
    await loadDataset(src, { tokenizer: new FakeTokenizer(), vocabSize: 150 });
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, "train.jsonl:1: the tokenizer produced id 204, outside the model's vocabulary of 150 (tokenizer and model do not match).");
  }
});

test('loadTrainValid: no held-out split under 10 examples; the valid file keeps the training format', async () => {
  const tok = new FakeTokenizer();
  const lines = (n: number) => enc(Array.from({ length: n }, (_, i) => JSON.stringify({ prompt: `p${i}`, completion: `c${i}` })).join('\n'));
  const few = await loadTrainValid(new MemorySource('t.jsonl', lines(9)), null, { tokenizer: tok });
  assert.is(few.validSource, 'none');
  assert.is(few.valid, null);
  assert.is(few.train.examples.length, 9);
  // A valid file whose first line would auto-detect as text is read as completion, like the training file.
  const valid = new MemorySource('v.jsonl', enc('{"prompt":"a","completion":"b","text":"t"}\n{"text":"x"}\n'));
  try {
    await loadTrainValid(new MemorySource('t.jsonl', lines(20)), valid, { tokenizer: tok });
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, 'v.jsonl:2: expected "prompt" and "completion" strings (completion format).');
  }
});

test.run();

test('buildAll splits a long text document into maxLen windows, losing no token', () => {
  const tok = new FakeTokenizer();
  const text = 'x'.repeat(20);
  const { examples, truncated } = new ExampleBuilder(tok, opts({ maxLen: 8 }), 'train.jsonl').buildAll({ format: 'text', text }, 1);
  const whole = [tok.bosId!, ...tok.encode(text, { addBos: false }), tok.eosId!];
  assert.not.ok(truncated);
  assert.equal(examples.flatMap((e) => e.inputIds), whole);
  assert.ok(examples.every((e) => e.inputIds.length <= 8 && e.labels.length === e.inputIds.length));
  assert.is(examples.length, Math.ceil(whole.length / 8));
});
