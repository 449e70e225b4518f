// llama2.c tokenizer.bin: written here from stories260K's GGUF vocabulary the way llama2.c's
// tokenizer.py exports it ('▁' as ' ', BOS/EOS as "\n<s>\n"/"\n</s>\n"), then read back: ids
// must equal the GGUF tokenizer's on varied text, and malformed files must be refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openModelPath } from '../../src/io/node-model.ts';
import { tokenizerFromLlama2cBin, tokenizerFromVocab } from '../../src/tokenizer/load.ts';
import { STORIES_GGUF } from '../helpers/index.ts';
import { WebqloraError } from '../../src/errors.ts';

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

/** A tokenizer.bin: max_token_length, then per token f32 score, i32 length, bytes. */
function bin(maxLen: number, tokens: string[], tail: number[] = []): Uint8Array {
  const enc = tokens.map((t) => new TextEncoder().encode(t));
  const out = new Uint8Array(4 + enc.reduce((s, b) => s + 8 + b.length, 0) + tail.length);
  const dv = new DataView(out.buffer);
  dv.setInt32(0, maxLen, true);
  let o = 4;
  enc.forEach((b, i) => { dv.setFloat32(o, -i, true); dv.setInt32(o + 4, b.length, true); out.set(b, o + 8); o += 8 + b.length; });
  out.set(tail, o);
  return out;
}

test('malformed tokenizer.bin files are refused with a sentence', async () => {
  const { bin: real } = await exportBin();
  const ok = bin(4, ['unk', 's', '/s', 'ab']);
  assert.is(tokenizerFromLlama2cBin(ok).vocabSize, 4);
  const cases: Array<[Uint8Array, string]> = [
    [real.subarray(0, 2), 'tok.bin: too short for a llama2.c tokenizer.bin.'],
    [Uint8Array.from([255, 255, 255, 127]), 'tok.bin: max_token_length 2147483647 is not plausible (not a llama2.c tokenizer.bin?).'],
    [Uint8Array.from([0, 0, 0, 0]), 'tok.bin: max_token_length 0 is not plausible (not a llama2.c tokenizer.bin?).'],
    // a token header (score + length) cut short
    [bin(4, ['a', 'b', 'c'], [0, 0, 0, 0, 1]), 'tok.bin: truncated at token 3.'],
    [ok.subarray(0, 4 + 9 + 4), 'tok.bin: truncated at token 1.'],
    // a token's bytes cut short, or longer than max_token_length, or negative
    [ok.subarray(0, ok.length - 1), 'tok.bin: token 3 has length 2 (max 4, 1 bytes left).'],
    [bin(4, ['a', 'b', 'c', 'hello']), 'tok.bin: token 3 has length 5 (max 4, 5 bytes left).'],
    [bin(4, ['a'], [0, 0, 0, 0, 255, 255, 255, 255]), 'tok.bin: token 1 has length -1 (max 4, 0 bytes left).'],
    // too few tokens for <unk>, <s>, </s>
    [bin(4, ['a', 'b']), 'tok.bin: only 2 tokens.'],
    [bin(4, []), 'tok.bin: only 0 tokens.'],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(() => tokenizerFromLlama2cBin(bytes, 'tok.bin'), (e: unknown) => e instanceof WebqloraError && e.message === message, message);
  }
});

test.run();
