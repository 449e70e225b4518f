// Preference tuning (train/preference.ts):
//   - the DPO and ORPO terms of hand-computed pairs, and the DPO loss of a tiny model's step equal
//     to the formula on log-probabilities the test sums itself (policy with the adapter, reference
//     without it);
//   - the step's LoRA gradients (two micro-batches of pairs, dropout on, small loss-head chunks)
//     equal float64 finite differences of the step's loss, for DPO and for ORPO;
//   - a short DPO run on WASM on pairs whose chosen answer follows a rule makes the margin grow and
//     the accuracy rise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Tensor } from '../../src/backend/backend.ts';
import { createReferenceBackend, type ReferenceBackend } from '../../src/backend/reference/index.ts';
import { createWasmBackend } from '../../src/backend/wasm/index.ts';
import { assemblePairs, loadPreferenceDataset, PreferenceBatcher, type PreferencePair } from '../../src/data/preference.ts';
import { FileSource } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { Workspace } from '../../src/model/llama.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import { pairTerms, PreferenceObjective, type PreferenceMethod } from '../../src/train/preference.ts';
import { forwardLoss, type MicroBatch } from '../../src/train/step.ts';
import { Trainer, TRAIN_DEFAULTS, type StepRecord } from '../../src/train/trainer.ts';
import { fdCheck } from '../helpers/fd.ts';
import { Rng, STORIES_GGUF } from '../helpers/index.ts';
import { TINY } from '../model/tiny.ts';

