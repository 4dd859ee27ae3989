// Typed driver errors. Every failure a driver reports is a DriverError that says whether
// retrying can help (`retryable`: busy, timeout, unavailable) or not (`terminal`: invalid,
// notFound, noSpace, alreadyExists), and keeps the storage system's own message so the
// operator reading a log or a condition sees what the backend said.
// Layers above read the classification by shape, never by class: `terminal`, `busy` (the
// backend refused for load: an adaptive limiter lowers its concurrency) and `retryAfterMs`
// (always set on a busy error: the backend's hint, else a short jittered default). A driver
// never waits a busy backend out itself: it answers busy at once and the caller waits,
// outside any concurrency slot.

export type RetryableReason = 'busy' | 'timeout' | 'unavailable';
export type TerminalReason = 'invalid' | 'notFound' | 'noSpace' | 'alreadyExists';
export type DriverErrorReason = RetryableReason | TerminalReason;

const retryableReasons: ReadonlySet<string> = new Set<RetryableReason>(['busy', 'timeout', 'unavailable']);

export interface DriverErrorOptions {
  /** The backend asked to wait this long before the next try (e.g. HTTP Retry-After). */
  retryAfterMs?: number;
  /** The config option at fault, for configuration errors. */
  option?: string;
  cause?: unknown;
}

export class DriverError extends Error {
  override readonly name = 'DriverError';
  readonly kind: 'retryable' | 'terminal';
  readonly retryAfterMs?: number;
  readonly option?: string;

  constructor(
    readonly reason: DriverErrorReason,
    message: string,
    options: DriverErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = retryableReasons.has(reason) ? 'retryable' : 'terminal';
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
    else if (reason === 'busy') this.retryAfterMs = defaultRetryAfterMs();
    if (options.option !== undefined) this.option = options.option;
  }

  get retryable(): boolean {
    return this.kind === 'retryable';
  }

  /** Retrying cannot help: invalid, notFound, noSpace, alreadyExists. */
  get terminal(): boolean {
    return this.kind === 'terminal';
  }

  /** The backend refused for load; `retryAfterMs` says when to come back. */
  get busy(): boolean {
    return this.reason === 'busy';
  }
}

/** The wait a busy answer without a hint suggests: 50-100 ms, jittered so refused callers spread out. */
export function defaultRetryAfterMs(random: () => number = Math.random): number {
  return Math.round(50 + 50 * random());
}

export function isDriverError(err: unknown, reason?: DriverErrorReason): err is DriverError {
  return err instanceof DriverError && (reason === undefined || err.reason === reason);
}

export function isRetryable(err: unknown): boolean {
  return err instanceof DriverError && err.kind === 'retryable';
}

/** The error a call rejects with once its AbortSignal fired: the signal's own reason. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError');
}
