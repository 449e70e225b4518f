#!/usr/bin/env node
// Runs every CLI command many times on the tiny fixtures, two at a time (to load the machine the
// way a test run does), and records every run that exits non-zero, is killed by a signal, hangs
// past --timeout, or prints Node's crash trailer ("Node.js v20.x" as the last stderr line) or a
// fatal error, or exits 0 having printed nothing. Issue 13 item 15: a rare crash of `webqlora eval`
// (Node's trailer after a SyntaxError: the CLI had started while a build was rewriting
// dist/node/cli.js in place; scripts/build.mjs now writes every output atomically).
//
//   node scripts/build.mjs && node scripts/crash-loop.mjs [--runs 100] [--jobs 2] [--timeout 120]
//        [--only eval,generate] [--cli dist/node/cli.js] [--logs DIR] [--race-build]
//
// --runs is per case (a case = one command line on one backend; see CASES). The built CLI is
// copied once to dist/crashloop/ so a rebuild during the loop cannot change what runs; with
// --race-build the loop instead runs dist/node/cli.js itself while scripts/build.mjs rebuilds dist/
// over and over (under flock /tmp/webqlora-build.lock when flock exists), as several people
// building and testing in one checkout do. Every failing run's command, exit status and output go
// to DIR/fail-*.txt; DIR/summary.json holds the counts. Exit status: 0 when no run failed, 1 otherwise.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: o } = parseArgs({
  options: {
    runs: { type: 'string', default: '100' },
    jobs: { type: 'string', default: '2' },
    timeout: { type: 'string', default: '120' },
    only: { type: 'string' },
    cli: { type: 'string' },
    logs: { type: 'string' },
    'race-build': { type: 'boolean', default: false },
  },
});
const RUNS = Number(o.runs), JOBS = Number(o.jobs), TIMEOUT_S = Number(o.timeout);

const RACE = o['race-build'];
let snapshot = join(root, 'dist', 'crashloop', 'cli.js');
if (RACE) snapshot = join(root, 'dist', 'node', 'cli.js');
else {
  mkdirSync(dirname(snapshot), { recursive: true });
  copyFileSync(o.cli ? resolve(o.cli) : join(root, 'dist', 'node', 'cli.js'), snapshot);
}
const LOGS = o.logs ? resolve(o.logs) : mkdtempSync(join(tmpdir(), 'webqlora-crash-loop-'));
mkdirSync(LOGS, { recursive: true });
const WORK = mkdtempSync(join(tmpdir(), 'webqlora-crash-work-'));

const GGUF = join(root, 'assets', 'stories260K.gguf');
const HF = join(root, 'test', 'fixtures', 'archs', 'llama3'); // tiny HF Llama 3 (vocab 512, no tokenizer)
const ADAPTER = join(HF, 'adapter');
const DATA = join(WORK, 'data.jsonl');
{
  const { readFileSync } = await import('node:fs');
  const texts = readFileSync(join(root, 'test', 'fixtures', 'data', 'tinystories_sample.txt'), 'utf8')
    .split('\n<|endoftext|>\n').map((s) => s.trim()).filter(Boolean).slice(0, 16);
  writeFileSync(DATA, texts.map((t) => JSON.stringify({ text: t.slice(0, 300) })).join('\n') + '\n');
}

/** name → args; `{out}` is replaced by a fresh path per run. Backend cases get --backend wasm and auto. */
const BASE = [
  ['eval-hf', ['eval', '--model', HF, '--adapter', ADAPTER, '--tokenizer', GGUF, '--data', DATA, '--seq-len', '64'], true],
  ['eval-gguf', ['eval', '--model', GGUF, '--data', DATA, '--seq-len', '64', '--json'], true],
  ['generate-hf', ['generate', '--model', HF, '--adapter', ADAPTER, '--prompt-ids', '1,2,3', '--max-new-tokens', '8'], true],
  ['generate-gguf', ['generate', '--model', GGUF, '--prompt', 'Once upon a time', '--max-new-tokens', '16', '--temperature', '0.8', '--seed', '3'], true],
  ['train-hf', ['train', '--model', HF, '--tokenizer', GGUF, '--data', DATA, '--seq-len', '64', '--steps', '2', '--out', '{out}'], true],
  ['train-gguf', ['train', '--model', GGUF, '--data', DATA, '--seq-len', '64', '--steps', '2', '--out', '{out}', '--json'], true],
  ['merge-hf', ['merge', '--model', HF, '--adapter', ADAPTER, '--out', '{out}'], true],
  ['inspect-hf', ['inspect', HF], false],
  ['inspect-gguf', ['inspect', GGUF, '--json'], false],
  ['quantize-hf', ['quantize', '--model', HF, '--out', '{out}'], false],
  ['export-hf', ['export', '--model', HF, '--adapter', ADAPTER, '--out', '{out}.gguf'], false],
];
const only = o.only ? new Set(o.only.split(',')) : null;
const CASES = [];
for (const [name, args, withBackend] of BASE) {
  if (only && !only.has(name) && !only.has(name.split('-')[0])) continue;
  if (withBackend) for (const b of ['wasm', 'auto']) CASES.push({ name: `${name} --backend ${b}`, args: [...args, '--backend', b] });
  else CASES.push({ name, args });
}

