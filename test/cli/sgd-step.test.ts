// The done-when of "Bring your own model", literally: for every family of test/fixtures/archs
// (and each DoRA adapter of test/fixtures/dora, magnitudes included),
// `webqlora train --optimizer sgd --lr 1 --max-grad-norm 0 --lora-dropout 0 --warmup-ratio 0
// --weight-decay 0` for one step from PEFT's adapter (--init-adapter) on transformers' reference
// batch (written as tokens-format data with its labels) moves each adapter tensor by PEFT's
// gradient: ‖(after − before) + g_peft‖ ≤ 1e-3·‖g_peft‖ per tensor. Base in f32 (--quant none), as
// PEFT computed the gradient.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../../src/io/node.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { ORACLES, peftGrad, readReference } from '../model/archs.ts';
import { runCli } from '../helpers/cli.ts';

async function tensors(path: string): Promise<Map<string, Float32Array>> {
  const f = await FileSource.open(path);
  const st = await openSafetensors(f);
  const out = new Map<string, Float32Array>();
  for (const k of st.tensors.keys()) out.set(k, await st.readFloat(k));
  await f.close();
  return out;
}

for (const [fam, dir] of ORACLES) {
  test(`${fam}: one CLI SGD step (lr 1) moves every adapter tensor by PEFT's gradient`, async () => {
    const ref = await readReference(dir);
    const tmp = mkdtempSync(join(tmpdir(), `webqlora-sgd-${fam.replace('/', '-')}-`));
    try {
      // transformers' labels: the targets the batch holds, un-shifted (labels[t + 1] = targets[t])
      const { B, T } = ref.batch, lines: string[] = [];
      for (let b = 0; b < B; b++) {
        const ids = [...ref.batch.ids.subarray(b * T, (b + 1) * T)];
        const labels = [ids[0]!, ...ref.batch.targets.subarray(b * T, (b + 1) * T - 1)];
        lines.push(JSON.stringify({ input_ids: ids, labels }));
      }
      const data = join(tmp, 'batch.jsonl');
      writeFileSync(data, lines.join('\n') + '\n');
      const r = runCli(['train', '--model', dir, '--init-adapter', join(dir, 'adapter'), '--data', data, '--valid', data,
        '--format', 'tokens', '--optimizer', 'sgd', '--lr', '1', '--max-grad-norm', '0', '--lora-dropout', '0', '--warmup-ratio', '0',
        '--weight-decay', '0', '--steps', '1', '--batch-size', String(B), '--seq-len', String(T), '--quant', 'none', '--backend', 'wasm',
        '--out', join(tmp, 'run')]);
      assert.is(r.code, 0, r.stderr);
      const before = await tensors(join(dir, 'adapter', 'adapter_model.safetensors'));
      const after = await tensors(join(tmp, 'run', 'adapter_model.safetensors'));
      assert.equal([...after.keys()].sort(), [...before.keys()].sort());
      for (const [k, a] of after) {
        const b = before.get(k)!, g = peftGrad(ref, k)!;
        let d = 0, n = 0;
        for (let i = 0; i < g.length; i++) { d += (a[i]! - b[i]! + g[i]!) ** 2; n += g[i]! ** 2; }
        assert.ok(Math.sqrt(d / n) <= 1e-3, `${fam}: ${k}: the step differs from −grad by ${Math.sqrt(d / n).toExponential(2)} of ‖grad‖`);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

test.run();
