// HF tokenizer files written from a GGUF vocabulary (hfTokenizerFiles), for the HF directories of
// `webqlora merge` / `quantize` from a GGUF source. The tokenizer.json written must give, through
// @huggingface/tokenizers (the JS port of what transformers runs), the ids webqlora's own
// tokenizer for that vocabulary gives:
//   SentencePiece: stories260K's vocabulary, and the Llama-2 vocabulary through a GGUF written
//     from tokenizer.model, against tokenizerFromVocab (SpmTokenizer) on a few hundred strings; the
//     Llama-2 file must also equal TinyLlama's tokenizer.json (same vocabulary, written by
//     transformers' LlamaConverter) in vocab, merges (order included), added tokens and pipeline;
//   byte-level BPE: GPT-2 and SmolLM2 fixtures through a GGUF, against their own tokenizer.json.
// transformers itself is not run here: with transformers 5.18, AutoTokenizer.from_pretrained on the
// Llama-2 files gave sentencepiece's ids on 4560 strings (see export.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FIXTURES, Rng, STORIES_GGUF, rejectsUser } from '../helpers/index.ts';
import { meta, vocabMetadata, writeGgufFile } from '../../src/io/gguf-write.ts';
import { readGguf, readVocab } from '../../src/io/gguf.ts';
import { MapDirSource, MemoryOutDir, MemorySource } from '../../src/io/source.ts';
import type { EmbeddedVocab } from '../../src/io/weights.ts';
import { hfTokenizerFiles, sentencePieceMerges } from '../../src/tokenizer/export.ts';
import { loadChatTemplate, loadTokenizerFromDir, tokenizerFromVocab, vocabFromLlama2cBin } from '../../src/tokenizer/load.ts';
import { parseSentencePieceModel } from '../../src/tokenizer/spm.ts';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { VARIED, tinyStories } from './texts.ts';

const TOK = join(FIXTURES, 'tokenizers');
const readJsonFile = (...p: string[]): Record<string, any> => JSON.parse(readFileSync(join(TOK, ...p), 'utf8'));
const utf8 = new TextDecoder();
const parse = (files: Map<string, Uint8Array>, f: string): Record<string, any> => JSON.parse(utf8.decode(files.get(f)!));

/** A vocabulary as webqlora reads it from a GGUF file: written by the production writer (vocabMetadata), read back. */
async function throughGguf(v: EmbeddedVocab, chatTemplate: string | null = null): Promise<{ vocab: EmbeddedVocab; chatTemplate: string | null }> {
  const md = vocabMetadata(v);
  if (chatTemplate !== null) md.push(['tokenizer.chat_template', meta.str(chatTemplate)]);
  const out = new MemoryOutDir();
  await writeGgufFile(await out.create('vocab.gguf'), [['general.architecture', meta.str('llama')], ...md], []);
  return readGgufVocab(out.files.get('vocab.gguf')!, 'vocab.gguf');
}

async function readGgufVocab(bytes: Uint8Array, name: string): Promise<{ vocab: EmbeddedVocab; chatTemplate: string | null }> {
  const md = (await readGguf(new MemorySource(name, bytes))).metadata;
  const tpl = md.get('tokenizer.chat_template');
  return { vocab: readVocab(md, name)!, chatTemplate: typeof tpl === 'string' ? tpl : null };
}

// ---------------------------------------------------------------------------------------------
// Texts

/** Seeded random strings over a mixed alphabet, with frequent subwords so merges compete. */
function randomTexts(count: number, seed: number): string[] {
  const pool = [...'abcXYZ019 \'.,!?-_/\\"\n\t\r', 'é', 'ß', 'ж', 'λ', '中', '文', 'の', '한', '\u0301', '\u00a0', '😀', '🦙', '\u200d', '٣', '½', '<', '>', '|', 'ing', 'the', 'ation', ' the', 'aba'];
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => Array.from({ length: 1 + rng.int(40) }, () => pool[rng.int(pool.length)]!).join(''));
}

function corpus(): string[] {
  const { lines } = tinyStories();
  return [...lines.filter((_, i) => i % 6 === 0), ...VARIED, ...randomTexts(150, 0x51ed)];
}

/**
 * ids of the exported tokenizer.json (run by @huggingface/tokenizers) against `want`; decoding
 * them back must give what `ours` decodes too.
 */
