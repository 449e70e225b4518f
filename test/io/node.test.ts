// Node file access (io/node.ts) and the in-memory sources (io/source.ts): reads past the end,
// paths that are not files, unwritable output paths, symlinked directory entries, and handles
// that are closed once however often close() is called.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebqloraError } from '../../src/errors.ts';
import { FileSource, NodeDirSource, NodeOutDir } from '../../src/io/node.ts';
import { BlobSource, MemorySource, parseJson, readJson, writeFileTo } from '../../src/io/source.ts';

async function rejects(p: Promise<unknown> | (() => unknown), message: string): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (!(e instanceof WebqloraError)) throw new Error(`expected a WebqloraError, got ${(e as Error)?.stack ?? e}`);
    assert.is(e.message, message);
    return;
  }
  throw new Error(`no error, expected ${message}`);
}

let tmp = '';
test.before(() => { tmp = mkdtempSync(join(tmpdir(), 'webqlora-node-')); });
test.after(() => { rmSync(tmp, { recursive: true, force: true }); });

test('reads past the end: "the file is truncated" from every source', async () => {
  const bytes = Uint8Array.of(1, 2, 3, 4, 5);
  await rejects(new MemorySource('m.bin', bytes).read(3, 4), 'm.bin: the file is truncated (needed bytes 3..7, the file has 5).');
  await rejects(new MemorySource('m.bin', bytes).read(-1, 2), 'm.bin: the file is truncated (needed bytes -1..1, the file has 5).');
  await rejects(new BlobSource(new Blob([bytes]), 'b.bin').read(5, 1), 'b.bin: the file is truncated (needed bytes 5..6, the file has 5).');
  const path = join(tmp, 'five.bin');
  writeFileSync(path, bytes);
  const f = await FileSource.open(path);
  try {
    assert.equal([...(await f.read(1, 3))], [2, 3, 4]);
    await rejects(f.read(2, 10), `${path}: the file is truncated (needed bytes 2..12, the file has 5).`);
    await rejects(f.read(0.5, 1), `${path}: the file is truncated (needed bytes 0.5..1.5, the file has 5).`);
  } finally {
    await f.close();
  }
  await f.close(); // a second close is a no-op
});

test('FileSource.open: a directory or a missing path is a sentence naming it', async () => {
  await rejects(FileSource.open(tmp), `${tmp}: is a directory, expected a file.`);
  await rejects(FileSource.open(join(tmp, 'nope.bin')), `${join(tmp, 'nope.bin')}: no such file or directory.`);
});

test('NodeOutDir: an output path under a file cannot be written, with a sentence naming it', async () => {
  writeFileSync(join(tmp, 'plain'), 'x');
  const under = new NodeOutDir(join(tmp, 'plain', 'out'));
  await rejects(under.create('model.safetensors'), `${join(tmp, 'plain', 'out', 'model.safetensors')}: cannot write (a parent is not a directory).`);
  await rejects(new NodeOutDir(tmp).sub('plain'), `${join(tmp, 'plain')}: cannot create the directory (a file is in the way of a directory).`);
  // a normal write lands under its final name and leaves no temp file
  const out = await new NodeOutDir(tmp).sub('ok');
  await writeFileTo(out, 'a.json', '{"a": 1}');
  assert.equal(readdirSync(join(tmp, 'ok')), ['a.json']);
});

test('NodeDirSource: symlinks to files are listed and opened, directories are not files', async () => {
  const dir = join(tmp, 'snap');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(tmp, 'blob-config'), '{"x": [1, 2]}');
  symlinkSync(join(tmp, 'blob-config'), join(dir, 'config.json')); // how the HF hub cache lays out a snapshot
  symlinkSync(join(dir, 'sub'), join(dir, 'link-to-dir'));
  symlinkSync(join(tmp, 'missing'), join(dir, 'dangling'));
  writeFileSync(join(dir, 'tokenizer.json'), '{');
  const d = new NodeDirSource(dir);
  try {
    assert.equal((await d.list()).sort(), ['config.json', 'tokenizer.json']);
    assert.is(await d.open('sub'), null);
    assert.is(await d.open('link-to-dir'), null);
    assert.is(await d.open('dangling'), null);
    const cfg = (await d.open('config.json'))!;
    assert.equal(await readJson(cfg), { x: [1, 2] });
    await (cfg as FileSource).close(); // closed early; the directory's close() closes it again harmlessly
    await rejects(readJson((await d.open('tokenizer.json'))!), `${join(dir, 'tokenizer.json')}: not valid JSON (${jsonError('{')}).`);
  } finally {
    await d.close();
  }
  await d.close();
});

function jsonError(text: string): string {
  try { JSON.parse(text); } catch (e) { return (e as Error).message; }
  return '';
}

test('parseJson: the parse error names the file', async () => {
  assert.equal(parseJson('[1]', 'x.json'), [1]);
  await rejects(() => parseJson('{"a": }', 'dir/x.json'), `dir/x.json: not valid JSON (${jsonError('{"a": }')}).`);
});

test.run();
