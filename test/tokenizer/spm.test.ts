// SentencePiece BPE tokenizer: from the Llama-2 tokenizer.model it must give exactly the ids of
// the TinyLlama tokenizer.json run through @huggingface/tokenizers (same Llama-2 vocabulary), and
// from the stories260K GGUF vocabulary it must round-trip ordinary text.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FIXTURES, STORIES_GGUF, rejectsUser } from '../helpers/index.ts';
import { fuzzParser } from '../helpers/mutate.ts';
import { MapDirSource } from '../../src/io/source.ts';
import { openGguf } from '../../src/io/gguf.ts';
import { parseSentencePieceModel, SpmTokenizer, PIECE_BYTE, PIECE_CONTROL, PIECE_NORMAL, PIECE_UNKNOWN, PIECE_USER_DEFINED } from '../../src/tokenizer/spm.ts';
import { loadTokenizerFromDir, tokenizerFromVocab, tokenizerFromSentencePiece } from '../../src/tokenizer/load.ts';
import type { EmbeddedVocab } from '../../src/io/weights.ts';
import { WebqloraError } from '../../src/errors.ts';
import { VARIED, tinyStories } from './texts.ts';
import { fileOpener } from '../helpers/files.ts';

/** Files opened by a test; closed after the suite (the loaders leave their source open). */
const file = fileOpener(test);

const TOK = join(FIXTURES, 'tokenizers');
const MODEL_BYTES = new Uint8Array(readFileSync(join(TOK, 'llama2-sentencepiece', 'tokenizer.model')));

let spm: SpmTokenizer;
let hf: HfTokenizer;
let stories: EmbeddedVocab;

test.before(async () => {
  spm = new SpmTokenizer(parseSentencePieceModel(MODEL_BYTES, 'tokenizer.model'));
  const j = JSON.parse(readFileSync(join(TOK, 'tinyllama-1.1b-chat', 'tokenizer.json'), 'utf8'));
  j.truncation = null; // this copy was saved with max_length 512
  hf = new HfTokenizer(j, {});
  const w = await openGguf(await file(STORIES_GGUF));
  stories = w.vocab!;
  await w.close();
});

test('tokenizer.model: pieces, scores, types and special ids', () => {
  const m = parseSentencePieceModel(MODEL_BYTES, 'tokenizer.model');
  assert.is(m.pieces.length, 32000);
  assert.equal([m.pieces[0], m.pieces[1], m.pieces[2], m.pieces[3], m.pieces[258], m.pieces[259], m.pieces[15043]], ['<unk>', '<s>', '</s>', '<0x00>', '<0xFF>', '▁▁', '▁Hello']);
  assert.equal(Array.from(m.types.subarray(0, 4)), [PIECE_UNKNOWN, PIECE_CONTROL, PIECE_CONTROL, PIECE_BYTE]);
  assert.is(m.types[15043], PIECE_NORMAL);
  assert.equal([m.bosId, m.eosId, m.unkId, m.padId], [1, 2, 0, null]); // trainer_spec pad_id = -1
  assert.is(m.addDummyPrefix, true);
  assert.is(m.removeExtraWhitespaces, false);
  assert.ok(Number.isFinite(m.scores[259]!));
  assert.ok(m.scores[15043]! < m.scores[1000]!); // earlier merges score higher
});

test('SPM(tokenizer.model) == HF(TinyLlama tokenizer.json) on TinyStories and unicode/whitespace edge cases', () => {
  const { lines, stories: st } = tinyStories();
  // every 4th line keeps the run short; the whole stories include every line anyway
  const texts = [...lines.filter((_, i) => i % 4 === 0), ...st, ...VARIED];
  assert.ok(texts.length >= 200, `${texts.length} texts`);
  let n = 0;
  for (const s of texts) {
    const ours = spm.encode(s, { addBos: false });
    const ref = hf.encode(s, { add_special_tokens: false }).ids;
    if (JSON.stringify(ours) !== JSON.stringify(ref)) {
      assert.equal(ours, ref, `ids differ for ${JSON.stringify(s.slice(0, 80))}`);
    }
    if (n < 40) assert.equal(spm.encode(s), hf.encode(s).ids, 'with BOS'); // both add BOS by default
    const ref2 = ref.length ? hf.decode(ref, { skip_special_tokens: true, clean_up_tokenization_spaces: false }) : '';
    assert.is(spm.decode(ours), ref2, `decode ${JSON.stringify(s.slice(0, 40))}`);
    assert.is(spm.decode(ours), s, `round trip ${JSON.stringify(s.slice(0, 40))}`);
    n++;
  }
  assert.ok(n >= 200);
});