function compare(what: string, exported: HfTokenizer, ours: Tokenizer | HfTokenizer, texts: string[]): void {
  for (const s of texts) {
    const got = s.length ? exported.encode(s, { add_special_tokens: false }).ids : [];
    const want = 'kind' in ours ? ours.encode(s, { addBos: false, addEos: false }) : s.length ? ours.encode(s, { add_special_tokens: false }).ids : [];
    if (JSON.stringify(got) !== JSON.stringify(want)) assert.equal(got, want, `${what}: ids of ${JSON.stringify(s)}`);
    if (got.length === 0) continue;
    const text = exported.decode(got, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    const wantText = 'kind' in ours ? ours.decode(want, { skipSpecial: false }) : ours.decode(want, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    assert.is(text, wantText, `${what}: decode of ${JSON.stringify(s)}`);
  }
}

// SentencePiece control strings ("<s>") are text to SpmTokenizer (as to sentencepiece) but added
// tokens to any tokenizer.json; they are compared separately below.
const noControlStrings = (texts: string[]) => texts.filter((s) => !/<\/?s>|<unk>/.test(s));

// ---------------------------------------------------------------------------------------------
// SentencePiece

const storiesVocab = async () => (await readGgufVocab(new Uint8Array(readFileSync(STORIES_GGUF)), 'stories260K.gguf')).vocab;

test('stories260K (SentencePiece GGUF): the exported tokenizer.json gives webqlora\'s ids on a few hundred strings', async () => {
  const { vocab, chatTemplate } = await readGgufVocab(new Uint8Array(readFileSync(STORIES_GGUF)), 'stories260K.gguf');
  assert.is(vocab.model, 'llama');
  assert.is(chatTemplate, null);
  const files = hfTokenizerFiles(vocab, { chatTemplate });
  assert.equal([...files.keys()], ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']);
  const json = parse(files, 'tokenizer.json');
  assert.is(Object.keys(json.model.vocab).length, 512);
  assert.ok(json.model.merges.length > 0);
  const texts = noControlStrings(corpus());
  assert.ok(texts.length >= 400, `${texts.length} texts`);
  compare('stories260K', new HfTokenizer(json, {}), tokenizerFromVocab(vocab), texts);

  // The written directory opened by webqlora itself: same ids with BOS, same special ids.
  const ours = tokenizerFromVocab(vocab);
  const dir = (await loadTokenizerFromDir(new MapDirSource('out', files)))!;
  assert.equal([dir.bosId, dir.eosId, dir.unkId, dir.padId, dir.addBos, dir.addEos], [ours.bosId, ours.eosId, ours.unkId, ours.padId, ours.addBos, ours.addEos]);
  for (const s of texts.slice(0, 50)) assert.equal(dir.encode(s), ours.encode(s), s);
});

let llama2: { vocab: EmbeddedVocab; files: Map<string, Uint8Array> } | null = null;
/** The Llama-2 vocabulary of tokenizer.model, through a GGUF, and its exported files (built once). */
async function llama2Files(): Promise<{ vocab: EmbeddedVocab; files: Map<string, Uint8Array> }> {
  if (llama2) return llama2;
  const sp = parseSentencePieceModel(new Uint8Array(readFileSync(join(TOK, 'llama2-sentencepiece', 'tokenizer.model'))), 'tokenizer.model');
  const { vocab } = await throughGguf({
    model: 'llama', pre: null, tokens: sp.pieces, scores: sp.scores, tokenTypes: sp.types, merges: null,
    bosId: sp.bosId, eosId: sp.eosId, unkId: sp.unkId, padId: sp.padId, addBos: true, addEos: false, addSpacePrefix: true,
  });
  return llama2 = { vocab, files: hfTokenizerFiles(vocab) };
}

test('Llama-2 GGUF vocabulary: vocab, merges (in order), added tokens and pipeline equal TinyLlama\'s tokenizer.json', async () => {
  const { files } = await llama2Files();
  const ours = parse(files, 'tokenizer.json');
  const ref = readJsonFile('tinyllama-1.1b-chat', 'tokenizer.json');
  assert.equal(ours.model.vocab, ref.model.vocab);
  // the fixture writes merges as "a b" strings, newer tokenizers as [a, b] pairs
  const refMerges = (ref.model.merges as string[]).map((m) => m.split(' '));
  assert.is(ours.model.merges.length, refMerges.length);
  for (let i = 0; i < refMerges.length; i++) {
    if (ours.model.merges[i][0] !== refMerges[i]![0] || ours.model.merges[i][1] !== refMerges[i]![1]) assert.equal(ours.model.merges[i], refMerges[i], `merge ${i}`);
  }
  for (const k of ['added_tokens', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'version', 'padding']) assert.equal(ours[k], ref[k], k);
  const strip = ({ vocab: _v, merges: _m, ...rest }: Record<string, unknown>) => rest;
  assert.equal(strip(ours.model), strip(ref.model));
});

test('Llama-2 GGUF vocabulary: the exported tokenizer.json gives webqlora\'s ids on a few hundred strings', async () => {
  const { vocab, files } = await llama2Files();
  const texts = noControlStrings(corpus());
  assert.ok(texts.length >= 400, `${texts.length} texts`);
  compare('llama2', new HfTokenizer(parse(files, 'tokenizer.json'), {}), tokenizerFromVocab(vocab), texts);
});

test('sentencePieceMerges: splits by code point, ties within a piece by (left id, right id), then score order (stable)', () => {
  // "▁😀" splits once (the emoji is two UTF-16 units, one code point); "abc" twice; "cab" scores higher
  const tokens = ['a', 'b', 'c', '▁', '😀', 'ab', 'bc', 'abc', '▁😀', 'ca', 'cab'];
  const scores = Float32Array.from([0, 0, 0, 0, 0, -1, -2, -3, -3, -4, -0.5]);
  const vocab = Object.fromEntries(tokens.map((t, i) => [t, i]));
  assert.equal(sentencePieceMerges(tokens, scores, vocab), [
    ['c', 'ab'], ['ca', 'b'], // cab (-0.5): left ids 2 < 9
    ['a', 'b'], // ab (-1)
    ['b', 'c'], // bc (-2)
    ['a', 'bc'], ['ab', 'c'], // abc (-3): left ids 0 < 5
    ['▁', '😀'], // ▁😀 (-3, a later id than abc: stays after it)
    ['c', 'a'], // ca (-4)
  ]);
});

test('llama2.c tokenizer.bin vocabulary exports like a GGUF one (no token types: specials by id, bytes by name)', () => {
  // a tiny tokenizer.bin: max_token_length, then per token (score f32, length i32, bytes)
  const pieces = ['\n<unk>\n', '\n<s>\n', '\n</s>\n', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), ' t', 'he', ' the', ' ', 't', 'h', 'e', 'a'];
  const scores = [0, 0, 0, ...new Array(256).fill(0), -1, -2, -3, -4, -5, -6, -7, -8];
  const enc = new TextEncoder();
  const parts: number[] = [];
  const i32 = (x: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setInt32(0, x, true); parts.push(...b); };
  const f32 = (x: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, x, true); parts.push(...b); };
  i32(16);
  pieces.forEach((p, i) => { const e = enc.encode(p); f32(scores[i]!); i32(e.length); parts.push(...e); });
  const v = vocabFromLlama2cBin(Uint8Array.from(parts));
  const files = hfTokenizerFiles(v);
  const json = parse(files, 'tokenizer.json');
  assert.equal(json.added_tokens.map((a: { content: string; special: boolean }) => [a.content, a.special]), [['<unk>', true], ['<s>', true], ['</s>', true]]);
  const t = new HfTokenizer(json, {});
  const ours = tokenizerFromVocab(v);
  compare('tokenizer.bin', t, ours, ['the', 'the the', ' at the', 'hé', '\n']);
  assert.equal(t.encode('the', { add_special_tokens: false }).tokens, ['▁the']);
  assert.equal(parse(files, 'tokenizer_config.json').add_bos_token, true);
});

// ---------------------------------------------------------------------------------------------
// Byte-level BPE: the GGUF keeps tokens, types and merges of a tokenizer.json (llama.cpp
// convert_hf_to_gguf.py get_vocab_base); the export must give the ids of the original file.

function bpeVocab(j: Record<string, any>, pre: string, ids: { bos: number; eos: number; pad?: number; unk?: number }): EmbeddedVocab {
  const byId: string[] = [];
  for (const [t, i] of Object.entries(j.model.vocab as Record<string, number>)) byId[i] = t;
  const added = new Map<number, { content: string; special: boolean }>();
  for (const a of j.added_tokens) { byId[a.id] = a.content; added.set(a.id, a); }
  const types = byId.map((t, i) => { const a = added.get(i); return a === undefined ? 1 : a.special || /^<\|.*\|>$/.test(t) ? 3 : 4; });
  const merges = (j.model.merges as Array<string | [string, string]>).map((x) => (Array.isArray(x) ? x.join(' ') : x));
  return {
    model: 'gpt2', pre, tokens: byId, scores: null, tokenTypes: Int32Array.from(types), merges,
    bosId: ids.bos, eosId: ids.eos, unkId: ids.unk ?? null, padId: ids.pad ?? null, addBos: false, addEos: false, addSpacePrefix: false,
  };
}

test('GPT-2 GGUF vocabulary: the exported tokenizer.json gives the original tokenizer.json\'s ids', async () => {
  const j = readJsonFile('gpt2', 'tokenizer.json');
  const { vocab } = await throughGguf(bpeVocab(j, 'gpt-2', { bos: 50256, eos: 50256 }));
  const files = hfTokenizerFiles(vocab);
  const json = parse(files, 'tokenizer.json');
  const texts = [...corpus(), 'Hello<|endoftext|>World', 'a <|endoftext|> b'];
  compare('gpt2', new HfTokenizer(json, {}), new HfTokenizer(j, {}), texts);
  assert.equal(json.post_processor, { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true });
  const cfg = parse(files, 'tokenizer_config.json');
  assert.equal([cfg.bos_token, cfg.eos_token, cfg.unk_token, cfg.pad_token, cfg.add_bos_token], ['<|endoftext|>', '<|endoftext|>', null, null, false]);
  assert.not.ok('chat_template' in cfg);
  assert.equal(parse(files, 'special_tokens_map.json'), { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' });
});

test('SmolLM2 GGUF vocabulary: ids of the original tokenizer.json; tokenizer_config.json carries special tokens, flags and chat template', async () => {
  const j = readJsonFile('smollm2-135m', 'tokenizer.json');
  const chat = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";
  const { vocab, chatTemplate } = await throughGguf(bpeVocab(j, 'smollm', { bos: 1, eos: 2, pad: 2, unk: 0 }), chat);
  assert.is(chatTemplate, chat);
  const files = hfTokenizerFiles(vocab, { chatTemplate, name: 'smollm2.gguf' });
  const texts = [...corpus(), '<|im_start|>user\nHi there!<|im_end|>\n', 'text<|endoftext|>more'];
  compare('smollm2', new HfTokenizer(parse(files, 'tokenizer.json'), {}), new HfTokenizer(j, {}), texts);

  const cfg = parse(files, 'tokenizer_config.json');
  const orig = readJsonFile('smollm2-135m', 'tokenizer_config.json');
  for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token', 'clean_up_tokenization_spaces']) assert.equal(cfg[k], orig[k], k);
  assert.equal(cfg.added_tokens_decoder, orig.added_tokens_decoder);
  assert.is(cfg.chat_template, chat);
  assert.is(cfg.add_bos_token, false);
  assert.is(cfg.add_eos_token, false);
  assert.is(cfg.tokenizer_class, 'PreTrainedTokenizerFast');
  assert.equal(Object.keys(cfg), Object.keys(cfg).sort()); // sorted, as transformers writes it
  assert.equal(parse(files, 'special_tokens_map.json'), { bos_token: '<|im_start|>', eos_token: '<|im_end|>', pad_token: '<|im_end|>', unk_token: '<|endoftext|>' });
  // the written directory opened by webqlora: same specials and template as the GGUF
  const dir = (await loadTokenizerFromDir(new MapDirSource('out', files)))!;
  const fromGguf = tokenizerFromVocab(vocab, chatTemplate);
  assert.equal([dir.bosId, dir.eosId, dir.padId, dir.unkId, dir.addBos, dir.chatTemplate], [fromGguf.bosId, fromGguf.eosId, fromGguf.padId, fromGguf.unkId, fromGguf.addBos, chat]);
});

// ---------------------------------------------------------------------------------------------
// tokenizer_config.json, determinism, refusals

test('a directory whose chat template is in chat_template.jinja (as recent save_pretrained writes it) keeps it', async () => {
  const files = hfTokenizerFiles(await storiesVocab());
  const tpl = '{% for m in messages %}{{ m.content }}{% endfor %}';
  const dir = new MapDirSource('out', new Map([...files, ['chat_template.jinja', new TextEncoder().encode(tpl)]]));
  assert.is((await loadTokenizerFromDir(dir))!.chatTemplate, tpl);
  assert.is(await loadChatTemplate(dir), tpl);
  // a template in tokenizer_config.json wins
  const inConfig = hfTokenizerFiles(await storiesVocab(), { chatTemplate: 'cfg' });
  assert.is((await loadTokenizerFromDir(new MapDirSource('o', new Map([...inConfig, ['chat_template.jinja', new TextEncoder().encode(tpl)]]))))!.chatTemplate, 'cfg');
  assert.is(await loadChatTemplate(new MapDirSource('o', new Map([['chat_template.jinja', new TextEncoder().encode(tpl)]]))), tpl);
});

test('tokenizer_config.json: BOS/EOS flags drive both the config and the post-processor; chat template carried', async () => {
  const vocab = await storiesVocab();
  const tpl = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}";
  const files = hfTokenizerFiles({ ...vocab, addBos: false, addEos: true, padId: 0 }, { chatTemplate: tpl });
  const cfg = parse(files, 'tokenizer_config.json');
  assert.equal(
    [cfg.bos_token, cfg.eos_token, cfg.unk_token, cfg.pad_token, cfg.add_bos_token, cfg.add_eos_token, cfg.chat_template, cfg.clean_up_tokenization_spaces],
    ['<s>', '</s>', '<unk>', '<unk>', false, true, tpl, false],
  );
  assert.equal(Object.keys(cfg.added_tokens_decoder), ['0', '1', '2']);
  const json = parse(files, 'tokenizer.json');
  assert.equal(json.post_processor.single, [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }]);
  // what transformers' fast tokenizer adds with add_special_tokens (its default)
  const hello = tokenizerFromVocab(vocab).encode('Hello', { addBos: false });
  assert.equal(new HfTokenizer(json, {}).encode('Hello').ids, [...hello, 2]);
  assert.equal(new HfTokenizer(parse(hfTokenizerFiles(vocab), 'tokenizer.json'), {}).encode('Hello').ids, [1, ...hello]);
  // nothing added: no post-processor
  assert.is(parse(hfTokenizerFiles({ ...vocab, addBos: false }), 'tokenizer.json').post_processor, null);
  assert.equal(parse(files, 'special_tokens_map.json'), { bos_token: '<s>', eos_token: '</s>', pad_token: '<unk>', unk_token: '<unk>' });
});

test('the files are deterministic: the same vocabulary gives the same bytes; vocab written in id order', async () => {
  const { vocab, files } = await llama2Files();
  const again = hfTokenizerFiles(vocab);
  for (const [f, b] of files) assert.ok(Buffer.from(b).equals(Buffer.from(again.get(f)!)), f);
  const text = utf8.decode(files.get('tokenizer.json')!);
  // "1" (id 29896) is integer-like: a plain JS object would have listed it first
  assert.ok(text.indexOf('"<unk>": 0') < text.indexOf('"1": 29896'));
  assert.ok(text.endsWith('\n'));
});

const rejects = rejectsUser;

test('refusals: other vocabulary types, SentencePiece without scores, duplicate tokens, unsupported BPE pre-tokenizers', async () => {
  const { vocab } = await llama2Files();
  await rejects(() => hfTokenizerFiles({ ...vocab, model: 'bert' }, { name: 'm.gguf' }), 'm.gguf: cannot write a tokenizer.json for a "bert" vocabulary');
  await rejects(() => hfTokenizerFiles({ ...vocab, scores: null }, { name: 'm.gguf' }), 'm.gguf: the SentencePiece vocabulary has no tokenizer.ggml.scores');
  const dup = [...vocab.tokens];
  dup[400] = dup[300]!;
  await rejects(() => hfTokenizerFiles({ ...vocab, tokens: dup }), `token 400 ${JSON.stringify(dup[300])} duplicates token 300`);
  const j = readJsonFile('gpt2', 'tokenizer.json');
  await rejects(() => hfTokenizerFiles(bpeVocab(j, 'deepseek-llm', { bos: 50256, eos: 50256 }), { name: 'd.gguf' }), 'd.gguf: the BPE pre-tokenizer "deepseek-llm"');
});

test.run();
