// The browser bundle in a real browser: headless Debian Chromium (SwiftShader for WebGPU) driven
// by puppeteer-core loads test/browser/page.html, which imports dist/browser/webqlora.js — the
// file users load — and trains stories260K for a few steps (train-case.js: B 4, T 64, dropout 0,
// seeded). The same run happens in this Node process on src/ (wasm, and webgpu through Dawn on
// lavapipe), and:
//   - wasm in the page with the kernels Node runs (SIMD128) reproduces Node exactly: every
//     step's loss and gradient norm, and the final adapter file byte for byte; wasm as
//     createBackend picks it in Chromium (relaxed SIMD, threads when cross-origin isolated)
//     matches Node's first-step loss to 1e-6 relative;
//   - webgpu in the page (navigator.gpu, SwiftShader) has an adapter, is really the webgpu
//     backend, its loss falls, and its first-step loss matches Node's (wasm and Dawn) to 1e-4
//     relative, later steps to 2e-3 (see the tolerances below);
//   - the example page (examples/browser/) runs the demo end to end on wasm in test mode and
//     offers both PEFT adapter files for download; its backend line is one clean sentence;
//   - the example page takes your own model and data through its file inputs: an HF folder
//     (webkitdirectory) with a .gguf tokenizer and Alpaca JSON, and config.json + safetensors
//     picked as files with token-id JSONL and a validation file; it trains, draws the training and
//     validation curves (the step-0 validation loss matching Node's evaluate) and shows an ETA;
//     broken data files give the library's line-numbered errors in the page;
//   - no page logs a console error or throws an uncaught exception.
// With CI=true, a missing or unstartable browser and a missing WebGPU adapter are failures;
// outside CI a machine without /usr/bin/chromium skips with a message.
// WEBQLORA_SCREENSHOTS=dir saves a full-page screenshot of each example-page run there.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { FIXTURES, REPO, Rng, STORIES_GGUF, STORIES_HF } from '../helpers/index.ts';
import * as lib from '../../src/index.ts';
import { startServer, type StaticServer } from '../../examples/browser/serve.mjs';
import { dawnGpu } from '../../src/backend/webgpu/dawn.ts';
import { CASE_DEFAULTS, trainCase, type CaseOptions, type CaseResult } from './train-case.js';

const CHROMIUM = process.env.WEBQLORA_CHROMIUM ?? '/usr/bin/chromium';
const CI = process.env.CI === 'true';
const SCREENSHOTS = process.env.WEBQLORA_SCREENSHOTS ?? '';
const BUNDLE = join(REPO, 'dist', 'browser', 'webqlora.js');
// Flags that give headless Chromium a WebGPU adapter with no GPU: Vulkan on SwiftShader.
const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader', '--disable-background-networking', '--disable-component-update',
];

// Tolerances, |browser − node| ≤ rtol·|node| (STYLE.md §10).
// - wasm with the SIMD128 kernels Node 20 runs: the same kernels and the same JS, so exact.
// - wasm as createBackend picks it in Chromium: the relaxed-SIMD kernels (relaxed_madd may
//   fuse), so float32 rounding apart at step 1 (seen: 1e-7) and a little more once AdamW has
//   amplified it (seen: 2.5e-6 by step 5).
// - webgpu: float32 kernels with other summation orders (seen: 1.3e-7 at step 1, 2e-6 later).
// The first step's loss is the frozen base model's (B = 0 at PEFT init); later ones add AdamW
// updates, which amplify last-bit differences of tiny gradients (Adam divides by √v).
const WASM_RELAXED_FIRST_LOSS_RTOL = 1e-6;
const WASM_RELAXED_LATER_LOSS_RTOL = 1e-4;
const WEBGPU_FIRST_LOSS_RTOL = 1e-4;
const WEBGPU_FIRST_GRADNORM_RTOL = 1e-3;
const WEBGPU_LATER_LOSS_RTOL = 2e-3;
// The example page's step-0 validation loss (relaxed-SIMD wasm, threads) vs Node's evaluate on
// the same held-out examples (SIMD128): the frozen base model's forward only, as WASM_RELAXED_FIRST_LOSS_RTOL.
const PAGE_VALID_LOSS_RTOL = 1e-6;
// On SwiftShader the first webgpu step takes ~20 s (pipeline compilation), later ones a few
// seconds (more on a loaded machine), so the webgpu run is 4 steps; wasm runs CASE_DEFAULTS.steps (5).
const WEBGPU_STEPS = 4;

/** Rebuilds dist/ when the bundle is missing or older than any source it is built from. */
function ensureBundle(): void {
  const newest = (dir: string): number => {
    let t = 0;
    for (const name of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, name.name);
      t = Math.max(t, name.isDirectory() ? (name.name === 'generated' ? 0 : newest(p)) : statSync(p).mtimeMs);
    }
    return t;
  };
  const srcTime = Math.max(...['src', 'wgsl', 'assembly'].map((d) => (existsSync(join(REPO, d)) ? newest(join(REPO, d)) : 0)));
  if (existsSync(BUNDLE) && statSync(BUNDLE).mtimeMs >= srcTime) return;
  const r = spawnSync(process.execPath, [join(REPO, 'scripts', 'build.mjs')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('scripts/build.mjs failed; the browser test needs dist/browser/webqlora.js');
}

function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
}