test('SPM differs from HF only where HF parses special-token text: "<s>" stays literal', () => {
  // sentencepiece (and llama.cpp without parse_special) never turn text into control tokens;
  // tokenizer.json splits added tokens out first. Training text containing "</s>" stays text.
  const ours = spm.encode('a <s> b', { addBos: false });
  assert.not.ok(ours.includes(1));
  assert.is(spm.decode(ours), 'a <s> b');
  assert.ok(hf.encode('a <s> b', { add_special_tokens: false }).ids.includes(1));
});

test('stories260K GGUF vocabulary: "Once upon a time" encodes to vocabulary pieces and decodes back', () => {
  const t = tokenizerFromVocab(stories);
  assert.is(t.kind, 'spm');
  assert.is(t.vocabSize, 512);
  assert.equal([t.bosId, t.eosId, t.unkId, t.padId], [1, 2, 0, null]);
  const ids = t.encode('Once upon a time');
  assert.is(ids[0], 1); // addBos from the GGUF (llama default)
  const pieces = ids.slice(1).map((i) => t.idToToken(i)!);
  assert.is(pieces.join(''), '▁Once▁upon▁a▁time');
  // greedy-by-score merging: no two adjacent result pieces may still merge into a better piece
  // than the ones they came from (a complete BPE result)
  for (let i = 0; i + 1 < pieces.length; i++) assert.is(t.tokenToId(pieces[i]! + pieces[i + 1]!), null, `${pieces[i]}+${pieces[i + 1]}`);
  assert.is(t.decode(ids), 'Once upon a time');
  // rendering control tokens follows HF's decoder: only the very first character is stripped
  assert.is(t.decode(ids, { skipSpecial: false }), '<s> Once upon a time');
  assert.is(spm.decode([1, 15043, 2], { skipSpecial: false }), hf.decode([1, 15043, 2], { skip_special_tokens: false }));
});

test('stories260K vocabulary: byte fallback and round trips of ordinary text', () => {
  const t = tokenizerFromVocab(stories);
  // '日' = E6 97 A5: not a piece, so three byte pieces; <0x00> is id 3
  const ids = t.encode('日', { addBos: false });
  assert.equal(ids.slice(-3), [3 + 0xe6, 3 + 0x97, 3 + 0xa5]);
  const { lines } = tinyStories();
  for (const s of [...lines.slice(0, 150), ...VARIED]) {
    const enc = t.encode(s);
    assert.is(t.decode(enc), s, JSON.stringify(s.slice(0, 40)));
    // streaming one id at a time gives the same text
    const ds = t.createDecodeStream();
    assert.is(enc.map((i) => ds.push(i)).join('') + ds.flush(), s);
  }
  // every non-byte id decodes; per-id stream output concatenates to the decode of all of them
  // (raw byte pieces are left out: a run of them that is not valid UTF-8 decodes to U+FFFD per
  // byte as a whole, as HF's ByteFallback decoder does, so it cannot be split up)
  const all = Array.from({ length: 512 }, (_, i) => i).filter((i) => !/^<0x/.test(t.idToToken(i)!));
  assert.is(all.length, 512 - 256);
  const ds = t.createDecodeStream();
  assert.is(all.map((i) => ds.push(i)).join('') + ds.flush(), t.decode(all));
});

