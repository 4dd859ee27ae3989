// Errors of reconciles and of parallel children. Guarantees:
// - One classification for every layer, read by duck typing so the core imports nothing
//   from above: an error with `terminal === true` (a TerminalError, a driver's invalid or
//   notFound, a repository's integrity failure, an AggregateFailure made only of such)
//   means "do not retry"; `retryAfterMs` (a backend's Retry-After) says when to try
//   again; `busy === true` says the storage refused for load (the limiter backs off).
// - runAll runs every child with bounded parallelism, logs each failure as it happens with
//   the child's key, and then throws one AggregateFailure naming every failed child (the
//   message lists ten, then "and N more"; `failures` holds all). It never stops at the
//   first failure and never swallows one, not even when `keyOf` throws for a child (that
//   child fails under the key `#<index>`, and the others still run).
import type { Logger } from '../log.js';

/** What the core reads of any error, whichever layer threw it. */
export interface ErrorClass {
  /** Retrying cannot help. */
  readonly terminal?: boolean;
  /** The source asked to be tried again no sooner than this. */
  readonly retryAfterMs?: number;
  /** The storage refused the call because it is overloaded. */
  readonly busy?: boolean;
}

/** A failure that retrying cannot fix (a bad spec, a missing object the user must create). */
export class TerminalError extends Error {
  override readonly name = 'TerminalError';
  readonly terminal = true;
}

function classOf(error: unknown): ErrorClass {
  return typeof error === 'object' && error !== null ? (error as ErrorClass) : {};
}

export function isTerminal(error: unknown): boolean {
  return classOf(error).terminal === true;
}

/** True when the storage refused for load. */
export function isBusy(error: unknown): boolean {
  return classOf(error).busy === true;
}

/** The delay the error asks for before the next try, if it names one. */
export function retryAfterOf(error: unknown): number | undefined {
  const ms = classOf(error).retryAfterMs;
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

export interface ChildFailure {
  key: string;
  error: unknown;
}

/** Names shown in the message before "and N more". */
const LISTED_FAILURES = 10;

export class AggregateFailure extends Error {
  override readonly name = 'AggregateFailure';
  /** True when every failure is terminal, so retrying the whole would not help. */
  readonly terminal: boolean;
  /** The longest delay a retryable failure asked for, so the whole is not retried before it. */
  readonly retryAfterMs?: number;

  constructor(
    readonly what: string,
    readonly failures: readonly ChildFailure[],
    readonly total: number,
  ) {
    const listed = failures.slice(0, LISTED_FAILURES).map((f) => `${f.key}: ${describe(f.error)}`);
    const more = failures.length > LISTED_FAILURES ? `; and ${failures.length - LISTED_FAILURES} more` : '';
    super(`${failures.length} of ${total} ${what} failed: ${listed.join('; ')}${more}`);
    this.terminal = failures.length > 0 && failures.every((f) => isTerminal(f.error));
    const delays = failures.filter((f) => !isTerminal(f.error)).map((f) => retryAfterOf(f.error));
    if (delays.length > 0 && delays.every((ms) => ms !== undefined)) this.retryAfterMs = Math.max(...(delays as number[]));
  }
}

/** Builds the combined error for failures collected elsewhere; undefined when there are none. */
export function aggregateFailures(what: string, failures: readonly ChildFailure[], total: number): AggregateFailure | undefined {
  return failures.length === 0 ? undefined : new AggregateFailure(what, failures, total);
}

export interface RunAllOptions<C> {
  /** Children running at once (>= 1). */
  parallelism: number;
  keyOf: (child: C) => string;
  /** Every failure is logged here as it happens, with the child's key. */
  logger?: Logger;
  /** What the children are, for the message ("volume snapshots"). Default "children". */
  what?: string;
  /** Once aborted, children not yet started fail with the signal's reason instead of running. */
  signal?: AbortSignal;
}

/**
 * Runs `fn` for every child, at most `parallelism` at once. Resolves with the results in
 * the children's order when all succeed; otherwise throws one AggregateFailure.
 */
export async function runAll<C, R>(children: readonly C[], options: RunAllOptions<C>, fn: (child: C, signal?: AbortSignal) => Promise<R>): Promise<R[]> {
  if (!(Number.isInteger(options.parallelism) && options.parallelism >= 1)) {
    throw new RangeError(`parallelism must be an integer >= 1, got ${options.parallelism}`);
  }
  const results: R[] = new Array(children.length);
  const failures: Array<ChildFailure & { index: number }> = [];
  let next = 0;
  const worker = async () => {
    while (next < children.length) {
      const index = next++;
      const child = children[index];
      // A throwing keyOf is that child's failure, named by its position, not the whole call's.
      let key = `#${index}`;
      try {
        key = options.keyOf(child);
        if (options.signal?.aborted) throw options.signal.reason;
        results[index] = await fn(child, options.signal);
      } catch (error) {
        failures.push({ key, error, index });
        options.logger?.error({ key, err: error }, `${options.what ?? 'child'} ${key} failed: ${describe(error)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.parallelism, children.length) }, worker));
  // Report in the children's order, whatever order they failed in.
  failures.sort((a, b) => a.index - b.index);
  const failure = aggregateFailures(options.what ?? 'children', failures.map(({ key, error }) => ({ key, error })), children.length);
  if (failure) throw failure;
  return results;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