function assertClose(actual: number, expected: number, rtol: number, what: string): void {
  const d = relDiff(actual, expected);
  assert.ok(d <= rtol, `${what}: browser ${actual} vs node ${expected} (relative difference ${d.toExponential(2)} > ${rtol})`);
}

const chromiumMissing = !existsSync(CHROMIUM);
if (chromiumMissing && !CI) {
  console.log(`\n  browser test skipped: ${CHROMIUM} not found (Debian: apt-get install chromium, or bash scripts/setup.sh; WEBQLORA_CHROMIUM=path overrides).`);
}

let server: StaticServer | null = null;
let browser: Browser | null = null;
let userDataDir = '';
/** Data files written for the upload tests. */
let dataDir = '';
/** Console errors, uncaught exceptions and failed requests of every page, with the page's URL. */
const pageProblems: string[] = [];
const modelBytes = new Uint8Array(readFileSync(STORIES_GGUF));
const KQUANT_GGUF = join(FIXTURES, 'gguf-kquants', 'llama_kquant_mix.gguf');
const nodeRuns = new Map<string, Promise<CaseResult | null>>();

/**
 * The shared case run in this process, memoised per backend and step count: wasm, or webgpu
 * through Dawn on lavapipe (null when the optional `webgpu` package is missing, outside CI).
 */
function nodeRun(prefer: 'wasm' | 'webgpu', steps: number = CASE_DEFAULTS.steps, simd128 = false): Promise<CaseResult | null> {
  const key = `${prefer}:${steps}:${simd128}`;
  let r = nodeRuns.get(key);
  if (!r) {
    r = (async () => {
      let be: lib.Backend;
      if (prefer === 'webgpu') {
        const gpu = await dawnGpu();
        if (!gpu) {
          if (CI) throw new Error('the optional `webgpu` package (Dawn) is not installed, so Node cannot run the case on webgpu');
          return null;
        }
        be = await lib.createBackend({ prefer, gpu });
      } else {
        be = simd128 ? await lib.createWasmBackend({ relaxedSimd: false }) : await lib.createBackend({ prefer });
      }
      try {
        return await trainCase(lib, be, modelBytes, { steps });
      } finally {
        await be.destroy();
      }
    })();
    nodeRuns.set(key, r);
  }
  return r;
}

async function openPage(path: string): Promise<Page> {
  const page = await browser!.newPage();
  const where = path.split('?')[0]!;
  page.on('console', (m) => { if (m.type() === 'error') pageProblems.push(`${where}: console.error: ${m.text()}`); });
  page.on('pageerror', (e) => pageProblems.push(`${where}: uncaught: ${e instanceof Error ? e.stack ?? e.message : String(e)}`));
  page.on('requestfailed', (r) => pageProblems.push(`${where}: request failed: ${r.url()} (${r.failure()?.errorText})`));
  page.on('response', (r) => { if (r.status() >= 400) pageProblems.push(`${where}: HTTP ${r.status()} for ${r.url()}`); });
  page.setDefaultTimeout(150_000);
  await page.goto(server!.url + path, { waitUntil: 'load' });
  return page;
}

function assertNoPageProblems(): void {
  const p = pageProblems.splice(0);
  assert.equal(p, [], `the page reported problems:\n  ${p.join('\n  ')}`);
}

/** Why the browser could not be set up; each test fails with it (uvu ignores errors thrown by hooks). */
let setupError: Error | null = null;

test.before(async () => {
  try {
    if (chromiumMissing) {
      if (CI) throw new Error(`${CHROMIUM} not found: the browser test needs Debian's chromium (bash scripts/setup.sh installs it).`);
      return;
    }
    ensureBundle();
    server = await startServer({ port: 0 });
    userDataDir = mkdtempSync(join(tmpdir(), 'webqlora-chromium-'));
    dataDir = mkdtempSync(join(tmpdir(), 'webqlora-page-data-'));
    if (SCREENSHOTS) mkdirSync(SCREENSHOTS, { recursive: true });
    try {
      browser = await puppeteer.launch({
        executablePath: CHROMIUM, headless: true, userDataDir, args: CHROMIUM_ARGS, protocolTimeout: 300_000,
        env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir() },
      });
    } catch (e) {
      throw new Error(`${CHROMIUM} did not start under puppeteer-core: ${(e as Error).message}`);
    }
  } catch (e) {
    setupError = e as Error;
  }
});

/** True when the browser is up; throws the setup error; false only when skipping (no chromium, not CI). */
function up(): boolean {
  if (setupError) throw setupError;
  return browser !== null;
}

