// Bit-exact agreement with bitsandbytes on every case in test/vectors/bnb/cases (vectors
// README §3-4): 4-bit codes and absmax, double quantization given the stored offset, recovered
// absmax, dequantized outputs in the input dtype (sign of zero included), the serialized
// checkpoint tensors and quant_state JSON bytes; 8-bit blockwise cases. Dequantization always
// uses the vectors' own quant_map / nested_quant_map, never a built-in table.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VECTORS, assertBitsEqual } from '../helpers/index.ts';
import { MemorySource } from '../../src/io/source.ts';
import { fromFloat32, dtypeFromTorch, toFloat32 } from '../../src/io/dtype.ts';
import { openSafetensors, type SafetensorsFile } from '../../src/io/safetensors.ts';
import { bnbTensorEntries, pythonFloatRepr, pythonJsonDumps, quantStateJson, bnbQuantizationConfig, parseQuantState, PyFloat } from '../../src/io/bnb.ts';
import { quantize4bit, dequantize4bit, doubleQuantize, effectiveAbsmax, quantizeBlockwise8, dequantizeBlockwise8 } from '../../src/quant/quantize.ts';
import type { Quant4Tensor } from '../../src/quant/types.ts';
import { WebqloraError } from '../../src/errors.ts';

interface Case {
  name: string; file: string; quant_type: 'nf4' | 'fp4'; blocksize: number; input_dtype: string; shape: number[];
  quant_state_json_plain: string; quant_state_json_dq: string; nested_offset_f32_bits: string;
}
const manifest = JSON.parse(readFileSync(join(VECTORS, 'manifest.json'), 'utf8')) as {
  cases: Case[];
  blockwise8_cases: Array<{ name: string; file: string; blocksize: number; input_dtype: string }>;
  models: Array<{ quant_state_json: Record<string, string> }>;
};

async function load(rel: string): Promise<SafetensorsFile> {
  return openSafetensors(new MemorySource(rel, new Uint8Array(readFileSync(join(VECTORS, rel)))));
}
const f32 = async (st: SafetensorsFile, k: string) => toFloat32(await st.readRaw(k), 'F32', k);
const bits = (x: number) => { const b = new Float32Array([x]); return new Uint32Array(b.buffer)[0]!; };

test('manifest covers the expected cases', () => {
  assert.is(manifest.cases.length, 26);
  assert.is(manifest.blockwise8_cases.length, 4);
});

test('pythonFloatRepr matches Python repr, including every nested_offset in the manifest', () => {
  const known: Array<[number, string]> = [
    [1e-5, '1e-05'], [0.0001, '0.0001'], [0.00012, '0.00012'], [1.5e-7, '1.5e-07'], [1e16, '1e+16'], [1.5e16, '1.5e+16'],
    [9999999999999998, '9999999999999998.0'], [1234567890123456, '1234567890123456.0'], [0.1, '0.1'], [6, '6.0'], [123.25, '123.25'],
    [-0.5, '-0.5'], [0, '0.0'], [-0, '-0.0'], [1e22, '1e+22'], [5e-324, '5e-324'], [1.7976931348623157e308, '1.7976931348623157e+308'],
    [1000.8125, '1000.8125'], [Math.fround(0.1), '0.10000000149011612'], [NaN, 'nan'], [Infinity, 'inf'], [-Infinity, '-inf'],
    [2 ** -20, '9.5367431640625e-07'], [1e100, '1e+100'], [0.001, '0.001'],
  ];
  for (const [x, s] of known) assert.is(pythonFloatRepr(x), s, String(x));
  let n = 0;
  const jsons = [...manifest.cases.map((c) => c.quant_state_json_dq), ...manifest.models.flatMap((m) => Object.values(m.quant_state_json))];
  for (const s of jsons) {
    const m = /"nested_offset": ([^}]+)\}$/.exec(s);
    if (!m) continue;
    assert.is(pythonFloatRepr(Math.fround(Number(m[1]))), m[1]);
    n++;
  }
  assert.ok(n >= 29);
});

