// A new user's first hour with the command line (issue 13, items 1–8), through the built CLI:
//  1. `webqlora <command> --help` for every command, rendered from the same flag tables the parser
//     uses; the README's Command line block is what those tables generate;
//  2. flags are checked before anything loads, negative numbers included;
//  3. one `webqlora <command>:` prefix;
//  4. a model without a tokenizer says where it looked and names --tokenizer;
//  5. Dawn's own stderr lines stay away unless --verbose;
//  6. nothing silent: the validation hold-out, the Guanaco fallback, --init-adapter conflicts,
//     eval's NF4 base;
//  7. Ctrl-C during train: one line, exit 130, checkpoints intact, --resume finishes the same run;
//  8. progress with elapsed time and a smoothed loss; --eval-every in records and loss.svg.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, REPO, STORIES_GGUF } from '../helpers/index.ts';
import { assertUserError, CLI, type CliResult, NO_DEBUG, runCli } from '../helpers/cli.ts';
import { parseFlags, type FlagTable } from '../../src/cli/args.ts';
import { COMMANDS } from '../../src/cli/commands/index.ts';
import { commandHelp, defaultText, flagUsage, withReadmeBlock } from '../../src/cli/help.ts';
import { SmoothedLoss } from '../../src/cli/progress.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-first-hour-'));
const LLAMA3 = join(FIXTURES, 'archs', 'llama3'); // an HF directory without tokenizer files (vocab 512)

function run(...args: string[]): CliResult & { ms: number } {
  const t0 = performance.now();
  const r = runCli(args, { env: NO_DEBUG });
  return { ...r, ms: performance.now() - t0 };
}

/** Exit 2 and exactly one stderr line, `webqlora <cmd>: …` with the prefix said once, no stack. */
function userError(cmd: string, r: CliResult, re: RegExp): string {
  const line = assertUserError(r, re, { lines: /^webqlora/ });
  assert.ok(line.startsWith(`webqlora ${cmd}: `), line);
  assert.not.match(line, /^webqlora [a-z]+: webqlora/, 'the prefix said once');
  assert.not.match(r.stderr, /ambiguous/, r.stderr);
  return line;
}

