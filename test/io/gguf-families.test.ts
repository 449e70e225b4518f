// GGUF in llama.cpp's layout for every family (src/io/gguf-arch.ts, gguf-write.ts): each
// transformers fixture (test/fixtures/archs/) written as GGUF by the project's own writer reads
// back to the same model — same tensors in HF layout (bit-exact in f32, Gemma's 1 + w norms within
// 1 ulp), same logits as the HF directory (1e-5) — and the families llama.cpp would compute
// differently are refused in one sentence. (llama.cpp itself reads these files in test/llamacpp/.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../../src/backend/backend.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { WebqloraError } from '../../src/errors.ts';
import { NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { writeGgufModel } from '../../src/io/gguf-write.ts';
import { loadModel } from '../../src/model/load.ts';
import { ropeAngles } from '../../src/model/llama.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { ARCHS, FAMILIES, readReference } from '../model/archs.ts';
import { mathConfig } from '../helpers/index.ts';
import { batchLogits } from '../helpers/logits.ts';

/** Families whose fixture llama.cpp cannot compute as transformers does, and why. */
const REFUSED: Record<string, RegExp> = {
  mistral: /llama\.cpp's llama architecture has no sliding window/,
  gemma3: /llama\.cpp's gemma3 architecture slides on 5 of every 6 layers/,
};

let wasm: Backend;
test.before(async () => { wasm = await createWasmBackend(); });
test.after(async () => { await wasm.destroy(); });

async function allLogits(path: string, ref: Awaited<ReturnType<typeof readReference>>): Promise<Float32Array> {
  const src = await openModelPath(path);
  const model = await loadModel(src, wasm, { quant: 'none', maxPositions: ref.batch.T });
  await src.close();
  const out = await batchLogits(model, ref.batch);
  model.free();
  return out;
}

for (const fam of FAMILIES) {
  test(`${fam}: written as GGUF by webqlora, read back: the same config, tensors and logits as the HF directory`, async () => {
    const dir = join(ARCHS, fam);
    const tmp = mkdtempSync(join(tmpdir(), `webqlora-gguf-${fam}-`));
    const file = join(tmp, 'model.gguf');
    const src = await openModelPath(dir);
    try {
      if (REFUSED[fam]) {
        try {
          await writeGgufModel(src, await new NodeOutDir(tmp).create('model.gguf'), { dtype: 'f32', vocab: null });
          assert.unreachable(`${fam}: written`);
        } catch (e) {
          assert.ok(e instanceof WebqloraError, String(e));
          assert.match((e as Error).message, REFUSED[fam]!);
        }
        const { readdirSync } = await import('node:fs');
        assert.equal(readdirSync(tmp), [], `${fam}: no file left behind`);
        return;
      }
      await writeGgufModel(src, await new NodeOutDir(tmp).create('model.gguf'), { dtype: 'f32', vocab: null });
      const g = await openModelPath(file);
      assert.is(g.format, 'gguf');
      // the same math: token ids and the source dtype are not the model's (no vocabulary was
      // written), and Llama 3 rope scaling travels as per-dimension factors (same angles)
      const strip = (c: ModelConfig) => ({ ...(mathConfig(c) as object), bosTokenId: 0, eosTokenIds: [], torchDtype: 'F32', ropeScaling: null });
      assert.equal(strip(g.config), strip(src.config), `${fam}: config`);
      const [ra, rb] = [ropeAngles(src.config, 64), ropeAngles(g.config, 64)];
      for (let i = 0; i < ra.cos.length; i++) assert.ok(Math.abs(ra.cos[i]! - rb.cos[i]!) < 1e-6 && Math.abs(ra.sin[i]! - rb.sin[i]!) < 1e-6, `${fam}: RoPE angle ${i}`);
      for (const t of src.tensors) {
        const a = await src.readFloat(t.name), b = await g.readFloat(t.name);
        for (let i = 0; i < a.length; i++) {
          // Gemma's norms travel as 1 + w: w + 1 − 1 is exact near 0 and within 1 ulp of 1 + w otherwise
          const tol = /norm\.weight$/.test(t.name) && fam.startsWith('gemma') ? 1.2e-7 * (1 + Math.abs(a[i]!)) : 0;
          if (!(Math.abs(a[i]! - b[i]!) <= tol)) assert.unreachable(`${fam}: ${t.name}[${i}] = ${b[i]} from GGUF, ${a[i]} in the HF directory`);
        }
      }
      await g.close();
      const ref = await readReference(dir);
      const [la, lb] = [await allLogits(dir, ref), await allLogits(file, ref)];
      let worst = 0;
      for (let i = 0; i < la.length; i++) worst = Math.max(worst, Math.abs(la[i]! - lb[i]!) / (1e-5 * (1 + Math.abs(la[i]!))));
      assert.ok(worst <= 1, `${fam}: logits from the GGUF differ from the HF directory's by ${worst.toFixed(2)}× 1e-5`);
    } finally {
      await src.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

test.run();
