// llama2.c tokenizer.bin: written here from stories260K's GGUF vocabulary the way llama2.c's
// tokenizer.py exports it ('▁' as ' ', BOS/EOS as "\n<s>\n"/"\n</s>\n"), then read back: ids
// must equal the GGUF tokenizer's on varied text, and malformed files must be refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openModelPath } from '../../src/io/node.ts';
import { tokenizerFromLlama2cBin, tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import { STORIES_GGUF } from '../helpers/index.ts';

async function exportBin(): Promise<{ bin: Uint8Array; vocab: NonNullable<Awaited<ReturnType<typeof openModelPath>>['vocab']> }> {
  const src = await openModelPath(STORIES_GGUF);
  const v = src.vocab!;
  await src.close();
  const enc = new TextEncoder();
  const toks = v.tokens.map((t, i) => (i === 1 ? '\n<s>\n' : i === 2 ? '\n</s>\n' : t.replace(/\u2581/g, ' ')));
  const bytes = toks.map((t) => enc.encode(t));
  const maxLen = Math.max(...bytes.map((b) => b.length));
  const out = new Uint8Array(4 + bytes.reduce((s, b) => s + 8 + b.length, 0));
  const dv = new DataView(out.buffer);
  dv.setInt32(0, maxLen, true);
  let o = 4;
  bytes.forEach((b, i) => { dv.setFloat32(o, v.scores![i]!, true); dv.setInt32(o + 4, b.length, true); out.set(b, o + 8); o += 8 + b.length; });
  return { bin: out, vocab: v };
}

test('tokenizer.bin gives the same ids as the GGUF vocabulary', async () => {
  const { bin, vocab } = await exportBin();
  const a = tokenizerFromVocab(vocab), b = tokenizerFromLlama2cBin(bin);
  for (const s of ['Once upon a time, there was a little girl named Lily.', '  two spaces\nnew line', 'émoji 🐱 and 123!', '']) {
    assert.equal(b.encode(s, { addBos: true }), a.encode(s, { addBos: true }), s);
    assert.is(b.decode(b.encode(s)), a.decode(a.encode(s)));
  }
  assert.is(b.bosId, 1);
  assert.is(b.eosId, 2);
});

test('malformed tokenizer.bin files are refused with a sentence', async () => {
  const { bin } = await exportBin();
  const cases: Array<[Uint8Array, RegExp]> = [
    [bin.subarray(0, 2), /too short/],
    [bin.subarray(0, bin.length - 3), /token \d+ has length|truncated/],
    [Uint8Array.from([255, 255, 255, 127]), /max_token_length/],
  ];
  for (const [bytes, re] of cases) {
    try {
      tokenizerFromLlama2cBin(bytes, 'tok.bin');
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, re);
      assert.is((e as Error).name, 'WebqloraError');
    }
  }
});

test.run();
