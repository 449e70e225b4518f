// Bench helpers: median-of-runs timing, table printing, JSON results. Figures are ratios measured
// in one run (the machines are shared and noisy), never asserted.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));

/** Median seconds of `reps` runs of fn after `warmup` runs. */
export function timeIt(fn: () => void, reps = 7, warmup = 2): number {
  for (let i = 0; i < warmup; i++) fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    t.push((performance.now() - t0) / 1000);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)]!;
}

let quiet = false;
/** bench/run.ts prints only its summary table: the parts' own tables are kept in their JSON. */
export function setQuiet(q: boolean): void { quiet = q; }
export const log = (...a: unknown[]): void => { if (!quiet) console.log(...a); };

export function printTable(title: string, header: string[], rows: Array<Array<string | number>>): void {
  if (quiet) return;
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const w = header.map((_, j) => Math.max(...cells.map((r) => String(r[j] ?? '').length)));
  const line = (r: Array<string | number>) => '| ' + r.map((c, j) => String(c).padEnd(w[j]!)).join(' | ') + ' |';
  console.log(`\n${title}\n` + line(cells[0]!) + '\n|' + w.map((x) => '-'.repeat(x + 2)).join('|') + '|\n' + cells.slice(1).map(line).join('\n'));
}

export function fmt(x: number): string {
  if (x === 0) return '0';
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toPrecision(3);
}

export function saveResults(name: string, data: unknown): string {
  const dir = join(BENCH_DIR, 'results');
  mkdirSync(dir, { recursive: true });
  const p = join(dir, `${name}.json`);
  writeFileSync(p, JSON.stringify({ date: new Date().toISOString(), node: process.version, ...(data as object) }, null, 2));
  return p;
}
