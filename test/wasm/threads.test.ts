// The WASM worker pool (src/backend/wasm/pool.ts):
//  - every kernel the backend splits gives, through 2 and 3 threads, the bits of one thread
//    (and each call really went through the pool);
//  - a whole training step (losses, gradient norm, LoRA gradients, updated adapters) is
//    bit-identical with 1 and 2 threads;
//  - the shared-memory binaries are safe to instantiate once per worker over one memory (data
//    segments below heap_base, no mutable globals, no start function; the static region is
//    unchanged after workers start and run);
//  - pool start/stop, a failing worker surfaces as an error (not a hang), destroy() lets Node exit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { Rng, REPO, assertBitsEqual } from '../helpers/index.ts';
import { createWasmBackend, wasmBackendInfo, wasmInternals, splitRange } from '../../src/backend/wasm/index.ts';
import { KERNEL_WASM_BASE64 } from '../../src/generated/kernels-wasm.ts';
import { relaxedSimdSupported } from '../../src/backend/wasm/module.ts';
import { docStartOf } from '../../src/data/pack.ts';
import type { AttentionShape, Backend, QuantWeight, Tensor } from '../../src/backend/backend.ts';
import { quantize4bit } from '../../src/quant/quantize.ts';
import { syntheticFromConfig } from '../../src/model/synthetic.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { loadModel } from '../../src/model/load.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { Trainer, TRAIN_DEFAULTS, type MicroBatchSource } from '../../src/train/trainer.ts';
import type { MicroBatch } from '../../src/train/step.ts';

const be1 = await createWasmBackend({ threads: 1 });
const be2 = await createWasmBackend({ threads: 2 });
const be3 = await createWasmBackend({ threads: 3 }); // uneven splits, more threads than this machine may have
const multi: Array<[string, Backend]> = [['2 threads', be2], ['3 threads', be3]];

type Data = Float32Array | Int32Array | Uint8Array | Uint16Array;

/**
 * A kernel case: `setup` uploads the same inputs to a backend and returns the call and the
 * tensors it writes. The call runs on 1 thread and on each pooled backend; outputs must match
 * bit for bit, and the pooled call must have gone through the pool.
 */
interface Case {
  name: string;
  setup(be: Backend): Promise<{ run: () => void; outputs: Tensor[] }>;
}

function put(be: Backend, data: Data, label: string): Tensor {
  const type = data instanceof Float32Array ? 'f32' : data instanceof Int32Array ? 'i32' : data instanceof Uint8Array ? 'u8' : 'f16';
  const t = be.alloc(type, data.length, label);
  be.write(t, data);
  return t;
}

async function quantW(be: Backend, N: number, K: number, seed: number): Promise<QuantWeight> {
  const rng = new Rng(seed);
  const q = await quantize4bit(rng.f32(N * K, 0.5), { quantType: 'nf4', blocksize: 64, doubleQuant: true, shape: [N, K] });
  return be.uploadQuant({ N, K, blocksize: 64, quantType: 'nf4', packed: q.packed, quantMap: q.quantMap, absmax: q.absmax, dq: q.dq, label: `W [${N},${K}]` });
}

