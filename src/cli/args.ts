// Flag parsing for every command: node:util parseArgs in strict mode, so an unknown or malformed
// flag is a plain error, plus typed getters that name the flag in their messages.
import { parseArgs } from 'node:util';
import { WebqloraError } from '../errors.ts';

export type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function parseFlags(cmd: string, argv: string[], spec: FlagSpec, allowPositionals = false): Parsed {
  try {
    const r = parseArgs({ args: argv, options: spec, strict: true, allowPositionals, allowNegative: true } as Parameters<typeof parseArgs>[0]);
    return { values: r.values as Parsed['values'], positionals: r.positionals };
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/s, '').replace(/^Unknown option/, 'unknown option');
    throw new WebqloraError(`webqlora ${cmd}: ${msg.replace(/\.$/, '')} (see webqlora --help).`);
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function required(cmd: string, p: Parsed, name: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw new WebqloraError(`webqlora ${cmd}: --${name} is required.`);
  return v;
}

export function num(cmd: string, p: Parsed, name: string, def: number, opts: { int?: boolean; min?: number; max?: number } = {}): number {
  const v = str(p, name);
  if (v === undefined) return def;
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x) || (opts.int && !Number.isInteger(x))) {
    throw new WebqloraError(`webqlora ${cmd}: --${name} expects ${opts.int ? 'an integer' : 'a number'}, got '${v}'.`);
  }
  if (opts.min !== undefined && x < opts.min) throw new WebqloraError(`webqlora ${cmd}: --${name} must be at least ${opts.min}, got ${v}.`);
  if (opts.max !== undefined && x > opts.max) throw new WebqloraError(`webqlora ${cmd}: --${name} must be at most ${opts.max}, got ${v}.`);
  return x;
}

export function bool(p: Parsed, name: string, def: boolean): boolean {
  const v = p.values[name];
  return typeof v === 'boolean' ? v : def;
}

export function choice<T extends string>(cmd: string, p: Parsed, name: string, allowed: readonly T[], def: T): T {
  const v = str(p, name);
  if (v === undefined) return def;
  if (!(allowed as readonly string[]).includes(v)) throw new WebqloraError(`webqlora ${cmd}: --${name} must be one of ${allowed.join(', ')}, got '${v}'.`);
  return v as T;
}
