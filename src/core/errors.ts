// Errors of reconciles and of parallel children. Guarantees:
// - A TerminalError (or an AggregateFailure made only of terminal failures) means "do not
//   retry": the runner forgets the key instead of backing off.
// - runAll runs every child with bounded parallelism, logs each failure as it happens with
//   the child's key, and then throws one AggregateFailure naming every failed child (the
//   message lists ten, then "and N more"; `failures` holds all). It never stops at the
//   first failure and never swallows one, not even when `keyOf` throws for a child (that
//   child fails under the key `#<index>`, and the others still run).
import type { Logger } from '../log.js';

/** A failure that retrying cannot fix (a bad spec, a missing object the user must create). */
export class TerminalError extends Error {
  override readonly name = 'TerminalError';
}

export function isTerminal(error: unknown): boolean {
  return error instanceof TerminalError || (error instanceof AggregateFailure && error.terminal);
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

  constructor(
    readonly what: string,
    readonly failures: readonly ChildFailure[],
    readonly total: number,
  ) {
    const listed = failures.slice(0, LISTED_FAILURES).map((f) => `${f.key}: ${describe(f.error)}`);
    const more = failures.length > LISTED_FAILURES ? `; and ${failures.length - LISTED_FAILURES} more` : '';
    super(`${failures.length} of ${total} ${what} failed: ${listed.join('; ')}${more}`);
    this.terminal = failures.length > 0 && failures.every((f) => isTerminal(f.error));
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
