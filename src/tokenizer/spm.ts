// SentencePiece BPE tokenizer (the Llama-1/2, TinyLlama, Mistral, Gemma vocabularies), built from
// a GGUF `tokenizer.ggml.*` vocabulary or from a SentencePiece `tokenizer.model` protobuf.
//
// Encoding follows sentencepiece bpe_model.cc (and llama.cpp's llm_tokenizer_spm, which does the
// same): normalize (identity; prepend '▁' when add_dummy_prefix; spaces → '▁'), split into
// Unicode characters (user-defined pieces are kept whole), then repeatedly merge the adjacent pair
// whose concatenation is a vocabulary piece with the highest score, leftmost first on ties.
// A symbol that is not a piece becomes its UTF-8 bytes as <0xXX> pieces (byte fallback), or
// <unk> when the vocabulary has no byte pieces.
// Decoding follows the HF Llama decoder (Replace '▁' → ' ', ByteFallback, Fuse, Strip one leading
// space), which is what sentencepiece's DecodeIds produces too.
// Gemma (1-3) has no dummy prefix: convert_hf_to_gguf.py writes tokenizer.ggml.add_space_prefix =
// false, and transformers' GemmaConverter writes neither the Prepend normalizer nor the Strip
// decoder; addDummyPrefix switches both ends.
import { WebqloraError } from '../errors.ts';
import type { EmbeddedVocab } from '../io/weights.ts';
import { DecodeStream, type DecodeOptions, type EncodeOptions, type Tokenizer } from './tokenizer.ts';

/** sentencepiece_model.proto SentencePiece.Type (GGUF token_type uses the same numbers). */
export const PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER_DEFINED = 4, PIECE_BYTE = 6;
const PIECE_UNUSED = 5;

export interface SpmModel {
  pieces: string[];
  scores: Float32Array;
  /** One PIECE_* per piece. */
  types: Int32Array;
  bosId: number | null;
  eosId: number | null;
  unkId: number | null;
  padId: number | null;
  /** NormalizerSpec.add_dummy_prefix: prepend '▁' (and strip it when decoding). */
  addDummyPrefix: boolean;
  /** NormalizerSpec.remove_extra_whitespaces: trim and collapse runs of spaces. */
  removeExtraWhitespaces: boolean;
  addBos: boolean;
  addEos: boolean;
  chatTemplate: string | null;
}

const SPACE = '\u2581'; // '▁'
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

interface Bigram { left: number; right: number; score: number; len: number }

