// `webqlora train --method dpo|orpo` through the built CLI on stories260K: a DPO run on a written
// JSONL of pairs writes its adapter and logs TRL's rewards (margins, accuracies) per step and for
// the held-out pairs; an ORPO run shows its NLL and log-odds on the progress line; resume refuses
// another method and continues a cut DPO run bit for bit; the refusals (a pair missing "rejected" on line 3, --beta without a preference
// method, SFT-only data flags) are one sentence with exit code 2.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORIES_GGUF } from '../helpers/index.ts';
import { assertUserError, cliRunner, NO_DEBUG } from '../helpers/cli.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-pref-'));
const run = cliRunner({ env: NO_DEBUG });

// the chosen answer repeats the prompt's adjective, the rejected one names another
const adjs = ['big', 'small', 'red', 'happy', 'sad'], nouns = ['dog', 'cat', 'ball', 'bird'];
const PAIRS = nouns.flatMap((noun, i) => adjs.map((adj, j) => ({ prompt: `Lily had a ${adj} ${noun}. The ${noun} was`, chosen: ` ${adj}.`, rejected: ` ${adjs[(j + 1 + i) % adjs.length]}.` })));
const DATA = join(TMP, 'pairs.jsonl');
writeFileSync(DATA, PAIRS.map((p) => JSON.stringify(p)).join('\n') + '\n');
const COMMON = ['--model', STORIES_GGUF, '--data', DATA, '--seq-len', '64', '--batch-size', '4', '--lr', '5e-3', '--warmup-ratio', '0', '--backend', 'wasm'];

type Rec = Record<string, number | boolean | string | null>;

test('train --method dpo: writes the adapter, logs rewards/margins and accuracies, validates on held-out pairs', () => {
  const help = run('train', '--help').stdout;
  assert.match(help, /--method sft\|dpo\|orpo\s/);
  assert.match(help, /--beta X\s+DPO's β .*\(default: 0\.1\)/s);
  const out = join(TMP, 'dpo');
  const r = run('train', ...COMMON, '--method', 'dpo', '--steps', '8', '--save-every', '4', '--eval-every', '4', '--out', out, '--json');
  assert.is(r.code, 0, r.stderr);
  const recs = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Rec);
  const steps = recs.filter((x) => typeof x.step === 'number' && 'loss' in x);
  assert.is(steps.length, 8);
  for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'rewards/accuracies', 'logps/chosen', 'logps/rejected']) {
    assert.ok(steps.every((x) => typeof x[k] === 'number'), `every step logs ${k}`);
  }
  assert.is(steps[0]!['rewards/margins'], 0, 'step 1: the policy is the reference (B = 0)');
  // (that the margin grows is test/train/preference.test.ts's; 8 steps of 4 pairs are too noisy here)
  assert.ok(steps.some((x) => x['rewards/margins'] !== 0), 'the adapter moves the policy off the reference');
  const mid = recs.find((x) => x.step === 4 && 'valid_loss' in x)!;
  assert.ok(typeof mid['valid_rewards/margins'] === 'number', 'validation during training reports the margin');
  const done = recs[recs.length - 1]!;
  assert.is(done.done, true);
  assert.ok(typeof done.valid_loss === 'number' && typeof done['valid_rewards/accuracies'] === 'number');
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
  const res = JSON.parse(readFileSync(join(out, 'train_results.json'), 'utf8')) as { options: { method: string; beta: number } };
  assert.equal([res.options.method, res.options.beta], ['dpo', 0.1]);
  const state = JSON.parse(readFileSync(join(out, 'checkpoint-4', 'trainer_state.json'), 'utf8')) as { options: { method: string; beta: number } };
  assert.equal([state.options.method, state.options.beta], ['dpo', 0.1]);

  // resume keeps the method: another one is refused in one sentence
  const again = run('train', ...COMMON, '--method', 'orpo', '--out', out, '--resume');
  assert.is(again.code, 2, again.stderr);
  assert.match(again.stderr, /--method orpo differs from .*checkpoint-4's dpo: a resumed run keeps its checkpoint's settings/);

  // a DPO run cut back to checkpoint-4 resumes (its kept SFT data flags are not flags the user
  // gave, so they are not refused) and ends with the uninterrupted run's adapter bytes
  const cut = join(TMP, 'dpo-cut');
  cpSync(out, cut, { recursive: true });
  for (const n of readdirSync(cut)) if (n !== 'checkpoint-4') rmSync(join(cut, n), { recursive: true, force: true });
  const res2 = run('train', ...COMMON, '--method', 'dpo', '--save-every', '4', '--eval-every', '4', '--out', cut, '--resume');
  assert.is(res2.code, 0, res2.stderr);
  assert.ok(readFileSync(join(cut, 'adapter_model.safetensors')).equals(readFileSync(join(out, 'adapter_model.safetensors'))), 'the resumed DPO run ends bit for bit as the uninterrupted one');
});

test('train --method orpo: the progress line shows margin, accuracy, NLL and log-odds', () => {
  const r = run('train', ...COMMON, '--method', 'orpo', '--beta', '0.2', '--steps', '2', '--valid', 'none', '--out', join(TMP, 'orpo'));
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /data .*pairs\.jsonl: 20 preference pairs \(standard\), \d+ tokens, \d+ scored\n/);
  assert.match(r.stderr, /step 2\/2 \| loss [\d.]+ \(smoothed [\d.]+\) \| margin -?[\d.]+ \| acc [\d.]+ \| nll [\d.]+ \| log-odds -?[\d.]+ \| lr/);
});

test('refusals: a pair missing "rejected" on line 3, --beta without a preference method, SFT data flags', () => {
  const bad = join(TMP, 'bad.jsonl');
  writeFileSync(bad, [PAIRS[0], PAIRS[1], { prompt: 'a', chosen: 'b' }].map((p) => JSON.stringify(p)).join('\n') + '\n');
  const cases: Array<[string[], RegExp]> = [
    [['--method', 'dpo', '--data', bad], /bad\.jsonl:3: a preference pair needs "prompt", "chosen" and "rejected", and "rejected" is missing\.$/],
    [['--beta', '0.2'], /--beta is DPO's β or ORPO's λ and needs --method dpo or --method orpo/],
    [['--method', 'orpo', '--format', 'completion'], /--method orpo reads \{"prompt", "chosen", "rejected"\} pairs .* --format would be ignored/],
    [['--method', 'dpo', '--beta', '0'], /--beta must be a number > 0, got '0'/],
  ];
  cases.push([['--method', 'dpo', '--packing'], /--packing .* does not apply to --method dpo/]);
  for (const [extra, re] of cases) {
    const out = join(TMP, `bad-${cases.indexOf(cases.find((c) => c[0] === extra)!)}`);
    assertUserError(run('train', ...COMMON, '--steps', '1', '--out', out, ...extra), re, { what: extra.join(' ') });
    assert.not.ok(existsSync(join(out, 'adapter_model.safetensors')));
  }
});

test.run();
