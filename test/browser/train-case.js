// The training run the browser test compares across environments, written once and run twice:
// in the page against the browser bundle (dist/browser/webqlora.js) and in the Node test
// process against src/index.ts. Plain JS so the page can import it without a build step; it
// touches the library only through `lib`, the module namespace it is given.
//
// Setup: stories260K (NF4 + double quant, bs 64), LoRA r 16 / alpha 32 on all 7 linear layers
// (DoRA with `dora`), dropout 0, PEFT init from SampleRng(seed); the demo stories, cut to seqLen
// tokens, batched in the grouped order (packed into rows with `packing`); AdamW at a constant lr,
// clipping 0.3, no warmup.

/** Defaults of the compared run (B 4, T 64, 5 optimizer steps). */
export const CASE_DEFAULTS = { steps: 5, batchSize: 4, seqLen: 64, lr: 3e-3, seed: 0, stories: 64, generate: 0, dora: false, packing: false };

/** FNV-1a 32-bit of bytes, as 8 hex digits: a cheap fingerprint for exact comparisons. */
export function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/**
 * Trains for `steps` optimizer steps and reports every step's loss and gradient norm, plus the
 * final adapter: its safetensors fingerprint and its values (float32, PEFT key order).
 * `modelBytes` is a llama GGUF with stories260K's vocabulary (stories260K.gguf, or the K-quant
 * fixture llama_kquant_mix.gguf). With `generate: n`, n greedy tokens after "Once upon a time"
 * with the trained adapter are returned too. The backend is the caller's (not destroyed here).
 */
export async function trainCase(lib, backend, modelBytes, options = {}) {
  const o = { ...CASE_DEFAULTS, ...options };
  const src = await lib.openModel(new lib.MemorySource('stories260K.gguf', modelBytes));
  try {
    const tok = lib.tokenizerFromVocab(src.vocab);
    const t0 = performance.now();
    const model = await lib.loadModel(src, backend, { quant: 'nf4', doubleQuant: true, blocksize: 64, maxPositions: o.seqLen });
    const ds = await lib.loadDataset(new lib.MemorySource('demo-stories.jsonl', lib.demoJsonl(o.stories)), {
      tokenizer: tok, vocabSize: model.config.vocabSize, maxLen: o.seqLen,
    });
    const lora = new lib.LoraAdapters(backend, model.config, { r: 16, alpha: 32, dropout: 0, targets: [...lib.LINEAR_NAMES], useRslora: false, useDora: o.dora }, true);
    const rng = new lib.SampleRng(o.seed + 1);
    lora.initPeft(() => rng.next());
    const batcher = lib.batcherFor(ds, tok, { batchSize: o.batchSize, order: 'grouped', seed: o.seed, packing: o.packing ? o.seqLen : 0 });
    const trainer = new lib.Trainer(model, lora, batcher, {
      ...lib.TRAIN_DEFAULTS, lr: o.lr, warmupRatio: 0, batchSize: o.batchSize, seqLen: o.seqLen, totalSteps: o.steps, seed: o.seed, packing: o.packing,
    });
    const loadSeconds = (performance.now() - t0) / 1000;
    const losses = [], gradNorms = [], stepSeconds = [];
    for (let s = 0; s < o.steps; s++) {
      const rec = await trainer.trainStep();
      losses.push(rec.loss);
      gradNorms.push(rec.grad_norm);
      stepSeconds.push(rec.seconds);
    }
    trainer.free();
    const generated = o.generate > 0
      ? (await lib.generate(model, tok.encode('Once upon a time'), { maxNewTokens: o.generate, temperature: 0, adapters: lora, stopIds: [] })).outputIds
      : [];
    const out = new lib.MemoryOutDir('adapter');
    await lib.saveAdapter(lora, out, 'stories260K.gguf');
    const weights = out.files.get(lib.ADAPTER_WEIGHTS);
    const st = await lib.openSafetensors(new lib.MemorySource(lib.ADAPTER_WEIGHTS, weights));
    const keys = [...st.tensors.keys()].sort();
    const values = [];
    for (const k of keys) values.push(...(await st.readFloat(k)));
    lora.free();
    model.free();
    return {
      backend: backend.name,
      losses, gradNorms, stepSeconds, loadSeconds,
      adapterFnv: fnv1a(weights),
      adapterConfig: new TextDecoder().decode(out.files.get(lib.ADAPTER_CONFIG)),
      adapterValues: values,
      generated,
    };
  } finally {
    await src.close();
  }
}