const cases: Case[] = [];
const gemm = (M: number, N: number, K: number, transA: boolean, transB: boolean, extra: { accumulate?: boolean; bias?: boolean } = {}) => cases.push({
  name: `matmul ${M}x${N}x${K} transA ${transA} transB ${transB}${extra.accumulate ? ' acc' : ''}${extra.bias ? ' bias' : ''}`,
  async setup(be) {
    const rng = new Rng(M * 7 + N * 3 + K);
    const a = put(be, rng.f32(M * K), 'a'), b = put(be, rng.f32(K * N), 'b'), bias = put(be, rng.f32(N), 'bias');
    const out = put(be, rng.f32(M * N), 'out');
    return { outputs: [out], run: () => be.matmul(out, a, b, M, N, K, { transA, transB, alpha: 0.75, accumulate: extra.accumulate, bias: extra.bias ? bias : undefined }) };
  },
});
gemm(100, 300, 200, false, true, { bias: true }); // forward x·Wᵀ, column split
gemm(128, 24, 300, false, true); // few columns: row split (LoRA x·Aᵀ)
gemm(100, 300, 200, false, false, { accumulate: true }); // input gradient dY·W
gemm(96, 200, 128, true, false, { accumulate: true }); // weight gradient dYᵀ·X
gemm(2, 1000, 300, false, true); // decoding (M < 4): dot-product path, column split
cases.push({
  name: 'qMatmul + qMatmulBackwardInput (NF4, double quant; K odd)',
  async setup(be) {
    const rng = new Rng(11);
    const M = 64, N = 260, K = 201;
    const w = await quantW(be, N, K, 12);
    const x = put(be, rng.f32(M * K), 'x'), dy = put(be, rng.f32(M * N), 'dy'), bias = put(be, rng.f32(N), 'bias');
    const y = put(be, rng.f32(M * N), 'y'), dx = put(be, rng.f32(M * K), 'dx');
    return { outputs: [y, dx], run: () => { be.qMatmul(y, x, w, M, { bias }); be.qMatmulBackwardInput(dx, dy, w, M, { alpha: 0.5, accumulate: true }); } };
  },
});
cases.push({
  name: 'qMatmul decoding (M = 1)',
  async setup(be) {
    const rng = new Rng(13);
    const N = 1000, K = 320;
    const w = await quantW(be, N, K, 14);
    const x = put(be, rng.f32(K), 'x'), y = put(be, rng.f32(N), 'y');
    return { outputs: [y], run: () => be.qMatmul(y, x, w, 1, { accumulate: true, alpha: 2 }) };
  },
});
cases.push({
  name: 'rmsNorm + rmsNormBackward',
  async setup(be) {
    const rng = new Rng(15);
    const R = 200, C = 300;
    const x = put(be, rng.f32(R * C), 'x'), w = put(be, rng.f32(C), 'w'), dy = put(be, rng.f32(R * C), 'dy');
    const y = put(be, rng.f32(R * C), 'y'), rstd = put(be, rng.f32(R), 'rstd'), dx = put(be, rng.f32(R * C), 'dx');
    return { outputs: [y, rstd, dx], run: () => { be.rmsNorm(y, rstd, x, w, R, C, 1e-5); be.rmsNormBackward(dx, dy, x, w, rstd, R, C, true); } };
  },
});
cases.push({
  name: 'rope + ropeBackward',
  async setup(be) {
    const rng = new Rng(16);
    const B = 4, T = 100, nh = 6, D = 48, maxPos = 120;
    const cos = put(be, rng.f32(maxPos * D / 2), 'cos'), sin = put(be, rng.f32(maxPos * D / 2), 'sin');
    const x = put(be, rng.f32(B * T * nh * D), 'x'), g = put(be, rng.f32(B * T * nh * D), 'g');
    return { outputs: [x, g], run: () => { be.rope(x, { cos, sin }, B * T, T, nh, D, 3); be.ropeBackward(g, { cos, sin }, B * T, T, nh, D, 0); } };
  },
});
/** docs: packed example lengths of each row (Σ = T), as docStart */
const attn = (shape: AttentionShape, docs?: number[]) => cases.push({
  name: `attention${shape.pos0 === 0 ? ' + attentionBackward' : ''} ${JSON.stringify(shape)}${docs ? ` packed ${docs.join('+')}` : ''}`,
  async setup(be) {
    const rng = new Rng(17 + shape.T);
    const s = docs ? { ...shape, docStart: put(be, docStartOf(Array.from({ length: shape.B }, () => docs), shape.T), 'docStart') } : shape;
    const nq = s.B * s.T * s.H * s.D, nkv = s.B * s.kvStride * s.KVH * s.D;
    const q = put(be, rng.f32(nq), 'q'), k = put(be, rng.f32(nkv), 'k'), v = put(be, rng.f32(nkv), 'v'), dout = put(be, rng.f32(nq), 'dout');
    const o = put(be, rng.f32(nq), 'out'), lse = put(be, rng.f32(s.B * s.H * s.T), 'lse');
    const dq = put(be, rng.f32(nq), 'dq'), dk = put(be, rng.f32(nkv), 'dk'), dv = put(be, rng.f32(nkv), 'dv');
    return {
      outputs: s.pos0 === 0 ? [o, lse, dq, dk, dv] : [o, lse],
      run: () => {
        be.attention(o, lse, q, k, v, s);
        if (s.pos0 === 0) be.attentionBackward(dq, dk, dv, dout, q, k, v, o, lse, s);
      },
    };
  },
});
attn({ B: 2, T: 70, S: 70, H: 6, KVH: 3, D: 20, pos0: 0, kvStride: 72 });
// fewer (sequence, kv head) groups than threads: the backward runs in two passes (query tiles,
// key blocks) and must give the one-pass kernel's bits (the 1-thread run); with a window and a
// soft-cap, and packed sequences, whose tiles start their key blocks off the 64-key grid
attn({ B: 1, T: 150, S: 150, H: 4, KVH: 1, D: 24, pos0: 0, kvStride: 152, window: 37, softcap: 20 });
attn({ B: 1, T: 140, S: 140, H: 2, KVH: 1, D: 16, pos0: 0, kvStride: 140 }, [30, 57, 1, 52]);
attn({ B: 1, T: 4, S: 150, H: 8, KVH: 2, D: 32, pos0: 146, kvStride: 160 });
cases.push({
  name: 'embedding, add, dropout, swiglu, swigluBackward',
  async setup(be) {
    const rng = new Rng(18);
    const n = 150001, V = 500, C = 300, R = 257;
    const table = put(be, rng.f32(V * C), 'table'), ids = put(be, Int32Array.from({ length: R }, () => rng.int(V)), 'ids');
    const emb = put(be, rng.f32(R * C), 'emb');
    const a = put(be, rng.f32(n), 'a'), g = put(be, rng.f32(n), 'g'), u = put(be, rng.f32(n), 'u');
    const o1 = put(be, rng.f32(n), 'o1'), o2 = put(be, rng.f32(n), 'o2'), o3 = put(be, rng.f32(n), 'o3'), o4 = put(be, rng.f32(n), 'o4');
    return {
      outputs: [emb, o1, o2, o3, o4],
      run: () => {
        be.embedding(emb, table, ids, R, C);
        be.add(o1, a, n, -0.5);
        be.dropout(o2, a, n, 0.1, 0xc0ffee);
        be.swiglu(o3, g, u, n);
        be.swigluBackward(o4, o1, a, g, u, n);
      },
    };
  },
});
cases.push({
  name: 'geglu, gegluBackward, softcap',
  async setup(be) {
    const rng = new Rng(25);
    const n = 150001;
    const a = put(be, rng.f32(n), 'a'), g = put(be, rng.f32(n, 3), 'g'), u = put(be, rng.f32(n), 'u');
    const o1 = put(be, rng.f32(n), 'o1'), o2 = put(be, rng.f32(n), 'o2'), o3 = put(be, rng.f32(n), 'o3'), x = put(be, rng.f32(n, 40), 'x');
    return {
      outputs: [o1, o2, o3, x],
      run: () => {
        be.geglu(o1, g, u, n);
        be.gegluBackward(o2, o3, a, g, u, n);
        be.softcap(x, n, 30);
      },
    };
  },
});
cases.push({
  name: 'crossEntropy with soft-cap, with and without gradient (an ignored row)',
  async setup(be) {
    const rng = new Rng(26);
    const R = 64, V = 5000;
    const logits = put(be, rng.f32(R * V, 40), 'logits'), losses = put(be, rng.f32(R), 'losses'), losses2 = put(be, rng.f32(R), 'losses2');
    const targets = put(be, Int32Array.from({ length: R }, (_, i) => (i === 5 ? -100 : rng.int(V))), 'targets');
    return {
      outputs: [losses2, losses, logits],
      run: () => {
        be.crossEntropy(losses2, logits, targets, R, V, undefined, 30);
        be.crossEntropy(losses, logits, targets, R, V, 1 / 63, 30);
      },
    };
  },
});
cases.push({
  name: 'crossEntropy with gradient (an ignored row)',
  async setup(be) {
    const rng = new Rng(19);
    const R = 64, V = 5000;
    const logits = put(be, rng.f32(R * V, 3), 'logits'), losses = put(be, rng.f32(R), 'losses');
    const targets = put(be, Int32Array.from({ length: R }, (_, i) => (i === 5 ? -100 : rng.int(V))), 'targets');
    return { outputs: [losses, logits], run: () => be.crossEntropy(losses, logits, targets, R, V, 1 / 63) };
  },
});
cases.push({
  name: 'sumSquares (many chunks, accumulate), adamwStep, sgdStep',
  async setup(be) {
    const rng = new Rng(20);
    const n = 300007, big = (1 << 16) * 5 + 123;
    const xs = put(be, rng.f32(big), 'xs'), ss = put(be, new Float32Array([0.25]), 'ss');
    const p = put(be, rng.f32(n), 'p'), gr = put(be, rng.f32(n), 'g'), m = put(be, rng.f32(n, 0.1), 'm'), v = put(be, rng.uniform(n, 0, 0.01), 'v');
    const p2 = put(be, rng.f32(n), 'p2');
    return {
      outputs: [ss, p, m, v, p2],
      run: () => {
        be.sumSquares(ss, xs, big, true);
        be.adamwStep(p, gr, m, v, n, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3, gradScale: 0.5 });
        be.sgdStep(p2, gr, n, 0.01, 2);
      },
    };
  },
});

