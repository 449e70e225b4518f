// Relaxed SIMD by default in Node: Node 20 keeps it behind --experimental-wasm-relaxed-simd, so the
// Node entry points (dist/node/index.js, the CLI) turn the flag on before any kernel module is
// compiled. A fresh process without the flag on its command line must run the relaxed build;
// the plain SIMD128 build stays what engines without relaxed SIMD run (test/kernels checks both
// against the reference, and threads.test.ts bit-identity across thread counts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, STORIES_GGUF } from '../helpers/index.ts';
import { ensureCli, runCli } from '../helpers/cli.ts';

const DIST = join(REPO, 'dist', 'node');
ensureCli();

test('importing the Node library turns relaxed SIMD on: createBackend picks the relaxed kernels', () => {
  const script = `const m = await import(${JSON.stringify(pathToFileURL(join(DIST, 'index.js')).href)});
    const be = await m.createBackend({ prefer: 'wasm' });
    console.log(m.wasmBackendInfo(be).summary);
    await be.destroy();`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /relaxed SIMD kernels/);
  assert.not.match(process.execArgv.join(' '), /relaxed-simd/, 'the test process itself has no flag');
});

test('the CLI runs the relaxed kernels and says so', () => {
  const r = runCli(['generate', '--model', STORIES_GGUF, '--prompt-ids', '1,403', '--max-new-tokens', '2', '--backend', 'wasm']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /relaxed SIMD/);
});

test.run();