test.after(async () => {
  await browser?.close();
  await server?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('page loads the bundle, is cross-origin isolated and has a WebGPU adapter', async () => {
  if (!up()) return;
  const page = await openPage('test/browser/page.html');
  await page.waitForFunction(() => (window as unknown as { webqloraReady?: boolean }).webqloraReady === true);
  const env = await page.evaluate(() => (window as unknown as { webqloraTest: { env(): Promise<unknown> } }).webqloraTest.env()) as {
    hasNavigatorGpu: boolean; adapter: { vendor: string; architecture: string } | null; crossOriginIsolated: boolean;
  };
  assert.ok(env.crossOriginIsolated, 'serve.mjs sends COOP/COEP, so the page must be crossOriginIsolated');
  assert.ok(env.hasNavigatorGpu, 'navigator.gpu is missing (WebGPU needs a secure context and --enable-unsafe-webgpu)');
  if (!env.adapter && !CI) console.log('\n  note: navigator.gpu has no adapter here (Vulkan/SwiftShader missing?); the webgpu case will fail');
  assert.ok(env.adapter, 'navigator.gpu.requestAdapter() returned null: Chromium found no WebGPU adapter (SwiftShader Vulkan)');
  await page.close();
  assertNoPageProblems();
});

/** Runs the shared case in a fresh page. */
async function browserRun(prefer: 'wasm' | 'webgpu', steps: number = CASE_DEFAULTS.steps, wasmOptions: { relaxedSimd?: boolean } | null = null): Promise<CaseResult & { infos: string[] }> {
  const page = await openPage('test/browser/page.html');
  await page.waitForFunction(() => (window as unknown as { webqloraReady?: boolean }).webqloraReady === true);
  try {
    return await page.evaluate(
      (p, n, w) => (window as unknown as { webqloraTest: { run(p: string, o: object, w: object | null): Promise<CaseResult & { infos: string[] }> } }).webqloraTest.run(p, { steps: n }, w),
      prefer, steps, wasmOptions,
    );
  } finally {
    await page.close();
  }
}

test('wasm in the page, SIMD128 kernels as in Node 20, trains bit for bit as Node does', async () => {
  if (!up()) return;
  const [b, n] = await Promise.all([browserRun('wasm', CASE_DEFAULTS.steps, { relaxedSimd: false }), nodeRun('wasm', CASE_DEFAULTS.steps, true)]);
  assert.ok(n);
  assert.is(b.backend, 'wasm');
  console.log(`\n  wasm SIMD128 first-step loss: browser ${b.losses[0]}, node ${n.losses[0]}; losses ${b.losses.map((l) => l.toFixed(4)).join(' → ')} (page: ${b.infos.join('; ')})`);
  assert.ok(b.losses.at(-1)! < b.losses[0]! - 0.5, `the loss did not fall: ${b.losses.join(', ')}`);
  for (let s = 0; s < n.losses.length; s++) {
    assert.is(b.losses[s], n.losses[s], `step ${s + 1} loss: browser ${b.losses[s]}, node ${n.losses[s]}`);
    assert.is(b.gradNorms[s], n.gradNorms[s], `step ${s + 1} gradient norm: browser ${b.gradNorms[s]}, node ${n.gradNorms[s]}`);
  }
  assert.is(b.adapterFnv, n.adapterFnv, 'the final adapter_model.safetensors differs between browser and Node');
  assert.is(b.adapterConfig, n.adapterConfig);
  assertNoPageProblems();
});

/** One training case in the page and in Node, both on WASM SIMD128 (bit-identical by design). */
async function pageAndNodeSimd128(opts: CaseOptions, pageModel: string | undefined, modelPath: string): Promise<{ b: CaseResult; n: CaseResult }> {
  const page = await openPage('test/browser/page.html');
  await page.waitForFunction(() => (window as unknown as { webqloraReady?: boolean }).webqloraReady === true);
  let b: CaseResult;
  try {
    b = await page.evaluate((o) => (window as unknown as { webqloraTest: { run(p: string, o: object, w: object | null): Promise<CaseResult> } }).webqloraTest.run('wasm', o, { relaxedSimd: false }), { ...opts, model: pageModel });
  } finally {
    await page.close();
  }
  const be = await lib.createWasmBackend({ relaxedSimd: false });
  try {
    return { b, n: await trainCase(lib, be, new Uint8Array(readFileSync(modelPath)), opts) };
  } finally {
    await be.destroy();
  }
}

test('a Q4_K_M-mix GGUF (Q4_K/Q5_K/Q6_K) loads from bytes in the page, trains and generates bit for bit as in Node', async () => {
  if (!up()) return;
  const { b, n } = await pageAndNodeSimd128({ steps: 2, generate: 8 }, 'kquant', KQUANT_GGUF);
  console.log(`\n  Q4_K_M mix in the page: losses ${b.losses.join(' → ')}, generated ${b.generated.join(',')}`);
  assert.ok(b.losses.every(Number.isFinite) && b.losses[1]! < b.losses[0]!, `the loss did not fall: ${b.losses.join(', ')}`);
  assert.equal(b.losses, n.losses, 'losses: browser vs Node');
  assert.equal(b.generated, n.generated, 'generated ids: browser vs Node');
  assert.is(b.generated.length, 8);
  assert.is(b.adapterFnv, n.adapterFnv, 'the final adapter differs between browser and Node');
  assertNoPageProblems();
});

test('DoRA and sample packing in the page train bit for bit as in Node (wasm SIMD128)', async () => {
  if (!up()) return;
  const { b, n } = await pageAndNodeSimd128({ steps: 3, dora: true, packing: true, generate: 6 }, undefined, STORIES_GGUF);
  console.log(`\n  DoRA + packing in the page: losses ${b.losses.join(' → ')}, generated ${b.generated.join(',')}`);
  assert.ok(b.losses.every(Number.isFinite) && b.losses.at(-1)! < b.losses[0]!, `the loss did not fall: ${b.losses.join(', ')}`);
  assert.match(b.adapterConfig, /"use_dora": true/);
  assert.equal(b.losses, n.losses, 'losses: browser vs Node');
  assert.equal(b.gradNorms, n.gradNorms, 'gradient norms: browser vs Node');
  assert.equal(b.generated, n.generated, 'generated ids: browser vs Node');
  assert.is(b.adapterFnv, n.adapterFnv, 'the final DoRA adapter differs between browser and Node');
  assertNoPageProblems();
});

test('wasm in the page as createBackend picks it (relaxed SIMD, threads) matches Node', async () => {
  if (!up()) return;
  const [b, n] = await Promise.all([browserRun('wasm'), nodeRun('wasm')]);
  assert.ok(n);
  assert.is(b.backend, 'wasm');
  const worst = Math.max(...b.losses.map((l, s) => relDiff(l, n.losses[s]!)));
  console.log(`\n  wasm default first-step loss: browser ${b.losses[0]}, node ${n.losses[0]} (relative ${relDiff(b.losses[0]!, n.losses[0]!).toExponential(2)}, ` +
    `largest over ${b.losses.length} steps ${worst.toExponential(2)}) (page: ${b.infos.join('; ')})`);
  assert.ok(b.losses.at(-1)! < b.losses[0]! - 0.5, `the loss did not fall: ${b.losses.join(', ')}`);
  // relaxed_madd may fuse (one rounding instead of two): float32 rounding-level differences only
  assertClose(b.losses[0]!, n.losses[0]!, WASM_RELAXED_FIRST_LOSS_RTOL, 'step 1 loss');
  for (let s = 1; s < n.losses.length; s++) assertClose(b.losses[s]!, n.losses[s]!, WASM_RELAXED_LATER_LOSS_RTOL, `step ${s + 1} loss`);
  assertNoPageProblems();
});

test('webgpu in the page (navigator.gpu) trains and matches Node', async () => {
  if (!up()) return;
  const t0 = performance.now();
  const [b, n, d] = await Promise.all([browserRun('webgpu', WEBGPU_STEPS), nodeRun('wasm', WEBGPU_STEPS), nodeRun('webgpu', WEBGPU_STEPS)]);
  assert.ok(n);
  assert.is(b.backend, 'webgpu', `createBackend({ prefer: 'webgpu' }) gave ${b.backend}`);
  const maxRel = (x: number[], y: number[]) => Math.max(...x.slice(1).map((v, i) => relDiff(v, y[i + 1]!)));
  const maxAbs = (x: number[], y: number[]) => x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
  console.log(`\n  webgpu (${((performance.now() - t0) / 1000).toFixed(1)} s; steps ${b.stepSeconds.map((s) => s.toFixed(1)).join(', ')} s): losses ${b.losses.map((l) => l.toFixed(4)).join(' → ')}\n` +
    `    first-step loss: browser ${b.losses[0]}, node wasm ${n.losses[0]} (relative ${relDiff(b.losses[0]!, n.losses[0]!).toExponential(2)})` +
    (d ? `, node webgpu/Dawn ${d.losses[0]} (relative ${relDiff(b.losses[0]!, d.losses[0]!).toExponential(2)})` : ', node webgpu/Dawn not available') + '\n' +
    `    steps 2..${WEBGPU_STEPS}: largest relative loss difference vs wasm ${maxRel(b.losses, n.losses).toExponential(2)}; final adapter values: largest |difference| vs wasm ${maxAbs(b.adapterValues, n.adapterValues).toExponential(2)}`);
  assert.ok(b.losses.every(Number.isFinite), `non-finite loss: ${b.losses.join(', ')}`);
  assert.ok(b.losses.at(-1)! < b.losses[0]! - 0.5, `the loss did not fall: ${b.losses.join(', ')}`);
  for (const [ref, name] of [[n, 'node wasm'], [d, 'node webgpu']] as const) {
    if (!ref) continue;
    assertClose(b.losses[0]!, ref.losses[0]!, WEBGPU_FIRST_LOSS_RTOL, `step 1 loss (vs ${name})`);
    assertClose(b.gradNorms[0]!, ref.gradNorms[0]!, WEBGPU_FIRST_GRADNORM_RTOL, `step 1 gradient norm (vs ${name})`);
    for (let s = 1; s < WEBGPU_STEPS; s++) assertClose(b.losses[s]!, ref.losses[s]!, WEBGPU_LATER_LOSS_RTOL, `step ${s + 1} loss (vs ${name})`);
  }
  assertNoPageProblems();
});

/**
 * The example page's backend line is one sentence: "<name> — <how>[; <why>]", with no CLI text
 * pasted in (an empty clause after the dash, the thread count twice, "[…]", "backend:", flags).
 */
function assertCleanBackendLine(line: string): void {
  const why = `backend line "${line}"`;
  assert.match(line, /^(WASM|WebGPU) — \S/, why);
  assert.not.match(line, /[\n\r]/, `${why}: more than one line`);
  assert.is(line.split(' — ').length, 2, `${why}: one dash, between the name and the rest`);
  assert.not.match(line, /[—,;:]\s*[,;:]/, `${why}: an empty clause`);
  assert.not.match(line, /[[\]]/, `${why}: brackets`);
  assert.not.match(line, /backend:|--\w/, `${why}: CLI wording`);
  assert.ok((line.match(/\bthreads?\b/g) ?? []).length <= 1, `${why}: the thread count twice`);
  assert.ok((line.match(/SIMD/g) ?? []).length <= 1, `${why}: the kernel variant twice`);
}

test('the example page says which backend auto picks, and why', async () => {
  if (!up()) return;
  const probe = await openPage('test/browser/page.html');
  await probe.waitForFunction(() => (window as unknown as { webqloraReady?: boolean }).webqloraReady === true);
  const auto = await probe.evaluate(() => (window as unknown as { webqloraTest: { autoBackend(): Promise<{ name: string; infos: string[] }> } }).webqloraTest.autoBackend());
  await probe.close();
  // steps=1: only the backend line matters here; the page is closed while it trains
  const page = await openPage('examples/browser/index.html?backend=auto&steps=1&autorun=1');
  await page.waitForFunction(() => !/^(not started|starting…)$/.test(document.getElementById('backend')!.textContent ?? ''), { timeout: 60_000 });
  const r = await page.evaluate(() => ({ backend: document.getElementById('backend')!.textContent ?? '', warn: document.getElementById('backend')!.className, env: document.getElementById('env')!.textContent ?? '' }));
  await page.close();
  assert.match(r.env, /WebGPU adapter: /, `environment line: ${r.env}`);
  assert.match(r.env, /cross-origin isolated/);
  // the page runs what the library's auto rule picks (SwiftShader is a CPU emulation: wasm) and says why
  assert.match(r.backend, auto.name === 'webgpu' ? /^WebGPU — / : /^WASM (\[[^\]]+\] )?— /, `backend line "${r.backend}", library auto: ${auto.name} (${auto.infos.join('; ')})`);
  assert.ok(r.backend.length > 12, `no reason given: ${r.backend}`);
  assertCleanBackendLine(r.backend);
  if (auto.name === 'wasm') {
    // how the library says wasm runs ("2 threads (shared memory), relaxed SIMD kernels"), once, and why not WebGPU
    const how = /^backend: wasm, (.*?)(?: \(|$)/.exec(auto.infos.find((m) => m.startsWith('backend: wasm')) ?? '')?.[1];
    assert.ok(how, `library info: ${auto.infos.join('; ')}`);
    assert.ok(r.backend.startsWith(`WASM — ${how}`), `backend line "${r.backend}" should start with "WASM — ${how}"`);
    assert.match(r.backend, /; not WebGPU: .*CPU emulation.*Backend “WebGPU”/, `backend line: ${r.backend}`);
  }
  if (auto.name !== 'webgpu') assert.is(r.warn, 'warn', 'passing over a WebGPU adapter is shown as a warning');
  assertNoPageProblems();
});

test('the example page runs the demo on wasm and offers the adapter for download', async () => {
  if (!up()) return;
  const page = await openPage('examples/browser/index.html?backend=wasm&steps=3&autorun=1');
  await page.waitForFunction(() => {
    const s = document.body.dataset.state;
    return s === 'done' || s === 'error';
  }, { timeout: 150_000 });
  const r = await page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById('error')?.textContent ?? '',
    backend: document.getElementById('backend')?.textContent ?? '',
    loss: document.getElementById('loss')?.textContent ?? '',
    stepsSeen: Number(document.body.dataset.stepsSeen ?? 0),
    before: [...document.querySelectorAll('#results .before')].map((e) => e.textContent ?? ''),
    after: [...document.querySelectorAll('#results .after')].map((e) => e.textContent ?? ''),
    downloads: [...document.querySelectorAll<HTMLAnchorElement>('#downloads a')].map((a) => ({ name: a.download, href: a.href, size: Number(a.dataset.bytes) })),
  }));
  assert.is(r.state, 'done', `the example page ended in state ${r.state}: ${r.error}`);
  assert.match(r.backend, /^WASM — chosen; \d+ threads?/, `backend line: ${r.backend}`);
  assertCleanBackendLine(r.backend);
  assert.is(r.stepsSeen, 3, 'one live loss update per step');
  assert.match(r.loss, /step 3\/3/);
  assert.is(r.before.length, 2);
  assert.is(r.after.length, 2);
  for (const t of [...r.before, ...r.after]) assert.ok(t.length > 40, `short generation: ${t}`);
  assert.equal(r.downloads.map((d) => d.name).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  // the downloaded bytes are a PEFT adapter the library itself loads back
  const files = await page.evaluate(async (links: Array<{ name: string; href: string }>) => {
    const out: Record<string, number[]> = {};
    for (const l of links) out[l.name] = [...new Uint8Array(await (await fetch(l.href)).arrayBuffer())];
    return out;
  }, r.downloads);
  const dir = new lib.MapDirSource('download', new Map(Object.entries(files).map(([k, v]) => [k, Uint8Array.from(v)])));
  const be = await lib.createBackend({ prefer: 'reference' });
  try {
    const src = await lib.openModel(new lib.MemorySource('stories260K.gguf', modelBytes));
    const lora = await lib.loadAdapter(dir, be, src.config);
    assert.is(lora.pairs.length, src.config.numLayers * 7);
    assert.is(JSON.parse(new TextDecoder().decode(Uint8Array.from(files['adapter_config.json']!))).peft_type, 'LORA');
    await src.close();
  } finally {
    await be.destroy();
  }
  await page.close();
  assertNoPageProblems();
});

