/**
 * A mistake in the user's input (a file, a flag, a data line). The CLI prints `message` alone
 * and exits with `exitCode`; library callers can catch it by type. Messages are one sentence
 * naming the file, tensor or line, plus a hint where one helps (STYLE.md §7).
 */
export class WebqloraError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'WebqloraError';
    this.exitCode = exitCode;
  }
}

/** Throws a WebqloraError unless `cond` holds. */
export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new WebqloraError(typeof message === 'function' ? message() : message);
}
