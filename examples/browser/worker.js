// The demo's work, off the main thread: WASM kernels run synchronously, so training in a worker
// keeps the page responsive and lets every step's loss reach the page as it happens.
// Protocol (main.js ↔ here):
//   in:  {type:'run', modelUrl, modelFile, backend: 'auto'|'webgpu'|'wasm', steps}
//        {type:'generate', prompt}
//   out: {type:'env'|'backend'|'log'|'step'|'done'|'generated'|'error', ...}
import * as lib from '../../dist/browser/webqlora.js';

const post = (msg, transfer = []) => self.postMessage(msg, transfer);
/** After a run: what a custom prompt needs. */
let trained = null;

async function adapterInfo() {
  const gpu = self.navigator.gpu ?? null;
  const adapter = gpu ? await gpu.requestAdapter() : null;
  return { gpu, adapter, info: adapter ? { vendor: adapter.info.vendor, architecture: adapter.info.architecture } : null };
}

/**
 * The backend for `choice` and a sentence saying which one runs and why. `auto` is the library's
 * rule (createBackend): WebGPU on a GPU adapter; WASM when there is no adapter or only a CPU
 * emulation of one (SwiftShader, lavapipe), and it says so. An explicit WebGPU that cannot
 * start is an error, never a silent fallback.
 */
async function chooseBackend(choice) {
  const gpu = self.navigator.gpu ?? null;
  const infos = [];
  const backend = await lib.createBackend({ prefer: choice, gpu, onInfo: (m) => infos.push(m) });
  // createBackend's words are written for the CLI ("backend: wasm (… use --backend webgpu …)")
  const why = infos.join('; ').replace(/^backend: \w+ ?/, '').replace(/^\((.*)\)$/, '$1').replace(/--backend (\w+)/g, 'Backend “$1”');
  const name = backend.name === 'webgpu' ? 'WebGPU' : backend.name === 'wasm' ? `WASM [${lib.wasmBackendInfo(backend).summary.replace(/^wasm: /, '')}]` : backend.name;
  const text = choice === backend.name ? `${name} (chosen${why ? ': ' + why : ''})` : `${name}${why ? ' — ' + why : ''}`;
  return { backend, text, warn: choice === 'auto' && backend.name !== 'webgpu' && gpu !== null };
}

async function modelSource(msg) {
  if (msg.modelFile) return new lib.BlobSource(msg.modelFile);
  const r = await fetch(msg.modelUrl);
  if (!r.ok) throw new Error(`could not fetch ${msg.modelUrl}: HTTP ${r.status}`);
  return new lib.BlobSource(await r.blob(), msg.modelUrl.split('/').pop());
}

async function run(msg) {
  if (trained) {
    await trained.backend.destroy();
    await trained.source.close();
    trained = null;
  }
  const t0 = performance.now();
  const { backend, text, warn } = await chooseBackend(msg.backend);
  post({ type: 'backend', name: backend.name, text, warn });
  let source = null;
  try {
    const file = await modelSource(msg);
    source = await lib.openModel(file);
    if (!source.vocab) throw new Error(`${file.name}: the model file carries no tokenizer vocabulary; the demo needs a .gguf with an embedded (llama) vocabulary.`);
    const tok = lib.tokenizerFromVocab(source.vocab);
    const c = source.config;
    post({ type: 'log', line: `model: ${file.name} (${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}), held as NF4 + double quantization; LoRA r 16 on all 7 linear layers` });
    const res = await lib.runDemo(source, tok, backend, {
      steps: msg.steps,
      onLog: (line) => post({ type: 'log', line }),
      onStep: (rec, total) => post({ type: 'step', step: rec.step, total, loss: rec.loss, lr: rec.lr, gradNorm: rec.grad_norm, tokensPerS: rec.tokens_per_s, seconds: rec.seconds }),
    });
    const out = new lib.MemoryOutDir('adapter');
    await lib.saveAdapter(res.lora, out, file.name);
    const files = [...out.files].map(([name, bytes]) => ({ name, bytes: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) }));
    trained = { backend, source, tok, model: res.model, lora: res.lora };
    post({
      type: 'done', prompts: lib.DEMO_PROMPTS, before: res.before, after: res.after, firstLoss: res.firstLoss, lastLoss: res.lastLoss,
      seconds: (performance.now() - t0) / 1000, files,
    }, files.map((f) => f.bytes));
  } catch (e) {
    if (!trained) {
      await backend.destroy();
      await source?.close();
    }
    throw e;
  }
}

async function generateBoth(prompt) {
  if (!trained) throw new Error('train first');
  const { model, lora, tok } = trained;
  const ids = tok.encode(prompt);
  const text = async (adapters) => {
    const r = await lib.generate(model, ids, { maxNewTokens: 80, adapters });
    return tok.decode([...ids, ...r.outputIds]).replace(/\n/g, ' ');
  };
  post({ type: 'generated', prompt, before: await text(null), after: await text(lora) });
}

self.onmessage = async (ev) => {
  const msg = ev.data;
  try {
    if (msg.type === 'run') await run(msg);
    else if (msg.type === 'generate') await generateBoth(msg.prompt);
  } catch (e) {
    post({ type: 'error', message: (e instanceof Error ? e.message : String(e)).replace(/--backend (\w+)/g, 'Backend “$1”') });
  }
};

// Tell the page what this environment offers as soon as the worker is up.
adapterInfo().then(
  ({ gpu, info }) => post({ type: 'env', hasGpu: gpu !== null, adapter: info, crossOriginIsolated: self.crossOriginIsolated === true, version: lib.VERSION }),
  (e) => post({ type: 'env', hasGpu: true, adapter: null, adapterError: e.message, crossOriginIsolated: self.crossOriginIsolated === true, version: lib.VERSION }),
);