for (const c of cases) {
  test(`1 thread == 2 and 3 threads: ${c.name}`, async () => {
    const one = await c.setup(be1);
    one.run();
    const want = await Promise.all(one.outputs.map((t) => be1.read(t)));
    for (const [tag, be] of multi) {
      const pool = wasmInternals(be).pool!;
      const s = await c.setup(be);
      const jobs = pool.jobs;
      s.run();
      assert.ok(pool.jobs > jobs, `${c.name}: ${tag}: the call ran on the caller alone (no job reached the pool)`);
      const got = await Promise.all(s.outputs.map((t) => be.read(t)));
      got.forEach((g, i) => assertBitsEqual(g, want[i]!, `${c.name}: ${tag}: output ${i} (${s.outputs[i]!.label})`));
    }
  });
}

test('forced uneven chunks, run by the workers alone or with the caller, == one thread (matmul rows/cols, q_matmul)', async () => {
  const rng = new Rng(21);
  const M = 37, N = 150, K = 77;
  const b1 = (data: Data, l: string) => put(be1, data, l);
  const b3 = (data: Data, l: string) => put(be3, data, l);
  const A = rng.f32(M * K), B = rng.f32(N * K), init = rng.f32(M * N);
  const I1 = wasmInternals(be1), I3 = wasmInternals(be3);
  const [a1, bb1, o1] = [b1(A, 'a'), b1(B, 'b'), b1(init, 'o')];
  const [a3, bb3, o3] = [b3(A, 'a'), b3(B, 'b'), b3(init, 'o')];
  const args = (I: typeof I1, a: Tensor, b: Tensor, o: Tensor) => [I.ptr(o), I.ptr(a), I.ptr(b), M, N, K, 0, 1, 0, 1.25, 1, 0, I.scratch(0), 0, M, 0, N];
  I1.par('matmul', args(I1, a1, bb1, o1), 1, { by: 'rows', grain: 4 });
  const want = await be1.read(o1);
  for (const [by, parts] of [['rows', [[0, 1], [1, 30], [30, 37]]], ['cols', [[0, 3], [3, 4], [4, 150]]], ['cols', [[0, 0], [0, 149], [149, 150]]], ['cols', [[140, 150], [0, 7], [7, 140]]]] as const) {
    for (const callerWorks of [true, false]) {
      be3.write(o3, init);
      I3.par('matmul', args(I3, a3, bb3, o3), 1, { by, grain: 1, chunks: parts.map((p) => [p[0], p[1]]), callerWorks });
      assertBitsEqual(await be3.read(o3), want, `matmul split by ${by} into ${JSON.stringify(parts)}, caller works ${callerWorks}`);
    }
  }
  // q_matmul by rows of x and by rows of W
  const w1 = await quantW(be1, N, K, 22), w3 = await quantW(be3, N, K, 22);
  const x1 = b1(A, 'x'), x3 = b3(A, 'x');
  const qargs = (I: typeof I1, x: Tensor, w: QuantWeight, o: Tensor) => [I.ptr(o), I.ptr(x), I.desc(w), M, 1, 0, 0, I.scratch(0), 0, M, 0, N];
  I1.par('q_matmul', qargs(I1, x1, w1, o1), 1, { by: 'cols', grain: 1 });
  const wantQ = await be1.read(o1);
  for (const [by, parts] of [['rows', [[0, 5], [5, 6], [6, 37]]], ['cols', [[0, 77], [77, 140], [140, 150]]]] as const) {
    I3.par('q_matmul', qargs(I3, x3, w3, o3), 1, { by, grain: 1, chunks: parts.map((p) => [p[0], p[1]]) });
    assertBitsEqual(await be3.read(o3), wantQ, `q_matmul split by ${by} into ${JSON.stringify(parts)}`);
  }
});