test('streaming: emoji from byte pieces comes out whole, after the last byte', () => {
  const ids = spm.encode('hi 🦙!', { addBos: true });
  const ds = spm.createDecodeStream();
  const parts = ids.map((i) => ds.push(i));
  assert.equal(parts.filter((p) => p !== ''), ['hi', ' ', '🦙', '!']);
  const byteIdx = ids.findIndex((i) => spm.idToToken(i) === '<0xF0>');
  assert.equal(parts.slice(byteIdx, byteIdx + 3), ['', '', '']); // waiting for the 4th byte
  // an incomplete character at the end is flushed as U+FFFD
  const cut = spm.createDecodeStream();
  for (const i of ids.slice(0, byteIdx + 2)) cut.push(i);
  assert.is(cut.flush(), '\uFFFD\uFFFD');
  // after a prompt, the first new token keeps its space
  const prompt = spm.encode('Once upon');
  const ps = spm.createDecodeStream({ prefix: prompt });
  assert.is(spm.encode(' a time', { addBos: false }).slice(1).map((i) => ps.push(i)).join(''), ' a time');
});

// ---------------------------------------------------------------------------------------------
// Synthetic vocabularies and protobuf files

function vocab(tokens: string[], types: number[], scores?: number[], extra: Partial<EmbeddedVocab> = {}): EmbeddedVocab {
  return {
    model: 'llama', pre: null, tokens, scores: scores ? Float32Array.from(scores) : null, tokenTypes: Int32Array.from(types),
    merges: null, bosId: 1, eosId: 2, unkId: 0, padId: null, addBos: false, addEos: false, addSpacePrefix: true, ...extra,
  };
}

test('merge order: highest score first, leftmost on ties; user-defined pieces stay whole; unk without byte pieces', () => {
  const toks = ['<unk>', '<s>', '</s>', '▁', 'a', 'b', 'ab', 'ba', 'aba', '▁a', '<t>'];
  const types = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1, PIECE_USER_DEFINED];
  // "bab": pairs (b,a) and (a,b); 'ba' scores higher → ['ba','b']; with 'ab' higher → ['b','ab']
  const hi = (p: string, s: number) => toks.map((t) => (t === p ? s : -10));
  let t = tokenizerFromVocab(vocab(toks, types, hi('ba', 0)));
  assert.equal(t.encode('bab').map((i) => t.idToToken(i)), ['▁', 'ba', 'b']);
  t = tokenizerFromVocab(vocab(toks, types, hi('ab', 0)));
  assert.equal(t.encode('bab').map((i) => t.idToToken(i)), ['▁', 'b', 'ab']);
  // equal scores: the leftmost pair merges first ("aaa" has no 'aa' piece; "abab" → 'ab','ab')
  t = tokenizerFromVocab(vocab(toks, types, toks.map(() => 0)));
  assert.equal(t.encode('abab').map((i) => t.idToToken(i)), ['▁a', 'ba', 'b']);
  // user-defined '<t>' is one symbol, never split into '<', 't', '>' (which would be unk here)
  assert.equal(t.encode('a<t>b').map((i) => t.idToToken(i)), ['▁a', '<t>', 'b']);
  assert.equal(t.encode('c'), [3, 0]); // '▁' then unknown 'c' (no byte pieces) → <unk>
  assert.is(t.decode([3, 4, 0, 5]), 'ab'); // unk skipped as special
  // neither byte pieces nor an unknown token: text outside the vocabulary is an error
  const noUnk = tokenizerFromVocab(vocab(toks, types.map((x) => (x === 2 ? 1 : x)), undefined, { unkId: null }));
  assert.equal(noUnk.encode('ab').map((i) => noUnk.idToToken(i)), ['▁a', 'b']); // all scores 0: leftmost first
  assert.throws(() => noUnk.encode('abc'), (e: unknown) => e instanceof WebqloraError &&
    e.message === 'tokenizer: the text contains "c", which the vocabulary cannot represent (no byte fallback and no unknown token).');
});

function protoVarint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n));
  do { let b = Number(v & 0x7fn); v >>= 7n; if (v) b |= 0x80; out.push(b); } while (v);
  return out;
}
const field = (num: number, wire: number) => protoVarint(num * 8 + wire);
const lenField = (num: number, body: number[]) => [...field(num, 2), ...protoVarint(body.length), ...body];
const strBytes = (s: string) => [...new TextEncoder().encode(s)];
function f32le(x: number): number[] { const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, x, true); return [...b]; }