const stories = readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8').split('\n<|endoftext|>\n').map((s) => s.trim()).filter(Boolean);
function jsonl(name: string, records: unknown[]): string {
  const p = join(TMP, name);
  writeFileSync(p, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return p;
}
const TEXT = jsonl('stories.jsonl', stories.slice(0, 30).map((t) => ({ text: t.slice(0, 300) })));
const TRAIN = ['--model', STORIES_GGUF, '--data', TEXT, '--seq-len', '48', '--lora-r', '4', '--backend', 'wasm', '--threads', '2'];

// ---------------------------------------------------------------------------------------------
// 1. help

test('1: --help and -h for every command: usage, every flag with its default by group, an example; exit 0', () => {
  for (const [name, c] of Object.entries(COMMANDS)) {
    for (const h of ['--help', '-h']) {
      // help wins over anything else on the line, even a mistake
      const r = run(name, h, '--no-such-flag');
      assert.is(r.code, 0, `${name} ${h}: ${r.stderr}`);
      assert.is(r.stderr, '', `${name} ${h}: nothing on stderr`);
      assert.is(r.stdout, commandHelp(name, c), `${name} ${h}: the help rendered from the flag table`);
    }
    const text = commandHelp(name, c);
    assert.ok(text.startsWith(`usage: webqlora ${name} `), text);
    assert.match(text, /\nexample:\n  webqlora /);
    for (const [flag, d] of Object.entries(c.flags)) {
      assert.ok(text.includes(flagUsage(flag, d)), `${name}: --${flag} in the help`);
      const def = defaultText(d);
      if (def && def !== 'required') assert.ok(text.replace(/\n +/g, ' ').includes(`default: ${def})`), `${name}: --${flag}'s default ${def}`);
      assert.ok(text.includes(`\n${d.group}:\n`), `${name}: group ${d.group}`);
    }
  }
  const top = run('--help');
  assert.is(top.code, 0);
  for (const name of Object.keys(COMMANDS)) assert.match(top.stdout, new RegExp(`\\n  ${name} `));
});

test('1: one source of truth: defaults satisfy their own checks, examples parse, the README block is generated', () => {
  for (const [name, c] of Object.entries(COMMANDS)) {
    for (const [flag, d] of Object.entries(c.flags as FlagTable)) {
      if (d.kind === 'bool' || d.kind === 'ids' || d.default === undefined) continue;
      const rest = Object.entries(c.flags).filter(([n, x]) => x.required && n !== flag).flatMap(([n]) => [`--${n}`, 'x']);
      const p = parseFlags(name, [...(c.positional ? ['x'] : []), ...rest, `--${flag}`, String(d.default)], c.flags, { max: c.positional ? 1 : 0 });
      assert.is(p.values.get(flag), d.kind === 'choice' || d.kind === 'string' ? String(d.default) : d.default, `${name} --${flag}`);
    }
    // the example, split like a shell would (double quotes only)
    const words = [...c.example.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
    assert.equal(words.slice(0, 2), ['webqlora', name]);
    parseFlags(name, words.slice(2), c.flags, { max: c.positional ? 1 : 0 });
  }
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  assert.ok(withReadmeBlock(readme, COMMANDS) === readme, 'README.md is stale: run node --import tsx scripts/cli-readme.ts');
});

// ---------------------------------------------------------------------------------------------
// 2, 3. flags checked first, one prefix

test('2, 3: flag mistakes are refused before anything loads (a 7B model here), in one sentence with the range', () => {
  const big = ['--model', 'synthetic:llama-2-7b'];
  const cases: Array<[string, string[], RegExp]> = [
    ['generate', ['--prompt-ids', '1,abc'], /--prompt-ids: 'abc' is not a token id \(expected comma-separated whole numbers ≥ 0/],
    ['generate', ['--prompt', 'x', '--temperature', '-1'], /--temperature must be a number ≥ 0, got '-1'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n1'), '--steps', '0'], /--steps must be a whole number ≥ 1, got '0'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n2'), '--steps', '1.5'], /--steps must be a whole number ≥ 1, got '1\.5'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n3'), '--lr', '-1'], /--lr must be a number ≥ 0, got '-1'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n4'), '--max-grad-norm', '-1'], /--max-grad-norm must be a number ≥ 0, got '-1'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n5'), '--warmup-ratio', '2'], /--warmup-ratio must be a number from 0 to 1, got '2'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n6'), '--epochs', '0'], /--epochs must be a number > 0, got '0'\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n7'), '--lora-rank', '8'], /unknown flag --lora-rank \(did you mean --lora-r\?\); see webqlora train --help\.$/],
    ['train', ['--data', '--out', join(TMP, 'n8')], /--data needs a value \(a FILE\), got the flag --out/],
    ['train', ['--data', TEXT], /--out is required; see webqlora train --help\.$/],
    ['train', ['--data', TEXT, '--out', join(TMP, 'n9'), '--init-adapter', join(TMP, 'nope')], /nope: no such file or directory \(--init-adapter\)\.$/],
    ['eval', ['--data', TEXT, '--adapter', join(TMP, 'nope')], /nope: no such file or directory \(--adapter\)\.$/],
    ['eval', ['--data', TEXT, '--tokenizer', join(TMP, 'nope.json')], /nope\.json: no such file or directory \(--tokenizer\)\.$/],
    ['eval', ['--data', TEXT, '--batch-size', 'two'], /--batch-size must be a whole number ≥ 1, got 'two'\.$/],
    ['merge', ['--adapter', TMP, '--out', join(TMP, 'm'), '--dtype', 'q4_0'], /--dtype q4_0 is for a \.gguf --out; an HF directory takes f16, bf16, f32\.$/],
  ];
  for (const [cmd, extra, re] of cases) {
    const r = run(cmd, ...big, ...extra, '--backend', 'wasm');
    userError(cmd, r, re);
    assert.ok(r.ms < 5000, `${cmd} ${extra.join(' ')}: answered in ${r.ms.toFixed(0)} ms, before any load`);
    assert.not.match(r.stderr, /^loading|^backend:/m, 'nothing was loaded');
  }
  // a negative number is a value wherever a number may be negative-looking: --lr=-1 reads the same
  userError('train', run('train', ...big, '--data', TEXT, '--out', join(TMP, 'n10'), '--lr=-1'), /--lr must be a number ≥ 0, got '-1'\./);
  // library errors get the same single prefix
  userError('generate', run('generate', '--model', join(TMP, 'nope.gguf'), '--prompt', 'x', '--backend', 'wasm'), /^webqlora generate: .*nope\.gguf: no such file or directory\.$/);
  userError('train', run('train', ...big, '--data', TEXT, '--out', join(TMP, 'n11'), '--steps', '2', '--epochs', '1'), /^webqlora train: give --steps or --epochs, not both\.$/);
  const unknown = run('frobnicate');
  assert.is(unknown.code, 2);
  assert.match(unknown.stderr, /^webqlora: unknown command 'frobnicate'/);
});

