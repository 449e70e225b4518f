// tokenizer.json tokenizers through @huggingface/tokenizers, on every fixture that has one:
// round trips on varied text, special token ids from the config files, ids checked against the
// vocabulary stored in the tokenizer.json itself, streaming decode, chat templates.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from '../helpers/index.ts';
import { NodeDirSource } from '../../src/io/node.ts';
import { MapDirSource } from '../../src/io/source.ts';
import { loadTokenizerFromDir, tokenizerFromJson, chatTemplateFromConfig, loadChatTemplate } from '../../src/tokenizer/load.ts';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { WebqloraError } from '../../src/errors.ts';
import { VARIED } from './texts.ts';

const TOK = join(FIXTURES, 'tokenizers');
const NAMES = ['gpt2', 'phi-3-mini', 'tinyllama-1.1b-chat', 'smollm2-135m'];


async function load(name: string): Promise<Tokenizer> {
  const dir = new NodeDirSource(join(TOK, name));
  const t = await loadTokenizerFromDir(dir);
  await dir.close();
  assert.ok(t, name);
  return t!;
}

const tokenizers = new Map<string, Tokenizer>();
const vocabOf = (name: string): Record<string, number> => JSON.parse(readFileSync(join(TOK, name, 'tokenizer.json'), 'utf8')).model.vocab;
const configOf = (name: string) => {
  const p = join(TOK, name, 'tokenizer_config.json');
  return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : null;
};

test.before(async () => {
  for (const n of NAMES) tokenizers.set(n, await load(n));
});

test('every tokenizer.json fixture loads; round trip on varied text', () => {
  for (const name of NAMES) {
    const t = tokenizers.get(name)!;
    assert.is(t.kind, 'hf');
    for (const s of VARIED) {
      const ids = t.encode(s, { addBos: false, addEos: false });
      assert.ok(ids.every((i) => Number.isInteger(i) && i >= 0 && i < t.vocabSize), `${name}: ids in range`);
      assert.is(t.decode(ids), s, `${name}: ${JSON.stringify(s)}`);
      // with BOS/EOS added, skipSpecial drops them again
      assert.is(t.decode(t.encode(s, { addBos: true, addEos: true })), s, `${name} +bos/eos: ${JSON.stringify(s)}`);
    }
    assert.equal(t.encode(''), t.addBos && t.bosId !== null ? [t.bosId] : []);
    assert.is(t.decode([]), '');
  }
});

test('special token ids and flags match the config files', () => {
  const expect: Record<string, { bos: string | null; eos: string | null; pad: string | null; addBos: boolean }> = {
    // gpt2 ships no tokenizer_config.json: its only special token <|endoftext|> serves as BOS and EOS
    'gpt2': { bos: '<|endoftext|>', eos: '<|endoftext|>', pad: null, addBos: false },
    'phi-3-mini': { bos: '<s>', eos: '<|endoftext|>', pad: '<|endoftext|>', addBos: false },
    'tinyllama-1.1b-chat': { bos: '<s>', eos: '</s>', pad: '</s>', addBos: true },
    'smollm2-135m': { bos: '<|im_start|>', eos: '<|im_end|>', pad: '<|im_end|>', addBos: false },
  };
  for (const name of NAMES) {
    const t = tokenizers.get(name)!;
    const cfg = configOf(name);
    const e = expect[name]!;
    if (cfg) {
      assert.is(cfg.bos_token, e.bos, name);
      assert.is(cfg.eos_token, e.eos, name);
      assert.is(cfg.pad_token, e.pad, name);
    }
    const addedId = (content: string | null) => {
      if (content === null) return null;
      const j = JSON.parse(readFileSync(join(TOK, name, 'tokenizer.json'), 'utf8'));
      return (j.added_tokens as Array<{ id: number; content: string }>).find((a) => a.content === content)!.id;
    };
    assert.is(t.bosId, addedId(e.bos), `${name} bos`);
    assert.is(t.eosId, addedId(e.eos), `${name} eos`);
    assert.is(t.padId, addedId(e.pad), `${name} pad`);
    assert.is(t.addBos, e.addBos, `${name} addBos`);
    assert.is(t.addEos, false, `${name} addEos`);
    assert.ok(t.isSpecial(t.eosId!));
  }
  // the numbers themselves, for the record
  assert.equal([tokenizers.get('tinyllama-1.1b-chat')!.bosId, tokenizers.get('tinyllama-1.1b-chat')!.eosId], [1, 2]);
  assert.equal([tokenizers.get('phi-3-mini')!.bosId, tokenizers.get('phi-3-mini')!.eosId], [1, 32000]);
  assert.equal([tokenizers.get('smollm2-135m')!.bosId, tokenizers.get('smollm2-135m')!.eosId], [1, 2]);
  assert.is(tokenizers.get('gpt2')!.eosId, 50256);
});

