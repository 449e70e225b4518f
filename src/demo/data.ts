// The demo's training data, written by the project itself: short stories in a style the
// TinyStories base model has never seen — every story is about Captain Whiskers, a pirate cat,
// and every sentence ends with "Meow!". Seeded, so the demo is the same on every run.
import { SampleRng } from '../generate/sample.ts';

const SHIPS = ['the Fish Boat', 'the Red Sail', 'the Big Wave', 'the Sunny Star'];
const FRIENDS = ['a parrot named Polly', 'a crab named Pinch', 'a dog named Rex', 'a fish named Bubbles', 'a bird named Tweet'];
const PLACES = ['a small island', 'a sandy beach', 'a dark cave', 'a tall rock', 'a green forest'];
const THINGS = ['a box of gold', 'a shiny key', 'a big fish', 'a red ball', 'an old map', 'a jar of milk'];
const FEELINGS = ['happy', 'brave', 'proud', 'glad', 'excited'];
const ENDINGS = [
  'They all had a big party on the ship',
  'Then they sailed home under the stars',
  'Captain Whiskers took a long nap in the sun',
  'Everyone shared the treasure and laughed',
];

/** `n` stories as {"text"} records. */
export function demoStories(n: number, seed = 7): Array<{ text: string }> {
  const rng = new SampleRng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rng.next() * a.length)]!;
  const out: Array<{ text: string }> = [];
  for (let i = 0; i < n; i++) {
    const ship = pick(SHIPS), friend = pick(FRIENDS), place = pick(PLACES), thing = pick(THINGS), feel = pick(FEELINGS);
    const s = [
      `Once upon a time, Captain Whiskers was a pirate cat who sailed on ${ship}. Meow!`,
      `One day, Captain Whiskers and ${friend} found ${place}. Meow!`,
      `On ${place.replace(/^an? /, 'the ')}, they saw ${thing}. Meow!`,
      `Captain Whiskers felt very ${feel} and said, "Arr, this is mine!" Meow!`,
      `${pick(ENDINGS)}. Meow!`,
    ];
    out.push({ text: s.join(' ') });
  }
  return out;
}

/** The same stories as JSONL bytes. */
export function demoJsonl(n: number, seed = 7): Uint8Array {
  return new TextEncoder().encode(demoStories(n, seed).map((r) => JSON.stringify(r)).join('\n') + '\n');
}
