// The generated code tables agree with bitsandbytes' own tables (test/vectors/bnb/tables.json),
// are up to date with their source, and say the same thing in TS, AssemblyScript and WGSL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { REPO, VECTORS } from '../helpers/index.ts';
import * as T from '../../src/quant/tables.ts';

const bnb = JSON.parse(readFileSync(join(VECTORS, 'tables.json'), 'utf8')) as Record<string, { f32_bits?: string[]; values: number[] }>;
const bits = (a: Float32Array) => [...new Uint32Array(a.buffer, a.byteOffset, a.length)].map((b) => '0x' + b.toString(16).padStart(8, '0'));

test('generated files are up to date with scripts/tables-source.json', () => {
  execFileSync(process.execPath, [join(REPO, 'scripts/gen-tables.mjs'), '--check']);
});

test('NF4, FP4 and the signed dynamic map equal bnb bit for bit', () => {
  assert.equal(bits(T.NF4_CODE), bnb.nf4_code!.f32_bits);
  assert.equal(bits(T.FP4_CODE), bnb.fp4_code!.f32_bits);
  assert.equal(bits(T.DYNAMIC_SIGNED), bnb.dynamic_map_signed!.f32_bits);
  // QLORA_SPEC §1.1: sha256 of the 16 NF4 values as little-endian float32
  assert.is(createHash('sha256').update(new Uint8Array(T.NF4_CODE.buffer)).digest('hex'), '8501941daa1b8a90ad1bbfeb632e5101b5dddbc4bb52d6e55abcfd777e60c06a');
});

test('midpoints equal the bounds of bnb default backend', () => {
  assert.equal(bits(T.NF4_BOUNDS), bnb.nf4_default_backend_bounds!.f32_bits);
  assert.equal(bits(T.FP4_BOUNDS), bnb.fp4_default_backend_bounds!.f32_bits);
  assert.equal([...T.FP4_ORDER], bnb.fp4_default_backend_order!.values);
});

/** Parses the decimal literals of a generated table in another language back to float32 bits. */
function literalsOf(text: string, start: string, end: string, suffix: RegExp): string[] {
  const i = text.indexOf(start);
  if (i < 0) throw new Error(`table ${start} not found`);
  const body = text.slice(i + start.length, text.indexOf(end, i + start.length));
  return body.split(',').map((s) => s.trim().replace(suffix, '')).filter((s) => s.length > 0)
    .map((s) => '0x' + new Uint32Array(new Float32Array([Number.parseFloat(s)]).buffer)[0]!.toString(16).padStart(8, '0'));
}

test('AssemblyScript and WGSL tables carry the same float32 values as TS', () => {
  const as = readFileSync(join(REPO, 'assembly/tables.ts'), 'utf8');
  const wgsl = readFileSync(join(REPO, 'wgsl/tables.wgsl'), 'utf8');
  for (const [name, expected] of Object.entries(T.TABLE_BITS)) {
    const hex = [...expected].map((b) => '0x' + b.toString(16).padStart(8, '0'));
    assert.equal(literalsOf(as, `${name}: usize = memory.data<f32>([`, ']);', /$/), hex, `assembly ${name}`);
    assert.equal(literalsOf(wgsl, `const ${name} = array<f32, ${hex.length}>(`, ');', /f$/), hex, `wgsl ${name}`);
  }
});

test.run();
