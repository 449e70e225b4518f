// The page's work, off the main thread: WASM kernels run synchronously, so training in a worker
// keeps the page responsive and lets every step's loss reach the page as it happens.
// Protocol (main.js ↔ here):
//   in:  {type:'run', backend: 'auto'|'webgpu'|'wasm',
//         model: {kind:'url', url} | {kind:'file', file} | {kind:'files', name, files: [{path, file}]},
//         tokenizer: File[] (empty: the model's own), data: File|null (null: the demo stories),
//         valid: File|null (null: 10% held out), format, trainOnPrompt,
//         steps, batchSize, seqLen, lr, evalEvery, prompts: string[]}
//        {type:'generate', prompt}
//   out: {type:'env'|'backend'|'log'|'data'|'status'|'step'|'valid'|'done'|'generated'|'error', ...}
// The run is the demo's (runDemo: NF4 + double quant, LoRA r 16 on all linear layers, AdamW at a
// constant lr, grouped batches) written out here so that it can take any model and data and
// evaluate a validation set every `evalEvery` steps, as `webqlora train --eval-every` does.
import * as lib from '../../dist/browser/webqlora.js';

const post = (msg, transfer = []) => self.postMessage(msg, transfer);
/** After a run: what a custom prompt needs. */
let trained = null;

async function adapterInfo() {
  const gpu = self.navigator.gpu ?? null;
  const adapter = gpu ? await gpu.requestAdapter() : null;
  return { gpu, adapter, info: adapter ? { vendor: adapter.info.vendor, architecture: adapter.info.architecture } : null };
}

/** The page's names for the CLI flags a library message may mention. */
const FLAG_LABELS = {
  backend: 'Backend', tokenizer: 'Tokenizer', 'train-on-prompt': 'train on prompt', 'seq-len': 'Sequence length',
  steps: 'Steps', 'batch-size': 'Batch', lr: 'Learning rate', format: 'format', valid: 'Validation', data: 'Training data', model: 'Model',
};
const BACKEND_LABELS = { webgpu: 'WebGPU', wasm: 'WASM', auto: 'auto' };

/** A library message as the page's words: "--backend webgpu" → Backend “WebGPU”, "--tokenizer" → “Tokenizer”. */
function pageWords(message) {
  return message
    .replace(/--backend (\w+)/g, (_, b) => `Backend “${BACKEND_LABELS[b] ?? b}”`)
    .replace(/--([a-z][a-z-]*)/g, (m, f) => (FLAG_LABELS[f] ? `“${FLAG_LABELS[f]}”` : m));
}

/**
 * The backend for `choice` and one line saying which one runs, how, and why: built from the
 * backend's own description (wasmBackendInfo, the adapter name) plus the reason createBackend gives
 * for passing over WebGPU; never the CLI's sentence pasted in. `auto` is the library's rule:
 * WebGPU on a GPU adapter; WASM when there is no adapter or only a CPU emulation of one
 * (SwiftShader, lavapipe). An explicit WebGPU that cannot start is an error, never a silent fallback.
 */
async function chooseBackend(choice) {
  const gpu = self.navigator.gpu ?? null;
  const infos = [];
  const backend = await lib.createBackend({ prefer: choice, gpu, onInfo: (m) => infos.push(m) });
  const info = infos.find((m) => m.startsWith(`backend: ${backend.name}`)) ?? '';
  const chosen = choice === backend.name ? 'chosen; ' : '';
  let text;
  if (backend.name === 'wasm') {
    const how = lib.wasmBackendInfo(backend).summary.replace(/^wasm:\s*/, '');
    // createBackend says "backend: wasm, <how> (<why not WebGPU>)"
    const rest = info.startsWith(`backend: wasm, ${how}`) ? info.slice(`backend: wasm, ${how}`.length).trim() : '';
    const whyNotGpu = rest.replace(/^\((.*)\)$/, '$1');
    text = `WASM — ${chosen}${how.replace(/ — /g, '; ')}${whyNotGpu ? `; not WebGPU: ${pageWords(whyNotGpu)}` : ''}`;
  } else if (backend.name === 'webgpu') {
    // "backend: webgpu (<adapter>[, a CPU emulation: expect it to be slow])"
    const adapter = info.replace(/^backend: webgpu\s*/, '').replace(/^\((.*)\)$/, '$1');
    text = `WebGPU — ${chosen}${adapter || 'adapter unnamed'}`;
  } else {
    text = `${backend.name} — ${chosen.replace(/; $/, '')}`;
  }
  return { backend, text, warn: choice === 'auto' && backend.name !== 'webgpu' && gpu !== null };
}

