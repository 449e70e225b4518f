// `webqlora train` end to end through the built CLI on the real stories260K model:
//  - one SGD step (no clipping, dropout, warmup or decay) moves the adapter by exactly
//    −lr × ∇(mean loss over the batch's scored tokens), checked against central finite
//    differences in float64, and is bit-for-bit repeatable;
//  - a run killed at several points and resumed ends with a byte-identical adapter, and no
//    output file is ever torn;
//  - user mistakes exit 2 with one sentence.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, STORIES_GGUF, FIXTURES } from '../helpers/index.ts';
import { assertUserError, NO_DEBUG, runCli, trainUntil } from '../helpers/cli.ts';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { NodeDirSource, NodeOutDir, FileSource } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { openSafetensors } from '../../src/io/safetensors.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { loadAdapter, saveAdapter } from '../../src/model/peft.ts';
import { Workspace } from '../../src/model/llama.ts';
import { tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import { batcherFor, loadDataset } from '../../src/data/index.ts';
import { forwardLoss, scoredTokens } from '../../src/train/step.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-train-'));

const run = (args: string[]) => runCli(args, { env: NO_DEBUG });

/** All float32 values of an adapter directory, in key order. */
async function adapterValues(dir: string): Promise<Map<string, Float32Array>> {
  const src = await FileSource.open(join(dir, 'adapter_model.safetensors'));
  const st = await openSafetensors(src);
  const out = new Map<string, Float32Array>();
  for (const k of [...st.tensors.keys()].sort()) out.set(k, await st.readFloat(k));
  await src.close();
  return out;
}

