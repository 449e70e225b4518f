// --resume reuses the data and quantization flags the run was started with (kept in the
// checkpoint): a resumed fp4 run given no --quant ends byte-identical to the uninterrupted fp4
// run (it would train on an NF4 base otherwise), and a resume that asks for another value of a
// kept flag is refused in one sentence, and so is a resume on another base model (fingerprint).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, STORIES_GGUF, STORIES_HF } from '../helpers/index.ts';
import { cliRunner } from '../helpers/cli.ts';

const run = cliRunner();

test('--resume keeps --quant and --format from the checkpoint; another value is refused', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-resume-kept-'));
  try {
    const data = join(tmp, 'd.jsonl');
    writeFileSync(data, readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').slice(0, 12).map((t) => JSON.stringify({ text: t.trim() })).join('\n') + '\n');
    const common = ['--model', STORIES_GGUF, '--data', data, '--valid', 'none', '--steps', '3', '--seq-len', '64', '--backend', 'wasm', '--save-every', '1'];
    const full = join(tmp, 'full');
    const r = run('train', ...common, '--quant', 'fp4', '--format', 'text', '--out', full);
    assert.is(r.code, 0, r.stderr);
    const cut = join(tmp, 'cut');
    cpSync(full, cut, { recursive: true });
    for (const n of readdirSync(cut)) if (n !== 'checkpoint-1') rmSync(join(cut, n), { recursive: true, force: true });
    const bad = run('train', ...common, '--quant', 'nf4', '--out', cut, '--resume');
    assert.is(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--quant nf4 differs from .*checkpoint-1's fp4: a resumed run keeps its checkpoint's settings/);
    const res = run('train', ...common, '--out', cut, '--resume');
    assert.is(res.code, 0, res.stderr);
    assert.ok(readFileSync(join(cut, 'adapter_model.safetensors')).equals(readFileSync(join(full, 'adapter_model.safetensors'))), 'the resumed run trained on the same fp4 base and data');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("--resume on another base model is refused (the checkpoint records its base's fingerprint)", () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-resume-base-'));
  try {
    const data = join(tmp, 'd.jsonl');
    writeFileSync(data, readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').slice(0, 12).map((t) => JSON.stringify({ text: t.trim() })).join('\n') + '\n');
    // the same model with one final-norm weight changed: another base of the same shapes
    const other = join(tmp, 'other');
    cpSync(STORIES_HF, other, { recursive: true });
    const st = readFileSync(join(other, 'model.safetensors'));
    const hlen = Number(st.readBigUInt64LE(0)), header = JSON.parse(st.subarray(8, 8 + hlen).toString('utf8'));
    const at = 8 + hlen + header['model.norm.weight'].data_offsets[0];
    st.writeFloatLE(st.readFloatLE(at) + 0.25, at);
    writeFileSync(join(other, 'model.safetensors'), st);
    const common = ['--tokenizer', STORIES_GGUF, '--data', data, '--valid', 'none', '--steps', '3', '--seq-len', '64', '--backend', 'wasm', '--save-every', '1'];
    // a checkpoint of step 1 of a 3-step run: cut the finished run back to it
    const full = join(tmp, 'full');
    const f = run('train', '--model', STORIES_HF, ...common, '--out', full);
    assert.is(f.code, 0, f.stderr);
    for (const n of readdirSync(full)) if (n !== 'checkpoint-1') rmSync(join(full, n), { recursive: true, force: true });
    const bad = run('train', '--model', other, ...common, '--out', full, '--resume');
    assert.is(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /checkpoint-1: the checkpoint was trained on another base model \(.*stories260K.*, fingerprint [0-9a-f]{16}\) than the one loaded \(fingerprint [0-9a-f]{16}\); resume with the same --model/);
    const good = run('train', '--model', STORIES_HF, ...common, '--out', full, '--resume');
    assert.is(good.code, 0, good.stderr);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
