// bench/quant: NF4 quantize and dequantize throughput of the WASM kernels (GB/s of float32),
// next to a plain WASM copy of the same bytes measured in the same run.
//   node --import tsx bench/quant.ts [--elems N]
import { WasmKernels } from '../src/backend/wasm/module.ts';
import { quantMapOf } from '../src/quant/quantize.ts';
import { printTable, saveResults, timeIt } from './util.ts';

export async function benchQuant(elems = 1 << 24): Promise<unknown> {
  const k = await WasmKernels.create();
  const n = elems, bs = 64, nb = n / bs;
  const x = k.alloc(n * 4), y = k.alloc(n * 4), packed = k.alloc(n / 2), absmax = k.alloc(nb * 4), qm = k.alloc(64);
  const xs = k.f32(x, n);
  let s = 12345;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; xs[i] = ((s >>> 8) / 2 ** 24 - 0.5) * 0.04; }
  k.f32(qm, 16).set(quantMapOf('nf4'));
  const bytes = n * 4;
  const rows: Array<[string, number]> = [];
  const tCopy = timeIt(() => k.k.copy_bytes(y, x, bytes));
  rows.push(['copy f32 → f32 (v128 loop)', tCopy]);
  rows.push(['NF4 quantize (f32 → packed + absmax)', timeIt(() => k.k.quantize_4bit(x, n, bs, 0, packed, absmax), 5, 1)]);
  rows.push(['FP4 quantize', timeIt(() => k.k.quantize_4bit(x, n, bs, 1, packed, absmax), 5, 1)]);
  k.k.quantize_4bit(x, n, bs, 0, packed, absmax);
  rows.push(['NF4 dequantize (packed + absmax → f32)', timeIt(() => k.k.dequantize_4bit(packed, n, bs, qm, absmax, y))]);
  const table = rows.map(([name, t]) => ({ kernel: name, seconds: t, gbps: bytes / t / 1e9, vsCopy: tCopy / t }));
  printTable(`bench/quant: ${n} float32 elements (${(bytes / 2 ** 20).toFixed(0)} MiB), blocksize ${bs}, one thread`,
    ['kernel', 'ms', 'GB/s of f32', '× copy speed'], table.map((r) => [r.kernel, r.seconds * 1000, r.gbps, r.vsCopy]));
  return { elems: n, blocksize: bs, rows: table };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--elems');
  const res = await benchQuant(i > 0 ? Number(process.argv[i + 1]) : undefined);
  console.log(`\nwritten ${saveResults('quant', res)}`);
}
