// Rewrites the README's Command line block from the CLI's flag tables (src/cli/commands/*.ts):
//   node --import tsx scripts/cli-readme.ts
// test/cli/help.test.ts fails when the README and the tables disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMANDS } from '../src/cli/commands/index.ts';
import { withReadmeBlock } from '../src/cli/help.ts';

const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'README.md');
const before = readFileSync(path, 'utf8');
const after = withReadmeBlock(before, COMMANDS);
if (after !== before) writeFileSync(path, after);
process.stderr.write(`README.md: Command line block ${after === before ? 'already up to date' : 'rewritten'}\n`);