test('hand-checked ids, looked up in each tokenizer.json vocabulary', () => {
  const tl = tokenizers.get('tinyllama-1.1b-chat')!, tv = vocabOf('tinyllama-1.1b-chat');
  assert.is(tv['▁Hello'], 15043);
  assert.equal(tl.encode('Hello'), [1, tv['▁Hello']]); // BOS by default (add_bos_token true)
  assert.equal(tl.encode('Hello world', { addBos: false }), [tv['▁Hello'], tv['▁world']]);
  // " Hello": dummy prefix + escaped space = "▁▁Hello" → "▁" + "▁Hello"
  assert.equal(tl.encode(' Hello', { addBos: false }), [tv['▁'], tv['▁Hello']]);
  assert.equal(tl.encode('\n', { addBos: false }), [tv['▁'], tv['<0x0A>']]);
  assert.equal(tl.encode('Hi', { addEos: true }), [1, tv['▁Hi'], 2]);

  const ph = tokenizers.get('phi-3-mini')!, pv = vocabOf('phi-3-mini');
  assert.equal(ph.encode('Hello'), [pv['▁Hello']]); // add_bos_token false
  // added special tokens are parsed in text; <|user|> has rstrip: true in this file, so the
  // newline after it is swallowed and "Hi" is a new segment with its own '▁' prefix
  assert.equal(ph.encode('<|user|>\nHi'), [32010, pv['▁Hi']]);
  assert.equal(ph.encode('Hi<|end|>'), [pv['▁Hi'], 32007]);
  assert.is(ph.tokenToId('<|end|>'), 32007);

  for (const name of ['gpt2', 'smollm2-135m']) {
    const t = tokenizers.get(name)!, v = vocabOf(name);
    assert.equal(t.encode('Hello world'), [v['Hello'], v['Ġworld']], name);
    assert.equal(t.encode(' a\n'), [v['Ġa'], v['Ċ']], name);
  }
  const sv = vocabOf('smollm2-135m');
  assert.equal(tokenizers.get('smollm2-135m')!.encode('2024'), ['2', '0', '2', '4'].map((d) => sv[d])); // Digits(individual_digits)
  assert.equal(tokenizers.get('smollm2-135m')!.encode('<|im_start|>user'), [1, sv['user']]);
  assert.is(tokenizers.get('gpt2')!.idToToken(50256), '<|endoftext|>');
  assert.is(tokenizers.get('gpt2')!.vocabSize, 50257);
  assert.is(tl.vocabSize, 32000);
  assert.is(ph.vocabSize, 32011);
  assert.is(tokenizers.get('smollm2-135m')!.vocabSize, 49152);
});

test('decode: skipSpecial, out-of-range ids', () => {
  const tl = tokenizers.get('tinyllama-1.1b-chat')!;
  const ids = tl.encode('Hi there', { addBos: true, addEos: true });
  assert.is(tl.decode(ids), 'Hi there');
  assert.is(tl.decode(ids, { skipSpecial: false }), '<s> Hi there</s>'); // what HF's decode gives
  assert.throws(() => tl.decode([32000]), (e: unknown) => e instanceof WebqloraError && /32000 is outside/.test((e as Error).message));
  assert.throws(() => tl.decode([-1]), (e: unknown) => e instanceof WebqloraError);
});

test('streaming decode: byte-fallback pieces join into one character; prompt context keeps spaces', () => {
  const tl = tokenizers.get('tinyllama-1.1b-chat')!;
  // 😀 is not a Llama-2 piece: it is 4 byte-fallback tokens <0xF0><0x9F><0x98><0x80>
  const ids = tl.encode('A 😀 b', { addBos: false });
  const bytePieces = ids.map((i) => tl.idToToken(i)!).filter((p) => /^<0x[0-9A-F]{2}>$/.test(p));
  assert.equal(bytePieces, ['<0xF0>', '<0x9F>', '<0x98>', '<0x80>']);
  const s = tl.createDecodeStream();
  const parts = ids.map((i) => s.push(i));
  assert.equal(parts.filter((p) => p !== ''), ['A', ' ', '😀', ' b']);
  assert.is(parts.join('') + s.flush(), 'A 😀 b');

  for (const name of NAMES) {
    const t = tokenizers.get(name)!;
    for (const text of VARIED) {
      const all = t.encode(text, { addBos: true });
      const st = t.createDecodeStream();
      assert.is(all.map((i) => st.push(i)).join('') + st.flush(), t.decode(all), `${name} stream ${JSON.stringify(text)}`);
      // generation after a prompt: the new text is what decoding the whole adds to the prompt
      const prompt = t.encode('Once upon a time', { addBos: true });
      const gen = t.encode(text, { addBos: false });
      const ps = t.createDecodeStream({ prefix: prompt });
      const streamed = gen.map((i) => ps.push(i)).join('') + ps.flush();
      const whole = t.decode([...prompt, ...gen]), head = t.decode(prompt);
      assert.ok(whole.startsWith(head));
      assert.is(streamed, whole.slice(head.length), `${name} after prompt ${JSON.stringify(text)}`);
    }
  }
});

