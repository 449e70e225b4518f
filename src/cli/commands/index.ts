// The command table. Each command declares its flags (args.ts FlagTable), a summary and an
// example; main.ts parses and checks the flags against that table before `run` sees them.
import type { Command } from '../args.ts';
import { inspectCommand } from './inspect.ts';
import { quantizeCommand } from './quantize.ts';
import { generateCommand } from './generate.ts';
import { evalCommand } from './eval.ts';
import { trainCommand } from './train.ts';
import { mergeCommand } from './merge.ts';
import { demoCommand } from './demo.ts';
import { exportCommand } from './export.ts';

export const COMMANDS: Record<string, Command> = {
  train: trainCommand,
  generate: generateCommand,
  eval: evalCommand,
  merge: mergeCommand,
  export: exportCommand,
  quantize: quantizeCommand,
  inspect: inspectCommand,
  demo: demoCommand,
};
