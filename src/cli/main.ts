// webqlora command line: a thin layer over the library API (DESIGN.md "Command line").
// A user mistake (WebqloraError) prints one sentence and exits with its code, never a stack trace.
import { WebqloraError } from '../errors.ts';
import { COMMANDS, usage } from './commands/index.ts';

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage());
    return cmd ? 0 : 2;
  }
  if (cmd === '--version') {
    process.stdout.write(`${(await import('../version.ts')).VERSION}\n`);
    return 0;
  }
  const command = COMMANDS[cmd];
  if (!command) throw new WebqloraError(`unknown command '${cmd}' (expected one of ${Object.keys(COMMANDS).join(', ')}; see webqlora --help).`);
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    if (err instanceof WebqloraError) {
      process.stderr.write(`webqlora: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else {
      const e = err as Error;
      process.stderr.write(`webqlora: internal error: ${e?.message ?? String(err)}\n${process.env.WEBQLORA_DEBUG ? (e?.stack ?? '') + '\n' : '(set WEBQLORA_DEBUG=1 for a stack trace; please report this)\n'}`);
      process.exitCode = 70;
    }
  },
);
