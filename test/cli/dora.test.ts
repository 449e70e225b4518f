// `webqlora train --use-dora` end to end on the real stories260K model (NF4 base: QDoRA):
// in --help; trains and writes a PEFT DoRA adapter (use_dora true, a magnitude per adapted
// module of its out size); a run resumed from its step-2 checkpoint ends with a byte-identical
// adapter; merge folds it into a model; export to a llama.cpp GGUF adapter is refused in one
// sentence (llama.cpp's LoRA GGUF has no magnitudes) and writes nothing.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../../src/io/node.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURES, STORIES_GGUF } from '../helpers/index.ts';
import { cliRunner } from '../helpers/cli.ts';

const run = cliRunner();

test('train --use-dora: QDoRA adapter in PEFT format, exact resume, merge; GGUF adapter export refused', async () => {
  assert.match(run('train', '--help').stdout, /--use-dora\s.*DoRA/);
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-dora-'));
  try {
    const data = join(tmp, 'd.jsonl');
    writeFileSync(data, readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').slice(0, 16).map((t) => JSON.stringify({ text: t.trim() })).join('\n') + '\n');
    const runDir = join(tmp, 'run');
    const common = ['--model', STORIES_GGUF, '--data', data, '--valid', 'none', '--steps', '4', '--seq-len', '64', '--batch-size', '2', '--use-dora', '--lr', '2e-3', '--backend', 'wasm', '--save-every', '2'];
    const r = run('train', ...common, '--out', runDir, '--json');
    assert.is(r.code, 0, r.stderr);
    // PEFT's init: a fresh DoRA adapter computes the base model, so its first step's loss is plain
    // LoRA's (whose fresh B = 0 adapter does too)
    const firstLoss = (stdout: string) => (stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { step?: number; loss?: number }).find((o) => o.step === 1)?.loss);
    const lora = run('train', '--model', STORIES_GGUF, '--data', data, '--valid', 'none', '--steps', '1', '--seq-len', '64', '--batch-size', '2', '--lr', '2e-3', '--backend', 'wasm', '--out', join(tmp, 'lora'), '--json');
    assert.is(lora.code, 0, lora.stderr);
    const l0 = firstLoss(lora.stdout), d0 = firstLoss(r.stdout);
    assert.ok(l0 !== undefined && d0 !== undefined && Math.abs(d0 - l0) <= 1e-5 * l0, `first-step loss: DoRA ${d0}, LoRA ${l0}`);
    const cfg = JSON.parse(readFileSync(join(runDir, 'adapter_config.json'), 'utf8')) as { use_dora: boolean; r: number };
    assert.is(cfg.use_dora, true);
    const f = await FileSource.open(join(runDir, 'adapter_model.safetensors'));
    const st = await openSafetensors(f);
    const mags = [...st.tensors.keys()].filter((k) => k.endsWith('.lora_magnitude_vector'));
    const bs = [...st.tensors.keys()].filter((k) => k.endsWith('.lora_B.weight'));
    assert.ok(mags.length > 0 && mags.length === bs.length, `one magnitude per adapted module (${mags.length} vs ${bs.length})`);
    for (const k of mags) assert.equal(st.info(k).shape, [st.info(k.replace('lora_magnitude_vector', 'lora_B.weight')).shape[0]], k);
    // the magnitudes trained: they differ from the step-2 checkpoint's
    const f2 = await FileSource.open(join(runDir, 'checkpoint-2', 'adapter_model.safetensors'));
    const st2 = await openSafetensors(f2);
    let moved = 0;
    for (const k of mags) {
      const a = await st.readFloat(k), b = await st2.readFloat(k);
      if (a.some((x, i) => x !== b[i])) moved++;
    }
    assert.ok(moved > 0 && moved === mags.length, `magnitudes changed in ${moved} of ${mags.length} modules`);
    await f2.close();
    await f.close();

    // resume from checkpoint-2: the same final adapter, byte for byte
    const cut = join(tmp, 'cut');
    cpSync(runDir, cut, { recursive: true });
    for (const n of readdirSync(cut)) if (n !== 'checkpoint-2') rmSync(join(cut, n), { recursive: true, force: true });
    const res = run('train', ...common, '--out', cut, '--resume');
    assert.is(res.code, 0, res.stderr);
    assert.ok(readFileSync(join(cut, 'adapter_model.safetensors')).equals(readFileSync(join(runDir, 'adapter_model.safetensors'))), 'resumed DoRA run ends byte-identical');

    const merged = join(tmp, 'merged');
    const m = run('merge', '--model', STORIES_GGUF, '--adapter', runDir, '--out', merged);
    assert.is(m.code, 0, m.stderr);
    assert.ok(existsSync(join(merged, 'config.json')));

    const out = join(tmp, 'a.gguf');
    const e = run('export', '--model', STORIES_GGUF, '--adapter', runDir, '--out', out);
    assert.is.not(e.code, 0);
    assert.match(e.stderr, /DoRA adapter, which llama\.cpp's LoRA GGUF cannot express/);
    assert.not.ok(e.stderr.includes('    at '), 'no stack trace');
    assert.not.ok(existsSync(out), 'nothing written');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