// ---- a whole training step ---------------------------------------------------------------

/** Small enough to load fast, big enough that every kernel of the step is split. */
const MID: ModelConfig = {
  architecture: 'LlamaForCausalLM', hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKVHeads: 2, headDim: 32,
  vocabSize: 3000, maxPositionEmbeddings: 128, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: true,
  attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: 'F32',
};

class FixedBatches implements MicroBatchSource {
  private i = 0;
  constructor(private readonly mbs: MicroBatch[]) {}
  next(): MicroBatch { return this.mbs[this.i++ % this.mbs.length]!; }
  state(): unknown { return this.i; }
  restore(s: unknown): void { this.i = s as number; }
}

async function trainTwoSteps(be: Backend) {
  const B = 2, T = 64;
  const rng = new Rng(23);
  const mbs: MicroBatch[] = [0, 1].map(() => {
    const ids = Int32Array.from({ length: B * T }, () => rng.int(MID.vocabSize));
    const targets = Int32Array.from({ length: B * T }, (_, i) => (i % T === T - 1 || i % 17 === 3 ? -100 : ids[i + 1]!));
    return { ids, targets, B, T };
  });
  const model = await loadModel(syntheticFromConfig(MID, 5), be, { quant: 'nf4', doubleQuant: true, blocksize: 64 });
  const lora = new LoraAdapters(be, model.config, { r: 8, alpha: 16, dropout: 0.1, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora: false }, true);
  const lr = new Rng(24);
  lora.initPeft(() => lr.next());
  // B starts at 0 (PEFT): give it values so every gradient path is non-trivial from step 1
  for (const p of lora.pairs) be.write(p.B, lr.f32(p.B.length, 0.01));
  const trainer = new Trainer(model, lora, new FixedBatches(mbs), { ...TRAIN_DEFAULTS, lr: 1e-3, batchSize: B, seqLen: T, totalSteps: 2, gradAccum: 2, seed: 7 });
  const records = [await trainer.trainStep(), await trainer.trainStep()];
  const tensors: Record<string, Data> = {};
  for (const p of lora.pairs) {
    for (const k of ['A', 'B', 'dA', 'dB'] as const) tensors[`${p.layer}.${p.name}.${k}`] = await be.read(p[k]);
  }
  trainer.free();
  lora.free();
  return { records, tensors };
}

