// A tiny deterministic tokenizer for data tests: special-token strings map to their ids, every
// other UTF-16 code unit c to c + 100. decode is the inverse, so tests can read labels as text.
import type { DataTokenizer } from '../../src/data/index.ts';

export interface FakeOptions {
  chatTemplate?: string | null;
  specials?: Record<string, number>;
  bos?: string | null;
  eos?: string | null;
  pad?: string | null;
  unk?: string | null;
  addBos?: boolean;
  specialTokensMap?: Record<string, string>;
}

export class FakeTokenizer implements DataTokenizer {
  readonly vocabSize = 0x10000 + 100;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos = false;
  readonly chatTemplate: string | null;
  readonly specialTokensMap?: Record<string, string>;
  private readonly specials: Map<string, number>;
  private readonly byId = new Map<number, string>();
  /** Every text encode() was called with, for tests on what gets tokenized separately. */
  readonly calls: string[] = [];

  constructor(o: FakeOptions = {}) {
    this.specials = new Map(Object.entries(o.specials ?? { '<s>': 1, '</s>': 2, '<pad>': 0 }));
    for (const [s, id] of this.specials) this.byId.set(id, s);
    const id = (s: string | null | undefined): number | null => (s == null ? null : this.specials.get(s) ?? null);
    this.bosId = id(o.bos === undefined ? '<s>' : o.bos);
    this.eosId = id(o.eos === undefined ? '</s>' : o.eos);
    this.padId = id(o.pad === undefined ? null : o.pad);
    this.unkId = id(o.unk === undefined ? null : o.unk);
    if (o.specialTokensMap) this.specialTokensMap = o.specialTokensMap;
    this.addBos = o.addBos ?? true;
    this.chatTemplate = o.chatTemplate ?? null;
  }

  encode(text: string, opts: { addBos?: boolean; addEos?: boolean } = {}): number[] {
    this.calls.push(text);
    const out: number[] = [];
    if ((opts.addBos ?? this.addBos) && this.bosId !== null) out.push(this.bosId);
    const specials = [...this.specials.keys()].sort((a, b) => b.length - a.length);
    for (let i = 0; i < text.length;) {
      const s = specials.find((sp) => text.startsWith(sp, i));
      if (s !== undefined) { out.push(this.specials.get(s)!); i += s.length; continue; }
      out.push(text.charCodeAt(i) + 100);
      i++;
    }
    if ((opts.addEos ?? this.addEos) && this.eosId !== null) out.push(this.eosId);
    return out;
  }

  decode(ids: readonly number[]): string {
    return ids.map((id) => this.byId.get(id) ?? String.fromCharCode(id - 100)).join('');
  }

  /** The special-token strings are the special tokens. */
  isSpecial(id: number): boolean {
    return this.byId.has(id);
  }

  idToToken(id: number): string | null {
    return this.byId.get(id) ?? (id >= 100 && id < this.vocabSize ? String.fromCharCode(id - 100) : null);
  }
}

/** The text of the scored labels (−100 runs shown as '|'). */
export function labelText(tok: FakeTokenizer, labels: readonly number[]): string {
  let s = '', gap = false;
  for (const l of labels) {
    if (l === -100) { if (!gap) s += '|'; gap = true; continue; }
    gap = false;
    s += tok.decode([l]);
  }
  return s;
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
