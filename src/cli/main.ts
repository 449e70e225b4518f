// webqlora command line: a thin layer over the library API (DESIGN.md "Command line").
// A user mistake (WebqloraError) prints one sentence, prefixed once with `webqlora <command>:`,
// and exits with its code, never a stack trace.
import { WebqloraError } from '../errors.ts';
import { parseFlags } from './args.ts';
import { COMMANDS } from './commands/index.ts';
import { commandHelp, mainHelp } from './help.ts';
import { enableRelaxedSimd } from '../backend/wasm/node-flags.ts';

// Node 20 keeps relaxed SIMD behind a V8 flag: on before any kernel module is compiled
enableRelaxedSimd();

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    const c = cmd === 'help' && rest[0] ? COMMANDS[rest[0]] : undefined;
    process.stdout.write(c ? commandHelp(rest[0]!, c) : mainHelp(COMMANDS));
    return cmd ? 0 : 2;
  }
  if (cmd === '--version') {
    process.stdout.write(`${(await import('../version.ts')).VERSION}\n`);
    return 0;
  }
  const command = COMMANDS[cmd];
  if (!command) throw new WebqloraError(`unknown command '${cmd}' (expected one of ${Object.keys(COMMANDS).join(', ')}; see webqlora --help).`);
  const p = parseFlags(cmd, rest, command.flags, { max: command.positional ? 1 : 0 });
  if (p.help) {
    process.stdout.write(commandHelp(cmd, command));
    return 0;
  }
  return command.run(p);
}

/** `webqlora train: ` for a command's messages, `webqlora: ` before one is known; never twice. */
function prefixed(message: string): string {
  const cmd = process.argv[2];
  const prefix = cmd && Object.hasOwn(COMMANDS, cmd) ? `webqlora ${cmd}: ` : 'webqlora: ';
  return prefix + message.replace(/^webqlora(?: [a-z]+)?: /, '');
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    if (err instanceof WebqloraError) {
      process.stderr.write(`${prefixed(err.message)}\n`);
      process.exitCode = err.exitCode;
    } else {
      const e = err as Error;
      process.stderr.write(`${prefixed(`internal error: ${e?.message ?? String(err)}`)}\n${process.env.WEBQLORA_DEBUG ? (e?.stack ?? '') + '\n' : '(set WEBQLORA_DEBUG=1 for a stack trace; please report this)\n'}`);
      process.exitCode = 70;
    }
  },
);
