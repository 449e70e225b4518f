// What the data pipeline needs from a tokenizer: a structural subset of Tokenizer, so tests can
// pass a small deterministic fake.
import type { Tokenizer } from '../tokenizer/tokenizer.ts';

export type DataTokenizer = Pick<Tokenizer, 'encode' | 'idToToken' | 'isSpecial' | 'bosId' | 'eosId' | 'padId' | 'unkId' | 'vocabSize' | 'addBos' | 'chatTemplate'> & {
  /**
   * The named special tokens of tokenizer_config.json as strings (transformers' special_tokens_map:
   * bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token), handed to chat
   * templates. Optional: without it, bos/eos/unk/pad are taken from their ids.
   */
  readonly specialTokensMap?: Readonly<Record<string, string | null | undefined>>;
};
