// generate, eval, merge and demo end to end through the built CLI on stories260K.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORIES_GGUF, FIXTURES, Rng } from '../helpers/index.ts';
import { assertUserError, cliRunner } from '../helpers/cli.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { saveAdapter } from '../../src/model/peft.ts';
import { loadModel } from '../../src/model/load.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-gen-'));
const run = cliRunner();

const storiesJsonl = join(TMP, 'stories.jsonl');
writeFileSync(storiesJsonl, readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').slice(0, 12).map((t) => JSON.stringify({ text: t.trim() })).join('\n') + '\n');

test('generate: streamed text, --json record, --prompt-ids, and mistakes', () => {
  const r = run('generate', '--model', STORIES_GGUF, '--prompt', 'Once upon a time', '--max-new-tokens', '20', '--quant', 'none', '--backend', 'wasm');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^, there was a little girl named Lily/);
  const j = run('generate', '--model', STORIES_GGUF, '--prompt-ids', '1,403,407', '--max-new-tokens', '12', '--temperature', '0.8', '--top-p', '0.9', '--seed', '3', '--json', '--backend', 'wasm');
  assert.is(j.code, 0, j.stderr);
  const rec = JSON.parse(j.stdout.trim().split('\n').pop()!) as { prompt_ids: number[]; output_ids: number[]; text: string };
  assert.equal(rec.prompt_ids, [1, 403, 407]);
  assert.is(rec.output_ids.length, 12);
  assert.type(rec.text, 'string');
  const again = run('generate', '--model', STORIES_GGUF, '--prompt-ids', '1,403,407', '--max-new-tokens', '12', '--temperature', '0.8', '--top-p', '0.9', '--seed', '3', '--json', '--backend', 'wasm');
  assert.equal(JSON.parse(again.stdout.trim().split('\n').pop()!).output_ids, rec.output_ids, 'same seed, same tokens');
  assertUserError(run('generate', '--model', STORIES_GGUF), /exactly one of --prompt TEXT or --prompt-ids/);
  assertUserError(run('generate', '--model', STORIES_GGUF, '--prompt-ids', '1,9999'), /token id 9999 is outside the vocabulary \[0, 512\)/);
  assertUserError(run('generate', '--model', STORIES_GGUF, '--prompt', 'x', '--temperature', 'hot'), /--temperature must be a number ≥ 0, got 'hot'/);
  assertUserError(run('generate', '--model', join(TMP, 'nope.gguf'), '--prompt', 'x'), /nope\.gguf: no such file/);
});

test('eval: loss, perplexity = exp(loss), tokens; a malformed line names file:line', () => {
  const r = run('eval', '--model', STORIES_GGUF, '--data', storiesJsonl, '--seq-len', '256', '--batch-size', '4', '--json', '--backend', 'wasm');
  assert.is(r.code, 0, r.stderr);
  const rec = JSON.parse(r.stdout.trim().split('\n').pop()!) as { loss: number; perplexity: number; tokens: number };
  assert.ok(rec.loss > 0.5 && rec.loss < 3, String(rec.loss));
  assert.ok(Math.abs(rec.perplexity - Math.exp(rec.loss)) < 1e-9 * rec.perplexity);
  assert.ok(rec.tokens > 1000);
  const bad = join(TMP, 'bad.jsonl');
  writeFileSync(bad, '{"text": "a"}\n{"text": "b"\n');
  assertUserError(run('eval', '--model', STORIES_GGUF, '--data', bad), /bad\.jsonl:2: invalid JSON/);
});

test('merge: deq(W4) + s·B·A in f32 evaluates like the 4-bit base with the adapter', async () => {
  const be = await createWasmBackend();
  const src = await openModelPath(STORIES_GGUF);
  const model = await loadModel(src, be, {});
  const lora = new LoraAdapters(be, model.config, { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora: false }, false);
  const rng = new Rng(8);
  for (const p of lora.pairs) { be.write(p.A, rng.f32(p.A.length, 0.1)); be.write(p.B, rng.f32(p.B.length, 0.1)); }
  const adapter = join(TMP, 'adapter');
  await saveAdapter(lora, new NodeOutDir(adapter), 'stories260K');
  await src.close();
  const merged = join(TMP, 'merged');
  const m = run('merge', '--model', STORIES_GGUF, '--adapter', adapter, '--out', merged, '--dtype', 'f32');
  assert.is(m.code, 0, m.stderr);
  const evalOf = (...a: string[]) => JSON.parse(run('eval', '--data', storiesJsonl, '--seq-len', '128', '--json', '--backend', 'wasm', ...a).stdout.trim().split('\n').pop()!).loss as number;
  const withAdapter = evalOf('--model', STORIES_GGUF, '--adapter', adapter);
  const mergedLoss = evalOf('--model', merged, '--quant', 'none', '--tokenizer', STORIES_GGUF);
  const baseOnly = evalOf('--model', STORIES_GGUF);
  assert.ok(Math.abs(withAdapter - baseOnly) > 1e-3, 'the adapter changes the model');
  assert.ok(Math.abs(mergedLoss - withAdapter) < 1e-4 * withAdapter, `merged ${mergedLoss} vs base+adapter ${withAdapter}`);
  assertUserError(run('merge', '--model', STORIES_GGUF, '--adapter', adapter, '--out', merged), /already holds a model/);
  assertUserError(run('merge', '--model', STORIES_GGUF, '--adapter', join(FIXTURES, 'models', 'smollm2-135m-prompt-tuning'), '--out', join(TMP, 'm2')), /peft_type PROMPT_TUNING is not supported/);
});

test('demo: before and after generations, adapter saved', () => {
  const out = join(TMP, 'demo');
  const r = run('demo', '--steps', '6', '--out', out, '--backend', 'wasm');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /before: Once upon a time/);
  assert.match(r.stdout, /after: +Once upon a time/);
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')) && existsSync(join(out, 'adapter_config.json')));
});

test.run();
