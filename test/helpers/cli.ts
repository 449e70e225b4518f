// Running the built CLI (dist/node/cli.js) from tests: the path, a synchronous run, a train run
// killed at a step, and the check that a user mistake is one sentence with exit code 2.
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './index.ts';

export const CLI = join(REPO, 'dist', 'node', 'cli.js');

/** Builds dist/ (scripts/build.mjs) when the CLI is missing; returns its path. */
export function ensureCli(): string {
  if (!existsSync(CLI)) spawnSync(process.execPath, [join(REPO, 'scripts', 'build.mjs')], { stdio: 'inherit' });
  return CLI;
}

/** WEBQLORA_DEBUG unset for the child (an internal error prints no stack trace), whatever the test runner's is. */
export const NO_DEBUG = { WEBQLORA_DEBUG: '' } as const;

export interface CliOptions {
  /** variables set over the test process's environment */
  env?: Record<string, string>;
}

export interface CliResult {
  /** the exit code; -1 where the process ended by a signal */
  code: number;
  stdout: string;
  stderr: string;
}

function childEnv(opts: CliOptions): NodeJS.ProcessEnv | undefined {
  return opts.env ? { ...process.env, ...opts.env } : undefined;
}

/** `webqlora ...args`, run to the end (building dist/ first if needed). */
export function runCli(args: readonly string[], opts: CliOptions = {}): CliResult {
  const r = spawnSync(process.execPath, [ensureCli(), ...args], { encoding: 'utf8', env: childEnv(opts) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** runCli with fixed options, taking the arguments spread: `const run = cliRunner(); run('train', '--help')`. */
export function cliRunner(opts: CliOptions = {}): (...args: string[]) => CliResult {
  return (...args) => runCli(args, opts);
}

/**
 * Runs `webqlora ...args` (a `train --json` run) and SIGKILLs it right after it prints step
 * `killAfter` on stdout (or lets it finish); resolves on exit with the exit code and stderr.
 */
export function trainUntil(args: readonly string[], killAfter: number | null, opts: CliOptions = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [ensureCli(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(opts) });
    let buf = '', stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n').slice(0, -1)) {
        const rec = JSON.parse(line) as { step?: number };
        if (killAfter !== null && rec.step === killAfter) child.kill('SIGKILL');
      }
      buf = buf.slice(buf.lastIndexOf('\n') + 1);
    });
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

/**
 * A user mistake: exit code 2 (failing with `${what}: ${stderr}`, or the stderr alone), exactly one
 * stderr line of the shape `lines` (by default `webqlora[ <command>]: `), matching `re`, and no
 * stack trace. Returns that line.
 */
export function assertUserError(r: { code: number; stderr: string }, re: RegExp, opts: { what?: string; lines?: RegExp } = {}): string {
  const lineRe = opts.lines ?? /^webqlora( [a-z]+)?: /;
  assert.is(r.code, 2, opts.what === undefined ? r.stderr : `${opts.what}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n').filter((l) => lineRe.test(l));
  assert.is(lines.length, 1, r.stderr);
  assert.match(lines[0]!, re);
  assert.not.match(r.stderr, /\n\s+at /);
  return lines[0]!;
}
