// `webqlora inspect` and `webqlora quantize` end to end through the built CLI (dist/node/cli.js):
// output formats, a quantized checkpoint read back within the 4-bit error bound, and user
// mistakes that exit 2 with one line on stderr and leave no output behind.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STORIES_BIN, STORIES_GGUF, STORIES_HF, VECTORS, assertBitsEqual, mathConfig } from '../helpers/index.ts';
import { cliRunner, NO_DEBUG } from '../helpers/cli.ts';
import { NodeDirSource } from '../../src/io/node.ts';
import { openHfDir } from '../../src/io/hf.ts';
import { effectiveAbsmax } from '../../src/quant/quantize.ts';
import { NF4_CODE, FP4_CODE } from '../../src/quant/tables.ts';
import { LINEAR_NAMES, linearWeightName, paramCount } from '../../src/model/config.ts';
import { configFromHf } from '../../src/io/hf-config.ts';

const TMP = mkdtempSync(join(tmpdir(), 'webqlora-cli-'));

const run = cliRunner({ env: NO_DEBUG });

/** A user mistake: exit 2, exactly one stderr line "webqlora <command>: ...", no stack trace. */
function assertUserError(r: { code: number; stderr: string }, re: RegExp, what: string): void {
  assert.is(r.code, 2, `${what}: exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.is(lines.length, 1, `${what}: one line, got ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0]!, /^webqlora( [a-z]+)?: (?!webqlora)/, what);
  assert.not.match(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  assert.match(lines[0]!, re, what);
}

/** Half the widest gap between adjacent codes (sorted): the 4-bit rounding bound per unit absmax. */
function halfMaxGap(code: Float32Array): number {
  const s = [...code].sort((a, b) => a - b);
  let g = 0;
  for (let i = 1; i < s.length; i++) g = Math.max(g, s[i]! - s[i - 1]!);
  return g / 2;
}

test('inspect: an HF directory, human and --json', () => {
  const h = run('inspect', STORIES_HF);
  assert.is(h.code, 0, h.stderr);
  assert.match(h.stdout, /format: hf/);
  assert.match(h.stdout, /model\.layers\.4\.mlp\.down_proj\.weight\s+F32\s+\[64, 172\]/);
  assert.match(h.stdout, /parameters: 260,032/);
  assert.match(h.stdout, /nf4 \+ double quant/);
  const j = run('inspect', STORIES_HF, '--json');
  assert.is(j.code, 0, j.stderr);
  assert.is(j.stdout.trim().split('\n').length, 1, 'one JSON object');
  const o = JSON.parse(j.stdout);
  assert.is(o.format, 'hf');
  assert.is(o.config.hiddenSize, 64);
  assert.is(o.tensors.length, 48);
  const cfg = configFromHf(JSON.parse(readFileSync(join(STORIES_HF, 'config.json'), 'utf8')), 'c');
  assert.is(o.parameters, paramCount(cfg));
  assert.is(o.memory.none, 4 * paramCount(cfg));
  assert.ok(o.memory.nf4 < o.memory.none / 2);
  assert.ok(o.memory.nf4_double_quant > 0);
});

test('inspect: bare .safetensors files (a bnb checkpoint and a vector case)', () => {
  const f = join(VECTORS, 'model_nf4_dq_bf16', 'model.safetensors');
  const j = run('inspect', f, '--json');
  assert.is(j.code, 0, j.stderr);
  const o = JSON.parse(j.stdout);
  assert.is(o.format, 'safetensors');
  assert.equal(o.metadata, { format: 'pt' });
  assert.is(o.tensors.length, 20);
  const h = run('inspect', join(VECTORS, 'cases', 'q8_bs64_n200_bf16.safetensors'));
  assert.is(h.code, 0, h.stderr);
  assert.match(h.stdout, /format: safetensors/);
  assert.match(h.stdout, /input\s+BF16\s+\[2, 100\]/);
});

test('inspect: GGUF and llama2.c files', () => {
  for (const [path, format] of [[STORIES_GGUF, 'gguf'], [STORIES_BIN, 'llama2c']] as const) {
    const r = run('inspect', path, '--json');
    assert.is(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout);
    assert.is(o.format, format);
    assert.is(o.config.hiddenSize, 64);
  }
});

async function checkQuantized(out: string, quantType: 'nf4' | 'fp4', doubleQuant: boolean, blocksize: number): Promise<void> {
  const dir = new NodeDirSource(out), orig = new NodeDirSource(STORIES_HF);
  const q = await openHfDir(dir), o = await openHfDir(orig);
  try {
    assert.is(q.format, 'bnb-4bit');
    assert.equal(mathConfig(q.config), mathConfig(o.config));
    const bound = halfMaxGap(quantType === 'nf4' ? NF4_CODE : FP4_CODE);
    const linear = new Set<string>();
    for (let l = 0; l < o.config.numLayers; l++) for (const lin of LINEAR_NAMES) linear.add(linearWeightName(l, lin));
    for (const t of q.tensors) {
      const w = await o.readFloat(t.name);
      const d = await q.readFloat(t.name);
      if (!linear.has(t.name)) {
        assert.is(await q.readQuant(t.name), null, t.name);
        assertBitsEqual(d, w, t.name);
        continue;
      }
      const qt = (await q.readQuant(t.name))!;
      assert.is(qt.quantType, quantType);
      assert.is(qt.blocksize, blocksize);
      assert.is(qt.dq !== null, doubleQuant, t.name);
      const eff = await effectiveAbsmax(qt);
      for (let b = 0; b * blocksize < w.length; b++) {
        let am = 0;
        for (let i = b * blocksize; i < Math.min(w.length, (b + 1) * blocksize); i++) am = Math.max(am, Math.abs(w[i]!));
        // rounding to the nearest code, plus what double quantization moved the block scale
        const tol = am * bound + Math.abs(am - eff[b]!) + 1e-7;
        for (let i = b * blocksize; i < Math.min(w.length, (b + 1) * blocksize); i++) {
          if (!(Math.abs(w[i]! - d[i]!) <= tol)) throw new Error(`${t.name}[${i}]: |${w[i]} - ${d[i]}| > ${tol}`);
        }
      }
    }
    assert.ok(!q.tensors.some((t) => t.name === 'lm_head.weight'), 'tied lm_head dropped');
  } finally {
    await q.close(); await o.close(); await dir.close(); await orig.close();
  }
}