test('chat templates: string form, list form, absent', async () => {
  assert.match(tokenizers.get('tinyllama-1.1b-chat')!.chatTemplate!, /<\|user\|>/);
  assert.match(tokenizers.get('phi-3-mini')!.chatTemplate!, /<\|end\|>/);
  assert.match(tokenizers.get('smollm2-135m')!.chatTemplate!, /<\|im_start\|>/);
  assert.is(tokenizers.get('gpt2')!.chatTemplate, null);
  const qwen = new NodeDirSource(join(TOK, 'qwen2.5'));
  assert.match((await loadChatTemplate(qwen))!, /You are Qwen/);
  assert.is(await loadTokenizerFromDir(qwen), null); // config only: no tokenizer
  await qwen.close();
  assert.is(chatTemplateFromConfig({ chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] }), 'D');
  assert.is(chatTemplateFromConfig({ chat_template: [{ name: 'tool_use', template: 'T' }] }), null);
  assert.is(chatTemplateFromConfig({}), null);
  assert.is(chatTemplateFromConfig(null), null);
});

test('tokenizerFromJson: strings, config overrides, errors', () => {
  const json = readFileSync(join(TOK, 'tinyllama-1.1b-chat', 'tokenizer.json'), 'utf8');
  const t = tokenizerFromJson(json, JSON.stringify({ add_bos_token: false, eos_token: { content: '</s>' }, chat_template: 'X' }));
  assert.is(t.addBos, false);
  assert.is(t.eosId, 2);
  assert.is(t.chatTemplate, 'X');
  // the fixture's truncation (max_length 512) is ignored: long texts are not cut
  const long = 'word '.repeat(1000);
  assert.ok(t.encode(long).length > 1000);
  assert.throws(() => tokenizerFromJson('{', null, 'x/tokenizer.json'), (e: unknown) => e instanceof WebqloraError && /x\/tokenizer.json: not valid JSON/.test((e as Error).message));
  assert.throws(() => tokenizerFromJson({ foo: 1 }), (e: unknown) => e instanceof WebqloraError && /no "model"/.test((e as Error).message));
  assert.throws(() => tokenizerFromJson('[1]'), (e: unknown) => e instanceof WebqloraError && /expected a JSON object/.test((e as Error).message));
  // a "model" the library cannot turn into a tokenizer: its reason, inside our sentence
  assert.throws(() => tokenizerFromJson({ model: { type: 'Nope' } }, null, 'x/tokenizer.json'),
    (e: unknown) => e instanceof WebqloraError && /^x\/tokenizer\.json: cannot build the tokenizer \(.+\)\.$/.test((e as Error).message));
  assert.throws(() => tokenizerFromJson('{}', '[]'), (e: unknown) => e instanceof WebqloraError && e.message === 'tokenizer_config.json: expected a JSON object.');
});

test('loadTokenizerFromDir through a browser-style MapDirSource', async () => {
  const files = new Map<string, Uint8Array>([
    ['tokenizer.json', new Uint8Array(readFileSync(join(TOK, 'smollm2-135m', 'tokenizer.json')))],
    ['tokenizer_config.json', new Uint8Array(readFileSync(join(TOK, 'smollm2-135m', 'tokenizer_config.json')))],
  ]);
  const t = (await loadTokenizerFromDir(new MapDirSource('smol', files)))!;
  assert.equal(t.encode('Hello world'), tokenizers.get('smollm2-135m')!.encode('Hello world'));
  assert.is(t.eosId, 2);
  assert.is(await loadTokenizerFromDir(new MapDirSource('empty', new Map())), null);
  files.set('tokenizer_config.json', new TextEncoder().encode('{bad'));
  try {
    await loadTokenizerFromDir(new MapDirSource('smol', files));
    assert.unreachable();
  } catch (e) {
    assert.ok(e instanceof WebqloraError);
    assert.match((e as Error).message, /smol\/tokenizer_config.json: not valid JSON/);
  }
});

test.run();