/** The model as a ByteSource (one file) or a DirSource (an HF folder, or its files picked together). */
async function modelSource(m) {
  if (m.kind === 'file') return new lib.BlobSource(m.file);
  if (m.kind === 'files') {
    const files = new Map(m.files.map((f) => [f.path, f.file]));
    if (!files.has('config.json')) {
      const has = [...files.keys()].filter((k) => !k.includes('/')).join(', ');
      throw new Error(`${m.name}: no config.json (found ${has || 'nothing'}). A Hugging Face model needs config.json next to model.safetensors (or its shards and model.safetensors.index.json): pick the folder, or all of those files together; or pick one .gguf file.`);
    }
    return new lib.MapDirSource(m.name, files);
  }
  const r = await fetch(m.url);
  if (!r.ok) throw new Error(`could not fetch ${m.url}: HTTP ${r.status}`);
  return new lib.BlobSource(await r.blob(), m.url.split('/').pop());
}

/**
 * The tokenizer, as the CLI finds it: the picked files (a .gguf vocabulary, or tokenizer.json /
 * tokenizer.model with tokenizer_config.json), else the model folder's tokenizer files, else
 * the model file's own vocabulary; null when there is none (the tokens format needs none).
 */
async function loadTokenizer(picked, file, source) {
  if (picked.length === 1 && /\.gguf$/i.test(picked[0].name)) {
    // as --tokenizer X.gguf: the vocabulary and its chat template, from a model or a vocabulary-only file
    return { tok: await lib.tokenizerFromGguf(new lib.BlobSource(picked[0])), from: picked[0].name };
  }
  if (picked.length > 0) {
    // the files under the names loadTokenizerFromDir looks for, whatever they are called here
    const byRole = new Map();
    for (const f of picked) {
      const n = f.name.toLowerCase();
      const role = n.endsWith('.model') ? 'tokenizer.model' : n.includes('tokenizer_config') ? 'tokenizer_config.json' : n.endsWith('.json') && !n.includes('special_tokens') ? 'tokenizer.json' : null;
      if (role) byRole.set(role, f);
    }
    const tok = await lib.loadTokenizerFromDir(new lib.MapDirSource('tokenizer', byRole));
    if (!tok) throw new Error(`Tokenizer: ${picked.map((f) => f.name).join(', ')} holds no tokenizer (pick tokenizer.json, with tokenizer_config.json for a chat template, or tokenizer.model, or a .gguf with a vocabulary).`);
    return { tok, from: picked.map((f) => f.name).join(' + ') };
  }
  if (typeof file.list === 'function') {
    const tok = await lib.loadTokenizerFromDir(file);
    if (tok) return { tok, from: `${file.name} (tokenizer files)` };
  }
  if (source.vocab) return { tok: lib.tokenizerFromVocab(source.vocab), from: `${file.name} (embedded vocabulary)` };
  return { tok: null, from: null };
}

/** What the data loaders said, in the words of the CLI's `describeDataset`. */
function describeDataset(ds) {
  let s = `${ds.name}: ${ds.examples.length} examples (${ds.format}${ds.chatRendering ? `, ${ds.chatRendering} rendering` : ''}), ${ds.tokens} tokens, ${ds.scored} scored`;
  if (ds.truncated) s += `, ${ds.truncated} truncated`;
  if (ds.dropped) s += `, ${ds.dropped} dropped (nothing left to score)`;
  return s;
}

/** Token ids of a prompt, laid out as the training data shows prompts to the model. */
function promptIds(tok, format, text) {
  if (format === 'alpaca') return tok.encode(lib.alpacaPrompt(text, ''));
  if (format === 'chat') return lib.encodeChatPrompt(tok, [{ role: 'user', content: text }]);
  return tok.encode(text);
}

