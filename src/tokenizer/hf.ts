// HF `tokenizer.json` tokenizers (BPE with byte fallback as in Llama-2/TinyLlama/Phi-3, byte-level
// BPE as in GPT-2/SmolLM2/Llama-3, ...) through @huggingface/tokenizers, a pure-JS port of the
// Rust `tokenizers` pipeline (normalizer, pre-tokenizer, model, decoder, added tokens).
//
// BOS/EOS are added here, not by the file's post-processor, so EncodeOptions can turn them on and
// off; the defaults reproduce what transformers does (tokenizer_config.json add_bos_token /
// add_eos_token, else what the post-processor template adds).
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { WebqloraError } from '../errors.ts';
import { DecodeStream, type DecodeOptions, type EncodeOptions, type Tokenizer } from './tokenizer.ts';

/** The parts of tokenizer_config.json we read. */
export interface TokenizerConfig {
  bos_token?: string | { content?: string } | null;
  eos_token?: string | { content?: string } | null;
  pad_token?: string | { content?: string } | null;
  unk_token?: string | { content?: string } | null;
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  clean_up_tokenization_spaces?: boolean;
  chat_template?: string | Array<{ name: string; template: string }> | null;
  [k: string]: unknown;
}

/** tokenizer_config.json `chat_template`: a string, or a list of {name, template} whose 'default' entry is used. */
export function chatTemplateFromConfig(config: TokenizerConfig | null | undefined): string | null {
  const t = config?.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const d = t.find((x) => x && typeof x === 'object' && x.name === 'default');
    return d && typeof d.template === 'string' ? d.template : null;
  }
  return null;
}

function tokenContent(t: TokenizerConfig['bos_token']): string | null {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof t.content === 'string') return t.content;
  return null;
}

interface JsonTemplatePiece { SpecialToken?: { id: string }; Sequence?: { id: string } }

export class HfJsonTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly chatTemplate: string | null;
  private readonly tok: HfTokenizer;
  private readonly special = new Set<number>();
  private readonly cleanUp: boolean;

  /** `json`: parsed tokenizer.json; `config`: parsed tokenizer_config.json (optional); `name` for messages. */
  constructor(json: Record<string, unknown>, config: TokenizerConfig | null = null, name = 'tokenizer.json') {
    if (!json || typeof json !== 'object' || !json.model || typeof json.model !== 'object') {
      throw new WebqloraError(`${name}: not a tokenizer.json (no "model" object).`);
    }
    // Truncation and padding are the caller's business (the data pipeline packs sequences).
    const clean = { ...json, truncation: null, padding: null };
    try {
      this.tok = new HfTokenizer(clean, config ?? {});
    } catch (e) {
      throw new WebqloraError(`${name}: cannot build the tokenizer (${(e as Error).message}).`);
    }
    const vocab = this.tok.get_vocab(true);
    let max = -1;
    for (const id of vocab.values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    for (const [id, t] of this.tok.get_added_tokens_decoder()) if (t.special) this.special.add(id);

    const id = (s: string | null): number | null => (s === null ? null : this.tok.token_to_id(s) ?? null);
    const cfg = config ?? {};
    // The post-processor template tells which special tokens wrap a single sequence.
    const single = ((json.post_processor as { single?: JsonTemplatePiece[] } | null)?.single ?? []) as JsonTemplatePiece[];
    const first = single[0]?.SpecialToken?.id ?? null;
    const last = single.length > 1 ? single[single.length - 1]?.SpecialToken?.id ?? null : null;
    // Without a config, a vocabulary with exactly one special token (GPT-2's <|endoftext|>) uses
    // it as both BOS and EOS, as transformers' GPT2Tokenizer defaults do.
    const only = this.special.size === 1 && !config ? [...this.special][0]! : null;
    this.bosId = id(tokenContent(cfg.bos_token)) ?? id(first) ?? only;
    this.eosId = id(tokenContent(cfg.eos_token)) ?? id(last) ?? only;
    this.padId = id(tokenContent(cfg.pad_token));
    const modelUnk = (json.model as { unk_token?: unknown }).unk_token;
    this.unkId = id(tokenContent(cfg.unk_token)) ?? id(typeof modelUnk === 'string' ? modelUnk : null);
    this.addBos = typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : first !== null && id(first) === this.bosId;
    this.addEos = typeof cfg.add_eos_token === 'boolean' ? cfg.add_eos_token : last !== null && id(last) === this.eosId;
    // transformers' default became False; True would turn " ." into "." and break round trips.
    this.cleanUp = cfg.clean_up_tokenization_spaces === true;
    this.chatTemplate = chatTemplateFromConfig(cfg);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = text.length > 0 ? this.tok.encode(text, { add_special_tokens: false }).ids : [];
    if ((opts.addBos ?? this.addBos) && this.bosId !== null) ids.unshift(this.bosId);
    if ((opts.addEos ?? this.addEos) && this.eosId !== null) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
        throw new WebqloraError(`tokenizer: token id ${id} is outside the vocabulary (0..${this.vocabSize - 1}).`);
      }
    }
    const skip = opts.skipSpecial ?? true;
    const kept = skip ? ids.filter((id) => !this.special.has(id)) : [...ids];
    if (kept.length === 0) return ''; // the library rejects an empty list
    return this.tok.decode(kept, { skip_special_tokens: skip, clean_up_tokenization_spaces: this.cleanUp });
  }

  idToToken(id: number): string | null {
    return this.tok.id_to_token(id) ?? null;
  }

  tokenToId(token: string): number | null {
    return this.tok.token_to_id(token) ?? null;
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
  }

  createDecodeStream(opts: DecodeOptions & { prefix?: readonly number[] } = {}): DecodeStream {
    return new DecodeStream((ids) => this.decode(ids, opts), opts.prefix);
  }
}