// ---------------------------------------------------------------------------------------------
// 4. tokenizer

test('4: a model directory without tokenizer files says which files it looked for and names --tokenizer', () => {
  const r = run('generate', '--model', LLAMA3, '--prompt', 'Once upon', '--backend', 'wasm');
  userError('generate', r, /the model has no tokenizer \(give --tokenizer PATH, or --prompt-ids\)\.$/);
  assert.match(r.stderr, /^no tokenizer: .*llama3 has neither tokenizer\.json nor tokenizer\.model; text needs --tokenizer PATH \(tokenizer\.json, tokenizer\.model or a \.gguf vocabulary\)$/m);
  // alpaca data with no tokenizer: the data loader's refusal, after the line naming --tokenizer
  const alpaca = jsonl('alpaca.jsonl', [{ instruction: 'Say hi', input: '', output: 'hi' }]);
  const a = run('eval', '--model', LLAMA3, '--data', alpaca, '--backend', 'wasm');
  userError('eval', a, /the alpaca format needs a tokenizer/);
  assert.match(a.stderr, /text needs --tokenizer PATH/);
  // --tokenizer takes a .gguf's vocabulary (stories260K has the same 512 tokens)
  const g = run('generate', '--model', LLAMA3, '--tokenizer', STORIES_GGUF, '--prompt', 'Once upon', '--max-new-tokens', '2', '--backend', 'wasm', '--json');
  assert.is(g.code, 0, g.stderr);
  assert.ok((JSON.parse(g.stdout) as { prompt_ids: number[] }).prompt_ids.length > 1);
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  for (const s of ['--tokenizer PATH', 'tokenizer.json', 'tokenizer.model', '.gguf']) assert.ok(readme.includes(s), `README names ${s}`);
});

// ---------------------------------------------------------------------------------------------
// 5. quiet

/** The CLI run by a shell with stderr into a pipe (a FIFO, as `2>&1 | tee log` gives), or on a pseudo-terminal. */
function viaShell(args: string[], how: 'pipe' | 'tty'): { code: number; out: string } {
  const line = [process.execPath, CLI, ...args].map((a) => `'${a}'`).join(' ');
  const r = how === 'pipe'
    ? spawnSync('sh', ['-c', `${line} 2>&1 | cat`], { encoding: 'utf8' })
    : spawnSync('script', ['-qec', line, '/dev/null'], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout };
}

test('5: what Dawn prints never reaches stderr, unless --verbose; --backend wasm never loads it', () => {
  const gen = ['generate', '--model', STORIES_GGUF, '--prompt-ids', '1', '--max-new-tokens', '2'];
  const dawn = /artificially reduced|^Warning:/m;
  const verbose = run(...gen, '--verbose');
  assert.is(verbose.code, 0, verbose.stderr);
  const wasm = run(...gen, '--backend', 'wasm', '--verbose');
  assert.not.match(wasm.stderr, dawn, 'Dawn is not even loaded for --backend wasm');
  // auto, with stderr a socket (as Node's spawn gives): only webqlora's own lines
  const auto = run(...gen);
  assert.is(auto.code, 0, auto.stderr);
  for (const line of auto.stderr.split(/[\r\n]+/).filter(Boolean)) assert.match(line, /^(backend|loading|loaded|\d+ tokens in)/, `only webqlora's own lines: ${JSON.stringify(line)}`);
  if (!dawn.test(verbose.stderr)) {
    console.log('  (Dawn prints nothing on this machine: the rest of this test has nothing to hide)');
    return;
  }
  // where Dawn does print (lavapipe: two limit warnings): a pipe, a terminal, and a forced webgpu
  const piped = viaShell(gen, 'pipe');
  assert.is(piped.code, 0, piped.out);
  assert.match(piped.out, /^backend: /m);
  assert.not.match(piped.out, dawn);
  const forced = viaShell([...gen, '--backend', 'webgpu'], 'pipe');
  assert.is(forced.code, 0, forced.out);
  assert.match(forced.out, /^backend: webgpu/m);
  assert.not.match(forced.out, dawn);
  if (spawnSync('script', ['--version']).status === 0) {
    const tty = viaShell(gen, 'tty');
    assert.is(tty.code, 0, tty.out);
    assert.match(tty.out, /^backend: /m);
    assert.not.match(tty.out, dawn);
  }
});

// ---------------------------------------------------------------------------------------------
// 6. nothing silent

