// CLI mistakes not covered by the per-command tests: exit 2, one "webqlora <command>: …" line
// (the prefix said once), no stack.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORIES_BIN, STORIES_GGUF } from '../helpers/index.ts';
import { assertUserError, runCli } from '../helpers/cli.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-err-'));

function userError(args: string[], re: RegExp): void {
  const line = assertUserError(runCli(args), re, { what: args.join(' ') });
  assert.not.match(line, /^webqlora(?: [a-z]+)?: webqlora/, 'the prefix said once');
}

test('unknown command and flag ranges', () => {
  userError(['frobnicate'], /^webqlora: unknown command 'frobnicate' \(expected one of train, generate, .*; see webqlora --help\)\.$/);
  userError(['generate', '--model', STORIES_GGUF, '--prompt', 'x', '--top-p', '2'], /^webqlora generate: --top-p must be a number from 0 to 1, got '2'\.$/);
  userError(['generate', '--model', STORIES_GGUF, '--prompt', 'x', '--max-new-tokens', '0'], /--max-new-tokens must be a whole number ≥ 1, got '0'\./);
  userError(['generate', '--model', STORIES_GGUF, '--prompt', 'x', '--backend', 'webgpu', '--threads', '2'], /^webqlora generate: --threads sets the WASM backend's threads and does nothing with --backend webgpu \(drop one of them\)\.$/);
  userError(['train', '--model', STORIES_GGUF, '--data', 'd.jsonl', '--out', join(TMP, 'o'), '--lora-dropout', '1'], /^webqlora train: --lora-dropout must be a number from 0 to 0\.99, got '1'\.$/);
});

test('context and tokenizer mistakes are reported before any weight is loaded', () => {
  writeFileSync(join(TMP, 'x.jsonl'), '{"text": "hi"}\n');
  userError(['eval', '--model', STORIES_GGUF, '--data', join(TMP, 'x.jsonl'), '--seq-len', '4096'], /^webqlora eval: --seq-len 4096 exceeds the model's context of 2048 positions\.$/);
  userError(['generate', '--model', STORIES_BIN, '--prompt', 'hi', '--backend', 'wasm'], /stories260K\.bin: the model has no tokenizer \(give --tokenizer PATH, or --prompt-ids\)\./);
  writeFileSync(join(TMP, 'vocab.txt'), 'a\n');
  userError(['generate', '--model', STORIES_BIN, '--prompt', 'hi', '--tokenizer', join(TMP, 'vocab.txt'), '--backend', 'wasm'], /vocab\.txt: unknown tokenizer file \(expected tokenizer\.json, a SentencePiece \.model, a llama2\.c tokenizer\.bin or a \.gguf with a vocabulary\)\./);
  mkdirSync(join(TMP, 'empty'));
  userError(['generate', '--model', STORIES_BIN, '--prompt', 'hi', '--tokenizer', join(TMP, 'empty'), '--backend', 'wasm'], /empty: no tokenizer\.json or tokenizer\.model in this directory\./);
  // --no-page-weights is not ignored where automatic paging would be needed
  userError(['train', '--model', 'synthetic:llama-2-7b', '--data', join(TMP, 'x.jsonl'), '--out', join(TMP, 'o7'), '--seq-len', '64', '--backend', 'wasm', '--no-page-weights'],
    /^webqlora train: --no-page-weights: with every layer resident the run needs [\d.]+ GiB of kernel memory, more than one wasm32 memory holds \(4\.00 GiB\) \(drop --no-page-weights to page base layers from host memory\)\.$/);
});

test('train refuses to write over an earlier run', () => {
  const out = join(TMP, 'run');
  mkdirSync(out);
  writeFileSync(join(out, 'adapter_model.safetensors'), '');
  userError(['train', '--model', STORIES_GGUF, '--data', 'd.jsonl', '--out', out], /already holds a training run \(use --resume to continue it, or choose another --out\)\./);
});

test.run();