test('a whole training step (2 micro-batches, dropout, AdamW, clipping) is bit-identical on 1 and 2 threads', async () => {
  const pool = wasmInternals(be2).pool!;
  const one = await trainTwoSteps(be1);
  const jobs = pool.jobs;
  const two = await trainTwoSteps(be2);
  assert.ok(pool.jobs - jobs > 100, `the 2-thread step sent only ${pool.jobs - jobs} jobs to the pool`);
  for (let s = 0; s < 2; s++) {
    const a = one.records[s]!, b = two.records[s]!;
    assert.ok(Object.is(a.loss, b.loss), `step ${s + 1} loss: 1 thread ${a.loss}, 2 threads ${b.loss}`);
    assert.ok(Object.is(a.grad_norm, b.grad_norm), `step ${s + 1} gradient norm: 1 thread ${a.grad_norm}, 2 threads ${b.grad_norm}`);
    assert.ok(Number.isFinite(a.loss) && a.grad_norm > 0, `step ${s + 1}: loss ${a.loss}, gradient norm ${a.grad_norm}`);
  }
  for (const [k, v] of Object.entries(one.tensors)) assertBitsEqual(two.tensors[k]!, v, `LoRA ${k} after two steps`);
});

// ---- the binaries ------------------------------------------------------------------------