/** Max-heap on score, then min on left position (sentencepiece's tie rule: leftmost first). */
class BigramHeap {
  private a: Bigram[] = [];
  get size(): number { return this.a.length; }
  private before(x: Bigram, y: Bigram): boolean { return x.score > y.score || (x.score === y.score && x.left < y.left); }
  push(b: Bigram): void {
    const a = this.a;
    a.push(b);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): Bigram {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

export class SpmTokenizer implements Tokenizer {
  readonly kind = 'spm' as const;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly chatTemplate: string | null;
  /** Pieces text can produce (normal and user-defined) → id. */
  private readonly mergeable = new Map<string, number>();
  /** Every piece → id (first occurrence), for tokenToId. */
  private readonly all = new Map<string, number>();
  /** byte value → id of its <0xXX> piece, or -1. */
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** id → byte value for byte pieces, else -1. */
  private readonly idByte: Int16Array;
  /** User-defined pieces, longest first (matched whole before merging). */
  private readonly userPieces: string[];
  private readonly m: SpmModel;

  constructor(model: SpmModel) {
    this.m = model;
    const n = model.pieces.length;
    this.vocabSize = n;
    this.bosId = model.bosId;
    this.eosId = model.eosId;
    this.padId = model.padId;
    this.unkId = model.unkId;
    this.addBos = model.addBos;
    this.addEos = model.addEos;
    this.chatTemplate = model.chatTemplate;
    this.idByte = new Int16Array(n).fill(-1);
    const user: string[] = [];
    for (let i = 0; i < n; i++) {
      const p = model.pieces[i]!, t = model.types[i]!;
      if (!this.all.has(p)) this.all.set(p, i);
      if (t === PIECE_BYTE) {
        const mm = BYTE_PIECE.exec(p);
        if (mm) {
          const b = parseInt(mm[1]!, 16);
          if (this.byteIds[b] === -1) this.byteIds[b] = i;
          this.idByte[i] = b;
        }
      } else if ((t === PIECE_NORMAL || t === PIECE_USER_DEFINED) && p.length > 0 && !this.mergeable.has(p)) {
        this.mergeable.set(p, i);
        if (t === PIECE_USER_DEFINED) user.push(p);
      }
    }
    this.userPieces = user.sort((a, b) => b.length - a.length);
  }

  private normalize(text: string): string {
    let t = text;
    if (this.m.removeExtraWhitespaces) t = t.replace(/ +/g, ' ').replace(/^ | $/g, '');
    if (t.length === 0) return '';
    if (this.m.addDummyPrefix) t = ' ' + t;
    return t.replaceAll(' ', SPACE);
  }

  /** Initial symbols: user-defined pieces whole, otherwise single code points. */
  private split(t: string): string[] {
    const out: string[] = [];
    if (this.userPieces.length === 0) {
      for (const ch of t) out.push(ch);
      return out;
    }
    let i = 0;
    outer: while (i < t.length) {
      for (const u of this.userPieces) {
        if (t.startsWith(u, i)) { out.push(u); i += u.length; continue outer; }
      }
      const cp = t.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      out.push(ch);
      i += ch.length;
    }
    return out;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if (opts.addBos ?? this.addBos) { if (this.bosId !== null) ids.push(this.bosId); }
    const sym = this.split(this.normalize(text));
    const n = sym.length;
    const prev = new Int32Array(n), next = new Int32Array(n);
    for (let i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
    const heap = new BigramHeap();
    const tryPair = (l: number, r: number) => {
      if (l < 0 || r < 0) return;
      const s = sym[l]! + sym[r]!;
      const id = this.mergeable.get(s);
      if (id !== undefined) heap.push({ left: l, right: r, score: this.m.scores[id]!, len: s.length });
    };
    for (let i = 0; i + 1 < n; i++) tryPair(i, i + 1);
    while (heap.size > 0) {
      const b = heap.pop();
      // Stale entry: one side was merged away or grew since this pair was queued.
      if (sym[b.left] === '' || sym[b.right] === '' || next[b.left] !== b.right || sym[b.left]!.length + sym[b.right]!.length !== b.len) continue;
      sym[b.left] = sym[b.left]! + sym[b.right]!;
      sym[b.right] = '';
      const nr = next[b.right]!;
      next[b.left] = nr;
      if (nr >= 0) prev[nr] = b.left;
      tryPair(prev[b.left]!, b.left);
      tryPair(b.left, nr);
    }
    const enc = new TextEncoder();
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]!) {
      const s = sym[i]!;
      const id = this.mergeable.get(s);
      if (id !== undefined) { ids.push(id); continue; }
      const bytes = enc.encode(s);
      if ([...bytes].every((b) => this.byteIds[b]! >= 0)) {
        for (const b of bytes) ids.push(this.byteIds[b]!);
      } else if (this.unkId !== null) {
        ids.push(this.unkId);
      } else {
        throw new WebqloraError(`tokenizer: the text contains ${JSON.stringify(s)}, which the vocabulary cannot represent (no byte fallback and no unknown token).`);
      }
    }
    if (opts.addEos ?? this.addEos) { if (this.eosId !== null) ids.push(this.eosId); }
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecial ?? true;
    let out = '';
    let bytes: number[] = [];
    const flushBytes = () => {
      if (bytes.length === 0) return;
      out += decodeByteRun(bytes);
      bytes = [];
    };
    for (const id of ids) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) throw new WebqloraError(`tokenizer: token id ${id} is outside the vocabulary (0..${this.vocabSize - 1}).`);
      const b = this.idByte[id]!;
      if (b >= 0) { bytes.push(b); continue; }
      if (skip && this.isSpecial(id)) continue;
      flushBytes();
      out += this.m.pieces[id]!.replaceAll(SPACE, ' ');
    }
    flushBytes();
    // sentencepiece drops the dummy prefix; HF's Llama decoder does Strip(' ', 1, 0).
    if (this.m.addDummyPrefix && out.startsWith(' ')) out = out.slice(1);
    return out;
  }

  idToToken(id: number): string | null {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize ? this.m.pieces[id]! : null;
  }

  tokenToId(token: string): number | null {
    return this.all.get(token) ?? null;
  }

  isSpecial(id: number): boolean {
    const t = this.m.types[id];
    return t === PIECE_CONTROL || t === PIECE_UNKNOWN || t === PIECE_UNUSED;
  }

  createDecodeStream(opts: DecodeOptions & { prefix?: readonly number[] } = {}): DecodeStream {
    return new DecodeStream((ids) => this.decode(ids, opts), opts.prefix);
  }
}

