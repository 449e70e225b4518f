// The command table. Each command declares its flags (args.ts FlagTable), a summary and an
// example; main.ts parses and checks the flags against that table before `run` sees them.
import type { Parsed } from '../args.ts';
import type { CommandHelp } from '../help.ts';
import { inspect } from './inspect.ts';
import { quantize } from './quantize.ts';
import { generateCommand } from './generate.ts';
import { evalCommand } from './eval.ts';
import { trainCommand } from './train.ts';
import { mergeCommand } from './merge.ts';
import { demoCommand } from './demo.ts';
import { exportCommand } from './export.ts';

export interface Command extends CommandHelp {
  /** runs with flags already checked against `flags`; returns the exit code */
  run(p: Parsed): Promise<number>;
}

export const COMMANDS: Record<string, Command> = {
  train: trainCommand,
  generate: generateCommand,
  eval: evalCommand,
  merge: mergeCommand,
  export: exportCommand,
  quantize,
  inspect,
  demo: demoCommand,
};
