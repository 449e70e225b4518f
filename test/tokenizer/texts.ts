// Test strings shared by the tokenizer tests: every script, emoji (incl. ZWJ sequences), and
// whitespace edge cases (leading, trailing, repeated spaces, tabs, newlines, NBSP, zero-width).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from '../helpers/index.ts';

export const VARIED = [
  'Hello', 'Hello world', ' leading space', '  two leading spaces', 'trailing space ', 'Once upon a time, there was a little girl named Lily.',
  'line one\nline two\n\nline four', '\ttab\tseparated', 'carriage\r\nreturn', 'naïve café, crème brûlée, Ångström', 'Zürich – “quotes” and ‘apostrophes’ … ellipsis',
  '日本語のテキストです。', '中文字符测试', '한국어 텍스트', 'русский текст', 'עברית', 'العربية', 'हिन्दी', 'emoji 😀🎉🦙 and 👩‍👩‍👧 family', '🏳️‍🌈',
  'numbers 12345 and 3.14159 and 1,000,000', 'code: for (let i = 0; i < n; i++) { x += i; }', 'MiXeD CaSe WoRdS', 'a', ' ', '\n', 'x'.repeat(200),
  'ﬁ ligature and ½ fraction', 'math ∑∫√∞ ≤ ≥', 'zero\u200bwidth', '\u00a0non-breaking\u00a0space', 'end.',
  '   many   spaces   ', 'a  b', '\n\n', ' \n ', 'ideographic\u3000space', 'line\u2028separator', 'tabs\t\t\tend\t',
];

/** TinyStories: every non-empty line and every whole story (multi-line) of the fixture sample. */
export function tinyStories(): { lines: string[]; stories: string[] } {
  const text = readFileSync(join(FIXTURES, 'data', 'tinystories_sample.txt'), 'utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.includes('<|endoftext|>'));
  const stories = text.split('<|endoftext|>').map((s) => s.replace(/^\n+|\n+$/g, '')).filter((s) => s !== '');
  return { lines, stories };
}