const near = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a}, expected ${b}`);

test('DPO and ORPO terms of hand-computed pairs', () => {
  // DPO, β = 0.1: logp_c = −5, ref_c = −6, logp_r = −7, ref_r = −6.5
  //   z = 0.1·((−5 + 6) − (−7 + 6.5)) = 0.15;  L = −log σ(0.15) = log(1 + e^−0.15) = 0.62095705
  //   rewards 0.1 and −0.05; dL/dCE_row = ±β·σ(−z) = ±0.1·0.46257015
  const d = pairTerms('dpo', 0.1, { chosen: -5, rejected: -7, refChosen: -6, refRejected: -6.5, nChosen: 3, nRejected: 4 });
  near(d.loss, 0.62095705, 1e-8, 'DPO loss');
  near(d.rewardChosen, 0.1, 1e-12, 'reward chosen');
  near(d.rewardRejected, -0.05, 1e-12, 'reward rejected');
  near(d.gChosen, 0.046257015, 1e-9, 'dL/dCE chosen');
  near(d.gRejected, -0.046257015, 1e-9, 'dL/dCE rejected');
  // ORPO, λ = 0.1: logp_c = −1 over 2 tokens (ā_c = −0.5), logp_r = −6 over 4 (ā_r = −1.5)
  //   log(1 − e^−0.5) = −0.93275213, log(1 − e^−1.5) = −0.25248246
  //   lo = (−0.5 + 0.93275213) − (−1.5 + 0.25248246) = 1.68026967
  //   λ·(−log σ(lo)) = 0.1·log(1 + e^−1.68026967) = 0.01708592
  const o = pairTerms('orpo', 0.1, { chosen: -1, rejected: -6, refChosen: NaN, refRejected: NaN, nChosen: 2, nRejected: 4 });
  near(o.logOdds, 1.68026967, 1e-8, 'log-odds ratio');
  near(o.loss, 0.01708592, 1e-8, 'ORPO odds-ratio term');
  near(o.rewardChosen, -0.05, 1e-12, 'ORPO reward chosen (β·ā_c)');
});

/** Random pairs: prompt 1–3 tokens, responses 1–4 tokens (one pair shares nothing but the prompt). */
function randomPairs(rng: Rng, n: number, V: number): PreferencePair[] {
  const toks = (k: number) => Array.from({ length: k }, () => 3 + rng.int(V - 3));
  return Array.from({ length: n }, () => {
    const prompt = [1, ...toks(1 + rng.int(3))];
    const side = () => {
      const r = toks(1 + rng.int(4));
      return { inputIds: [...prompt, ...r], labels: [...prompt.map(() => -100), ...r] };
    };
    return { chosen: side(), rejected: side() };
  });
}

async function peek(be: ReferenceBackend, t: Tensor): Promise<Float64Array> {
  await be.flush();
  return Float64Array.from(be.peekF(t));
}

/** The step's loss, written out here on its own in float64 (file comment of train/preference.ts). */
async function stepLoss(method: PreferenceMethod, beta: number, be: ReferenceBackend, model: Awaited<ReturnType<typeof loadModel>>, ws: Workspace, lora: LoraAdapters, mbs: Array<MicroBatch & { pairs: number }>, seeds: Array<number | undefined>): Promise<{ loss: number; margin: number }> {
  const logps = async (mb: MicroBatch & { pairs: number }, adapter: LoraAdapters | null, seed: number | undefined) => {
    forwardLoss(model, ws, adapter, mb, seed);
    const l = await peek(be, ws.losses);
    const sum = new Float64Array(mb.B), n = new Float64Array(mb.B);
    for (let r = 0; r < mb.B * mb.T; r++) if (mb.targets[r] !== -100) { sum[Math.floor(r / mb.T)]! -= l[r]!; n[Math.floor(r / mb.T)]!++; }
    return { sum, n };
  };
  const logsig = (x: number) => -Math.log1p(Math.exp(-x));
  let pairLoss = 0, P = 0, nll = 0, Nc = 0, margin = 0;
  for (const [k, mb] of mbs.entries()) {
    const pol = await logps(mb, lora, seeds[k]);
    const ref = method === 'dpo' ? await logps(mb, null, seeds[k]) : null;
    for (let i = 0; i < mb.pairs; i++) {
      const c = i, r = mb.pairs + i;
      P++;
      if (method === 'dpo') {
        const z = beta * ((pol.sum[c]! - ref!.sum[c]!) - (pol.sum[r]! - ref!.sum[r]!));
        pairLoss -= logsig(z);
        margin += z;
      } else {
        const ac = pol.sum[c]! / pol.n[c]!, ar = pol.sum[r]! / pol.n[r]!;
        const lo = (ac - Math.log(1 - Math.exp(ac))) - (ar - Math.log(1 - Math.exp(ar)));
        pairLoss -= beta * logsig(lo);
        nll -= pol.sum[c]!;
        Nc += pol.n[c]!;
        margin += beta * (ac - ar);
      }
    }
  }
  return { loss: pairLoss / P + (method === 'orpo' ? nll / Nc : 0), margin: margin / P };
}

test('DPO step loss on a tiny model equals −log σ(β·Δ) on log-probabilities summed here', async () => {
  const be = createReferenceBackend({ precision: 'f64' });
  const model = await loadModel(syntheticFromConfig(TINY, 7), be, { quant: 'nf4', doubleQuant: true, blocksize: 32 });
  const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0, targets: 'all-linear', useRslora: false }, true);
  const rng = new Rng(21);
  for (const p of lora.pairs) { be.write(p.A, rng.f32(p.A.length, 0.3)); be.write(p.B, rng.f32(p.B.length, 0.3)); }
  const mb = assemblePairs(randomPairs(rng, 2, TINY.vocabSize), 0);
  const ws = new Workspace(be, TINY, { batch: mb.B, seqLen: mb.T, training: true, checkpointing: false, loraRank: 2, preference: true });
  const expected = await stepLoss('dpo', 0.1, be, model, ws, lora, [mb], [undefined]);
  lora.zeroGrads();
  const got = await new PreferenceObjective(model, 'dpo', 0.1).accumulate(ws, lora, [mb], () => undefined);
  // the objective reads the per-row losses through read() (float32)
  near(got.loss, expected.loss, 1e-6 * expected.loss, 'DPO loss');
  near(got.metrics['rewards/margins'], expected.margin, 1e-6, 'margin');
  assert.ok(Math.abs(expected.margin) > 1e-3, 'the adapter moves the policy away from the reference');
  // a packed micro-batch (docStart) is refused: a pair's rows are whole sequences in every pass
  let err: unknown = null;
  await new PreferenceObjective(model, 'dpo', 0.1).accumulate(ws, lora, [{ ...mb, docStart: new Int32Array(mb.B * mb.T) }], () => undefined).catch((e) => { err = e; });
  assert.match(String(err), /preference tuning takes unpacked micro-batches of pairs/);
});

for (const method of ['dpo', 'orpo'] as const) {
  test(`${method}: LoRA gradients of the step's loss equal float64 finite differences (2 micro-batches, dropout 0.1, 3-row head chunks)`, async () => {
    const be = createReferenceBackend({ precision: 'f64' });
    const model = await loadModel(syntheticFromConfig(TINY, 7), be, { quant: 'nf4', doubleQuant: true, blocksize: 32 });
    const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout: 0.1, targets: 'all-linear', useRslora: false }, true);
    const rng = new Rng(method === 'dpo' ? 31 : 32);
    for (const p of lora.pairs) { be.write(p.A, rng.f32(p.A.length, 0.3)); be.write(p.B, rng.f32(p.B.length, 0.3)); }
    const mbs = [assemblePairs(randomPairs(rng, 2, TINY.vocabSize), 0), assemblePairs(randomPairs(rng, 2, TINY.vocabSize), 0)];
    const T = Math.max(...mbs.map((m) => m.T));
    const ws = new Workspace(be, TINY, { batch: 4, seqLen: T, training: true, checkpointing: false, loraRank: 2, loraDropout: 0.1, headRows: 3, preference: true });
    const seeds = [101, 102], beta = 0.5;
    lora.zeroGrads();
    const got = await new PreferenceObjective(model, method, beta).accumulate(ws, lora, mbs, (i) => seeds[i]);
    const loss = async () => (await stepLoss(method, beta, be, model, ws, lora, mbs, seeds)).loss;
    near(got.loss, await loss(), 1e-6, 'step loss');
    let checked = 0;
    for (const p of lora.pairs) {
      for (const [param, grad] of [[p.A, p.dA], [p.B, p.dB]] as const) {
        // the objective weighs rows with float32-read log-probabilities: ~1e-7 relative
        checked += (await fdCheck(be, param, grad, loss, { rng, probes: 2, tol: 1e-4 })).checked;
      }
    }
    assert.is(checked, lora.pairs.length * 4);
  });
}