test('the example page trains a DoRA adapter of the chosen rank on packed examples', async () => {
  if (!up()) return;
  const page = await openPage('examples/browser/index.html?backend=wasm&steps=2&autorun=1&dora=1&packing=1&lorar=4&loraalpha=8&evalevery=2');
  await page.waitForFunction(() => document.body.dataset.state === 'done' || document.body.dataset.state === 'error', { timeout: 150_000 });
  const r = await page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById('error')?.textContent ?? '',
    log: document.getElementById('log')?.textContent ?? '',
    losses: (window as unknown as { webqloraRun: { losses: Array<{ loss: number }> } }).webqloraRun.losses.map((l) => l.loss),
    downloads: [...document.querySelectorAll<HTMLAnchorElement>('#downloads a')].map((a) => ({ name: a.download, href: a.href })),
  }));
  assert.is(r.state, 'done', `the example page ended in state ${r.state}: ${r.error}`);
  assert.match(r.log, /packing: \d+ examples in \d+ rows of ≤ 256 tokens/);
  assert.match(r.log, /DoRA parameters \(r 4, alpha 8\)/);
  assert.is(r.losses.length, 2);
  assert.ok(r.losses.every(Number.isFinite), `losses ${r.losses}`);
  const files = await page.evaluate(async (links: Array<{ name: string; href: string }>) => {
    const out: Record<string, number[]> = {};
    for (const l of links) out[l.name] = [...new Uint8Array(await (await fetch(l.href)).arrayBuffer())];
    return out;
  }, r.downloads);
  const cfg = JSON.parse(new TextDecoder().decode(Uint8Array.from(files['adapter_config.json']!)));
  assert.equal([cfg.r, cfg.lora_alpha, cfg.use_dora], [4, 8, true]);
  // the downloaded adapter is a DoRA adapter the library loads back, magnitudes included
  const dir = new lib.MapDirSource('download', new Map(Object.entries(files).map(([k, v]) => [k, Uint8Array.from(v)])));
  const be = await lib.createBackend({ prefer: 'reference' });
  try {
    const src = await lib.openModel(new lib.MemorySource('stories260K.gguf', modelBytes));
    const lora = await lib.loadAdapter(dir, be, src.config);
    assert.is(lora.useDora, true);
    assert.is(lora.config.r, 4);
    await src.close();
  } finally {
    await be.destroy();
  }
  await page.close();
  assertNoPageProblems();
});