test('6a: the held-out validation split is said in one line; --valid none turns it off', () => {
  const split = run('train', ...TRAIN, '--out', join(TMP, 'split'), '--steps', '1');
  assert.is(split.code, 0, split.stderr);
  assert.match(split.stderr, /^validation: \d+ of \d+ examples held out of .*stories\.jsonl, because --valid was not given \(--valid none turns this off\)$/m);
  const none = run('train', ...TRAIN, '--out', join(TMP, 'valid-none'), '--steps', '1', '--valid', 'none', '--json');
  assert.is(none.code, 0, none.stderr);
  assert.is((JSON.parse(none.stdout.trim().split('\n').pop()!) as { valid_loss: number | null }).valid_loss, null);
  const all = /^data .*: (\d+) examples/m;
  const quiet = run('train', ...TRAIN, '--out', join(TMP, 'valid-none-text'), '--steps', '1', '--valid', 'none');
  assert.match(quiet.stderr, /^validation: none \(--valid none\)$/m);
  assert.ok(Number(all.exec(quiet.stderr)![1]) > Number(all.exec(split.stderr)![1]), 'every example trains');
});

test('6b: chat data without a chat template falls back to the Guanaco format, and says so', () => {
  const chat = jsonl('chat.jsonl', Array.from({ length: 3 }, (_, i) => ({ messages: [{ role: 'user', content: `Tell a story ${i}.` }, { role: 'assistant', content: stories[i]!.slice(0, 80) }] })));
  const r = run('eval', '--model', STORIES_GGUF, '--data', chat, '--backend', 'wasm');
  assert.is(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => /Guanaco/.test(l));
  assert.is(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^the tokenizer has no chat template: chat records are rendered in the Guanaco format/);
});

test('6c: --init-adapter with --lora-r, --lora-alpha, --target or --use-rslora is refused in one sentence', () => {
  const adapter = join(FIXTURES, 'archs', 'llama3', 'adapter');
  const r = run('train', ...TRAIN, '--out', join(TMP, 'init'), '--init-adapter', adapter, '--lora-alpha', '8');
  userError('train', r, /^webqlora train: --init-adapter .*adapter brings its own r, alpha and target modules, so --lora-r, --lora-alpha would be ignored: drop them, or leave out --init-adapter to start a fresh adapter\.$/);
  assert.not.ok(existsSync(join(TMP, 'init')), 'nothing written');
});

test('6d: eval says it scores the NF4 base unless --quant is given', () => {
  const base = ['eval', '--model', STORIES_GGUF, '--data', TEXT, '--seq-len', '48', '--backend', 'wasm'];
  const nf4 = run(...base);
  assert.is(nf4.code, 0, nf4.stderr);
  assert.match(nf4.stderr, /^the base is held as NF4 with double quantization, as QLoRA trains it; --quant none scores the unquantized base, as plain PEFT does$/m);
  for (const q of ['none', 'nf4']) {
    const r = run(...base, '--quant', q, '--json');
    assert.is(r.code, 0, r.stderr);
    assert.not.match(r.stderr, /the base is held as/);
    assert.is((JSON.parse(r.stdout) as { quant: string }).quant, q);
  }
});

// ---------------------------------------------------------------------------------------------
// 7. Ctrl-C

/** Runs train, sends SIGINT once it has printed step `at`; resolves with the exit code and output. */
function interrupt(args: string[], at: number): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '', sent = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!sent && stdout.split('\n').slice(0, -1).some((l) => (JSON.parse(l) as { step?: number }).step! >= at)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