/** Minimal wasm section walk: globals' mutability, a start section, active data segment ends. */
function inspectWasm(bytes: Uint8Array): { mutableGlobals: number; hasStart: boolean; segmentEnds: number[] } {
  let p = 8;
  const u32 = () => { let r = 0, sh = 0, b: number; do { b = bytes[p++]!; r |= (b & 127) << sh; sh += 7; } while (b & 128); return r >>> 0; };
  const i32 = () => { let r = 0, sh = 0, b: number; do { b = bytes[p++]!; r |= (b & 127) << sh; sh += 7; } while (b & 128); if (sh < 32 && (b & 64)) r |= -1 << sh; return r; };
  const res = { mutableGlobals: 0, hasStart: false, segmentEnds: [] as number[] };
  while (p < bytes.length) {
    const id = bytes[p++]!, size = u32(), end = p + size;
    if (id === 8) res.hasStart = true;
    if (id === 6) {
      for (let n = u32(); n > 0; n--) {
        p++; // value type (numeric types are one byte)
        if (bytes[p++] === 1) res.mutableGlobals++;
        while (bytes[p++] !== 0x0b); // init expression (constants only here)
      }
    }
    if (id === 11) {
      for (let n = u32(); n > 0; n--) {
        const flags = u32();
        assert.is(flags, 0, 'data segments are active, memory 0');
        assert.is(bytes[p++], 0x41, 'segment offset is an i32.const');
        const off = i32();
        assert.is(bytes[p++], 0x0b);
        const len = u32();
        res.segmentEnds.push(off + len);
        p += len;
      }
    }
    p = end;
  }
  return res;
}

test('shared-memory binaries: data only below heap_base, no mutable global, no start function', async () => {
  const heapBase = wasmInternals(be2).kernels.k.heap_base();
  for (const variant of ['simd-mt', 'relaxed-mt', 'simd', 'relaxed']) {
    const b64 = KERNEL_WASM_BASE64[variant];
    assert.ok(b64, `variant ${variant} is built`);
    const info = inspectWasm(Uint8Array.from(Buffer.from(b64!, 'base64')));
    assert.is(info.mutableGlobals, 0, `${variant}: mutable globals`);
    assert.not.ok(info.hasStart, `${variant}: start function`);
    assert.ok(info.segmentEnds.length > 0 && Math.max(...info.segmentEnds) <= heapBase, `${variant}: data segments end at ${Math.max(...info.segmentEnds)}, heap_base ${heapBase}`);
  }
  // and at run time: workers starting over a memory in use rewrite only identical static bytes
  const be = await createWasmBackend({ threads: 1 });
  const km1 = wasmInternals(be).kernels;
  const stat = new Uint8Array(km1.memory.buffer, 0, heapBase).slice();
  await be.destroy();
  const fresh = await createWasmBackend({ threads: 2 });
  const I = wasmInternals(fresh);
  const t = put(fresh, new Rng(1).f32(1 << 16), 'x');
  const before = await fresh.read(t);
  // a second pool started over the same memory must not touch it either (a worker joining late)
  const { CTRL, ThreadPool, threadSupport } = await import('../../src/backend/wasm/pool.ts');
  const ctrl = I.kernels.alloc(CTRL.BYTES), scratch = [I.scratch(0), I.kernels.alloc(1 << 20)];
  const extra = await ThreadPool.start({ memory: I.kernels.memory, module: I.kernels.module, exports: I.kernels.k as unknown as Record<string, unknown>, ctrl, scratch, names: ['add'], spawn: (await threadSupport()).spawn! });
  assertBitsEqual(await fresh.read(t), before, 'a tensor after another worker instantiated the module over the memory');
  assertBitsEqual(new Uint8Array(I.kernels.memory.buffer, 0, heapBase), stat, 'static data region');
  await extra.destroy();
  await fresh.destroy();
});

// ---- pool life cycle ------------------------------------------------------------------------

test('info: thread count, variant, and the reason for one thread', async () => {
  const i2 = wasmBackendInfo(be2), i1 = wasmBackendInfo(be1);
  assert.is(i2.threads, 2);
  assert.ok(i2.variant.endsWith('-mt') && i2.sharedMemory, `2 threads run the shared build, got ${i2.variant}`);
  assert.is(i1.threads, 1);
  assert.not.ok(i1.variant.endsWith('-mt'), `one thread runs the private-memory build, got ${i1.variant}`);
  assert.match(i1.summary, /^wasm: 1 thread, .* — one thread asked for$/);
  const msgs: string[] = [];
  const d = await createWasmBackend({ onInfo: (m) => msgs.push(m) });
  const cores = (await import('node:os')).availableParallelism();
  assert.is(wasmBackendInfo(d).threads, Math.min(64, cores), 'default: every core');
  assert.is(msgs.length, 1);
  assert.match(msgs[0]!, /^wasm: \d+ threads?/);
  await d.destroy();
});