/** What the example page shows after a run with your own files. */
interface UploadRun {
  state: string;
  error: string;
  dataInfo: string;
  log: string;
  loss: string;
  eta: string;
  /** every text the ETA element took during the run */
  etaTexts: string[];
  stepsSeen: number;
  validSeen: number;
  losses: Array<{ step: number; loss: number }>;
  validLosses: Array<{ step: number; loss: number }>;
  chart: { paths: number; validPoints: number; text: string };
  results: string;
  before: string[];
  after: string[];
  downloads: string[];
  tryShown: boolean;
}

/**
 * Opens the example page with `query`, puts files into its file inputs as a user would
 * (puppeteer's uploadFile: a directory for the webkitdirectory input), presses Fine-tune and
 * waits for the run to end.
 */
async function runWithUploads(query: string, uploads: Record<string, string[]>, shot = ''): Promise<UploadRun> {
  const page = await openPage(`examples/browser/index.html?${query}`);
  try {
    for (const [id, paths] of Object.entries(uploads)) {
      const input = await page.$(`#${id}`);
      assert.ok(input, `no #${id} on the page`);
      await (input as unknown as { uploadFile(...p: string[]): Promise<void> }).uploadFile(...paths);
    }
    await page.evaluate(() => {
      const w = window as unknown as { etaTexts: string[] };
      const eta = document.getElementById('eta')!;
      w.etaTexts = [];
      new MutationObserver(() => w.etaTexts.push(eta.textContent ?? '')).observe(eta, { childList: true, characterData: true, subtree: true });
    });
    await page.click('#run');
    await page.waitForFunction(() => document.body.dataset.state === 'done' || document.body.dataset.state === 'error', { timeout: 150_000 });
    if (SCREENSHOTS && shot) await page.screenshot({ path: join(SCREENSHOTS, shot), fullPage: true });
    // no named functions inside: tsx's keepNames would reference its __name helper in the page
    return await page.evaluate(() => {
      const [error, dataInfo, log, loss, eta, results] = ['error', 'data-info', 'log', 'loss', 'eta', 'results'].map((id) => document.getElementById(id)?.textContent ?? '');
      const w = window as unknown as { etaTexts: string[]; webqloraRun?: { losses: Array<{ step: number; loss: number }>; validLosses: Array<{ step: number; loss: number }> } };
      const svg = document.querySelector('#chart svg');
      return {
        state: document.body.dataset.state ?? '',
        error: error!, dataInfo: dataInfo!, log: log!, loss: loss!, eta: eta!, results: results!,
        etaTexts: w.etaTexts,
        stepsSeen: Number(document.body.dataset.stepsSeen), validSeen: Number(document.body.dataset.validSeen),
        losses: w.webqloraRun?.losses ?? [], validLosses: w.webqloraRun?.validLosses ?? [],
        chart: { paths: svg?.querySelectorAll('path').length ?? 0, validPoints: svg?.querySelectorAll('circle').length ?? 0, text: svg?.textContent ?? '' },
        before: [...document.querySelectorAll('#results .before')].map((e) => e.textContent ?? ''),
        after: [...document.querySelectorAll('#results .after')].map((e) => e.textContent ?? ''),
        downloads: [...document.querySelectorAll<HTMLAnchorElement>('#downloads a')].map((a) => a.download).sort(),
        tryShown: getComputedStyle(document.getElementById('try')!).display !== 'none',
      };
    });
  } finally {
    await page.close();
  }
}

