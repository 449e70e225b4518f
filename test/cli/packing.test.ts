// `webqlora train --packing` end to end through the built CLI on stories260K and the alpaca
// fixture: it packs (one line says how full the rows are), records packing in its checkpoints,
// a run killed and resumed ends with the byte-identical adapter and loss history, and a
// checkpoint trained without packing refuses to continue with it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, STORIES_GGUF } from '../helpers/index.ts';
import { NO_DEBUG, trainUntil } from '../helpers/cli.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-packing-'));
const ALPACA = join(FIXTURES, 'data', 'identity_alpaca.json');

test('--packing: packs the alpaca fixture, records it, and resumes bit for bit', async () => {
  const common = ['train', '--model', STORIES_GGUF, '--data', ALPACA, '--packing', '--steps', '6', '--batch-size', '2', '--seq-len', '512',
    '--save-every', '2', '--lr', '1e-3', '--lora-r', '4', '--backend', 'wasm', '--json'];
  const whole = join(TMP, 'whole'), cut = join(TMP, 'cut');
  const w = await trainUntil([...common, '--out', whole], null, { env: NO_DEBUG });
  assert.is(w.code, 0, w.stderr);
  // without --json, one line says what packing made of the data
  const human = await trainUntil([...common.filter((a) => a !== '--json'), '--steps', '1', '--out', join(TMP, 'human')], null, { env: NO_DEBUG });
  assert.is(human.code, 0, human.stderr);
  assert.match(human.stderr, /packing: 82 examples in \d+ rows of ≤ 512 tokens \(\d+\.\d% filled\)/);
  const state = JSON.parse(readFileSync(join(whole, 'checkpoint-4', 'trainer_state.json'), 'utf8'));
  assert.is(state.options.packing, true);
  assert.is(state.data.packing, 512);
  const results = JSON.parse(readFileSync(join(whole, 'train_results.json'), 'utf8'));
  assert.is(results.history.length, 6);
  assert.ok(results.history.every((h: { loss: number; tokens: number }) => Number.isFinite(h.loss) && h.tokens <= 2 * 512));
  assert.ok(Number.isFinite(results.valid.loss), 'validation (unpacked) ran');

  assert.is.not((await trainUntil([...common, '--out', cut], 3, { env: NO_DEBUG })).code, 0, 'killed');
  assert.ok(existsSync(join(cut, 'checkpoint-2', 'trainer_state.json')) && !existsSync(join(cut, 'checkpoint-4')), 'killed after checkpoint-2, before checkpoint-4');
  const r = await trainUntil([...common, '--out', cut, '--resume'], null, { env: NO_DEBUG });
  assert.is(r.code, 0, r.stderr);
  assert.ok(readFileSync(join(whole, 'adapter_model.safetensors')).equals(readFileSync(join(cut, 'adapter_model.safetensors'))), 'adapter bytes differ after resuming');
  const b = JSON.parse(readFileSync(join(cut, 'train_results.json'), 'utf8'));
  assert.equal(b.history.map((h: { loss: number }) => h.loss), results.history.map((h: { loss: number }) => h.loss));
});

test('a run trained without packing does not resume with --packing', async () => {
  const out = join(TMP, 'plain');
  const args = ['train', '--model', STORIES_GGUF, '--data', ALPACA, '--steps', '2', '--save-every', '1', '--batch-size', '2', '--seq-len', '512', '--lora-r', '2', '--backend', 'wasm', '--json', '--valid', 'none', '--out', out];
  const first = await trainUntil(args, null, { env: NO_DEBUG });
  assert.is(first.code, 0, first.stderr);
  const r = await trainUntil([...args, '--resume', '--packing'], null, { env: NO_DEBUG });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /--packing true differs from .*checkpoint-1's false/);
});

test.run();