test('7: Ctrl-C stops after the step in flight: one line, exit 130, checkpoints intact; --resume ends where an unbroken run does', async () => {
  // enough steps that the signal lands long before the end
  const args = (out: string) => ['train', ...TRAIN, '--out', out, '--steps', '300', '--save-every', '4', '--lr', '1e-3', '--json'];
  const whole = join(TMP, 'ctrlc-whole'), cut = join(TMP, 'ctrlc-cut');
  assert.is(run(...args(whole)).code, 0);
  const r = await interrupt(args(cut), 6);
  assert.is(r.code, 130, `exit code (signal ${r.signal}): ${r.stderr}`);
  const m = /^stopped at step (\d+); checkpoint-(\d+) is complete; continue with --resume$/m.exec(r.stderr);
  assert.ok(m, r.stderr);
  const [n, ck] = [Number(m![1]), Number(m![2])];
  assert.ok(n >= 6 && n < 300 && ck === Math.floor(n / 4) * 4, `step ${n}, checkpoint ${ck}`);
  const records = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { step?: number; stopped?: boolean });
  assert.is(records.filter((x) => x.step !== undefined && x.stopped === undefined).length, n, 'every step in flight finished and was reported');
  assert.equal(records.pop(), { stopped: true, step: n, checkpoint: join(cut, `checkpoint-${ck}`) });
  assert.ok(existsSync(join(cut, `checkpoint-${ck}`, 'trainer_state.json')));
  assert.not.ok(existsSync(join(cut, 'adapter_model.safetensors')), 'no final adapter for a stopped run');
  assert.not.ok(readdirSync(cut).some((f) => /\.tmp-/.test(f)), 'no temporary file left');
  // the same command line plus --resume continues; one that asks for other settings is refused
  userError('train', run(...args(cut), '--resume', '--lr', '2e-3'), /^webqlora train: --lr 0\.002 differs from .*checkpoint-\d+'s 0\.001: a resumed run keeps its checkpoint's settings \(drop --lr, or train into a new --out\)\.$/);
  const resumed = run(...args(cut), '--resume');
  assert.is(resumed.code, 0, resumed.stderr);
  assert.ok(readFileSync(join(whole, 'adapter_model.safetensors')).equals(readFileSync(join(cut, 'adapter_model.safetensors'))), 'stopped + resumed = unbroken');

  // stopped before any checkpoint: the line says --resume would start over
  const early = await interrupt(['train', ...TRAIN, '--out', join(TMP, 'ctrlc-early'), '--steps', '300', '--json'], 1);
  assert.is(early.code, 130, early.stderr);
  assert.match(early.stderr, /^stopped at step \d+; no checkpoint was written yet \(--save-every N writes one every N steps\), so --resume would start over$/m);
});

// ---------------------------------------------------------------------------------------------
// 8. progress and --eval-every

test('8: the step line shows the smoothed loss and elapsed time; --eval-every reports and draws validation loss', () => {
  const text = run('train', ...TRAIN, '--out', join(TMP, 'progress'), '--steps', '3');
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stderr, /^step 3\/3 \| loss \d+\.\d{4} \(smoothed \d+\.\d{4}\) \| lr .* \| \d+ tok\/s \| peak RSS .* \| \d+s elapsed, ETA \d+s$/m);

  const common = ['train', ...TRAIN, '--steps', '6', '--lr', '1e-3', '--json'];
  const plain = run(...common, '--out', join(TMP, 'ev0'));
  assert.is(plain.code, 0, plain.stderr);
  const ev = run(...common, '--out', join(TMP, 'ev2'), '--eval-every', '2');
  assert.is(ev.code, 0, ev.stderr);
  const recs = ev.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  const valid = recs.filter((x) => x.valid_loss !== undefined && x.done === undefined);
  assert.equal(valid.map((x) => x.step), [2, 4], 'validation at steps 2 and 4 (the final one comes with done)');
  for (const v of valid) assert.ok(Number.isFinite(v.valid_loss) && v.valid_perplexity! > 1 && v.valid_tokens! > 0);
  const steps = recs.filter((x) => x.loss !== undefined);
  assert.is(steps.length, 6);
  for (const s of steps) assert.ok(Number.isFinite(s.smoothed_loss) && s.elapsed_s! >= 0);
  const results = JSON.parse(readFileSync(join(TMP, 'ev2', 'train_results.json'), 'utf8')) as { history: Array<{ step: number; valid_loss?: number }>; valid: { loss: number } };
  assert.equal(results.history.filter((h) => h.valid_loss !== undefined).map((h) => h.step), [2, 4, 6]);
  assert.is(results.history[5]!.valid_loss, results.valid.loss);
  const svg = readFileSync(join(TMP, 'ev2', 'loss.svg'), 'utf8');
  assert.is(svg.match(/<circle /g)?.length, 3, 'three validation points in loss.svg');
  assert.match(svg, />validation</);
  // validation between steps does not touch training
  assert.ok(readFileSync(join(TMP, 'ev0', 'adapter_model.safetensors')).equals(readFileSync(join(TMP, 'ev2', 'adapter_model.safetensors'))));
  userError('train', run('train', ...TRAIN, '--out', join(TMP, 'ev-none'), '--valid', 'none', '--eval-every', '2'), /--eval-every needs validation data/);
});

test('8: the smoothed loss is a bias-corrected moving average (the first value is the first loss)', () => {
  const s = new SmoothedLoss(0.9);
  assert.is(s.add(2), 2);
  const second = s.add(1);
  assert.ok(Math.abs(second - (0.9 * 0.1 * 2 + 0.1 * 1) / (1 - 0.81)) < 1e-12, String(second));
  assert.is(s.add(NaN), second, 'a non-finite loss is skipped');
});

test.run();
