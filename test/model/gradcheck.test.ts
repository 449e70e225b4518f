// Whole-model LoRA gradients against finite differences, in float64 on the reference backend:
// every adapter tensor of a tiny 2-layer GQA model with a 4-bit (NF4 + double quant) base,
// LoRA dropout on, checkpointing on and off; DoRA (QDoRA) with and without dropout, magnitudes
// included; NEFTune noise on the embeddings (the same seed draws the same noise in both the
// training pass and the finite-difference forwards). The loss is the mean over scored tokens.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createReferenceBackend, type ReferenceBackend } from '../../src/backend/reference/index.ts';
import { loadModel } from '../../src/model/load.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import { LoraAdapters, type LoraPair } from '../../src/model/lora.ts';
import { Workspace } from '../../src/model/llama.ts';
import { forwardBackward, forwardLoss, scoredTokens } from '../../src/train/step.ts';
import { fdCheck } from '../helpers/fd.ts';
import { Rng } from '../helpers/index.ts';
import { TINY, randomBatch } from './tiny.ts';
import type { Tensor } from '../../src/backend/backend.ts';

/** f64 values without the float32 rounding of read(). */
async function peek(be: ReferenceBackend, t: Tensor): Promise<Float64Array> {
  await be.flush();
  return Float64Array.from(be.peekF(t));
}

const CASES = [[false, false, 0.1, 0], [true, false, 0.1, 0], [false, true, 0.1, 0], [true, true, 0, 0], [false, true, 0, 0], [false, false, 0, 5], [true, false, 0.1, 5]] as const;
for (const [checkpointing, dora, dropout, neftuneAlpha] of CASES) {
  test(`${dora ? 'DoRA' : 'LoRA'} gradients match finite differences (nf4+dq base, dropout ${dropout}, checkpointing ${checkpointing}${neftuneAlpha > 0 ? `, NEFTune alpha ${neftuneAlpha}` : ''})`, async () => {
    const be = createReferenceBackend({ precision: 'f64' });
    const model = await loadModel(syntheticFromConfig(TINY, 7), be, { quant: 'nf4', doubleQuant: true, blocksize: 32 });
    const lora = new LoraAdapters(be, TINY, { r: 2, alpha: 4, dropout, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora: false, useDora: dora }, true);
    const rng = new Rng(11);
    // random A and B (B = 0 at PEFT init would make every dA zero)
    for (const p of lora.pairs) {
      be.write(p.A, rng.f32(p.A.length, 0.3));
      be.write(p.B, rng.f32(p.B.length, 0.3));
      if (p.dora) {
        be.write(p.dora.m, rng.f32(p.N, 0.5).map((x) => 1 + x));
        p.dora.mReady = true;
      }
    }
    lora.zeroGrads();
    const mb = randomBatch(rng, 2, 6, TINY.vocabSize);
    const ws = new Workspace(be, TINY, { batch: 2, seqLen: 6, training: true, checkpointing, loraRank: 2, loraDropout: dropout, dora });
    const seed = 12345;
    const n = scoredTokens(mb);
    const lossAcc = be.alloc('f32', 12, 'lossAcc');
    be.fill(lossAcc, 0);
    forwardBackward(model, ws, lora, mb, 1 / n, seed, lossAcc, neftuneAlpha);
    const lossWith = async (alpha: number) => {
      forwardLoss(model, ws, lora, mb, seed, undefined, alpha);
      const l = await peek(be, ws.losses);
      return l.reduce((a, b) => a + b, 0) / n;
    };
    const loss = () => lossWith(neftuneAlpha);
    const l0 = (await peek(be, lossAcc)).reduce((a, b) => a + b, 0) / n;
    // DoRA's row norm is a constant of the backward (PEFT detaches it): the finite differences
    // hold ‖W + s·B·A‖² at the value the first forward computed, while g = m / ‖·‖ follows m
    if (dora) {
      (model as unknown as { refreshDora: (p: LoraPair) => void }).refreshDora = (p: LoraPair) => {
        be.doraScale(p.dora!.g, p.dora!.invNorm, p.dora!.m, p.dora!.nsq, p.N);
      };
    }
    assert.ok(Math.abs(l0 - (await loss())) < 1e-12, 'forward loss reproducible');
    // the noise is there: the seeded forward moves with it (else the case would test nothing new)
    if (neftuneAlpha > 0) assert.ok(Math.abs(l0 - (await lossWith(0))) > 1e-4, 'NEFTune noise changes the loss');
    let checked = 0;
    for (const p of lora.pairs) {
      for (const [param, grad] of [[p.A, p.dA], [p.B, p.dB], ...(p.dora ? [[p.dora.m, p.dora.dm]] : [])] as const) {
        checked += (await fdCheck(be, param, grad, loss, { rng, probes: 3, tol: 1e-5 })).checked;
      }
    }
    assert.is(checked, lora.pairs.length * (dora ? 9 : 6));
  });
}

test.run();
