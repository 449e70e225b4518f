// What the data pipeline needs from a tokenizer: a structural subset of Tokenizer, so tests can
// pass a small deterministic fake.
import type { Tokenizer } from '../tokenizer/tokenizer.ts';

export type DataTokenizer = Pick<Tokenizer, 'encode' | 'idToToken' | 'bosId' | 'eosId' | 'padId' | 'vocabSize' | 'addBos' | 'chatTemplate'>;