test('quantize: nf4 + double quant (defaults) reads back as bnb-4bit within the NF4 bound', async () => {
  const out = join(TMP, 'nf4dq');
  const r = run('quantize', '--model', STORIES_HF, '--out', out);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /quantize: 1\/\d+ /, 'progress on stderr');
  assert.match(r.stdout, /35 quantized nf4 \+ double quant \(blocksize 64\)/);
  assert.equal(readdirSync(out).sort(), ['config.json', 'generation_config.json', 'model.safetensors']);
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.is(cfg.quantization_config.bnb_4bit_quant_type, 'nf4');
  assert.is(cfg.quantization_config.bnb_4bit_use_double_quant, true);
  assert.is(cfg.quantization_config.quant_method, 'bitsandbytes');
  await checkQuantized(out, 'nf4', true, 64);
  // a second run into the same directory is refused
  assertUserError(run('quantize', '--model', STORIES_HF, '--out', out), /already holds a model \(choose another --out\)/, 'existing model');
});

test('quantize: fp4 without double quant, blocksize 128, --json', async () => {
  const out = join(TMP, 'fp4');
  const r = run('quantize', '--model', STORIES_HF, '--out', out, '--quant', 'fp4', '--no-double-quant', '--blocksize', '128', '--json');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stderr, '', 'no progress with --json');
  const o = JSON.parse(r.stdout);
  assert.equal([o.format, o.quant_type, o.double_quant, o.blocksize, o.quantized], ['bnb-4bit', 'fp4', false, 128, 35]);
  await checkQuantized(out, 'fp4', false, 128);
  // a bnb checkpoint is itself inspectable, with its quant settings
  const i = run('inspect', out, '--json');
  assert.is(i.code, 0, i.stderr);
  const io = JSON.parse(i.stdout);
  assert.is(io.format, 'bnb-4bit');
  assert.equal(io.tensors.find((t: { name: string }) => t.name === 'model.layers.0.self_attn.q_proj.weight').quant, { quantType: 'fp4', blocksize: 128, doubleQuant: false, dtype: 'F32' });
});

test('user mistakes exit 2 with one line and leave no output behind', () => {
  // a truncated copy of model.safetensors
  const bad = join(TMP, 'truncated');
  mkdirSync(bad);
  copyFileSync(join(STORIES_HF, 'config.json'), join(bad, 'config.json'));
  writeFileSync(join(bad, 'model.safetensors'), readFileSync(join(STORIES_HF, 'model.safetensors')).subarray(0, 600_000));
  const out1 = join(TMP, 'out-truncated');
  assertUserError(run('quantize', '--model', bad, '--out', out1), /model\.safetensors: .*(truncated|past the end)/, 'truncated model');
  assert.ok(!existsSync(out1) || readdirSync(out1).length === 0, 'no output for a truncated model');

  const out2 = join(TMP, 'out-bad-flags');
  assertUserError(run('quantize', '--model', STORIES_HF, '--out', out2, '--blocksize', '100'), /--blocksize must be one of 32, 64, 128, .*, got '100'/, 'blocksize 100');
  assertUserError(run('quantize', '--model', STORIES_HF, '--out', out2, '--quant', 'int4'), /--quant must be one of nf4, fp4, got 'int4'/, 'int4');
  assertUserError(run('quantize', '--model', STORIES_HF, '--out', out2, '--quant', 'q8'), /--quant must be one of nf4, fp4, got 'q8'/, 'q8');
  assertUserError(run('quantize', '--model', STORIES_HF, '--out', out2, '--blocksize', 'x'), /--blocksize must be one of 32, .*, got 'x'/, 'blocksize x');
  assertUserError(run('quantize', '--out', out2), /--model is required/, 'no model');
  assertUserError(run('quantize', '--model', join(TMP, 'nope'), '--out', out2), /nope: no such file or directory/, 'missing model');
  assertUserError(run('quantize', '--model', STORIES_HF, '--out', out2, '--frobnicate'), /^webqlora quantize: unknown flag --frobnicate; see webqlora quantize --help\.$/, 'unknown flag');
  assert.ok(!existsSync(out2), 'nothing created for bad flags');

  assertUserError(run('inspect', join(TMP, 'nope.safetensors')), /nope\.safetensors: no such file or directory/, 'inspect missing');
  const corrupt = join(TMP, 'corrupt.safetensors');
  writeFileSync(corrupt, new Uint8Array([200, 0, 0, 0, 0, 0, 0, 0, 0x7b]));
  assertUserError(run('inspect', corrupt), /corrupt\.safetensors: header length 200 runs past the end of the file/, 'inspect corrupt');
  assertUserError(run('inspect'), /expected exactly one PATH/, 'inspect without path');
  // no temp files anywhere in the scratch directory
  const leftovers = readdirSync(TMP, { recursive: true }).map(String).filter((f) => f.includes('.tmp-'));
  assert.equal(leftovers, []);
});

test('cleanup', () => {
  rmSync(TMP, { recursive: true, force: true });
});

test.run();
