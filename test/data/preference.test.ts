// Preference pairs (DPO/ORPO data, data/preference.ts): the standard form (prompt + response
// tokenized piece by piece, BOS + prompt, response + EOS scored), the conversational form through a
// chat template and the Guanaco fallback (only the response's assistant turns scored), truncation,
// the pair batches (chosen rows first) and the errors, each naming file and line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebqloraError } from '../../src/errors.ts';
import { MemorySource } from '../../src/io/source.ts';
import {
  assemblePairs, loadPreferenceDataset, loadPreferenceTrainValid, PreferenceBatcher, preferenceEvalBatches, type PreferenceDataset,
} from '../../src/data/preference.ts';
import { enc, FakeTokenizer, labelText } from './fake.ts';

const jsonl = (name: string, recs: unknown[]) => new MemorySource(name, enc(recs.map((r) => JSON.stringify(r)).join('\n') + '\n'));

async function load(recs: unknown[], tok = new FakeTokenizer(), maxLen = 64, name = 'p.jsonl'): Promise<PreferenceDataset> {
  return loadPreferenceDataset(jsonl(name, recs), { tokenizer: tok, maxLen });
}

async function rejects(p: Promise<unknown>, message: string | RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, WebqloraError);
    if (typeof message === 'string') assert.is((e as Error).message, message);
    else assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected the error: ${message}`);
}

test('standard pairs: BOS + prompt, then the response and EOS, each piece tokenized on its own; responses scored', async () => {
  const tok = new FakeTokenizer();
  const ds = await load([{ prompt: 'ab', chosen: 'c', rejected: 'de' }], tok);
  assert.is(ds.format, 'standard');
  assert.is(ds.pairs.length, 1);
  const { chosen, rejected } = ds.pairs[0]!;
  const a = 197, b = 198, c = 199, d = 200, e = 201;
  assert.equal(chosen.inputIds, [1, a, b, c, 2]);
  assert.equal(chosen.labels, [-100, -100, -100, c, 2]);
  assert.equal(rejected.inputIds, [1, a, b, d, e, 2]);
  assert.equal(rejected.labels, [-100, -100, -100, d, e, 2]);
  // TRL's tokenize_row: prompt and responses separately, never the joined text
  assert.ok(tok.calls.includes('ab') && tok.calls.includes('c') && tok.calls.includes('de'));
  assert.not.ok(tok.calls.some((s) => s.includes('abc') || s.includes('abde')));
  assert.is(ds.tokens, 11);
  assert.is(ds.scored, 5);
});

const CHATML = '{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';
const chatTok = () => new FakeTokenizer({ chatTemplate: CHATML, specials: { '<|endoftext|>': 0, '<|im_start|>': 1, '<|im_end|>': 2 }, bos: null, eos: '<|im_end|>' });

test('conversational pairs: the chat template renders prompt + response; only the response turns are scored', async () => {
  const tok = chatTok();
  const ds = await load([
    { prompt: [{ role: 'user', content: 'hi' }], chosen: [{ role: 'assistant', content: 'yes' }], rejected: [{ role: 'assistant', content: 'no' }] },
    {
      prompt: [{ role: 'system', content: 's' }, { role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }],
      chosen: [{ role: 'assistant', content: 'dd' }], rejected: [{ role: 'assistant', content: 'e' }],
    },
  ], tok);
  assert.is(ds.format, 'conversational');
  assert.is(ds.chatRendering, 'template');
  const [p1, p2] = ds.pairs;
  assert.is(tok.decode(p1!.chosen.inputIds), '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n');
  assert.is(labelText(tok, p1!.chosen.labels), '|yes<|im_end|>|');
  assert.is(labelText(tok, p1!.rejected.labels), '|no<|im_end|>|');
  // the prompt's own assistant turn ("b") is context, not scored
  assert.is(labelText(tok, p2!.chosen.labels), '|dd<|im_end|>|');
  assert.is(labelText(tok, p2!.rejected.labels), '|e<|im_end|>|');
});

test('conversational pairs without a chat template: the Guanaco format, EOS closes the response', async () => {
  const tok = new FakeTokenizer();
  const ds = await load([{ prompt: [{ role: 'user', content: 'q' }], chosen: [{ role: 'assistant', content: 'A' }], rejected: [{ role: 'assistant', content: 'B' }] }], tok);
  assert.is(ds.chatRendering, 'guanaco');
  const { chosen, rejected } = ds.pairs[0]!;
  assert.is(tok.decode(chosen.inputIds), '<s>### Human: q### Assistant: A</s>');
  assert.is(labelText(tok, chosen.labels), '| A</s>');
  assert.is(labelText(tok, rejected.labels), '| B</s>');
});

test('truncation keeps BOS, the same end of the prompt on both sides, and the start of each response', async () => {
  const tok = new FakeTokenizer();
  const ds = await load([{ prompt: 'abcdef', chosen: 'xy', rejected: 'uvwxyzuvwxyz' }], tok, 6);
  assert.is(ds.truncated, 1);
  const { chosen, rejected } = ds.pairs[0]!;
  // the rejected response is longer than the sequence: BOS and one prompt token, on both sides
  assert.is(tok.decode(chosen.inputIds), '<s>fxy</s>');
  assert.is(labelText(tok, chosen.labels), '|xy</s>');
  assert.is(tok.decode(rejected.inputIds), '<s>fuvwx');
  assert.is(labelText(tok, rejected.labels), '|uvwx');
  // responses that leave room: the prompt keeps what the longer one leaves, on both sides
  const ds2 = await load([{ prompt: 'abcdefgh', chosen: 'xy', rejected: 'uvw' }], tok, 8);
  const p2 = ds2.pairs[0]!;
  assert.is(tok.decode(p2.chosen.inputIds), '<s>fghxy</s>');
  assert.is(tok.decode(p2.rejected.inputIds), '<s>fghuvw</s>');
  assert.is(p2.rejected.inputIds.length, 8);
});

test('a pair with nothing to score on one side is dropped and counted', async () => {
  const tok = new FakeTokenizer({ eos: null });
  const ds = await load([{ prompt: 'a', chosen: 'b', rejected: 'c' }, { prompt: 'a', chosen: '', rejected: 'c' }], tok);
  assert.is(ds.pairs.length, 1);
  assert.is(ds.dropped, 1);
});

test('errors name the file and line, one sentence each', async () => {
  const ok = { prompt: 'p', chosen: 'c', rejected: 'r' };
  await rejects(load([ok, ok, { prompt: 'p', chosen: 'c' }]), 'p.jsonl:3: a preference pair needs "prompt", "chosen" and "rejected", and "rejected" is missing.');
  await rejects(load([{ chosen: 'c' }]), 'p.jsonl:1: a preference pair needs "prompt", "chosen" and "rejected", and "prompt" and "rejected" are missing.');
  await rejects(load([ok, { prompt: 'p', chosen: 3, rejected: 'r' }]), 'p.jsonl:2: "chosen" must be a string in a standard pair (as "prompt" is), got the number 3.');
  await rejects(load([ok, { prompt: [{ role: 'user', content: 'x' }], chosen: [{ role: 'assistant', content: 'y' }], rejected: [{ role: 'assistant', content: 'z' }] }]),
    'p.jsonl:2: a conversational pair in a file of standard pairs (line 1); every record must have the same form.');
  await rejects(load([{ prompt: [{ role: 'user', content: 'x' }], chosen: [{ role: 'user', content: 'y' }], rejected: [{ role: 'assistant', content: 'z' }] }]),
    'p.jsonl:1: chosen[0].role must be "assistant" (a response is the assistant\'s), got the string "user".');
  await rejects(load([{ prompt: [], chosen: [], rejected: [] }]), /^p\.jsonl:1: "prompt" must be a string or a non-empty array/);
  await rejects(load(['text']), 'p.jsonl:1: expected a preference pair {"prompt", "chosen", "rejected"}, got the string "text".');
  await rejects(loadPreferenceDataset(new MemorySource('p.jsonl', enc('{"prompt": "a",\n')), { tokenizer: new FakeTokenizer(), maxLen: 8 }), /^p\.jsonl:1: invalid JSON/);
  await rejects(loadPreferenceDataset(new MemorySource('p.txt', enc('hello')), { tokenizer: new FakeTokenizer(), maxLen: 8 }), /^p\.txt: preference pairs are JSON records/);
  await rejects(loadPreferenceDataset(jsonl('p.jsonl', [ok]), { tokenizer: null, maxLen: 8 }), 'p.jsonl: preference pairs need a tokenizer (the model has none: give one with --tokenizer PATH).');
});

test('a file where no pair leaves a response token to score on both sides is refused', async () => {
  // empty responses (and no EOS to score in their place): every pair is dropped
  await rejects(load([{ prompt: 'a', chosen: '', rejected: 'c' }, { prompt: 'a', chosen: 'b', rejected: '' }], new FakeTokenizer({ eos: null })),
    'p.jsonl: none of the 2 pairs leaves a response token to score on both sides (responses cut off by the sequence length of 64?).');
  // a sequence length that holds BOS and one prompt token: truncation cuts every response off
  await rejects(load([{ prompt: 'ab', chosen: 'c', rejected: 'de' }], new FakeTokenizer(), 2),
    /^p\.jsonl: none of the 1 pairs leaves a response token to score on both sides \(responses cut off by the sequence length of 2\?\)\.$/);
});

test('a validation file must have the training pairs\' form: one form for both', async () => {
  const std = [{ prompt: 'a', chosen: 'b', rejected: 'c' }];
  const conv = [{ prompt: [{ role: 'user', content: 'a' }], chosen: [{ role: 'assistant', content: 'b' }], rejected: [{ role: 'assistant', content: 'c' }] }];
  const opts = { tokenizer: new FakeTokenizer(), maxLen: 16 };
  await rejects(loadPreferenceTrainValid(jsonl('t.jsonl', std), jsonl('v.jsonl', conv), opts),
    /^v\.jsonl: conversational pairs, but the training pairs are standard \(use one form for both\)\.$/);
  await rejects(loadPreferenceTrainValid(jsonl('t.jsonl', conv), jsonl('v.jsonl', std), opts),
    /^v\.jsonl: standard pairs, but the training pairs are conversational \(use one form for both\)\.$/);
  const same = await loadPreferenceTrainValid(jsonl('t.jsonl', std), jsonl('v.jsonl', std), opts);
  assert.is(same.validSource, 'file');
  assert.is(same.valid!.pairs.length, 1);
});

test('a JSON array of pairs reads as JSONL does', async () => {
  const recs = [{ prompt: 'a', chosen: 'b', rejected: 'c' }, { prompt: 'd', chosen: 'e', rejected: 'f' }];
  const a = await loadPreferenceDataset(new MemorySource('p.json', enc(JSON.stringify(recs, null, 1))), { tokenizer: new FakeTokenizer(), maxLen: 16 });
  const b = await load(recs);
  assert.equal(a.pairs, b.pairs);
});

test('pair batches: chosen rows first, right-padded to the longest row, targets shifted; resumable order', async () => {
  const ds = await load([{ prompt: 'a', chosen: 'b', rejected: 'cde' }, { prompt: 'ff', chosen: 'g', rejected: 'h' }]);
  const mb = assemblePairs(ds.pairs, 9);
  assert.is(mb.pairs, 2);
  assert.is(mb.B, 4);
  assert.is(mb.T, 6); // <s> a c d e </s>
  const row = (b: number) => [...mb.ids.subarray(b * mb.T, (b + 1) * mb.T)];
  assert.equal(row(0), [...ds.pairs[0]!.chosen.inputIds, 9, 9]);
  assert.equal(row(1), [...ds.pairs[1]!.chosen.inputIds, 9]);
  assert.equal(row(2), ds.pairs[0]!.rejected.inputIds);
  assert.equal(row(3), [...ds.pairs[1]!.rejected.inputIds, 9]);
  assert.equal([...mb.targets.subarray(0, mb.T)], [-100, 198, 2, -100, -100, -100]);
  assert.is(mb.scored, 2 + 2 + 4 + 2);

  const many = await load(Array.from({ length: 12 }, (_, i) => ({ prompt: 'p'.repeat(1 + (i % 4)), chosen: 'c', rejected: 'r'.repeat(1 + (i % 3)) })));
  const a = new PreferenceBatcher(many.pairs, { batchSize: 2, seed: 3 });
  for (let i = 0; i < 4; i++) a.next();
  const b = new PreferenceBatcher(many.pairs, { batchSize: 2, seed: 3 });
  b.restore(JSON.parse(JSON.stringify(a.state())));
  for (let i = 0; i < 5; i++) assert.equal(b.next().ids, a.next().ids);
  const evalRows = [...preferenceEvalBatches(many.pairs, { batchSize: 5 })].map((x) => x.pairs);
  assert.equal(evalRows, [5, 5, 2]);
  // held out: 10% of 12 pairs, whole pairs
  const split = await loadPreferenceTrainValid(jsonl('p.jsonl', Array.from({ length: 12 }, () => ({ prompt: 'a', chosen: 'b', rejected: 'c' }))), null, { tokenizer: new FakeTokenizer(), maxLen: 16 });
  assert.is(split.validSource, 'split');
  assert.is(split.valid!.pairs.length, 1);
  assert.is(split.train.pairs.length, 11);
});

test.run();
