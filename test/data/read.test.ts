// Reading data files: streamed lines across chunk boundaries (UTF-8 split mid-character), line
// numbers, JSONL / JSON array / plain-text layouts and their error messages.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebqloraError } from '../../src/errors.ts';
import { MemorySource } from '../../src/io/source.ts';
import { layoutFromName, readLines, readRecords, type RawRecord } from '../../src/data/index.ts';
import { enc } from './fake.ts';

async function lines(text: string | Uint8Array, chunk: number) {
  const out: Array<{ line: number; text: string }> = [];
  for await (const l of readLines(new MemorySource('f.jsonl', typeof text === 'string' ? enc(text) : text), chunk)) out.push(l);
  return out;
}

async function records(name: string, text: string, chunkSize?: number): Promise<RawRecord[]> {
  const out: RawRecord[] = [];
  for await (const r of readRecords(new MemorySource(name, enc(text)), chunkSize ? { chunkSize } : {})) out.push(r);
  return out;
}

async function rejects(p: Promise<unknown>, message: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.is((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected the error: ${message}`);
}

test('lines: every chunk size gives the same lines, multi-byte characters split across chunks', async () => {
  // 2-, 3- and 4-byte UTF-8 sequences, CRLF, an empty line, no final newline.
  const text = 'héllo wörld\r\n€uro — 日本語\n\n😀 emoji 𝄞 clef\nlast';
  const want = [
    { line: 1, text: 'héllo wörld' },
    { line: 2, text: '€uro — 日本語' },
    { line: 3, text: '' },
    { line: 4, text: '😀 emoji 𝄞 clef' },
    { line: 5, text: 'last' },
  ];
  for (const chunk of [1, 2, 3, 5, 7, 13, 1 << 20]) assert.equal(await lines(text, chunk), want, `chunk ${chunk}`);
});

test('lines: a trailing newline does not make an extra line; a BOM is dropped', async () => {
  assert.equal(await lines('a\nb\n', 4), [{ line: 1, text: 'a' }, { line: 2, text: 'b' }]);
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...enc('{"x":1}\n')]);
  assert.equal(await lines(bom, 2), [{ line: 1, text: '{"x":1}' }]);
});

test('lines: invalid UTF-8 names its line', async () => {
  const bytes = new Uint8Array([...enc('ok\nfine\n'), 0x61, 0xff, 0x62, 0x0a]);
  await rejects(lines(bytes, 3), 'f.jsonl:3: invalid UTF-8 (the file must be UTF-8 text).');
});

test('jsonl: records with their line numbers, blank lines skipped', async () => {
  const r = await records('train.jsonl', '{"text":"a"}\n\n  \n{"text":"b"}\r\n[1,2]\n', 5);
  assert.equal(r, [
    { line: 1, value: { text: 'a' } },
    { line: 4, value: { text: 'b' } },
    { line: 5, value: [1, 2] },
  ]);
});

test('jsonl: invalid JSON names file and line', async () => {
  try {
    await records('train.jsonl', '{"text":"a"}\n{"text":"b"}\n{"text": "c",}\n');
    assert.unreachable();
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.match((e as Error).message, /^train\.jsonl:3: invalid JSON \(.+\)\.$/);
  }
});

test('empty and blank files: no records', async () => {
  await rejects(records('train.jsonl', ''), 'train.jsonl: no records.');
  await rejects(records('train.jsonl', '\n  \n\n'), 'train.jsonl: no records.');
  await rejects(records('train.txt', '\n<|endoftext|>\n\n'), 'train.txt: no records.');
  await rejects(records('train.json', '[]'), 'train.json: no records.');
});

test('json: an array of records, each with the line it starts on', async () => {
  const text = '[\n  {"instruction": "a",\n   "output": "x"},\n  {"instruction": "b, [not] {a} \\"bracket\\"", "output": "y"},\n\n  {"instruction": "c", "output": "z"}\n]\n';
  const r = await records('data.json', text);
  assert.equal(r.map((x) => x.line), [2, 4, 6]);
  assert.equal((r[1]!.value as { instruction: string }).instruction, 'b, [not] {a} "bracket"');
});

test('json: one pretty-printed object is one record; JSON lines under a .json name are JSONL', async () => {
  assert.equal(await records('one.json', '\n{\n  "text": "hello"\n}\n'), [{ line: 2, value: { text: 'hello' } }]);
  assert.equal(await records('lines.json', '{"text":"a"}\n{"text":"b"}\n'), [{ line: 1, value: { text: 'a' } }, { line: 2, value: { text: 'b' } }]);
});

test('json: invalid JSON names the line when the parser gives a position', async () => {
  try {
    await records('data.json', '[\n {"a": 1},\n {"a": 2,,}\n]');
    assert.unreachable();
  } catch (e) {
    assert.instance(e, WebqloraError);
    assert.match((e as Error).message, /^data\.json:3: invalid JSON \(.+\)\.$/);
  }
  // A scalar is a (one-line) JSON value: the reader passes it on, the format check rejects it.
  assert.equal(await records('data.json', '"just a string"'), [{ line: 1, value: 'just a string' }]);
});

test('txt: documents separated by <|endoftext|> lines, each with its first line', async () => {
  const text = 'Once upon a time.\nThe end.\n<|endoftext|>\n\nSecond story.\n<|endoftext|>\n<|endoftext|>\nThird <|endoftext|> inline stays.\n';
  for (const chunk of [3, 1 << 20]) {
    assert.equal(await records('stories.txt', text, chunk), [
      { line: 1, value: { text: 'Once upon a time.\nThe end.' } },
      { line: 5, value: { text: 'Second story.' } },
      { line: 8, value: { text: 'Third <|endoftext|> inline stays.' } },
    ]);
  }
});

test('txt: without separators the whole file is one document', async () => {
  assert.equal(await records('book.txt', 'line one\n\nline three\n'), [{ line: 1, value: { text: 'line one\n\nline three' } }]);
});

test('layout from the name, and sniffed without a known extension', async () => {
  assert.is(layoutFromName('a/b/train.JSONL'), 'jsonl');
  assert.is(layoutFromName('x.ndjson'), 'jsonl');
  assert.is(layoutFromName('x.json'), 'json');
  assert.is(layoutFromName('x.txt'), 'txt');
  assert.is(layoutFromName('data'), null);
  assert.equal(await records('data', '{"text":"a"}\n'), [{ line: 1, value: { text: 'a' } }]);
  assert.equal(await records('data', '  [{"text":"a"}]'), [{ line: 1, value: { text: 'a' } }]);
  assert.equal(await records('data', 'plain words\n'), [{ line: 1, value: { text: 'plain words' } }]);
});

test.run();
