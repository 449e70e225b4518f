// Real data files from test/fixtures/data load with a real tokenizer (TinyLlama's): MLX WikiSQL
// text JSONL, an Alpaca JSON array, the OASST1 Guanaco sample, TinyStories plain text, a ShareGPT
// conversation read as chat; the dolly prompt/answer file gives the format error for line 1.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebqloraError } from '../../src/errors.ts';
import { FileSource, NodeDirSource } from '../../src/io/node.ts';
import { MemorySource } from '../../src/io/source.ts';
import { loadTokenizerFromDir } from '../../src/tokenizer/load.ts';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { alpacaPrompt, batcherFor, loadDataset, loadTrainValid, readRecords, type LoadDatasetOptions } from '../../src/data/index.ts';
import { FIXTURES } from '../helpers/index.ts';

const DATA = join(FIXTURES, 'data');
let tok: Tokenizer;

test.before(async () => {
  const dir = new NodeDirSource(join(FIXTURES, 'tokenizers', 'tinyllama-1.1b-chat'));
  tok = (await loadTokenizerFromDir(dir))!;
  await dir.close();
});

async function load(rel: string, opts: LoadDatasetOptions = {}) {
  const src = await FileSource.open(join(DATA, rel));
  try {
    return await loadDataset(src, { tokenizer: tok, ...opts });
  } finally {
    await src.close();
  }
}

test('wikisql_mlx/train.jsonl: 1000 text records, BOS + text + EOS, all scored', async () => {
  const ds = await load('wikisql_mlx/train.jsonl');
  assert.is(ds.format, 'text');
  assert.is(ds.records, 1000);
  assert.is(ds.examples.length, 1000);
  assert.is(ds.dropped, 0);
  const first = JSON.parse(readFileSync(join(DATA, 'wikisql_mlx/train.jsonl'), 'utf8').split('\n')[0]!).text as string;
  assert.equal(ds.examples[0]!.inputIds, [1, ...tok.encode(first, { addBos: false }), 2]);
  assert.equal(ds.examples[0]!.labels, ds.examples[0]!.inputIds);
});

test('wikisql valid + test files: chunked reads agree; a valid file, or 10% held out without one', async () => {
  const open = (r: string) => FileSource.open(join(DATA, r));
  const [t, v] = [await open('wikisql_mlx/valid.jsonl'), await open('wikisql_mlx/test.jsonl')];
  try {
    const chunked = await loadDataset(t, { tokenizer: tok, chunkSize: 333 });
    const both = await loadTrainValid(t, v, { tokenizer: tok });
    assert.equal(chunked.examples, both.train.examples);
    assert.is(both.validSource, 'file');
    assert.is(both.train.examples.length, 100);
    assert.is(both.valid!.examples.length, 100);
    assert.is(both.valid!.format, 'text');
    const split = await loadTrainValid(t, null, { tokenizer: tok, seed: 42 });
    assert.is(split.validSource, 'split');
    assert.is(split.train.examples.length, 90);
    assert.is(split.valid!.examples.length, 10);
    assert.is(split.train.tokens + split.valid!.tokens, both.train.tokens);
    // The batcher pads with the tokenizer's pad id (TinyLlama: </s> = 2).
    const batch = batcherFor(split.train, tok, { batchSize: 4, seed: 0 }).next();
    assert.is(batch.B, 4);
    const rows = batch.indices.map((i) => split.train.examples[i]!.inputIds.length);
    assert.is(batch.T, Math.max(...rows));
    const shortest = rows.indexOf(Math.min(...rows));
    if (rows[shortest]! < batch.T) assert.is(batch.ids[shortest * batch.T + batch.T - 1], 2);
  } finally {
    await t.close();
    await v.close();
  }
});

test('identity_alpaca.json: a JSON array of Alpaca records, prompt unscored, output + EOS scored', async () => {
  const ds = await load('identity_alpaca.json');
  const raw = JSON.parse(readFileSync(join(DATA, 'identity_alpaca.json'), 'utf8')) as Array<{ instruction: string; input: string; output: string }>;
  assert.is(ds.format, 'alpaca');
  assert.is(ds.records, raw.length);
  assert.is(ds.examples.length, raw.length);
  const ex = ds.examples[2]!;
  const source = [1, ...tok.encode(alpacaPrompt(raw[2]!.instruction, raw[2]!.input), { addBos: false })];
  const target = [...tok.encode(raw[2]!.output, { addBos: false }), 2];
  assert.equal(ex.inputIds, [...source, ...target]);
  assert.equal(ex.labels, [...source.map(() => -100), ...target]);
  assert.is(tok.decode(ex.labels.filter((l) => l !== -100)), raw[2]!.output);
  // Records keep the line they start on (5 lines per record in this file).
  const lines: number[] = [];
  for await (const r of readRecords(new MemorySource('identity_alpaca.json', readFileSync(join(DATA, 'identity_alpaca.json'))))) lines.push(r.line);
  assert.equal(lines.slice(0, 3), [2, 7, 12]);
});

