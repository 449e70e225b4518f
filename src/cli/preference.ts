// What `webqlora train --method dpo|orpo` says: the pairs it read, the rewards of each step (TRL's
// logged metrics, train/preference.ts) and of a validation.
import type { PreferenceDataset } from '../data/preference.ts';
import type { PreferenceMetrics } from '../train/preference.ts';
import type { Progress } from './progress.ts';

export function describePreferenceDataset(ds: PreferenceDataset): string {
  let s = `data ${ds.name}: ${ds.pairs.length} preference pairs (${ds.format}${ds.chatRendering ? `, ${ds.chatRendering} rendering` : ''}), ${ds.tokens} tokens, ${ds.scored} scored`;
  if (ds.truncated) s += `, ${ds.truncated} truncated`;
  if (ds.dropped) s += `, ${ds.dropped} dropped (a response with nothing left to score)`;
  return s;
}

/** The data line, and one more when conversations fall back to the Guanaco format. */
export function logPreferenceDataset(ds: PreferenceDataset, progress: Progress): void {
  progress.log(describePreferenceDataset(ds));
  if (ds.chatRendering === 'guanaco') {
    progress.log('the tokenizer has no chat template: conversations are rendered in the Guanaco format ("### Human: … ### Assistant: …") instead');
  }
}

/** ` | margin 0.1234 | acc 0.75` (and ORPO's NLL and log-odds) for a progress line; '' for SFT. */
export function rewardsText(m: Partial<PreferenceMetrics>): string {
  const margin = m['rewards/margins'];
  if (margin === undefined) return '';
  let s = ` | margin ${margin.toFixed(4)} | acc ${(m['rewards/accuracies'] ?? NaN).toFixed(2)}`;
  if (m.nll_loss !== undefined) s += ` | nll ${m.nll_loss.toFixed(4)} | log-odds ${(m.log_odds_chosen ?? NaN).toFixed(4)}`;
  return s;
}

/** The metrics with a `valid_` prefix, for the --json validation records. */
export function validMetrics(m: PreferenceMetrics): Record<string, number> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [`valid_${k}`, v]));
}