/** UTF-8 bytes of consecutive byte pieces; an invalid run becomes one U+FFFD per byte (HF ByteFallback). */
function decodeByteRun(bytes: number[]): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
  } catch {
    return '\uFFFD'.repeat(bytes.length);
  }
}

// ---------------------------------------------------------------------------------------------
// From a GGUF vocabulary

/**
 * The piece types of a SentencePiece vocabulary: its token_type array, or without one what
 * llama.cpp infers (byte pieces by name, BOS/EOS/pad control, the unknown id unknown).
 */
export function spmTokenTypes(v: EmbeddedVocab): Int32Array {
  if (v.tokenTypes) return v.tokenTypes;
  const types = new Int32Array(v.tokens.length).fill(PIECE_NORMAL);
  for (let i = 0; i < v.tokens.length; i++) if (BYTE_PIECE.test(v.tokens[i]!)) types[i] = PIECE_BYTE;
  for (const id of [v.bosId, v.eosId, v.padId]) if (id !== null) types[id] = PIECE_CONTROL;
  if (v.unkId !== null) types[v.unkId] = PIECE_UNKNOWN;
  return types;
}

/** SentencePiece tokenizer from a GGUF `tokenizer.ggml.model = llama` vocabulary. */
export function spmFromVocab(v: EmbeddedVocab, chatTemplate: string | null = null): SpmTokenizer {
  if (v.model !== 'llama') {
    throw new WebqloraError(`tokenizer: the embedded vocabulary is of type "${v.model}", not a SentencePiece ("llama") vocabulary.`);
  }
  return new SpmTokenizer({
    pieces: v.tokens,
    // Without scores every merge ties and leftmost wins; llama.cpp would do the same.
    scores: v.scores ?? new Float32Array(v.tokens.length),
    types: spmTokenTypes(v),
    bosId: v.bosId,
    eosId: v.eosId,
    unkId: v.unkId,
    padId: v.padId,
    addDummyPrefix: v.addSpacePrefix,
    // llama.cpp's SentencePiece path never applies tokenizer.ggml.remove_extra_whitespaces
    removeExtraWhitespaces: false,
    addBos: v.addBos,
    addEos: v.addEos,
    chatTemplate,
  });
}

// ---------------------------------------------------------------------------------------------
// From a SentencePiece tokenizer.model (protobuf)

/**
 * Minimal protobuf reader for sentencepiece_model.proto ModelProto: pieces (1) {piece 1, score 2,
 * type 3}, trainer_spec (2) {model_type 3, unk_id 40, bos_id 41, eos_id 42, pad_id 43},
 * normalizer_spec (3) {name 1, precompiled_charsmap 2, add_dummy_prefix 3,
 * remove_extra_whitespaces 4, escape_whitespaces 5}. Unknown fields are skipped, trainer_spec
 * byte_fallback (35) among them: byte pieces are used whenever the vocabulary has them (as
 * llama.cpp does), and sentencepiece's trainer only makes them when byte_fallback is set.
 */
class Proto {
  pos: number;
  constructor(private readonly b: Uint8Array, private readonly file: string, start: number, readonly end: number) {
    this.pos = start;
  }
  private bad(): never {
    throw new WebqloraError(`${this.file}: the SentencePiece model is corrupt at byte ${this.pos} (is this a tokenizer.model file?).`);
  }
  /** A varint as [low 32 bits as int32, value as number (exact below 2^53)]. */
  varint(): [number, number] {
    let lo = 0, val = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.bad();
      const byte = this.b[this.pos++]!;
      if (i < 5) lo |= (byte & 0x7f) << (7 * i);
      val += (byte & 0x7f) * mul;
      mul *= 128;
      if (byte < 0x80) return [lo | 0, val];
    }
    return this.bad();
  }
  /** The next field: [field number, wire type], or null at the end. */
  key(): [number, number] | null {
    if (this.pos >= this.end) return null;
    const [, k] = this.varint();
    return [Math.floor(k / 8), k % 8];
  }
  /** A length-delimited field: [start, end]. */
  bytes(): [number, number] {
    const [, len] = this.varint();
    if (len > this.end - this.pos) this.bad();
    const s = this.pos;
    this.pos += len;
    return [s, s + len];
  }
  f32(): number {
    if (this.end - this.pos < 4) this.bad();
    const v = new DataView(this.b.buffer, this.b.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) { if (this.end - this.pos < 8) this.bad(); this.pos += 8; }
    else if (wire === 2) this.bytes();
    else if (wire === 5) { if (this.end - this.pos < 4) this.bad(); this.pos += 4; }
    else this.bad(); // groups (3, 4) are not used by sentencepiece
  }
  sub(range: [number, number]): Proto { return new Proto(this.b, this.file, range[0], range[1]); }
}