/** The checks every successful upload run shares: live loss, validation curve, ETA, downloads. */
function assertTrained(r: UploadRun, steps: number, validSteps: number[]): void {
  assert.is(r.state, 'done', `the page ended in state ${r.state}: ${r.error}`);
  assert.is(r.stepsSeen, steps, 'one live loss update per step');
  assert.match(r.loss, new RegExp(`step ${steps}/${steps} \\| loss \\d`));
  assert.ok(r.losses.every((p) => Number.isFinite(p.loss)), `losses: ${JSON.stringify(r.losses)}`);
  assert.equal(r.validLosses.map((p) => p.step), validSteps, 'validation at step 0, every N steps and at the end');
  assert.is(r.validSeen, validSteps.length);
  assert.ok(r.validLosses.every((p) => Number.isFinite(p.loss) && p.loss > 0), `validation losses: ${JSON.stringify(r.validLosses)}`);
  // one chart, two curves: the training path and the dashed validation path with a dot per evaluation
  assert.is(r.chart.paths, 2, 'training and validation curves');
  assert.is(r.chart.validPoints, validSteps.length);
  assert.match(r.chart.text, /validation/);
  // an ETA while training, the total at the end
  assert.ok(r.etaTexts.some((t) => /ETA \d/.test(t)), `no ETA was shown; the ETA line took: ${JSON.stringify(r.etaTexts)}`);
  assert.match(r.eta, /^done in \d/);
  assert.equal(r.downloads, ['adapter_config.json', 'adapter_model.safetensors']);
}

