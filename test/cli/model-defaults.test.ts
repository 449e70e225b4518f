// What the CLI decides from the model itself: the default --seq-len (min(512, the model's
// context)) for train and eval, layer paging when the run would not fit the backend (one line on
// stderr), and inspect's prediction for the synthetic shapes of real checkpoints. CLI runs use
// dist/node/cli.js; the paging message is checked through loadModelFrom with a small limit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, Rng } from '../helpers/index.ts';
import { cliRunner } from '../helpers/cli.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { parseFlags } from '../../src/cli/args.ts';
import { loadModelFrom, MODEL_FLAGS } from '../../src/cli/common.ts';
import { Progress } from '../../src/cli/progress.ts';
import { estimateInferenceMemory } from '../../src/model/memory.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-defaults-'));
const run = cliRunner();

// test/fixtures/archs/llama3: max_position_embeddings 256, vocab 512, no tokenizer (token ids)
const LLAMA3 = join(FIXTURES, 'archs', 'llama3');
const tokens = join(TMP, 'tokens.jsonl');
{
  const rng = new Rng(5);
  writeFileSync(tokens, Array.from({ length: 4 }, () => JSON.stringify({ input_ids: Array.from({ length: 300 }, () => rng.int(512)) })).join('\n') + '\n');
}

test('eval with default flags on a model whose context is 256: seq-len 256; a longer one is refused', () => {
  const r = run('eval', '--model', LLAMA3, '--data', tokens, '--backend', 'wasm', '--json');
  assert.is(r.code, 0, r.stderr);
  const rec = JSON.parse(r.stdout.trim().split('\n').pop()!) as { loss: number; tokens: number };
  assert.ok(Number.isFinite(rec.loss));
  // 300-token records cut to the 256-token default: 255 scored positions each
  assert.is(rec.tokens, 4 * 255);
  const big = run('eval', '--model', LLAMA3, '--data', tokens, '--backend', 'wasm', '--seq-len', '512');
  assert.is(big.code, 2);
  assert.match(big.stderr, /webqlora eval: --seq-len 512 exceeds the model's context of 256 positions\./);
  const small = run('eval', '--model', LLAMA3, '--data', tokens, '--backend', 'wasm', '--seq-len', '64', '--json');
  assert.is(small.code, 0, small.stderr);
});

test('train with default flags on the same model runs at seq-len 256', () => {
  const out = join(TMP, 'train');
  const r = run('train', '--model', LLAMA3, '--data', tokens, '--out', out, '--steps', '1', '--backend', 'wasm', '--json');
  assert.is(r.code, 0, r.stderr);
  const res = JSON.parse(readFileSync(join(out, 'train_results.json'), 'utf8')) as { options: { seqLen: number } };
  assert.is(res.options.seqLen, 256);
});

const NEW_SHAPES = ['llama-3.2-1b', 'qwen2.5-0.5b', 'qwen3-0.6b', 'gemma-3-1b', 'smollm2-135m', 'phi-3.5-mini'];

test('inspect lists the synthetic shapes', () => {
  const h = run('inspect', 'synthetic:');
  assert.is(h.code, 0, h.stderr);
  for (const n of NEW_SHAPES) assert.match(h.stdout, new RegExp(`synthetic:${n.replace(/\./g, '\\.')}\\s`));
  const j = JSON.parse(run('inspect', 'synthetic:', '--json').stdout) as { synthetic: Array<{ name: string; family: string; parameters: number }> };
  assert.equal(j.synthetic.find((m) => m.name === 'synthetic:gemma-3-1b')!.family, 'gemma3');
});

test('inspect --seq-len predicts the peak of each new shape (and of its default seq-len)', () => {
  for (const n of NEW_SHAPES) {
    const r = run('inspect', `synthetic:${n}`, '--seq-len', '512', '--checkpointing', '--json');
    assert.is(r.code, 0, `${n}: ${r.stderr}`);
    const o = JSON.parse(r.stdout) as { config: { variant: { family: string } }; training_memory: { options: { seqLen: number; pageWeights: boolean }; peakBytes: number; backendBytes: number; parts: Record<string, number> } };
    const tm = o.training_memory;
    assert.is(tm.options.seqLen, 512, n);
    assert.ok(tm.peakBytes > tm.backendBytes && tm.backendBytes > tm.parts.embeddings!, n);
    assert.ok(tm.parts.activations! > 0 && tm.parts.lora! > 0, n);
    const h = run('inspect', `synthetic:${n}`);
    assert.is(h.code, 0, `${n}: ${h.stderr}`);
    assert.match(h.stdout, /batch 1 × 512 tokens/, `${n}: default seq-len`);
    assert.match(h.stdout, /predicted peak RSS\s+\d/);
  }
});

test('inspect predicts paging by itself where train would page (7B, no --page-weights)', () => {
  const o = JSON.parse(run('inspect', 'synthetic:llama-2-7b', '--seq-len', '64', '--checkpointing', '--json').stdout) as { training_memory: { options: { pageWeights: boolean }; auto_paged: string | null; hostBytes: number } };
  assert.is(o.training_memory.options.pageWeights, true);
  assert.match(o.training_memory.auto_paged!, /^paging base layers from host memory: .* more than one wasm32 memory holds \(4\.00 GiB\)$/);
  assert.ok(o.training_memory.hostBytes > 3 * 2 ** 30);
  const small = JSON.parse(run('inspect', 'synthetic:llama-3.2-1b', '--seq-len', '64', '--json').stdout) as { training_memory: { auto_paged: string | null } };
  assert.is(small.training_memory.auto_paged, null);
});

test('loading pages base layers by itself when the run exceeds the backend limit, and says so in one line', async () => {
  for (const [capacity, paged] of [[{ bytes: 2 ** 20, what: 'a 1 MiB test limit' }, true], [{ bytes: 2 ** 30, what: 'a 1 GiB test limit' }, false]] as const) {
    let err = '';
    const stream = { isTTY: false, write: (s: string) => { err += s; return true; } } as unknown as NodeJS.WriteStream;
    const be = await createWasmBackend({ threads: 1 });
    const p = parseFlags('eval', ['--model', LLAMA3], MODEL_FLAGS);
    const { model, seqLen } = await loadModelFrom(p, be, new Progress(stream), {
      seqLen: null, capacity,
      memory: (c, s, pageWeights) => estimateInferenceMemory(c, { quant: 'nf4', doubleQuant: true, blocksize: 64, lora: null, batch: 1, seqLen: s!, pageWeights }),
    });
    assert.is(seqLen, 256, 'the default seq-len');
    assert.is(model.pager !== null, paged);
    const lines = err.split('\n').filter((l) => l.startsWith('paging base layers'));
    assert.is(lines.length, paged ? 1 : 0, err);
    if (paged) assert.match(lines[0]!, /with every layer resident the run needs \d+\.\d MiB of kernel memory, more than a 1 MiB test limit holds \(1\.0 MiB\)$/);
    if (paged) assert.match(err, /base layers paged from .* of host memory/);
    await be.destroy();
  }
  // --page-weights forces paging without a message
  let err = '';
  const stream = { isTTY: false, write: (s: string) => { err += s; return true; } } as unknown as NodeJS.WriteStream;
  const be = await createWasmBackend({ threads: 1 });
  const { model } = await loadModelFrom(parseFlags('eval', ['--model', LLAMA3, '--page-weights'], MODEL_FLAGS), be, new Progress(stream), {
    seqLen: 64, memory: () => { throw new Error('not asked when --page-weights is given'); },
  });
  assert.ok(model.pager);
  assert.not.match(err, /paging base layers/);
  await be.destroy();
});

test.run();