test('a short DPO run on WASM: the chosen-vs-rejected margin grows and the accuracy rises', async () => {
  // the chosen answer repeats the adjective of the prompt, the rejected one names another
  const adjs = ['big', 'small', 'red', 'happy', 'sad'], nouns = ['dog', 'cat', 'ball', 'bird'];
  const recs: string[] = [];
  for (const [i, noun] of nouns.entries()) {
    for (const [j, adj] of adjs.entries()) {
      recs.push(JSON.stringify({ prompt: `Lily had a ${adj} ${noun}. The ${noun} was`, chosen: ` ${adj}.`, rejected: ` ${adjs[(j + 1 + i) % adjs.length]}.` }));
    }
  }
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-dpo-'));
  const be = await createWasmBackend({ threads: 1 });
  try {
    writeFileSync(join(tmp, 'pairs.jsonl'), recs.join('\n') + '\n');
    const src = await openModelPath(STORIES_GGUF);
    const tok = tokenizerFromVocab(src.vocab!);
    const model = await loadModel(src, be, { quant: 'nf4', doubleQuant: true, blocksize: 64 });
    await src.close();
    const fsrc = await FileSource.open(join(tmp, 'pairs.jsonl'));
    const ds = await loadPreferenceDataset(fsrc, { tokenizer: tok, maxLen: 64 });
    await fsrc.close();
    assert.is(ds.pairs.length, 20);
    const lora = new LoraAdapters(be, model.config, { r: 8, alpha: 16, dropout: 0, targets: 'all-linear', useRslora: false }, true);
    const rng = new Rng(4);
    lora.initPeft(() => rng.next());
    const steps = 20;
    const batcher = new PreferenceBatcher(ds.pairs, { batchSize: 4, seed: 0, padId: tok.eosId ?? 0 });
    const trainer = new Trainer(model, lora, batcher, { ...TRAIN_DEFAULTS, lr: 5e-3, warmupRatio: 0, batchSize: 4, seqLen: 64, totalSteps: steps, method: 'dpo', beta: 0.1 });
    const hist: StepRecord[] = [];
    for (let s = 0; s < steps; s++) hist.push(await trainer.trainStep());
    const first = hist[0]!, last = hist.slice(-5);
    const mean = (k: 'rewards/margins' | 'rewards/accuracies') => last.reduce((a, h) => a + h[k]!, 0) / last.length;
    // step 1: PEFT's B = 0, so the policy is the reference: margin 0, no pair ranked, loss log 2
    near(first['rewards/margins']!, 0, 1e-6, 'first margin');
    near(first.loss, Math.LN2, 1e-5, 'first loss');
    const m = mean('rewards/margins'), acc = mean('rewards/accuracies');
    process.stdout.write(`  DPO margins: step 1 ${first['rewards/margins']!.toFixed(4)} (accuracy ${first['rewards/accuracies']}), last 5 steps ${m.toFixed(4)} (accuracy ${acc.toFixed(2)}), loss ${first.loss.toFixed(4)} → ${hist[steps - 1]!.loss.toFixed(4)}\n`);
    assert.ok(m > 0.05, `the margin grows: ${first['rewards/margins']} → ${m}`);
    assert.ok(acc > first['rewards/accuracies']! && acc >= 0.75, `the accuracy rises: ${first['rewards/accuracies']} → ${acc}`);
    assert.ok(hist[steps - 1]!.loss < first.loss, 'the loss falls');
    trainer.free();
    lora.free();
    model.free();
  } finally {
    await be.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