test('the example page trains an HF model folder (webkitdirectory) with a .gguf tokenizer on Alpaca JSON, with a validation curve and an ETA', async () => {
  if (!up()) return;
  const data = join(FIXTURES, 'data', 'identity_alpaca.json');
  const r = await runWithUploads('backend=wasm&steps=3&batch=4&seqlen=256&evalevery=2', {
    modelDir: [STORIES_HF], tokenizer: [STORIES_GGUF], data: [data],
  }, 'page-hf-folder-alpaca.png');
  assertTrained(r, 3, [0, 2, 3]);
  assert.match(r.log, /model: hf \(hf;/, 'the model is the uploaded folder, read as an HF directory');
  assert.match(r.log, /tokenizer: stories260K\.gguf/);
  assert.match(r.dataInfo, /identity_alpaca\.json: \d+ examples \(alpaca\)/);
  assert.match(r.dataInfo, /validation: \d+ examples held out from the training data/);
  // generations for the two default prompts, as Alpaca instructions
  assert.is(r.before.length, 2);
  assert.is(r.after.length, 2);
  assert.ok(r.tryShown, 'with a tokenizer the page offers a prompt box');

  // Node, on src/: the same folder, tokenizer and held-out split; the step-0 validation loss is
  // the frozen base model's (B = 0 at PEFT init), so evaluate without an adapter must give it
  const be = await lib.createWasmBackend({ relaxedSimd: false });
  try {
    const dir = new lib.MapDirSource('hf', new Map(readdirSync(STORIES_HF).map((n) => [n, new Uint8Array(readFileSync(join(STORIES_HF, n)))])));
    const src = await lib.openModel(dir);
    const model = await lib.loadModel(src, be, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: 256 });
    await src.close();
    const vocabSrc = await lib.openModel(new lib.MemorySource('stories260K.gguf', modelBytes));
    const tok = lib.tokenizerFromVocab(vocabSrc.vocab!);
    await vocabSrc.close();
    const { valid } = await lib.loadTrainValid(new lib.MemorySource('identity_alpaca.json', new Uint8Array(readFileSync(data))), null, {
      format: 'auto', tokenizer: tok, vocabSize: model.config.vocabSize, maxLen: 256, trainOnPrompt: false, seed: 0,
    });
    assert.ok(valid);
    const ev = await lib.evaluate(model, lib.evalBatches(valid.examples, { batchSize: 4, padId: lib.padIdFor(tok) }), { maxBatch: 4, maxSeqLen: 256 });
    model.free();
    console.log(`\n  HF folder + Alpaca in the page: losses ${r.losses.map((p) => p.loss.toFixed(4)).join(' → ')}; validation ${r.validLosses.map((p) => `${p.step}: ${p.loss.toFixed(4)}`).join(', ')} (Node step 0: ${ev.loss.toFixed(6)}, relative ${relDiff(r.validLosses[0]!.loss, ev.loss).toExponential(2)})`);
    assertClose(r.validLosses[0]!.loss, ev.loss, PAGE_VALID_LOSS_RTOL, 'step-0 validation loss');
  } finally {
    await be.destroy();
  }
  assertNoPageProblems();
});

