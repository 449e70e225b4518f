// The command table. Each command module exports `run(argv): Promise<number>` (exit code).
import { inspect } from './inspect.ts';
import { quantize } from './quantize.ts';
import { generateCommand } from './generate.ts';
import { evalCommand } from './eval.ts';
import { trainCommand } from './train.ts';
import { mergeCommand } from './merge.ts';
import { demoCommand } from './demo.ts';
import { exportCommand } from './export.ts';

export interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

export const COMMANDS: Record<string, Command> = {
  train: trainCommand,
  generate: generateCommand,
  eval: evalCommand,
  merge: mergeCommand,
  export: exportCommand,
  demo: demoCommand,
  quantize,
  inspect,
};

export function usage(): string {
  let s = 'usage: webqlora <command> [flags]\n\ncommands:\n';
  for (const [name, c] of Object.entries(COMMANDS)) s += `  ${name.padEnd(10)} ${c.summary}\n`;
  s += '\nSee docs/ARCHITECTURE.md and README.md for every flag.\n';
  return s;
}
