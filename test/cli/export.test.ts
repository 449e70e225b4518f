// webqlora export (LoRA adapter → llama.cpp GGUF adapter) and merge --out F.gguf through the built
// CLI: dtypes, GGUF adapters as --adapter input, and the refusals — one sentence, exit 2, no file
// left behind. (llama.cpp itself loads what export and merge write in test/llamacpp/deploy.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { FileSource } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { readGgufAdapter } from '../../src/model/gguf-adapter.ts';
import { adapterConfigAt } from '../../src/cli/common.ts';
import { FIXTURES, loadAdapterAt } from '../helpers/index.ts';
import { assertUserError, cliRunner } from '../helpers/cli.ts';

const run = cliRunner();
const ARCHS = join(FIXTURES, 'archs');

test('export: f32 is exact, f16/bf16/q8_0 within their rounding; a GGUF adapter reads back as the PEFT one (phi3: fused modules)', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-export-'));
  try {
    const model = join(ARCHS, 'phi3');
    const src = await openModelPath(model);
    const be = createReferenceBackend();
    const peft = await loadAdapterAt(join(model, 'adapter'), be, src.config);
    for (const [dtype, rel] of [['f32', 0], ['f16', 1e-3], ['bf16', 8e-3], ['q8_0', 2e-2]] as const) {
      const out = join(tmp, `a-${dtype}.gguf`);
      const r = run('export', '--model', model, '--adapter', join(model, 'adapter'), '--out', out, '--dtype', dtype, '--json');
      assert.is(r.code, 0, r.stderr);
      const rec = JSON.parse(r.stdout.trim()) as { tensors: number; alpha: number };
      assert.equal([rec.tensors, rec.alpha], [2 * peft.modules.length, 8]);
      const f = await FileSource.open(out);
      const back = await readGgufAdapter(f, be, src.config);
      await f.close();
      assert.equal(back.modules.map((m) => [m.path, m.r, m.scaling]), peft.modules.map((m) => [m.path, m.r, m.scaling]));
      // the settings that size a run with --adapter a.gguf, read before any weight: the loaded adapter's
      assert.equal((await adapterConfigAt(out))(src.config), back.config);
      for (let k = 0; k < peft.params.length; k++) {
        const a = (await be.read(back.params[k]!.value)) as Float32Array, b = (await be.read(peft.params[k]!.value)) as Float32Array;
        let scale = 0, err = 0;
        for (let i = 0; i < b.length; i++) { scale = Math.max(scale, Math.abs(b[i]!)); err = Math.max(err, Math.abs(a[i]! - b[i]!)); }
        assert.ok(err <= rel * scale, `${dtype}: ${peft.params[k]!.value.label}: max error ${err} of ${scale}`);
      }
      back.free();
    }
    peft.free();
    await src.close();
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('export and merge --out .gguf refuse what llama.cpp cannot load: one sentence, exit 2, nothing written', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-export-bad-'));
  try {
    const cases: Array<[string[], RegExp]> = [
      [['export', '--model', join(ARCHS, 'mistral'), '--adapter', join(ARCHS, 'mistral', 'adapter'), '--out', join(tmp, 'm.gguf')], /llama\.cpp's llama architecture has no sliding window/],
      [['export', '--model', join(FIXTURES, 'dora', 'llama3'), '--adapter', join(FIXTURES, 'dora', 'llama3', 'adapter'), '--out', join(tmp, 'd.gguf')], /it is a DoRA adapter, which llama\.cpp's LoRA GGUF cannot express \(merge it instead/],
      [['export', '--model', join(ARCHS, 'llama3'), '--adapter', join(ARCHS, 'llama3', 'adapter'), '--out', join(tmp, 'x.safetensors')], /--out .*x\.safetensors must end in \.gguf/],
      [['merge', '--model', join(ARCHS, 'gemma3'), '--adapter', join(ARCHS, 'gemma3', 'adapter'), '--out', join(tmp, 'g.gguf'), '--quant', 'none'], /llama\.cpp's gemma3 architecture slides on 5 of every 6 layers/],
      [['merge', '--model', join(ARCHS, 'llama3'), '--adapter', join(ARCHS, 'llama3', 'adapter'), '--out', join(tmp, 'l.gguf'), '--quant', 'none'], /no tokenizer\.model and no byte-level BPE tokenizer\.json/],
    ];
    for (const [args, re] of cases) {
      assertUserError(run(...args), re, { what: args.join(' '), lines: /^webqlora/ });
    }
    assert.equal(readdirSync(tmp), [], 'no file left behind');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
