// The tokenizer interface the engine uses (training data, generation, eval), whatever file the
// vocabulary came from: HF tokenizer.json (hf.ts), a SentencePiece model or a GGUF vocabulary
// (spm.ts).

export interface EncodeOptions {
  /** Prepend BOS (default: the tokenizer's own rule, `Tokenizer.addBos`). */
  addBos?: boolean;
  /** Append EOS (default: `Tokenizer.addEos`). */
  addEos?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, pad, unk, chat markers) from the text. Default true. */
  skipSpecial?: boolean;
}

export interface Tokenizer {
  /** Which implementation: 'hf' (tokenizer.json) or 'spm' (SentencePiece BPE). */
  readonly kind: 'hf' | 'spm';
  /** Ids never exceed vocabSize − 1. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  /** What encode does when EncodeOptions leaves addBos / addEos out. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** Jinja chat template (tokenizer_config.json `chat_template`), or null. */
  readonly chatTemplate: string | null;

  /** Text → ids. Special-token strings in the text are treated as the tokenizer's reference does (see each implementation). */
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids → text, as the reference decoder produces it (HF `decode`, SentencePiece `DecodeIds`). */
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** The vocabulary string of one id (e.g. '▁Hello', '<0x0A>', 'Ġworld'), or null if out of range. */
  idToToken(id: number): string | null;
  /** The id of a vocabulary string, or null. */
  tokenToId(token: string): number | null;
  /** True for control/special tokens (those decode skips with skipSpecial). */
  isSpecial(id: number): boolean;
  /**
   * Incremental decoding for streaming output: push one id at a time and get the newly completed
   * text. `prefix` ids (the prompt) are decoded as context but not returned, so the first new
   * token keeps its leading space.
   */
  createDecodeStream(opts?: DecodeOptions & { prefix?: readonly number[] }): DecodeStream;
}

/**
 * Streaming decoder over any `decode` function (the prefix/read-offset scheme of HF
 * text-generation-inference's `decode_token`): decode a short window of recent ids with and
 * without the new ones and emit the difference once it does not end in an incomplete UTF-8
 * sequence (U+FFFD). Because both decodes start at the same id, start-of-text rules (dropping the
 * leading space) cancel out, and bytes split over several byte-fallback tokens come out as one
 * character.
 */
export class DecodeStream {
  private readonly ids: number[];
  private prefixOffset: number;
  private readOffset: number;

  constructor(private readonly decodeFn: (ids: number[]) => string, prefix: readonly number[] = []) {
    this.ids = [...prefix];
    // A few ids of context are enough for any decoder rule that looks back (leading-space strip).
    this.prefixOffset = Math.max(0, this.ids.length - 6);
    this.readOffset = this.ids.length;
  }

  /** Appends one id; returns the text it completes ('' while a character is still partial). */
  push(id: number): string {
    this.ids.push(id);
    const before = this.decodeFn(this.ids.slice(this.prefixOffset, this.readOffset));
    const after = this.decodeFn(this.ids.slice(this.prefixOffset));
    if (after.length > before.length && !after.endsWith('\uFFFD')) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return after.slice(before.length);
    }
    return '';
  }

  /** Text still held back at the end of generation (an incomplete character comes out as U+FFFD). */
  flush(): string {
    const before = this.decodeFn(this.ids.slice(this.prefixOffset, this.readOffset));
    const after = this.decodeFn(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return after.length > before.length ? after.slice(before.length) : '';
  }
}