test('oasst1_guanaco_format_sample.jsonl: detected as text from its "text" key (77 records)', async () => {
  const ds = await load('oasst1_guanaco_format_sample.jsonl');
  assert.is(ds.format, 'text');
  assert.is(ds.records, 77);
  assert.ok(ds.examples.length >= 77, 'long conversations become several windows');
  const first = JSON.parse(readFileSync(join(DATA, 'oasst1_guanaco_format_sample.jsonl'), 'utf8').split('\n')[0]!).text as string;
  assert.ok(first.startsWith('### Human: '));
  assert.ok(first.startsWith(tok.decode(ds.examples[0]!.inputIds)));
});

test('tinystories_sample.txt: 246 documents split on <|endoftext|> lines', async () => {
  const docs: string[] = [];
  for await (const r of readRecords(new MemorySource('tinystories_sample.txt', readFileSync(join(DATA, 'tinystories_sample.txt'))))) docs.push((r.value as { text: string }).text);
  assert.is(docs.length, 246);
  assert.ok(docs[0]!.startsWith('One day, a little girl named Lily found a needle in her room.'));
  assert.ok(docs[0]!.endsWith('They both felt happy because they had shared and worked together.'));
  assert.ok(docs[1]!.startsWith('Once upon a time, there was a little car named Beep.'));
  assert.not.ok(docs.some((d) => d.includes('<|endoftext|>')));
  const ds = await load('tinystories_sample.txt', { maxLen: 256 });
  assert.is(ds.format, 'text');
  assert.is(ds.records, 246);
  assert.is(ds.truncated, 0);
  assert.ok(ds.examples.length > 246, 'stories longer than 256 tokens are split into windows');
  assert.ok(ds.examples.every((e) => e.inputIds.length <= 256));
  assert.is(tok.decode(ds.examples[1]!.inputIds).slice(0, 40), docs[1]!.slice(0, 40));
});

test('the whole TinyStories file as one document: consecutive windows hold every token of the text', async () => {
  const text = readFileSync(join(DATA, 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').join('\n');
  const ds = await loadDataset(new MemorySource('book.jsonl', new TextEncoder().encode(JSON.stringify({ text }))), { tokenizer: tok, maxLen: 300 });
  assert.is(ds.truncated, 0);
  assert.equal(ds.examples.flatMap((e) => e.inputIds), [1, ...tok.encode(text, { addBos: false }), 2]);
  assert.ok(ds.examples.every((e) => e.inputIds.length <= 300));
});

test('sharegpt_conversation.json: ShareGPT {"conversations": [{"from", "value"}]} is chat, the gpt turns scored', async () => {
  const raw = JSON.parse(readFileSync(join(DATA, 'sharegpt_conversation.json'), 'utf8')) as { conversations: Array<{ from: string; value: string }> };
  const ds = await load('sharegpt_conversation.json', { maxLen: 4096 });
  assert.is(ds.format, 'chat');
  assert.is(ds.chatRendering, 'template');
  assert.is(ds.records, 1);
  assert.is(ds.truncated, 0);
  const ex = ds.examples[0]!;
  // Rendered as the same conversation given as "messages" would be.
  const roles: Record<string, string> = { human: 'user', gpt: 'assistant' };
  const messages = { messages: raw.conversations.map((t) => ({ role: roles[t.from], content: t.value })) };
  const same = await loadDataset(new MemorySource('same.jsonl', new TextEncoder().encode(JSON.stringify(messages))), { tokenizer: tok, maxLen: 4096 });
  assert.equal(same.examples[0], ex);
  // Each scored run is one gpt reply and its </s> (TinyLlama's template), nothing else.
  const runs: number[][] = [];
  ex.labels.forEach((l, t) => {
    if (l === -100) return;
    if (t === 0 || ex.labels[t - 1] === -100) runs.push([]);
    runs[runs.length - 1]!.push(l);
  });
  const replies = raw.conversations.filter((t) => t.from === 'gpt').map((t) => t.value);
  assert.is(replies.length, 6);
  assert.equal(runs.map((r) => tok.decode(r, { skipSpecial: false })), replies.map((v) => `${v}</s>`));
});

test('dolly {"prompt","answer"} names line 1: not a format webqlora reads', async () => {
  const msg = async (rel: string) => {
    try { await load(rel); } catch (e) { assert.instance(e, WebqloraError); return (e as Error).message; }
    return 'no error';
  };
  assert.is(await msg('dolly_alpaca_prompt.jsonl'), `${join(DATA, 'dolly_alpaca_prompt.jsonl')}:1: cannot tell the data format from the keys ("prompt", "answer"); expected "text", "prompt" and "completion", "instruction" and "output", "messages", "conversations" or "input_ids" (or pass the format explicitly).`);
  const forced = await load('dolly_alpaca_prompt.jsonl', { format: 'completion' }).then(() => 'no error', (e: Error) => e.message);
  assert.match(forced, /dolly_alpaca_prompt\.jsonl:1: expected "prompt" and "completion" strings \(completion format\)\.$/);
});

test.run();