const stories = readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').map((s) => s.trim()).filter(Boolean);
function writeJsonl(name: string, texts: string[]): string {
  const p = join(TMP, name);
  writeFileSync(p, texts.map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
  return p;
}

test('one SGD step is exactly adapter − lr·∇(mean loss), against float64 finite differences, and repeatable', async () => {
  const data = writeJsonl('sgd.jsonl', stories.slice(0, 4).map((s) => s.slice(0, 120)));
  // a random initial adapter (PEFT's B = 0 would give A no gradient)
  const src = await openModelPath(STORIES_GGUF);
  const tok = tokenizerFromVocab(src.vocab!);
  const ref = createReferenceBackend({ precision: 'f64' });
  const model = await loadModel(src, ref, { quant: 'nf4', doubleQuant: true, blocksize: 64 });
  const init = new LoraAdapters(ref, model.config, { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj', 'down_proj'], useRslora: false }, false);
  const rng = new Rng(5);
  for (const p of init.pairs) { ref.write(p.A, rng.f32(p.A.length, 0.2)); ref.write(p.B, rng.f32(p.B.length, 0.2)); }
  const initDir = join(TMP, 'init-adapter');
  await saveAdapter(init, new NodeOutDir(initDir), 'stories260K');

  const lr = 0.05;
  const args = (out: string) => ['train', '--model', STORIES_GGUF, '--data', data, '--out', out, '--init-adapter', initDir, '--optimizer', 'sgd', '--lr', String(lr),
    '--max-grad-norm', '0', '--lora-dropout', '0', '--warmup-ratio', '0', '--weight-decay', '0', '--steps', '1', '--batch-size', '4', '--seq-len', '64', '--backend', 'wasm', '--json'];
  const r1 = run(args(join(TMP, 'sgd1')));
  assert.is(r1.code, 0, r1.stderr);
  const r2 = run(args(join(TMP, 'sgd2')));
  assert.is(r2.code, 0, r2.stderr);
  assert.ok(readFileSync(join(TMP, 'sgd1', 'adapter_model.safetensors')).equals(readFileSync(join(TMP, 'sgd2', 'adapter_model.safetensors'))), 'two runs give the same bytes');
  const rec = JSON.parse(r1.stdout.trim().split('\n')[0]!) as { step: number; loss: number; lr: number };
  assert.is(rec.step, 1);
  assert.is(rec.lr, lr);

  // the same micro-batch the trainer used, and the mean loss as a function of the adapter (f64)
  const dsrc = await FileSource.open(data);
  const ds = await loadDataset(dsrc, { tokenizer: tok, vocabSize: model.config.vocabSize, maxLen: 64 });
  await dsrc.close();
  const mb = batcherFor(ds, tok, { batchSize: 4, gradAccum: 1, order: 'grouped', seed: 0 }).next();
  const adir = new NodeDirSource(initDir);
  const lora = await loadAdapter(adir, ref, model.config, { withGrads: false });
  await adir.close();
  const ws = new Workspace(ref, model.config, { batch: 4, seqLen: mb.T, training: false, checkpointing: false, loraRank: 4 });
  const n = scoredTokens(mb);
  const loss = () => { forwardLoss(model, ws, lora, mb, undefined); let s = 0; for (const v of ref.peekF(ws.losses)) s += v; return s / n; };
  assert.ok(Math.abs(loss() - rec.loss) < 1e-4 * rec.loss, `step loss ${rec.loss} vs float64 ${loss()}`);

  const before = await adapterValues(initDir), after = await adapterValues(join(TMP, 'sgd1'));
  let maxDelta = 0;
  for (const [k, v] of after) for (let i = 0; i < v.length; i++) maxDelta = Math.max(maxDelta, Math.abs(v[i]! - before.get(k)![i]!));
  assert.ok(maxDelta > 0, 'the step moved the adapter');
  const eps = 1e-5;
  let checked = 0;
  // one element of six tensors (every target module, both A and B, first and last layer): each
  // check costs two float64 forwards of the whole model on the reference backend
  const picks = lora.pairs.filter((p) => p.layer === 0 || p.layer === model.config.numLayers - 1);
  for (const [pi, p] of picks.entries()) {
    for (const [which, t] of ([['A', p.A], ['B', p.B]] as const).filter((_, j) => j === pi % 2)) {
      const key = `base_model.model.model.layers.${p.layer}.${p.name === 'down_proj' ? 'mlp' : 'self_attn'}.${p.name}.lora_${which}.weight`;
      const live = ref.peekF(t);
      for (let s = 0; s < 1; s++) {
        const i = rng.int(live.length);
        const o = live[i]!;
        live[i] = o + eps; const lp = loss();
        live[i] = o - eps; const lm = loss();
        live[i] = o;
        const g = (lp - lm) / (2 * eps);
        const delta = after.get(key)![i]! - before.get(key)![i]!;
        // wasm float32 step vs float64 gradient: agree to 1e-3 of the largest update
        assert.ok(Math.abs(delta + lr * g) <= 1e-3 * maxDelta + 1e-7, `${key}[${i}]: update ${delta}, −lr·g = ${-lr * g}`);
        checked++;
      }
    }
  }
  assert.is(checked, picks.length);
  await src.close();
});

/** Every non-temporary file under dir parses: safetensors open and read, JSON parses. */
async function assertNothingTorn(dir: string): Promise<void> {
  const walk = (d: string): string[] => readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
  for (const f of walk(dir)) {
    if (/\.tmp-\d+-\d+$/.test(f)) continue;
    if (f.endsWith('.safetensors')) {
      const s = await FileSource.open(f);
      const st = await openSafetensors(s);
      for (const k of st.tensors.keys()) await st.readRaw(k);
      await s.close();
    } else if (f.endsWith('.json')) {
      JSON.parse(readFileSync(f, 'utf8'));
    }
  }
}

test('killed at several points and resumed: the final adapter is byte-identical, no file torn', async () => {
  const data = writeJsonl('resume.jsonl', stories.slice(0, 40));
  const common = ['train', '--model', STORIES_GGUF, '--data', data, '--steps', '14', '--batch-size', '2', '--grad-accum', '2', '--seq-len', '64',
    '--save-every', '2', '--lr', '1e-3', '--lora-r', '4', '--backend', 'wasm', '--json'];
  const whole = join(TMP, 'whole'), cut = join(TMP, 'cut');
  assert.is((await trainUntil([...common, '--out', whole], null)).code, 0);
  let code = (await trainUntil([...common, '--out', cut], 3)).code;
  assert.is.not(code, 0, 'killed');
  await assertNothingTorn(cut);
  for (const k of [7, 8, 12]) {
    code = (await trainUntil([...common, '--out', cut, '--resume'], k)).code;
    await assertNothingTorn(cut);
  }
  assert.is((await trainUntil([...common, '--out', cut, '--resume'], null)).code, 0);
  assert.ok(readFileSync(join(whole, 'adapter_model.safetensors')).equals(readFileSync(join(cut, 'adapter_model.safetensors'))), 'adapter bytes differ after resuming');
  const a = JSON.parse(readFileSync(join(whole, 'train_results.json'), 'utf8')), b = JSON.parse(readFileSync(join(cut, 'train_results.json'), 'utf8'));
  assert.equal(b.history.map((h: { loss: number }) => h.loss), a.history.map((h: { loss: number }) => h.loss));
  assert.not.ok(readdirSync(cut).some((n) => /\.tmp-/.test(n)), 'stale temp files swept on resume');
});

test('NF4 QLoRA and --quant none LoRA on the same data and seed end within 2% in validation loss', () => {
  // WikiSQL is a new domain for the TinyStories model, so both runs really learn (QLoRA's claim:
  // the 4-bit base costs little once adapters are trained).
  const valid: Record<string, number> = {};
  for (const q of ['nf4', 'none']) {
    const r = run(['train', '--model', STORIES_GGUF, '--data', join(FIXTURES, 'data', 'wikisql_mlx', 'train.jsonl'), '--valid', join(FIXTURES, 'data', 'wikisql_mlx', 'valid.jsonl'),
      '--out', join(TMP, `quant-${q}`), '--quant', q, '--steps', '80', '--batch-size', '8', '--seq-len', '128', '--lr', '2e-3', '--seed', '0', '--backend', 'wasm', '--json']);
    assert.is(r.code, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!) as { valid_loss: number; steps: number };
    assert.is(last.steps, 80);
    valid[q] = last.valid_loss;
  }
  const rel = Math.abs(valid.nf4! - valid.none!) / valid.none!;
  assert.ok(rel < 0.02, `validation loss nf4 ${valid.nf4} vs none ${valid.none}: ${(rel * 100).toFixed(2)}% apart`);
});

test('user mistakes: one sentence, exit 2, nothing written', () => {
  const data = writeJsonl('bad.jsonl', ['ok text']);
  writeFileSync(join(TMP, 'broken.jsonl'), '{"text": "fine"}\n{"text": 12}\n');
  const cases: Array<[string[], RegExp]> = [
    [['--data', join(TMP, 'broken.jsonl')], /broken\.jsonl:2: .*"text" must be a string/],
    [['--data', data, '--lr', 'fast'], /^webqlora train: --lr must be a number ≥ 0, got 'fast'\.$/],
    [['--data', data, '--target', 'q_proj,lm_head'], /--target: LoRA on 'lm_head' is not implemented/],
    [['--data', data, '--steps', '2', '--epochs', '1'], /--steps or --epochs, not both/],
    [['--data', data, '--seq-len', '100000'], /exceeds the model's context/],
    [['--data', join(TMP, 'missing.jsonl')], /missing\.jsonl: no such file/],
  ];
  for (const [extra, re] of cases) {
    const out = join(TMP, `bad-${Math.random().toString(36).slice(2)}`);
    assertUserError(run(['train', '--model', STORIES_GGUF, '--out', out, '--backend', 'wasm', ...extra]), re, { what: extra.join(' ') });
    assert.not.ok(existsSync(join(out, 'adapter_model.safetensors')));
  }
});

test.run();
