// Browser side of test/browser/chromium.test.ts: the same dist bundle users load, plus the
// shared training run. The test calls window.webqloraTest.* through puppeteer.
import * as lib from '../../dist/browser/webqlora.js';
import { trainCase } from './train-case.js';

const status = document.getElementById('status');
const say = (line) => { status.textContent += `\n${line}`; };

const MODELS = { stories260K: '../../assets/stories260K.gguf', kquant: '../fixtures/gguf-kquants/llama_kquant_mix.gguf' };
const modelBytes = new Map();
async function model(name = 'stories260K') {
  if (!modelBytes.has(name)) {
    const r = await fetch(MODELS[name]);
    if (!r.ok) throw new Error(`fetch ${MODELS[name]}: HTTP ${r.status}`);
    modelBytes.set(name, new Uint8Array(await r.arrayBuffer()));
  }
  return modelBytes.get(name);
}

window.webqloraTest = {
  version: lib.VERSION,

  /** What the page's environment offers: the WebGPU adapter (null if none) and isolation. */
  async env() {
    const gpu = navigator.gpu ?? null;
    const adapter = gpu ? await gpu.requestAdapter() : null;
    return {
      hasNavigatorGpu: gpu !== null,
      adapter: adapter ? { vendor: adapter.info.vendor, architecture: adapter.info.architecture, description: adapter.info.description } : null,
      crossOriginIsolated: globalThis.crossOriginIsolated === true,
      userAgent: navigator.userAgent,
    };
  },

  /** What createBackend({ prefer: 'auto' }) picks here: the backend's name and its info lines. */
  async autoBackend() {
    const infos = [];
    const be = await lib.createBackend({ prefer: 'auto', gpu: navigator.gpu ?? null, onInfo: (m) => infos.push(m) });
    const name = be.name;
    await be.destroy();
    return { name, infos };
  },

  /**
   * Trains the shared case on `prefer` ('wasm' | 'webgpu'); resolves with its result. With
   * `wasmOptions` the wasm backend is made by createWasmBackend(wasmOptions) (a kernel variant
   * forced), else by createBackend as users get it.
   */
  async run(prefer, options = {}, wasmOptions = null) {
    const infos = [];
    const onInfo = (m) => infos.push(m);
    say(`run ${prefer} ${JSON.stringify(options)} ${wasmOptions ? JSON.stringify(wasmOptions) : ''}`);
    const backend = wasmOptions
      ? await lib.createWasmBackend({ ...wasmOptions, onInfo })
      : await lib.createBackend({ prefer, gpu: navigator.gpu ?? null, onInfo });
    try {
      const summary = backend.name === 'wasm' ? lib.wasmBackendInfo(backend).summary : null;
      if (summary && !infos.includes(summary)) infos.push(summary);
      const { model: name, ...caseOptions } = options;
      const res = await trainCase(lib, backend, await model(name), caseOptions);
      say(`${backend.name}: losses ${res.losses.map((l) => l.toFixed(5)).join(' ')}`);
      return { ...res, infos };
    } finally {
      await backend.destroy();
    }
  },
};
say(`webqlora ${lib.VERSION} loaded`);
window.webqloraReady = true;