test('variant: relaxed SIMD exactly when the engine validates it; plain SIMD on request', async () => {
  // a backend made now (the process may have turned relaxed SIMD on since be2 was made: node-flags.ts)
  const supported = relaxedSimdSupported();
  const now = await createWasmBackend({ threads: 2 });
  assert.is(wasmBackendInfo(now).relaxedSimd, supported);
  assert.is(wasmBackendInfo(now).variant, supported ? 'relaxed-mt' : 'simd-mt');
  await now.destroy();
  // the relaxed builds really contain relaxed-SIMD instructions
  for (const v of ['relaxed', 'relaxed-mt']) {
    assert.is(WebAssembly.validate(Uint8Array.from(Buffer.from(KERNEL_WASM_BASE64[v]!, 'base64'))), supported, `${v} validates only with relaxed SIMD`);
  }
  const plain = await createWasmBackend({ threads: 2, relaxedSimd: false });
  assert.is(wasmBackendInfo(plain).variant, 'simd-mt');
  await plain.destroy();
  if (!supported) {
    try {
      await createWasmBackend({ relaxedSimd: true });
      assert.unreachable('relaxedSimd: true without engine support must throw');
    } catch (e) {
      assert.match((e as Error).message, /experimental-wasm-relaxed-simd/);
    }
  }
});

test('pool start/stop: repeated, destroy idempotent, use after destroy throws', async () => {
  for (let i = 0; i < 3; i++) {
    const be = await createWasmBackend({ threads: 2 });
    const pool = wasmInternals(be).pool!;
    const x = put(be, new Float32Array(1 << 18).fill(1), 'x'), y = put(be, new Float32Array(1 << 18).fill(2), 'y');
    be.add(y, x, 1 << 18, 3);
    assert.is(pool.jobs, 1);
    assert.is(((await be.read(y, 12345, 1)) as Float32Array)[0], 5);
    await be.destroy();
    await be.destroy();
    assert.throws(() => pool.run(0, [0, 0, 1, 0, 1], 3, -1, [[0, 1]]), /after destroy/);
    assert.throws(() => be.alloc('f32', 4, 'late'), /after destroy/);
  }
});

test('a worker that fails surfaces as an error (not a hang), and the pool keeps working', async () => {
  const I = wasmInternals(be2);
  const n = 1 << 18;
  const x = put(be2, new Float32Array(n).fill(1), 'x'), o = put(be2, new Float32Array(n).fill(0), 'o');
  const limit = I.kernels.memory.buffer.byteLength / 4;
  // one chunk runs past the end of memory: its kernel traps in the worker that took it
  assert.throws(() => I.par('add', [I.ptr(o), I.ptr(x), 1, 0, n], 1, { chunks: [[0, 16], [limit, limit + 64]], callerWorks: false }),
    (e: Error) => /^wasm worker thread 1: add: RuntimeError: memory access out of bounds/.test(e.message));
  // wherever the failing chunk runs (the caller takes chunks too), the error is thrown after the
  // other chunks finished
  assert.throws(() => I.par('add', [I.ptr(o), I.ptr(x), 1, 0, n], 1, { chunks: [[limit, limit + 64], [0, 16]] }), /add: RuntimeError: memory access out of bounds/);
  // the good chunk [0, 16) ran once in each call: o = 2 there; the pool still runs jobs after the errors
  const jobs = I.pool!.jobs;
  be2.add(o, x, n, 1);
  assert.is(I.pool!.jobs, jobs + 1);
  const r = (await be2.read(o)) as Float32Array;
  assert.is(r[0], 3);
  assert.is(r[n - 1], 1);
});

