// Human progress output on stderr: one updating line on a terminal, occasional plain lines
// otherwise (CI logs). --json output goes to stdout as one object per line instead.
export class Progress {
  private last = -Infinity; // the first update always shows
  private width = 0;
  private readonly tty: boolean;
  private readonly t0 = performance.now();

  constructor(private readonly out: NodeJS.WriteStream = process.stderr, private readonly quiet = false) {
    this.tty = Boolean(out.isTTY);
  }

  /** Shows `text` (replacing the previous line on a terminal; at most every 5 s otherwise). */
  update(text: string, force = false): void {
    if (this.quiet) return;
    const now = performance.now();
    if (this.tty) {
      if (!force && now - this.last < 100) return;
      const pad = Math.max(0, this.width - text.length);
      this.out.write(`\r${text}${' '.repeat(pad)}`);
      this.width = text.length;
    } else {
      if (!force && now - this.last < 5000) return;
      this.out.write(text + '\n');
    }
    this.last = now;
  }

  /** Ends the updating line. */
  done(text?: string): void {
    if (this.quiet) return;
    if (text !== undefined) this.update(text, true);
    if (this.tty && this.width > 0) this.out.write('\n');
    this.width = 0;
  }

  log(text: string): void {
    if (this.quiet) return;
    if (this.tty && this.width > 0) { this.out.write('\n'); this.width = 0; }
    this.out.write(text + '\n');
  }

  get elapsed(): number {
    return (performance.now() - this.t0) / 1000;
  }
}

/**
 * An exponential moving average of the step loss (weight 0.9 on the past, bias-corrected as Adam
 * corrects its moments, so the first steps are not pulled toward 0): what the TTY line shows
 * next to the raw, noisy per-step loss.
 */
export class SmoothedLoss {
  private ema = 0;
  private n = 0;
  constructor(private readonly beta = 0.9) {}

  /** Adds one step's loss; returns the smoothed loss so far. */
  add(loss: number): number {
    if (!Number.isFinite(loss)) return this.value;
    this.ema = this.beta * this.ema + (1 - this.beta) * loss;
    this.n++;
    return this.value;
  }

  get value(): number {
    return this.n ? this.ema / (1 - this.beta ** this.n) : NaN;
  }
}

export function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Bytes in binary units: 512 B, 3.20 KiB, 41.5 MiB, 1.03 GiB. */
export function fmtBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = b / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
