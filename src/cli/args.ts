// Flags of every command, declared once as a table (FlagDef): the table drives the parser, the
// checks, `webqlora <command> --help` and the README's Command line section (help.ts), so none
// of them can drift from the others. Every value is checked here, before anything is loaded.
import { WebqloraError } from '../errors.ts';

/** Help sections, in the order `--help` prints them. */
export const GROUPS = ['model', 'data', 'LoRA', 'optimization', 'generation', 'memory', 'backend', 'output'] as const;
export type Group = (typeof GROUPS)[number];

interface FlagBase {
  group: Group;
  /** one line of meaning */
  help: string;
  /** the default as help shows it, where it depends on something (`min(512, the model's context)`) */
  defaultText?: string;
  required?: boolean;
}
export interface BoolFlag extends FlagBase { kind: 'bool'; default?: boolean }
export interface NumFlag extends FlagBase {
  kind: 'int' | 'number';
  default?: number;
  /** inclusive bounds; `above` is an exclusive lower bound */
  min?: number;
  max?: number;
  above?: number;
  arg?: string;
}
export interface ChoiceFlag extends FlagBase { kind: 'choice'; choices: readonly string[]; default?: string; arg?: string }
export interface StringFlag extends FlagBase { kind: 'string'; arg: string; default?: string }
/** Comma-separated whole numbers ≥ 0 (token ids). */
export interface IdsFlag extends FlagBase { kind: 'ids'; arg: string }
export type FlagDef = BoolFlag | NumFlag | ChoiceFlag | StringFlag | IdsFlag;
export type FlagTable = Record<string, FlagDef>;

export type Value = string | number | boolean | number[];

export interface Parsed {
  cmd: string;
  flags: FlagTable;
  /** the flags given on the command line, checked and typed */
  values: Map<string, Value>;
  /**
   * Values a resumed run keeps from its checkpoint for flags not given (train --resume): read
   * after the command line's and before the table's default. given() does not see them.
   */
  resumed?: Map<string, Value>;
  positionals: string[];
  /** --help or -h was given: nothing else was checked */
  help: boolean;
}

/** What `--help` and the README say of a command (help.ts renders it). */
export interface CommandHelp {
  summary: string;
  flags: FlagTable;
  /** a positional argument (inspect PATH) */
  positional?: { name: string; help: string };
  /** what the usage line shows after the command name, where the required flags alone do not say it */
  synopsis?: string;
  /** one command line that works as written (given the files it names) */
  example: string;
}

/** A command of the CLI (commands/index.ts lists them as `xxxCommand`). */
export interface Command extends CommandHelp {
  /** runs with flags already checked against `flags`; returns the exit code */
  run(p: Parsed): Promise<number>;
}

/** What a flag's value must be, as error messages and help say it: "a whole number ≥ 1". */
export function allowedText(d: FlagDef): string {
  switch (d.kind) {
    case 'bool': return 'on or off';
    case 'choice': return `one of ${d.choices.join(', ')}`;
    case 'ids': return 'comma-separated whole numbers ≥ 0 (such as 1,2,3)';
    case 'string': return `a ${d.arg}`;
    default: {
      const what = d.kind === 'int' ? 'a whole number' : 'a number';
      if (d.min !== undefined && d.max !== undefined) return `${what} from ${d.min} to ${d.max}`;
      if (d.above !== undefined) return `${what} > ${d.above}${d.max !== undefined ? ` and ≤ ${d.max}` : ''}`;
      if (d.min !== undefined) return `${what} ≥ ${d.min}`;
      if (d.max !== undefined) return `${what} ≤ ${d.max}`;
      return what;
    }
  }
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** Checks one value against its definition; returns it typed. */
function check(name: string, d: FlagDef, v: string): Value {
  const bad = () => new WebqloraError(`--${name} must be ${allowedText(d)}, got '${v}'.`);
  switch (d.kind) {
    case 'bool': throw new WebqloraError(`--${name} takes no value (write --${name} or --no-${name}).`);
    case 'string': return v;
    case 'choice':
      if (!d.choices.includes(v)) throw bad();
      return v;
    case 'ids': {
      const parts = v.split(',').map((s) => s.trim());
      const ids = parts.map(Number);
      const i = parts.findIndex((s, k) => !/^\d+$/.test(s) || !Number.isSafeInteger(ids[k]));
      if (i >= 0) throw new WebqloraError(`--${name}: '${parts[i]}' is not a token id (expected ${allowedText(d)}).`);
      return ids;
    }
    default: {
      const x = Number(v);
      if (!NUMBER.test(v.trim()) || !Number.isFinite(x) || (d.kind === 'int' && !Number.isSafeInteger(x))) throw bad();
      if ((d.min !== undefined && x < d.min) || (d.max !== undefined && x > d.max) || (d.above !== undefined && x <= d.above)) throw bad();
      return x;
    }
  }
}

/** A negative number is a value, not a flag: `--lr -1` reads as --lr=-1 (and is then refused by range). */
const looksLikeFlag = (t: string) => t.startsWith('-') && t !== '-' && !NUMBER.test(t);

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length]!;
}

