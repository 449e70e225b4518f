// webqlora demo [--out DIR] [--steps N] [--backend ...]: fine-tunes the bundled stories260K on
// stories the project writes itself and prints greedy generations before and after.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { WebqloraError } from '../../errors.ts';
import { NodeOutDir } from '../../io/node.ts';
import { openModelPath } from '../../io/node-model.ts';
import { saveAdapter } from '../../model/peft.ts';
import { DEMO_PROMPTS, runDemo } from '../../demo/run.ts';
import { tokenizerFromVocab } from '../../tokenizer/load.ts';
import { num, str, type Command, type FlagTable } from '../args.ts';
import { backendFrom } from '../common.ts';
import { BACKEND, THREADS, VERBOSE } from '../flags.ts';
import { fmtDuration, Progress } from '../progress.ts';

/** assets/stories260K.gguf next to the package (dist/node/cli.js or src/cli/commands/demo.ts). */
function bundledModel(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'assets', 'stories260K.gguf');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new WebqloraError('assets/stories260K.gguf is missing from the installation (reinstall webqlora).');
}

const FLAGS: FlagTable = {
  steps: { kind: 'int', arg: 'N', min: 1, default: 80, group: 'optimization', help: 'training steps' },
  backend: BACKEND, threads: THREADS,
  out: { kind: 'string', arg: 'DIR', default: 'webqlora-demo', group: 'output', help: 'where the trained adapter goes (PEFT format)' },
  verbose: VERBOSE,
};

export const demoCommand: Command = {
  summary: 'fine-tune the bundled tiny model on bundled data and generate before/after',
  flags: FLAGS,
  example: 'webqlora demo --steps 40 --out demo-adapter',
  async run(p) {
    const out = str(p, 'out')!;
    const steps = num(p, 'steps');
    const progress = new Progress();
    const backend = await backendFrom(p, progress);
    const t0 = performance.now();
    const path = bundledModel();
    const source = await openModelPath(path);
    try {
      const tok = tokenizerFromVocab(source.vocab!);
      progress.log(`model: stories260K (Karpathy's tinyllamas, MIT), held as NF4 + double quantization; LoRA r 16 on all 7 linear layers`);
      const res = await runDemo(source, tok, backend, {
        steps,
        onLog: (l) => progress.log(l),
        onStep: (rec, total) => progress.update(`step ${rec.step}/${total} | loss ${rec.loss.toFixed(4)} | ${rec.tokens_per_s.toFixed(0)} tok/s | ${fmtDuration((performance.now() - t0) / 1000)}`, rec.step === total),
      });
      progress.done();
      await saveAdapter(res.lora, new NodeOutDir(out), 'stories260K.gguf');
      const w = process.stdout;
      w.write(`\nloss ${res.firstLoss.toFixed(3)} → ${res.lastLoss.toFixed(3)} in ${steps} steps (${fmtDuration((performance.now() - t0) / 1000)})\n`);
      res.before.forEach((b, i) => {
        w.write(`\n── prompt "${DEMO_PROMPTS[i]}" ──\n`);
        w.write(`before: ${b}\nafter:  ${res.after[i]}\n`);
      });
      w.write(`\nadapter saved to ${out}/ (PEFT format); try: webqlora generate --model ${path} --adapter ${out} --prompt "Once upon a time"\n`);
      return 0;
    } finally {
      await source.close();
      await backend.destroy();
    }
  },
};
