// Learning-rate schedules with linear warmup, as transformers' get_scheduler computes them
// (step i is 0-based; during warmup lr·i/W, so the first step of a warmup runs at lr 0).
// Unlike HF's plain "constant", our constant schedule honours --warmup-ratio (it is HF's
// "constant_with_warmup"): a ratio the user sets should not be silently ignored
// (QLORA_SPEC §6.5 notes qlora's warmup_ratio was inert because of that).
export type Schedule = 'constant' | 'cosine' | 'linear';

export function warmupSteps(totalSteps: number, warmupRatio: number): number {
  return Math.ceil(totalSteps * warmupRatio);
}

export function lrAt(step: number, totalSteps: number, baseLr: number, schedule: Schedule, warmup: number): number {
  if (step < warmup) return (baseLr * step) / Math.max(1, warmup);
  if (schedule === 'constant') return baseLr;
  const progress = (step - warmup) / Math.max(1, totalSteps - warmup);
  if (schedule === 'linear') return baseLr * Math.max(0, 1 - progress);
  return baseLr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