function unknownFlag(cmd: string, token: string, flags: FlagTable): WebqloraError {
  const name = token.replace(/^-+/, '').replace(/=.*$/, '');
  const near = Object.keys(flags).map((k) => [k, editDistance(name, k)] as const).filter(([k, e]) => e <= 2 || k.startsWith(name) || name.startsWith(k)).sort((a, b) => a[1] - b[1])[0];
  return new WebqloraError(`unknown flag ${token.replace(/=.*$/, '')}${near ? ` (did you mean --${near[0]}?)` : ''}; see webqlora ${cmd} --help.`);
}

/**
 * Parses and checks argv against a command's flag table: `--name value`, `--name=value`,
 * `--flag` / `--no-flag` for on/off flags, `--` before positionals that start with '-'. Every
 * value is checked against its definition and every required flag must be present; a mistake is
 * one sentence naming the flag and what it accepts. `--help` / `-h` anywhere stops at once.
 */
export function parseFlags(cmd: string, argv: string[], flags: FlagTable, positionals: { max: number } = { max: 0 }): Parsed {
  const out: Parsed = { cmd, flags, values: new Map(), positionals: [], help: false };
  if (argv.some((t, i) => (t === '--help' || t === '-h') && !argv.slice(0, i).includes('--'))) return { ...out, help: true };
  for (let i = 0; i < argv.length; i++) {
    const t = argv[i]!;
    if (t === '--') { out.positionals.push(...argv.slice(i + 1)); break; }
    if (!looksLikeFlag(t)) { out.positionals.push(t); continue; }
    if (!t.startsWith('--')) throw unknownFlag(cmd, t, flags);
    const eq = t.indexOf('=');
    let name = eq < 0 ? t.slice(2) : t.slice(2, eq);
    let d = flags[name];
    if (!d && name.startsWith('no-') && flags[name.slice(3)]?.kind === 'bool' && eq < 0) {
      name = name.slice(3);
      out.values.set(name, false);
      continue;
    }
    if (!d) throw unknownFlag(cmd, t, flags);
    if (d.kind === 'bool') {
      if (eq >= 0) check(name, d, t.slice(eq + 1));
      out.values.set(name, true);
      continue;
    }
    let v: string;
    if (eq >= 0) v = t.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined || looksLikeFlag(next)) {
        throw new WebqloraError(`--${name} needs a value (${allowedText(d)})${next === undefined ? '' : `, got the flag ${next}; write --${name}=VALUE for a value that starts with '-'`}.`);
      }
      v = next;
      i++;
    }
    out.values.set(name, check(name, d, v));
  }
  if (out.positionals.length > positionals.max) {
    throw new WebqloraError(`unexpected argument '${out.positionals[positionals.max]}'; see webqlora ${cmd} --help.`);
  }
  for (const [name, d] of Object.entries(flags)) {
    if (d.required && !out.values.has(name)) throw new WebqloraError(`--${name} is required; see webqlora ${cmd} --help.`);
  }
  return out;
}

/** Whether the flag was given on the command line. */
export function given(p: Parsed, name: string): boolean {
  return p.values.has(name);
}

/** A flag's value: given, else kept by a resumed run, else the table's default. */
function valueOf(p: Parsed, name: string): unknown {
  return p.values.get(name) ?? p.resumed?.get(name) ?? (def(p, name) as { default?: unknown }).default;
}

function def(p: Parsed, name: string): FlagDef {
  const d = p.flags[name];
  if (!d) throw new Error(`webqlora ${p.cmd}: no flag --${name} in its table`);
  return d;
}

export function str(p: Parsed, name: string): string | undefined {
  const v = valueOf(p, name);
  return typeof v === 'string' ? v : undefined;
}

export function required(p: Parsed, name: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw new WebqloraError(`--${name} is required; see webqlora ${p.cmd} --help.`);
  return v;
}

/** A number flag: its value, else its table default (undefined when it has none). */
export function optNum(p: Parsed, name: string): number | undefined {
  const v = valueOf(p, name);
  return typeof v === 'number' ? v : undefined;
}

/** A number flag that has a table default. */
export function num(p: Parsed, name: string): number {
  const v = optNum(p, name);
  if (v === undefined) throw new Error(`webqlora ${p.cmd}: --${name} has no default`);
  return v;
}

export function bool(p: Parsed, name: string): boolean {
  const v = valueOf(p, name);
  return v === true;
}

export function choice<T extends string>(p: Parsed, name: string): T {
  const v = str(p, name);
  if (v === undefined) throw new Error(`webqlora ${p.cmd}: --${name} has no default`);
  return v as T;
}

export function ids(p: Parsed, name: string): number[] | undefined {
  const v = p.values.get(name);
  return Array.isArray(v) ? v : undefined;
}
