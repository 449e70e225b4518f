// --neftune-alpha through the CLI: listed in `train --help`, checked before loading, a run with it
// trains and writes its adapter, and the value is kept in train_results.json (resume refuses a
// different one; see RESUMED in src/cli/commands/train.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, STORIES_GGUF } from '../helpers/index.ts';
import { cliRunner } from '../helpers/cli.ts';

const run = cliRunner();

test('train --neftune-alpha: in --help, range-checked, trains', () => {
  assert.match(run('train', '--help').stdout, /--neftune-alpha X\s.*NEFTune/);
  const bad = run('train', '--model', STORIES_GGUF, '--data', 'x.jsonl', '--out', 'o', '--neftune-alpha', '-1');
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--neftune-alpha must be a number ≥ 0, got '-1'/);
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-neftune-'));
  try {
    const data = join(tmp, 'd.jsonl');
    writeFileSync(data, readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').slice(0, 12).map((t) => JSON.stringify({ text: t.trim() })).join('\n') + '\n');
    const r = run('train', '--model', STORIES_GGUF, '--data', data, '--valid', 'none', '--out', join(tmp, 'run'), '--steps', '3', '--seq-len', '64', '--neftune-alpha', '5', '--backend', 'wasm', '--json');
    assert.is(r.code, 0, r.stderr);
    assert.ok(existsSync(join(tmp, 'run', 'adapter_model.safetensors')));
    const res = JSON.parse(readFileSync(join(tmp, 'run', 'train_results.json'), 'utf8')) as { options: { neftuneAlpha: number } };
    assert.is(res.options.neftuneAlpha, 5);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
