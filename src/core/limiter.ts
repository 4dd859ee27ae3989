// Per-backend limits on storage calls. Guarantees:
// - at most `maxConcurrent` operations of one backend run at once, and no more than
//   `opsPerSecond` start in any one-second window (a sliding window over the start times,
//   as strict storage APIs count; a fractional rate rounds down, a rate below one allows
//   one start per 1/rate seconds);
// - the rate window runs on the injected Clock, so a FakeClock drives it in tests;
// - limits change at runtime (`configure`) without breaking either bound: a new
//   concurrency applies at once; a new rate applies at once to the start times already
//   recorded, so a window straddling the change never holds more starts than the larger
//   of the two rates allows, and none after the change beyond the new one;
// - operations start in arrival order; an abort while waiting rejects the operation and
//   frees its place; a started operation gets the signal and is never cut off;
// - every operation is counted in the in-flight gauge and timed by backend, operation
//   and result; `maxInFlight` records the highest concurrency actually reached.
// A hand-written scheduler rather than p-queue: p-queue's interval runs on real timers and
// restarts its count when a queue is replaced, which broke both properties above.
import { realClock, type Clock, type TimerHandle } from './clock.js';

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

/** An operation admitted and not started; `start` runs it. */
interface Waiting {
  start(): void;
}

interface BackendState {
  limits: Required<BackendLimits>;
  // Admitted operations not started, in arrival order; an aborted one leaves at once.
  waiting: Set<Waiting>;
  // Start times (clock ms) of the current rate's window, oldest first; kept across rate
  // changes, so a new rate counts the starts made under the old one. Not recorded while
  // there is no rate limit.
  starts: number[];
  // Pending wake-up for when the rate window opens again; set only while operations wait.
  timer?: TimerHandle;
  inFlight: number;
  maxInFlight: number;
}

/** Starts allowed per window, and the window in ms, for a rate. */
function rateWindow(opsPerSecond: number): { cap: number; windowMs: number } {
  if (opsPerSecond === Infinity) return { cap: Infinity, windowMs: 0 };
  return opsPerSecond >= 1 ? { cap: Math.floor(opsPerSecond), windowMs: 1000 } : { cap: 1, windowMs: 1000 / opsPerSecond };
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
      this.backends.set(backend, { limits: resolveLimits(limits, this.defaults), waiting: new Set(), starts: [], inFlight: 0, maxInFlight: 0 });
      return;
    }
    state.limits = resolveLimits(limits, state.limits);
    // A pending wake-up was computed for the old rate; recompute it.
    this.clearTimer(state);
    this.pump(state);
  }

  /** Runs `fn` under the backend's limits. An abort of `signal` while waiting rejects it and frees its place. */
  run<T>(backend: string, operation: string, fn: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!this.backends.has(backend)) this.configure(backend, {});
    const state = this.backends.get(backend)!;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if (!state.waiting.delete(waiting)) return;
        if (state.waiting.size === 0) this.clearTimer(state);
        reject(signal?.reason);
      };
      const waiting: Waiting = {
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          this.execute(backend, state, operation, fn, signal).then(resolve, reject);
        },
      };
      state.waiting.add(waiting);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pump(state);
    });
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
    return this.backends.get(backend)?.waiting.size ?? 0;
  }

  /** Forgets a backend (it was deleted); operations already admitted still finish. */
  remove(backend: string): void {
    this.backends.delete(backend);
  }

  private async execute<T>(backend: string, state: BackendState, operation: string, fn: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
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
      this.pump(state);
    }
  }

  /** Starts waiting operations in order while a slot is free and the rate window allows. */
  private pump(state: BackendState): void {
    for (const next of state.waiting) {
      if (state.inFlight >= state.limits.maxConcurrent) return;
      const delay = this.rateDelay(state);
      if (delay > 0) {
        state.timer ??= this.clock.setTimeout(() => {
          state.timer = undefined;
          this.pump(state);
        }, delay);
        return;
      }
      state.waiting.delete(next);
      if (state.limits.opsPerSecond !== Infinity) state.starts.push(this.clock.now());
      next.start();
    }
    this.clearTimer(state);
  }

  /** Ms until the rate allows another start now (0: at once). Prunes start times no window needs. */
  private rateDelay(state: BackendState): number {
    const { cap, windowMs } = rateWindow(state.limits.opsPerSecond);
    if (cap === Infinity) {
      state.starts.length = 0;
      return 0;
    }
    const now = this.clock.now();
    // A start at t counts in every window up to t + windowMs (exclusive).
    let stale = 0;
    while (stale < state.starts.length && state.starts[stale] <= now - windowMs) stale++;
    if (stale > 0) state.starts.splice(0, stale);
    if (state.starts.length < cap) return 0;
    return state.starts[state.starts.length - cap] + windowMs - now;
  }

  private clearTimer(state: BackendState): void {
    if (state.timer === undefined) return;
    this.clock.clearTimeout(state.timer);
    state.timer = undefined;
  }
}

function resolveLimits(limits: BackendLimits, fallback: Required<BackendLimits>): Required<BackendLimits> {
  const maxConcurrent = limits.maxConcurrent ?? fallback.maxConcurrent;
  const opsPerSecond = limits.opsPerSecond ?? fallback.opsPerSecond;
  if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1)) throw new RangeError(`maxConcurrent must be an integer >= 1, got ${maxConcurrent}`);
  if (!(opsPerSecond > 0)) throw new RangeError(`opsPerSecond must be > 0, got ${opsPerSecond}`);
  return { maxConcurrent, opsPerSecond };
}