/** A ModelProto with the given pieces, trainer model_type and normalizer name (escape_whitespaces written only when false). */
function modelProto(pieces: Array<[string, number, number]>, modelType = 2, norm = 'identity', addDummy = true, escapeWs = true): Uint8Array {
  const out: number[] = [];
  for (const [p, s, t] of pieces) out.push(...lenField(1, [...lenField(1, strBytes(p)), ...field(2, 5), ...f32le(s), ...field(3, 0), ...protoVarint(t)]));
  out.push(...lenField(2, [...field(3, 0), ...protoVarint(modelType), ...field(40, 0), ...protoVarint(0), ...field(41, 0), ...protoVarint(1), ...field(42, 0), ...protoVarint(2), ...field(43, 0), ...protoVarint(-1)]));
  out.push(...lenField(3, [...lenField(1, strBytes(norm)), ...field(3, 0), ...protoVarint(addDummy ? 1 : 0), ...field(4, 0), ...protoVarint(0), ...(escapeWs ? [] : [...field(5, 0), 0])]));
  return Uint8Array.from(out);
}

const SMALL: Array<[string, number, number]> = [
  ['<unk>', 0, 2], ['<s>', 0, 3], ['</s>', 0, 3],
  ...Array.from({ length: 256 }, (_, b): [string, number, number] => [`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0, 6]),
  ['▁', -1, 1], ['h', -2, 1], ['i', -3, 1], ['hi', -4, 1], ['▁hi', -5, 1],
];

test('synthetic tokenizer.model: parse, encode, options from tokenizer_config.json', async () => {
  const bytes = modelProto(SMALL);
  const t = tokenizerFromSentencePiece(bytes, { add_bos_token: false, add_eos_token: true, chat_template: 'T' });
  assert.equal(t.encode('hi'), [259 + 4, 2]);
  assert.is(t.chatTemplate, 'T');
  assert.equal(t.encode('hé', { addEos: false }).map((i) => t.idToToken(i)), ['▁', 'h', '<0xC3>', '<0xA9>']);
  const noPrefix = new SpmTokenizer(parseSentencePieceModel(modelProto(SMALL, 2, 'identity', false), 'x.model'));
  assert.equal(noPrefix.encode('hi', { addBos: false }).map((i) => noPrefix.idToToken(i)), ['hi']);
  // a directory with only tokenizer.model
  const dir = new MapDirSource('d', new Map([['tokenizer.model', bytes], ['tokenizer_config.json', new TextEncoder().encode('{"chat_template":[{"name":"default","template":"D"}]}')]]));
  const fromDir = (await loadTokenizerFromDir(dir))!;
  assert.is(fromDir.kind, 'spm');
  assert.is(fromDir.chatTemplate, 'D');
  assert.equal(fromDir.encode('hi'), [1, 263]);
});

const rejects = rejectsUser;

test('errors: unsupported SentencePiece models, corrupt protobuf, bad ids, non-llama GGUF vocabularies', async () => {
  await rejects(() => parseSentencePieceModel(modelProto(SMALL, 1), 'u.model'), 'u.model:', 'unigram is not supported');
  await rejects(() => parseSentencePieceModel(modelProto(SMALL, 2, 'nmt_nfkc'), 'n.model'), 'n.model:', 'normalizer "nmt_nfkc" is not supported');
  await rejects(() => parseSentencePieceModel(new Uint8Array(0), 'e.model'), 'e.model:', 'no pieces');
  await rejects(() => parseSentencePieceModel(modelProto(SMALL, 2, 'identity', true, false), 'w.model'), 'w.model: SentencePiece models without whitespace escaping are not supported.');
  await rejects(() => parseSentencePieceModel(MODEL_BYTES.subarray(0, 1000), 'cut.model'), 'cut.model:', 'corrupt');
  await rejects(() => parseSentencePieceModel(new TextEncoder().encode('{"not": "protobuf"}'), 'j.model'), 'j.model:');
  await rejects(() => spm.decode([32000]), 'token id 32000 is outside the vocabulary');
  await rejects(() => tokenizerFromVocab({ ...stories, model: 'bert' }), 'vocabulary is of type "bert"', 'tokenizer.json');
  const res = await fuzzParser('spm-proto', [modelProto(SMALL)], 600, async (b) => {
    const t = new SpmTokenizer(parseSentencePieceModel(b, 'fuzz.model'));
    t.decode(t.encode('hi there é'));
  }, { seed: 0x5151 });
  assert.is(res.cases, 600);
});

test.run();