// round-robin, so each pair running together mixes commands
const queue = [];
for (let i = 0; i < RUNS; i++) for (const c of CASES) queue.push(c);
const stats = new Map(CASES.map((c) => [c.name, { runs: 0, failures: 0, maxSeconds: 0 }]));
const failures = [];
let done = 0, seq = 0;
const t0 = Date.now();

// Node prints "Node.js vX.Y.Z" after an uncaught exception or a fatal error
const TRAILER = /^Node\.js v\d+\.\d+\.\d+\s*$/m;
const FATAL = /FATAL ERROR|Segmentation fault|Assertion failed|Aborted|internal error|Check failed/;

function runOne(c) {
  const id = ++seq;
  const out = join(WORK, `out-${id}`);
  const args = c.args.map((a) => a.replace('{out}', out));
  return new Promise((res) => {
    const started = Date.now();
    const p = spawn(process.execPath, [snapshot, ...args], { cwd: WORK, env: { ...process.env, WEBQLORA_DEBUG: '1' } });
    let stdout = '', stderr = '', timedOut = false;
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { timedOut = true; p.kill('SIGKILL'); }, TIMEOUT_S * 1000);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = (Date.now() - started) / 1000;
      const s = stats.get(c.name);
      s.runs++;
      s.maxSeconds = Math.max(s.maxSeconds, seconds);
      const why = timedOut ? `hang (killed after ${TIMEOUT_S} s)` : signal ? `signal ${signal}` : code !== 0 ? `exit ${code}` : TRAILER.test(stderr) ? 'crash trailer'
        : FATAL.test(stderr) ? 'fatal message' : !stdout.trim() && !stderr.trim() ? 'no output' : '';
      if (why) {
        s.failures++;
        const file = join(LOGS, `fail-${String(failures.length + 1).padStart(3, '0')}.txt`);
        failures.push({ case: c.name, why, file });
        writeFileSync(file, `case: ${c.name}\nwhy: ${why}\nseconds: ${seconds.toFixed(2)}\ncommand: node ${snapshot} ${args.join(' ')}\n--- stdout\n${stdout}\n--- stderr\n${stderr}\n`);
        process.stderr.write(`FAIL ${c.name}: ${why} → ${file}\n`);
      }
      rmSync(out, { recursive: true, force: true });
      rmSync(`${out}.gguf`, { force: true });
      if (++done % 50 === 0) process.stderr.write(`${done}/${queue.length} runs, ${failures.length} failed, ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
      res();
    });
  });
}

let next = 0;
async function lane() {
  while (next < queue.length) await runOne(queue[next++]);
}

let building = RACE, builds = 0;
/** --race-build: scripts/build.mjs again and again until the runs are done. */
async function builder() {
  const { spawnSync } = await import('node:child_process');
  const flock = spawnSync('flock', ['--version']).status === 0;
  const cmd = flock ? ['flock', ['/tmp/webqlora-build.lock', process.execPath, join(root, 'scripts', 'build.mjs')]] : [process.execPath, [join(root, 'scripts', 'build.mjs')]];
  while (building) {
    await new Promise((res) => spawn(cmd[0], cmd[1], { cwd: root, stdio: 'ignore' }).on('close', res));
    builds++;
  }
}
process.stderr.write(`crash loop: ${CASES.length} cases × ${RUNS} runs, ${JOBS} at a time, timeout ${TIMEOUT_S} s${RACE ? ', dist/ rebuilt all along' : ''}; logs in ${LOGS}\n`);
const built = RACE ? builder() : null;
await Promise.all(Array.from({ length: JOBS }, lane));
building = false;
await built;

const summary = {
  node: process.version, runs: done, failed: failures.length, seconds: Math.round((Date.now() - t0) / 1000), ...(RACE ? { builds } : {}),
  cases: Object.fromEntries([...stats].map(([k, v]) => [k, { ...v, maxSeconds: Number(v.maxSeconds.toFixed(2)) }])),
  failures,
};
writeFileSync(join(LOGS, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
rmSync(WORK, { recursive: true, force: true });
for (const [k, v] of stats) process.stdout.write(`${k.padEnd(32)} ${String(v.runs).padStart(5)} runs  ${String(v.failures).padStart(3)} failed  max ${v.maxSeconds.toFixed(1)} s\n`);
process.stdout.write(`total ${done} runs, ${failures.length} failed, ${summary.seconds} s${RACE ? `, ${builds} builds meanwhile` : ''} (logs: ${LOGS})\n`);
process.exitCode = failures.length ? 1 : 0;