test('pythonJsonDumps reproduces the vector config.json fragments byte for byte', () => {
  for (const [dir, qt, dq, torch] of [['model_nf4_dq_bf16', 'nf4', true, 'bfloat16'], ['model_fp4_nodq_f16', 'fp4', false, 'float16']] as const) {
    const want = readFileSync(join(VECTORS, dir, 'config.json'), 'utf8');
    const got = pythonJsonDumps({ dtype: torch, quantization_config: bnbQuantizationConfig({ quantType: qt, doubleQuant: dq, computeDtype: torch }), torch_dtype: torch }, { indent: 2, sortKeys: true });
    // the fragment file carries no trailing newline difference beyond what json.dumps + "\n" writes
    assert.is(got + (want.endsWith('\n') ? '\n' : ''), want, dir);
  }
  assert.is(pythonJsonDumps({ a: [1, new PyFloat(2)], b: 'é\n', c: {} }), '{"a": [1, 2.0], "b": "\\u00e9\\n", "c": {}}');
});

test('4-bit cases: quantize, double quant, recovered absmax, dequant and serialization are bit-exact', async () => {
  let offsetDiffer = 0, worstUlp = 0;
  for (const c of manifest.cases) {
    const st = await load(c.file);
    const T = dtypeFromTorch(c.input_dtype)!;
    const what = c.name;
    const x = await st.readFloat('input');
    const q = await quantize4bit(x, { quantType: c.quant_type, blocksize: c.blocksize, shape: c.shape, dtype: T });
    assertBitsEqual(q.packed, await st.readRaw('packed'), `${what} packed`);
    assertBitsEqual(q.absmax!, await f32(st, 'absmax'), `${what} absmax`);
    assertBitsEqual(q.quantMap, await f32(st, 'quant_map'), `${what} quant_map`);

    // plain dequant from the file's own parts
    const filePlain: Quant4Tensor = {
      quantType: c.quant_type, blocksize: c.blocksize, shape: c.shape, dtype: T,
      packed: await st.readRaw('packed'), quantMap: await f32(st, 'quant_map'), absmax: await f32(st, 'absmax'), dq: null,
    };
    assertBitsEqual(fromFloat32(await dequantize4bit(filePlain), T), await st.readRaw('dequant'), `${what} dequant`);

    // double quant with the stored offset
    const storedOffset = (await f32(st, 'dq.offset'))[0]!;
    assert.is(bits(storedOffset), Number(c.nested_offset_f32_bits), `${what} offset bits`);
    const dqq = await doubleQuantize(q, undefined, storedOffset);
    assertBitsEqual(dqq.dq!.codes, await st.readRaw('dq.absmax_u8'), `${what} dq.absmax_u8`);
    assertBitsEqual(dqq.dq!.nestedAbsmax, await f32(st, 'dq.nested_absmax'), `${what} dq.nested_absmax`);
    assertBitsEqual(dqq.dq!.nestedQuantMap, await f32(st, 'dq.nested_quant_map'), `${what} dq.nested_quant_map`);

    const fileDq: Quant4Tensor = {
      ...filePlain, absmax: null,
      dq: { codes: await st.readRaw('dq.absmax_u8'), nestedAbsmax: await f32(st, 'dq.nested_absmax'), nestedQuantMap: await f32(st, 'dq.nested_quant_map'), offset: storedOffset, nestedBlocksize: 256 },
    };
    assertBitsEqual(await effectiveAbsmax(fileDq), await f32(st, 'dq.absmax_recovered'), `${what} dq.absmax_recovered`);
    assertBitsEqual(fromFloat32(await dequantize4bit(fileDq), T), await st.readRaw('dq.dequant'), `${what} dq.dequant`);

    // our own offset (float64 sum rounded once) is within 2 ulp of torch's float32 cascade mean
    const own = await doubleQuantize(q);
    const ulp = Math.abs(bits(own.dq!.offset) - bits(storedOffset));
    if (ulp !== 0) offsetDiffer++;
    worstUlp = Math.max(worstUlp, ulp);
    assert.ok(ulp <= 2, `${what}: offset ${own.dq!.offset} is ${ulp} ulp from ${storedOffset}`);

    // serialized checkpoint tensors and JSON bytes
    for (const [kind, qq, json] of [['plain', q, c.quant_state_json_plain], ['dq', dqq, c.quant_state_json_dq]] as const) {
      assert.is(quantStateJson(qq), json, `${what} ${kind} json`);
      const entries = bnbTensorEntries('W', qq);
      const want = [...st.tensors.keys()].filter((k) => k.startsWith(`serialized.${kind}.`));
      assert.is(entries.length, want.length, `${what} ${kind}: number of tensors`);
      for (const e of entries) {
        const key = `serialized.${kind}.${e.name === 'W' ? 'weight' : e.name.slice(2)}`;
        const info = st.info(key);
        assert.is(e.dtype, info.dtype, key);
        assert.equal(e.shape, info.shape, key);
        assertBitsEqual(e.data, await st.readRaw(key), `${what} ${key}`);
      }
      // and the JSON parses back to the same state
      const parsed = parseQuantState(new TextEncoder().encode(json), what, c.quant_type);
      assert.equal(parsed.shape, c.shape);
      if (kind === 'dq') assert.is(parsed.nested!.offset, storedOffset);
    }
  }
  // (README §4: a float64 mean agrees with torch in 21 of 26 cases; the rest are ≤ 2 ulp away.)
  assert.ok(offsetDiffer <= 5, `${offsetDiffer} offsets differ`);
  assert.ok(worstUlp <= 2);
});