/** JSONL of `n` token-id records (ids in [3, vocab)), seeded. */
function tokensJsonl(n: number, vocab: number, seed: number): string {
  const rng = new Rng(seed);
  let out = '';
  for (let i = 0; i < n; i++) out += JSON.stringify({ input_ids: Array.from({ length: 24 + rng.int(24) }, () => 3 + rng.int(vocab - 3)) }) + '\n';
  return out;
}

test('the example page trains config.json + model.safetensors picked as files on token-id JSONL, with a validation file and no tokenizer', async () => {
  if (!up()) return;
  const arch = join(FIXTURES, 'archs', 'llama3');
  const vocab = (JSON.parse(readFileSync(join(arch, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
  const train = join(dataDir, 'train-tokens.jsonl'), valid = join(dataDir, 'valid-tokens.jsonl');
  writeFileSync(train, tokensJsonl(24, vocab, 1));
  writeFileSync(valid, tokensJsonl(4, vocab, 2));
  const r = await runWithUploads('backend=wasm&steps=3&batch=4&seqlen=64&evalevery=10', {
    model: [join(arch, 'config.json'), join(arch, 'model.safetensors')], data: [train], valid: [valid],
  }, 'page-safetensors-tokens.png');
  assertTrained(r, 3, [0, 3]);
  assert.match(r.log, /model: the picked model files \(hf;/);
  assert.match(r.log, /tokenizer: none/);
  assert.match(r.dataInfo, /train-tokens\.jsonl: 24 examples \(tokens\)/);
  assert.match(r.dataInfo, /validation: valid-tokens\.jsonl: 4 examples \(tokens\)/);
  assert.is(r.before.length, 0, 'no tokenizer, no generations');
  assert.match(r.results, /No tokenizer/);
  assert.not.ok(r.tryShown);
  assertNoPageProblems();
});

test('the example page shows the library\'s line-numbered errors for broken data files', async () => {
  if (!up()) return;
  const vocabSrc = await lib.openModel(new lib.MemorySource('stories260K.gguf', modelBytes));
  const tok = lib.tokenizerFromVocab(vocabSrc.vocab!);
  await vocabSrc.close();
  const cases = [
    // invalid JSON on line 3 (the parser's own reason may be worded differently in Chromium's V8)
    { name: 'broken.jsonl', text: '{"text": "Once upon a time"}\n{"text": "there was a cat"}\n{"text": "who sailed"\n', expect: /^Error: broken\.jsonl:3: invalid JSON \(.+\)\.$/ },
    // a record of another shape than the format line 1 set
    { name: 'mixed.jsonl', text: '{"instruction": "Say hi", "output": "Hi!"}\n\n{"instruction": "Say bye"}\n', expect: null },
  ];
  for (const c of cases) {
    const path = join(dataDir, c.name);
    writeFileSync(path, c.text);
    let nodeMessage = '';
    try {
      await lib.loadDataset(new lib.MemorySource(c.name, new TextEncoder().encode(c.text)), { tokenizer: tok, vocabSize: 512, maxLen: 256 });
    } catch (e) {
      nodeMessage = (e as Error).message;
    }
    assert.match(nodeMessage, new RegExp(`^${c.name.replace('.', '\\.')}:3: `), `the library's message names line 3: ${nodeMessage}`);
    const r = await runWithUploads('backend=wasm&steps=2', { data: [path] }, `page-error-${c.name}.png`);
    assert.is(r.state, 'error', `${c.name}: the page ended in state ${r.state}`);
    if (c.expect) assert.match(r.error, c.expect, `${c.name}: ${r.error}`);
    else assert.is(r.error, `Error: ${nodeMessage}`, `${c.name}: the page shows the library's message`);
    assert.is(r.stepsSeen, 0, 'the data is checked before anything trains');
  }
  assertNoPageProblems();
});

test.run();
