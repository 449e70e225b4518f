// A paged run through the CLI on a real untied safetensors model (the Mistral fixture): the base
// layers come from host memory and the input embedding's rows from the model file, which the
// loaded model keeps open (cli/common.ts loadModelFrom), across training, validation and the final
// eval. Its adapter is byte-identical to the resident run's; generation gives the same ids.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, Rng } from '../helpers/index.ts';
import { cliRunner } from '../helpers/cli.ts';

const run = cliRunner();
const MISTRAL = join(FIXTURES, 'archs', 'mistral');

test('--page-weights on an untied safetensors model: train, validate, generate as the resident run does', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-paged-'));
  try {
    const rng = new Rng(3);
    const data = join(tmp, 'ids.jsonl');
    writeFileSync(data, Array.from({ length: 40 }, () => JSON.stringify({ input_ids: Array.from({ length: 8 + rng.int(22) }, () => 3 + rng.int(497)) })).join('\n') + '\n');
    const outs: string[] = [];
    for (const paged of [false, true]) {
      const out = join(tmp, paged ? 'paged' : 'resident');
      const r = run('train', '--model', MISTRAL, '--data', data, '--out', out, '--steps', '4', '--seq-len', '32', '--batch-size', '4', '--eval-every', '2', '--backend', 'wasm', ...(paged ? ['--page-weights'] : []));
      assert.is(r.code, 0, r.stderr);
      if (paged) assert.match(r.stderr, /base layers paged from/);
      outs.push(out);
      const g = run('generate', '--model', MISTRAL, '--adapter', out, '--prompt-ids', '1,5,9,12', '--max-new-tokens', '6', '--backend', 'wasm', ...(paged ? ['--page-weights'] : []));
      assert.is(g.code, 0, g.stderr);
      outs.push(g.stdout.trim().split('\n')[0]!);
    }
    assert.ok(readFileSync(join(outs[0]!, 'adapter_model.safetensors')).equals(readFileSync(join(outs[2]!, 'adapter_model.safetensors'))), 'the same adapter bytes');
    assert.is(outs[3], outs[1], 'the same generated ids');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