/** Greedy continuations of `prompt` without and with the adapter (the base is frozen: "before" is the base model). */
async function beforeAfter(prompt) {
  const { model, lora, tok, format } = trained;
  const ids = promptIds(tok, format, prompt);
  // raw-text formats show prompt + continuation; templated ones the reply alone
  const whole = format !== 'alpaca' && format !== 'chat';
  const text = async (adapters) => {
    const r = await lib.generate(model, ids, { maxNewTokens: 80, adapters });
    return tok.decode(whole ? [...ids, ...r.outputIds] : r.outputIds).replace(/\n/g, ' ').trim();
  };
  return { before: await text(null), after: await text(lora) };
}

async function release() {
  if (!trained) return;
  trained.lora.free();
  trained.model.free();
  await trained.backend.destroy();
  trained = null;
}

async function run(msg) {
  await release();
  const t0 = performance.now();
  const { backend, text, warn } = await chooseBackend(msg.backend);
  post({ type: 'backend', name: backend.name, text, warn });
  let source = null, model = null, lora = null, trainer = null;
  try {
    // 1. the model's header and the tokenizer: no weight is read yet
    const file = await modelSource(msg.model);
    source = await lib.openModel(file);
    const c = source.config;
    const { tok, from: tokFrom } = await loadTokenizer(msg.tokenizer, file, source);
    const seqLen = Math.min(msg.seqLen, c.maxPositionEmbeddings);
    post({ type: 'log', line: `model: ${file.name} (${source.format}; ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, context ${c.maxPositionEmbeddings}); tokenizer: ${tokFrom ?? 'none (the tokens format needs none)'}` });
    if (seqLen < msg.seqLen) post({ type: 'log', line: `sequence length ${msg.seqLen} is longer than the model's context: using ${seqLen}` });

    // 2. the data, checked before the (possibly long) weight load; errors name file and line
    const trainSrc = msg.data ? new lib.BlobSource(msg.data) : new lib.MemorySource('demo-stories.jsonl', lib.demoJsonl(256));
    const validSrc = msg.valid ? new lib.BlobSource(msg.valid) : null;
    const { train, valid, validSource } = await lib.loadTrainValid(trainSrc, validSrc, {
      format: msg.format, tokenizer: tok, vocabSize: c.vocabSize, maxLen: seqLen, trainOnPrompt: msg.trainOnPrompt, seed: 0,
    });
    const format = train.format;
    const validWhy = validSource === 'file' ? describeDataset(valid)
      : validSource === 'split' ? `${valid.examples.length} examples held out from the training data (10%)`
        : 'none (fewer than 10 examples to hold out from; pick a Validation file)';
    post({ type: 'data', lines: [`training data ${describeDataset(train)}`, `validation: ${validWhy}`] });

    // 3. the weights, in NF4 with double quantization
    model = await lib.loadModel(source, backend, {
      quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: Math.max(seqLen, 256),
      onProgress: (done, total, name) => post({ type: 'status', text: `loading the model [${done}/${total}] ${name}` }),
    });
    await source.close();
    source = null;
    post({ type: 'log', line: `model held as NF4 + double quantization (block 64); ${(backend.memory().liveBytes / 2 ** 20).toFixed(1)} MiB in ${backend.name} memory` });

    lora = new lib.LoraAdapters(backend, model.config, { ...lib.DEFAULT_LORA, r: msg.loraR, alpha: msg.loraAlpha, useDora: msg.dora }, true);
    const rng = new lib.SampleRng(1);
    lora.initPeft(() => rng.next());
    const batcher = lib.batcherFor(train, tok, { batchSize: msg.batchSize, order: 'grouped', seed: 0, packing: msg.packing ? seqLen : 0 });
    if (msg.packing) post({ type: 'log', line: `packing: ${train.examples.length} examples in ${batcher.packedRows.length} rows of ≤ ${seqLen} tokens` });
    trainer = new lib.Trainer(model, lora, batcher, {
      ...lib.TRAIN_DEFAULTS, lr: msg.lr, warmupRatio: 0, batchSize: msg.batchSize, seqLen, totalSteps: msg.steps, seed: 0, packing: msg.packing,
    });
    post({ type: 'log', line: `training ${lora.paramCount.toLocaleString('en-US')} ${lora.useDora ? 'DoRA' : 'LoRA'} parameters (r ${lora.config.r}, alpha ${lora.config.alpha}) for ${msg.steps} steps of ${msg.batchSize} sequences of ≤ ${seqLen} tokens, lr ${msg.lr}` });

    // 4. train, validating at step 0, every evalEvery steps and at the end
    const padId = lib.padIdFor(tok);
    const validate = async (step) => {
      if (!valid) return;
      post({ type: 'status', text: `validating (${valid.examples.length} examples)…` });
      const r = await lib.evaluate(model, lib.evalBatches(valid.examples, { batchSize: msg.batchSize, padId }), {
        maxBatch: msg.batchSize, maxSeqLen: seqLen, adapters: lora,
      });
      post({ type: 'valid', step, loss: r.loss, perplexity: r.perplexity, tokens: r.tokens });
    };
    await validate(0);
    const tTrain = performance.now();
    let firstLoss = NaN, lastLoss = NaN;
    for (let s = 1; s <= msg.steps; s++) {
      const rec = await trainer.trainStep();
      if (s === 1) firstLoss = rec.loss;
      lastLoss = rec.loss;
      // the ETA includes validation: elapsed covers both
      const elapsed = (performance.now() - tTrain) / 1000;
      post({
        type: 'step', step: rec.step, total: msg.steps, loss: rec.loss, lr: rec.lr, gradNorm: rec.grad_norm, tokensPerS: rec.tokens_per_s,
        seconds: rec.seconds, elapsed, eta: (elapsed / s) * (msg.steps - s),
      });
      if (s % msg.evalEvery === 0 || s === msg.steps) await validate(s);
    }
    trainer.free();
    trainer = null;

    // 5. generations before and after, and the adapter as PEFT files
    trained = { backend, tok, format, model, lora };
    const prompts = tok ? msg.prompts : [];
    const before = [], after = [];
    for (const p of prompts) {
      post({ type: 'status', text: `generating for “${p}”…` });
      const r = await beforeAfter(p);
      before.push(r.before);
      after.push(r.after);
    }
    const out = new lib.MemoryOutDir('adapter');
    await lib.saveAdapter(lora, out, file.name);
    const files = [...out.files].map(([name, bytes]) => ({ name, bytes: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) }));
    post({
      type: 'done', prompts, before, after, firstLoss, lastLoss, seconds: (performance.now() - t0) / 1000, files, canGenerate: tok !== null,
      noGenerationWhy: tok ? null : 'No tokenizer, so no generations: pick a Tokenizer to see text before and after.',
    }, files.map((f) => f.bytes));
  } catch (e) {
    if (!trained) {
      trainer?.free();
      lora?.free();
      model?.free();
      await backend.destroy();
    }
    await source?.close();
    throw e;
  }
}

async function generateBoth(prompt) {
  if (!trained?.tok) throw new Error('train first (with a tokenizer)');
  post({ type: 'generated', prompt, ...(await beforeAfter(prompt)) });
}

self.onmessage = async (ev) => {
  const msg = ev.data;
  try {
    if (msg.type === 'run') await run(msg);
    else if (msg.type === 'generate') await generateBoth(msg.prompt);
  } catch (e) {
    let message = pageWords(e instanceof Error ? e.message : String(e));
    if (/format needs a tokenizer/.test(message) && !message.includes('“Tokenizer”')) message += ' Pick one under Tokenizer.';
    post({ type: 'error', message });
  }
};

// Tell the page what this environment offers as soon as the worker is up.
adapterInfo().then(
  ({ gpu, info }) => post({ type: 'env', hasGpu: gpu !== null, adapter: info, crossOriginIsolated: self.crossOriginIsolated === true, version: lib.VERSION }),
  (e) => post({ type: 'env', hasGpu: true, adapter: null, adapterError: e.message, crossOriginIsolated: self.crossOriginIsolated === true, version: lib.VERSION }),
);
