// Per-backend limits on storage calls. Guarantees:
// - at most `maxConcurrent` operations of one backend run at once, and no more than
//   `opsPerSecond` start in any one-second window (a sliding window, as strict storage
//   APIs count);
// - limits change at runtime (`configure`) without breaking either bound: a new
//   concurrency applies at once; a new rate starts once the operations admitted under
//   the old one have finished;
// - every operation is counted in the in-flight gauge and timed by backend, operation
//   and result; `maxInFlight` records the highest concurrency actually reached.
import PQueue from 'p-queue';
import { realClock, type Clock } from './clock.js';

export interface BackendLimits {
  /** Operations running at once. Default 10. */
  maxConcurrent?: number;
  /** Operations started per second; undefined or Infinity for no rate limit. */
  opsPerSecond?: number;
}

export interface LimiterMetricsSink {
  inFlight(backend: string, count: number): void;
  operation(backend: string, operation: string, result: 'success' | 'error', seconds: number): void;
}

export interface BackendLimiterOptions {
  defaults?: BackendLimits;
  clock?: Clock;
  metrics?: LimiterMetricsSink;
}

interface BackendState {
  limits: Required<BackendLimits>;
  // One queue per rate setting, oldest first; new operations go to the last. Only the
  // first runs: a rate change appends a paused queue, started once all before it are idle,
  // so two settings never run side by side.
  generations: PQueue[];
  // True while a wait for the first generation to go idle is pending.
  watching: boolean;
  inFlight: number;
  maxInFlight: number;
}

export class BackendLimiter {
  private readonly defaults: Required<BackendLimits>;
  private readonly clock: Clock;
  private readonly metrics?: LimiterMetricsSink;
  private readonly backends = new Map<string, BackendState>();

  constructor(options: BackendLimiterOptions = {}) {
    this.defaults = resolveLimits(options.defaults ?? {}, { maxConcurrent: 10, opsPerSecond: Infinity });
    this.clock = options.clock ?? realClock;
    this.metrics = options.metrics;
  }

  /** Sets (or changes) a backend's limits; unspecified fields keep their current value. */
  configure(backend: string, limits: BackendLimits): void {
    const state = this.backends.get(backend);
    if (!state) {
      const resolved = resolveLimits(limits, this.defaults);
      this.backends.set(backend, { limits: resolved, generations: [makeQueue(resolved, true)], watching: false, inFlight: 0, maxInFlight: 0 });
      return;
    }
    const next = resolveLimits(limits, state.limits);
    const rateChanged = next.opsPerSecond !== state.limits.opsPerSecond;
    state.limits = next;
    for (const queue of state.generations) queue.concurrency = next.maxConcurrent;
    if (rateChanged) {
      state.generations.push(makeQueue(next, false));
      this.advance(state);
    }
  }

  /** Runs `fn` under the backend's limits. An abort of `signal` while waiting rejects it and frees its place. */
  async run<T>(backend: string, operation: string, fn: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (!this.backends.has(backend)) this.configure(backend, {});
    const state = this.backends.get(backend)!;
    return state.generations.at(-1)!.add(
      async () => {
        state.inFlight++;
        state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
        this.metrics?.inFlight(backend, state.inFlight);
        const started = this.clock.now();
        let result: 'success' | 'error' = 'error';
        try {
          const value = await fn(signal);
          result = 'success';
          return value;
        } finally {
          state.inFlight--;
          this.metrics?.inFlight(backend, state.inFlight);
          this.metrics?.operation(backend, operation, result, (this.clock.now() - started) / 1000);
        }
      },
      { signal },
    );
  }

  limits(backend: string): Required<BackendLimits> {
    return { ...(this.backends.get(backend)?.limits ?? this.defaults) };
  }

  inFlight(backend: string): number {
    return this.backends.get(backend)?.inFlight ?? 0;
  }

  /** The highest number of operations of `backend` seen running at once. */
  maxInFlight(backend: string): number {
    return this.backends.get(backend)?.maxInFlight ?? 0;
  }

  /** Operations admitted but waiting for a slot or the rate. */
  waiting(backend: string): number {
    const state = this.backends.get(backend);
    if (!state) return 0;
    return state.generations.reduce((size, queue) => size + queue.size, 0);
  }

  /** Forgets a backend (it was deleted); operations already admitted still finish. */
  remove(backend: string): void {
    this.backends.delete(backend);
  }

  /** Starts the first generation and drops it once idle if a newer one waits behind it. */
  private advance(state: BackendState): void {
    for (;;) {
      const first = state.generations[0];
      first.start();
      if (state.generations.length === 1) return;
      if (first.size > 0 || first.pending > 0) {
        if (!state.watching) {
          state.watching = true;
          void first.onIdle().then(() => {
            state.watching = false;
            this.advance(state);
          });
        }
        return;
      }
      state.generations.shift();
    }
  }
}

function resolveLimits(limits: BackendLimits, fallback: Required<BackendLimits>): Required<BackendLimits> {
  const maxConcurrent = limits.maxConcurrent ?? fallback.maxConcurrent;
  const opsPerSecond = limits.opsPerSecond ?? fallback.opsPerSecond;
  if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1)) throw new RangeError(`maxConcurrent must be an integer >= 1, got ${maxConcurrent}`);
  if (!(opsPerSecond > 0)) throw new RangeError(`opsPerSecond must be > 0, got ${opsPerSecond}`);
  return { maxConcurrent, opsPerSecond };
}

function makeQueue(limits: Required<BackendLimits>, autoStart: boolean): PQueue {
  if (limits.opsPerSecond === Infinity) return new PQueue({ concurrency: limits.maxConcurrent, autoStart });
  // Below one per second, one start per (1/rate) seconds keeps the same average.
  const perSecond = limits.opsPerSecond >= 1;
  return new PQueue({
    concurrency: limits.maxConcurrent,
    autoStart,
    intervalCap: perSecond ? Math.round(limits.opsPerSecond) : 1,
    interval: perSecond ? 1000 : Math.round(1000 / limits.opsPerSecond),
    strict: true,
  });
}
