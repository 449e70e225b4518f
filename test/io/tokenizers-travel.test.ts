// "Tokenizers travel": quantize (writeBnbModel) and merge (mergeAdapter) write an HF directory
// whose tokenizer gives the source's ids — copied files from an HF directory, and from a GGUF the
// tokenizer.json / tokenizer_config.json / special_tokens_map.json built from its vocabulary
// (src/tokenizer/export.ts; transformers' AutoTokenizer opens these, checked outside the repo).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createReferenceBackend } from '../../src/backend/reference/index.ts';
import { writeBnbModel } from '../../src/io/bnb.ts';
import { NodeDirSource, NodeOutDir } from '../../src/io/node.ts';
import { openModelPath } from '../../src/io/node-model.ts';
import { LoraAdapters } from '../../src/model/lora.ts';
import { mergeAdapter } from '../../src/model/merge.ts';
import { loadTokenizerFromDir, tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import { STORIES_GGUF } from '../helpers/index.ts';

const TEXTS = ['Once upon a time, there was a little girl named Lily.', ' two  spaces\tand a tab\n', 'numbers 12345 and ünïcödé', 'Tom said: "Hi!"'];

test('quantize and merge from a GGUF write HF tokenizer files that give the GGUF vocabulary\'s ids', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'webqlora-tok-travel-'));
  try {
    const src = await openModelPath(STORIES_GGUF);
    const want = tokenizerFromVocab(src.vocab!);
    await writeBnbModel(src, new NodeOutDir(join(tmp, 'q')), { quantType: 'nf4', doubleQuant: true, blocksize: 64 });
    const be = createReferenceBackend();
    const lora = new LoraAdapters(be, src.config, { r: 2, alpha: 4, dropout: 0, targets: ['q_proj'], useRslora: false }, false);
    lora.initPeft(() => 0.5);
    await mergeAdapter(src, lora, be, new NodeOutDir(join(tmp, 'm')), { dtype: 'F32', quant: 'none', doubleQuant: false, blocksize: 64 });
    await src.close();
    for (const out of ['q', 'm']) {
      const files = readdirSync(join(tmp, out));
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) assert.ok(files.includes(f), `${out}: ${f} written`);
      const cfg = JSON.parse(readFileSync(join(tmp, out, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
      assert.is(cfg.bos_token, '<s>');
      const dir = new NodeDirSource(join(tmp, out));
      const tok = (await loadTokenizerFromDir(dir))!;
      await dir.close();
      for (const t of TEXTS) assert.equal(tok.encode(t), want.encode(t), `${out}: ${JSON.stringify(t)}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