// ignoreBOM: Llama-2's piece 30143 is U+FEFF itself, which a default TextDecoder would drop.
const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** Parses a SentencePiece `tokenizer.model`; throws WebqloraError naming `file` if it is not a BPE model we can run. */
export function parseSentencePieceModel(bytes: Uint8Array, file: string): SpmModel {
  const pieces: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  let modelType = 1; // UNIGRAM is the proto default
  let unkId = 0, bosId = 1, eosId = 2, padId = -1;
  let normName = 'nmt_nfkc', charsmap = 0, addDummyPrefix = true, removeExtra = true, escapeWs = true;
  const top = new Proto(bytes, file, 0, bytes.length);
  for (let k = top.key(); k; k = top.key()) {
    const [f, w] = k;
    if (f === 1 && w === 2) {
      const p = top.sub(top.bytes());
      let piece = '', score = 0, type = PIECE_NORMAL;
      for (let kk = p.key(); kk; kk = p.key()) {
        if (kk[0] === 1 && kk[1] === 2) { const [s, e] = p.bytes(); piece = utf8.decode(bytes.subarray(s, e)); }
        else if (kk[0] === 2 && kk[1] === 5) score = p.f32();
        else if (kk[0] === 3 && kk[1] === 0) type = p.varint()[0];
        else p.skip(kk[1]);
      }
      pieces.push(piece); scores.push(score); types.push(type);
    } else if (f === 2 && w === 2) {
      const t = top.sub(top.bytes());
      for (let kk = t.key(); kk; kk = t.key()) {
        const [ff, ww] = kk;
        if (ww !== 0) { t.skip(ww); continue; }
        const v = t.varint()[0];
        if (ff === 3) modelType = v;
        else if (ff === 40) unkId = v;
        else if (ff === 41) bosId = v;
        else if (ff === 42) eosId = v;
        else if (ff === 43) padId = v;
      }
    } else if (f === 3 && w === 2) {
      const nspec = top.sub(top.bytes());
      for (let kk = nspec.key(); kk; kk = nspec.key()) {
        const [ff, ww] = kk;
        if (ff === 1 && ww === 2) { const [s, e] = nspec.bytes(); normName = utf8.decode(bytes.subarray(s, e)); }
        else if (ff === 2 && ww === 2) { const [s, e] = nspec.bytes(); charsmap = e - s; }
        else if (ff === 3 && ww === 0) addDummyPrefix = nspec.varint()[0] !== 0;
        else if (ff === 4 && ww === 0) removeExtra = nspec.varint()[0] !== 0;
        else if (ff === 5 && ww === 0) escapeWs = nspec.varint()[0] !== 0;
        else nspec.skip(ww);
      }
    } else {
      top.skip(w);
    }
  }
  const bad = (msg: string) => new WebqloraError(`${file}: ${msg}`);
  if (pieces.length === 0) throw bad('the SentencePiece model has no pieces (is this a tokenizer.model file?).');
  if (modelType !== 2) throw bad(`SentencePiece model type ${modelType === 1 ? 'unigram' : modelType} is not supported (only BPE, as in Llama; use tokenizer.json instead).`);
  if (charsmap > 0 || (normName !== 'identity' && normName !== '')) {
    throw bad(`SentencePiece normalizer "${normName}" is not supported (only identity; use tokenizer.json instead).`);
  }
  if (!escapeWs) throw bad('SentencePiece models without whitespace escaping are not supported.');
  const n = pieces.length;
  const idOf = (id: number, want: number): number | null => (id >= 0 && id < n && types[id] === want ? id : null);
  return {
    pieces,
    scores: Float32Array.from(scores),
    types: Int32Array.from(types),
    bosId: idOf(bosId, PIECE_CONTROL),
    eosId: idOf(eosId, PIECE_CONTROL),
    unkId: idOf(unkId, PIECE_UNKNOWN),
    padId: idOf(padId, PIECE_CONTROL),
    addDummyPrefix,
    removeExtraWhitespaces: removeExtra,
    addBos: true, // LlamaTokenizer add_bos_token default
    addEos: false,
    chatTemplate: null,
  };
}