test('8-bit blockwise cases: q, absmax and dequant are bit-exact', async () => {
  for (const c of manifest.blockwise8_cases) {
    const st = await load(c.file);
    const T = dtypeFromTorch(c.input_dtype)!;
    const x = await st.readFloat('input');
    const { q, absmax } = await quantizeBlockwise8(x, c.blocksize);
    assertBitsEqual(q, await st.readRaw('q'), `${c.name} q`);
    assertBitsEqual(absmax, await f32(st, 'absmax'), `${c.name} absmax`);
    const d = await dequantizeBlockwise8(await st.readRaw('q'), c.blocksize, await f32(st, 'code'), await f32(st, 'absmax'));
    assertBitsEqual(fromFloat32(d, T), await st.readRaw('dequant'), `${c.name} dequant`);
  }
});

test('int4 is refused for bnb serialization with a clear error', async () => {
  const q = await quantize4bit(new Float32Array(64).fill(0.5), { quantType: 'int4', blocksize: 64 });
  for (const f of [() => quantStateJson(q), () => bnbTensorEntries('w', q)]) {
    try {
      f();
      assert.unreachable();
    } catch (e) {
      assert.instance(e, WebqloraError);
      assert.match((e as Error).message, /int4 is not a bitsandbytes 4-bit type/);
    }
  }
});

test('parseQuantState rejects bad quant_state JSON with the key in the message', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const base = { quant_type: 'nf4', blocksize: 64, dtype: 'float32', shape: [4, 4] };
  const cases: Array<[string | object, RegExp]> = [
    ['not json', /not valid UTF-8 JSON/],
    ['[1]', /not a JSON object/],
    [{ ...base, quant_type: 'int4' }, /quant_type "int4" is not supported/],
    [{ ...base, blocksize: 100 }, /blocksize 100 is not supported/],
    [{ ...base, dtype: 'int8' }, /dtype "int8" is not supported/],
    [{ ...base, shape: [-1] }, /shape \[-1\] is not a list/],
    [{ ...base, nested_blocksize: 7, nested_dtype: 'float32', nested_offset: 0.1 }, /nested_blocksize 7 is not supported/],
    [{ ...base, nested_blocksize: 256, nested_dtype: 'float16', nested_offset: 0.1 }, /nested_dtype "float16"/],
    [{ ...base, nested_blocksize: 256, nested_dtype: 'float32' }, /nested_offset \(missing\)/],
    [{ ...base, quant_type: 'fp4' }, /does not match the key suffix __nf4/],
  ];
  for (const [j, re] of cases) {
    try {
      parseQuantState(enc(typeof j === 'string' ? j : JSON.stringify(j)), 'w.quant_state.bitsandbytes__nf4', 'nf4');
      assert.unreachable(String(re));
    } catch (e) {
      assert.instance(e, WebqloraError, String(re));
      assert.match((e as Error).message, /^w\.quant_state\.bitsandbytes__nf4: /);
      assert.match((e as Error).message, re);
    }
  }
});

test.run();
