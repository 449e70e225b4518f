// `webqlora <command> --help` and the README's Command line section, both rendered from the
// commands' flag tables (args.ts), so what the parser accepts is what the help and README say.
import { GROUPS, type CommandHelp, type FlagDef } from './args.ts';

/** `--quant nf4|fp4|int4|none`, `--lora-r N`, `--[no-]double-quant`. */
export function flagUsage(name: string, d: FlagDef): string {
  switch (d.kind) {
    case 'bool': return d.default === true ? `--[no-]${name}` : `--${name}`;
    case 'choice': {
      const list = d.choices.join('|');
      return list.length <= 26 ? `--${name} ${list}` : `--${name} ${d.arg ?? 'X'}`;
    }
    case 'int': case 'number': return `--${name} ${d.arg ?? 'X'}`;
    default: return `--${name} ${d.arg}`;
  }
}

/** The default as help shows it, or null (an off switch, or nothing). */
export function defaultText(d: FlagDef): string | null {
  if (d.required) return 'required';
  if (d.defaultText !== undefined) return d.defaultText;
  if (d.kind === 'bool') return d.default === true ? 'on' : null;
  if (d.kind === 'ids' || d.default === undefined) return null;
  // 2e-4 rather than 0.0002
  return typeof d.default === 'number' && d.default !== 0 && Math.abs(d.default) < 1e-3 ? d.default.toExponential() : String(d.default);
}

/** Words of `text` in lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of text.split(' ')) {
    if (line && line.length + 1 + w.length > width) { lines.push(line); line = w; } else line = line ? `${line} ${w}` : w;
  }
  return [...lines, line];
}

/** One line of meaning, with what a long choice list allows. */
function meaning(d: FlagDef): string {
  return d.kind === 'choice' && d.choices.join('|').length > 26 ? `${d.help} (one of ${d.choices.join(', ')})` : d.help;
}

export function usageLine(name: string, c: CommandHelp): string {
  const req = Object.entries(c.flags).filter(([, d]) => d.required).map(([n, d]) => flagUsage(n, d));
  return ['webqlora', name, ...(c.positional ? [c.positional.name] : []), ...(c.synopsis ? [c.synopsis] : req), '[flags]'].join(' ');
}

/** Help lines are wrapped to this many columns. */
const LINE = 100;

export function commandHelp(name: string, c: CommandHelp): string {
  const rows: Array<[string, string] | string> = [];
  if (c.positional) rows.push('arguments:', [`  ${c.positional.name}`, c.positional.help]);
  for (const g of GROUPS) {
    const flags = Object.entries(c.flags).filter(([, d]) => d.group === g);
    if (flags.length === 0) continue;
    rows.push(`${g}:`);
    for (const [n, d] of flags) {
      const def = defaultText(d);
      rows.push([`  ${flagUsage(n, d)}`, `${meaning(d)}${def ? ` (${def === 'required' ? 'required' : `default: ${def}`})` : ''}`]);
    }
  }
  rows.push('help:', ['  -h, --help', 'show this help and exit']);
  const width = Math.min(34, Math.max(...rows.filter((r) => typeof r !== 'string').map((r) => r[0].length)) + 2);
  const pad = ' '.repeat(width);
  let s = `usage: ${usageLine(name, c)}\n\n${c.summary}\n`;
  for (const r of rows) {
    if (typeof r === 'string') { s += `\n${r}\n`; continue; }
    const text = wrap(r[1], LINE - width).join(`\n${pad}`);
    s += r[0].length + 2 > width ? `${r[0]}\n${pad}${text}\n` : `${r[0].padEnd(width)}${text}\n`;
  }
  return s + `\nexample:\n  ${c.example}\n`;
}

/** `webqlora --help`: the commands, one line each. */
export function mainHelp(commands: Record<string, CommandHelp>): string {
  let s = 'usage: webqlora <command> [flags]\n\ncommands:\n';
  for (const [name, c] of Object.entries(commands)) s += `  ${name.padEnd(10)} ${c.summary}\n`;
  return s + '\n`webqlora <command> --help` lists every flag of a command with its default.\n';
}

export const README_BEGIN = '<!-- cli:begin (generated from the flag tables in src/cli: node --import tsx scripts/cli-readme.ts) -->';
export const README_END = '<!-- cli:end -->';

const cell = (s: string) => s.replace(/\|/g, '\\|');

/**
 * The README's Command line block: each command's usage line, then every flag in one table by
 * group (a flag several commands share with the same meaning is one row naming them).
 */
export function readmeBlock(commands: Record<string, CommandHelp>): string {
  const names = Object.keys(commands);
  const w = Math.max(...names.map((n) => n.length));
  let s = '```\n';
  for (const [name, c] of Object.entries(commands)) s += `${usageLine(name, c).replace(`webqlora ${name} `, `webqlora ${name.padEnd(w)} `)}\n`;
  s += '```\n\n`webqlora <command> --help` prints the same, per command, with an example.\n\n';
  s += '| flag | default | meaning | commands |\n|---|---|---|---|\n';
  const rows: Array<{ flag: string; d: FlagDef; cmds: string[] }> = [];
  for (const [name, c] of Object.entries(commands)) {
    for (const [n, d] of Object.entries(c.flags)) {
      const flag = flagUsage(n, d);
      const same = rows.find((r) => r.flag === flag && meaning(r.d) === meaning(d) && defaultText(r.d) === defaultText(d));
      if (same) same.cmds.push(name);
      else rows.push({ flag, d, cmds: [name] });
    }
  }
  for (const g of GROUPS) {
    const inGroup = rows.filter((r) => r.d.group === g);
    if (inGroup.length === 0) continue;
    s += `| **${g}** | | | |\n`;
    for (const r of inGroup) s += `| \`${cell(r.flag)}\` | ${cell(defaultText(r.d) ?? '')} | ${cell(meaning(r.d))} | ${r.cmds.join(', ')} |\n`;
  }
  return s;
}

/** The README text with its Command line block replaced by what the flag tables generate. */
export function withReadmeBlock(readme: string, commands: Record<string, CommandHelp>): string {
  const a = readme.indexOf(README_BEGIN), b = readme.indexOf(README_END);
  if (a < 0 || b < a) throw new Error(`README.md: the markers ${README_BEGIN} … ${README_END} are missing`);
  return readme.slice(0, a + README_BEGIN.length) + '\n' + readmeBlock(commands) + readme.slice(b);
}
