// Float conversions of io/dtype.ts through views that do not start at the beginning of their
// buffer: `into` (one buffer serving a whole model load) and the input of fromFloat32.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebqloraError } from '../../src/errors.ts';
import { DTYPE_BYTES, fromFloat32, sameShape, toFloat32, type DType } from '../../src/io/dtype.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/num.ts';
import { assertBitsEqual } from '../helpers/index.ts';

// Values exact in every float type (so one expected array serves all four), signed zero included.
const VALUES = Float32Array.of(1, -2, 0.5, 0, -0, 3.25, -1024, 2048, 2 ** -14, -0.125, Infinity);

function encode(v: Float32Array, dtype: 'F32' | 'F16' | 'BF16' | 'F64'): Uint8Array {
  const b = new Uint8Array(v.length * DTYPE_BYTES[dtype]);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < v.length; i++) {
    if (dtype === 'F32') dv.setFloat32(4 * i, v[i]!, true);
    else if (dtype === 'F16') dv.setUint16(2 * i, f32ToF16(v[i]!), true);
    else if (dtype === 'BF16') dv.setUint16(2 * i, f32ToBf16(v[i]!), true);
    else dv.setFloat64(8 * i, v[i]!, true);
  }
  return b;
}

test('the test values are exact in F16 and BF16', () => {
  for (const x of VALUES) {
    assert.ok(Object.is(f16ToF32(f32ToF16(x)), x), `f16 ${x}`);
    assert.ok(Object.is(bf16ToF32(f32ToBf16(x)), x), `bf16 ${x}`);
  }
});

test('toFloat32 into a subarray at an offset: written in place, nothing outside it touched', () => {
  for (const dtype of ['F32', 'F16', 'BF16', 'F64'] as const) {
    const want = VALUES;
    const n = want.length;
    // an odd byte offset for the input too: bytes inside a larger buffer
    const raw = encode(want, dtype);
    const padded = new Uint8Array(raw.length + 3);
    padded.set(raw, 3);
    const bytes = padded.subarray(3);
    const whole = new Float32Array(n + 4).fill(NaN);
    const into = whole.subarray(4);
    const got = toFloat32(bytes, dtype, 'x', into);
    assert.ok(got === into, `${dtype}: returns \`into\``);
    assertBitsEqual(into, want, `${dtype} values`);
    assert.ok(whole.subarray(0, 4).every((x) => Number.isNaN(x)), `${dtype}: the 4 floats before the view are untouched`);
    // and a view that ends before its buffer does
    const mid = new Float32Array(n + 8).fill(NaN);
    toFloat32(bytes, dtype, 'x', mid.subarray(4, 4 + n));
    assertBitsEqual(mid.subarray(4, 4 + n), want, `${dtype} middle view`);
    assert.ok([...mid.subarray(0, 4), ...mid.subarray(4 + n)].every((x) => Number.isNaN(x)), `${dtype}: both sides untouched`);
    // `into` of the wrong length is not used
    const other = new Float32Array(n + 1);
    const fresh = toFloat32(bytes, dtype, 'x', other);
    assert.ok(fresh !== other && other.every((x) => x === 0), `${dtype}: wrong-length into left alone`);
    assertBitsEqual(fresh, want, `${dtype} fresh`);
  }
});

test('toFloat32 refuses integer dtypes with a sentence naming the tensor', () => {
  for (const dtype of ['I32', 'U8', 'BOOL', 'I64'] as DType[]) {
    assert.throws(() => toFloat32(new Uint8Array(8), dtype, 'w.safetensors: tensor t'), (e: unknown) =>
      e instanceof WebqloraError && e.message === `w.safetensors: tensor t: dtype ${dtype} is not a floating-point type (expected F32, F16 or BF16).`);
  }
});

test('fromFloat32 of a subarray at an offset encodes only the view', () => {
  const whole = new Float32Array(VALUES.length + 4).fill(7);
  whole.set(VALUES, 4);
  const view = whole.subarray(4);
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    const b = fromFloat32(view, dtype);
    assert.is(b.length, VALUES.length * DTYPE_BYTES[dtype]);
    assertBitsEqual(toFloat32(b, dtype, 'x'), VALUES, dtype);
  }
});

test('sameShape', () => {
  assert.ok(sameShape([2, 3], [2, 3]));
  assert.ok(sameShape([], []));
  assert.not.ok(sameShape([2, 3], [3, 2]));
  assert.not.ok(sameShape([6], [6, 1]));
});

test.run();