test('memory.grow after the workers started: they see the new memory', async () => {
  const be = await createWasmBackend({ threads: 2 });
  const km = wasmInternals(be).kernels;
  const before = km.memory.buffer.byteLength;
  const big = be.alloc('f32', 24 << 20, 'big'); // 96 MiB: grows the shared memory
  assert.ok(km.memory.buffer.byteLength > before);
  const x = put(be, new Rng(2).f32(1 << 20), 'x');
  be.fill(big, 0.5);
  be.add(big, x, 1 << 20, 2); // the workers write near the old end and past it
  const want = new Float32Array(1 << 20);
  const xs = (await be.read(x)) as Float32Array;
  for (let i = 0; i < want.length; i++) want[i] = Math.fround(0.5 + Math.fround(2 * xs[i]!));
  assertBitsEqual((await be.read(big, 0, 1 << 20)) as Float32Array, want, 'add over grown memory');
  await be.destroy();
});

test('destroy() ends the workers: the process exits; an idle pool never keeps Node alive', () => {
  for (const destroy of [true, false]) {
    const code = `
      import { createWasmBackend } from ${JSON.stringify(`${REPO}/src/backend/wasm/index.ts`)};
      const be = await createWasmBackend({ threads: 2 });
      const x = be.alloc('f32', 1 << 18, 'x');
      be.fill(x, 1);
      be.add(x, x, 1 << 18, 1);
      ${destroy ? 'await be.destroy();' : ''}
      console.log('done');`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: REPO, encoding: 'utf8', timeout: 60000 });
    assert.is(r.signal, null, `destroy ${destroy}: the process had to be killed after ${Date.now() - t0} ms (workers kept it alive)`);
    assert.is(r.status, 0, `destroy ${destroy}: exit ${r.status}: ${r.stderr}`);
    assert.match(r.stdout, /done/);
  }
});

test('job numbers past 2^31 and the 2^32 wrap: jobs still run (workers alone and with the caller)', () => {
  // Runs in a child process: a tag that no longer matches would make join() wait forever.
  const code = `
    import { createWasmBackend, wasmInternals } from ${JSON.stringify(`${REPO}/src/backend/wasm/index.ts`)};
    const be = await createWasmBackend({ threads: 2 });
    const I = wasmInternals(be), pool = I.pool;
    const n = 1 << 16, x = be.alloc('f32', n, 'x'), o = be.alloc('f32', n, 'o');
    be.fill(x, 1);
    be.fill(o, 0);
    const seen = [];
    for (const start of [2 ** 31 - 3, 2 ** 32 - 3]) {
      pool.seq = start; // private: the next jobs are numbered start + 1, start + 2, ...
      for (let i = 0; i < 6; i++) {
        I.par('add', [I.ptr(o), I.ptr(x), 1, 0, n], 1, { chunks: [[0, n / 2], [n / 2, n]], callerWorks: i % 2 === 0 });
        seen.push(pool.seq);
      }
    }
    const r = await be.read(o);
    console.log(JSON.stringify({ seen, first: r[0], last: r[n - 1], all: r.every((v) => v === 12) }));
    await be.destroy();`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: REPO, encoding: 'utf8', timeout: 60000 });
  assert.is(r.signal, null, 'a job numbered past 2^31 never finished (join hung)');
  assert.is(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as { seen: number[]; all: boolean; first: number; last: number };
  assert.equal(res.seen, [2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 31 + 2, 2 ** 31 + 3, 2 ** 32 - 2, 2 ** 32 - 1, 0, 1, 2, 3]);
  assert.ok(res.all, `every element added 12 times: first ${res.first}, last ${res.last}`);
});

test('splitRange: contiguous, on the grain, covering, balanced', () => {
  for (const [lo, hi, parts, grain] of [[0, 100, 3, 8], [5, 6, 2, 1], [0, 1000, 7, 16], [13, 77, 4, 4]] as const) {
    const s = splitRange(lo, hi, parts, grain);
    assert.is(s.length, parts);
    assert.is(s[0]![0], lo);
    assert.is(s[parts - 1]![1], hi);
    for (let i = 1; i < parts; i++) {
      assert.is(s[i]![0], s[i - 1]![1]);
      if (s[i]![0] < hi) assert.is((s[i]![0] - lo) % grain, 0);
    }
    const sizes = s.map(([a, b]) => b - a);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= grain, `${JSON.stringify(s)}`);
  }
});

test.after(async () => {
  await Promise.all([be1.destroy(), be2.destroy(), be3.destroy()]);
});

test.run();
