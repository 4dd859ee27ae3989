// Per-backend limits on storage calls. Guarantees:
// - at most the backend's concurrency limit of slots are held at once (a slot covers one
//   operation run through `run`, or a whole reconcile that took it with `acquire`), and
//   no more than `opsPerSecond` operations start in any one-second window (a sliding
//   window over the start times, as strict storage APIs count; a fractional rate rounds
//   down, a rate below one allows one start per 1/rate seconds);
// - a slot can be waited for without running anything (`acquire`, `tryAcquire`): the
//   runner takes a key's slot before it takes a worker, so keys of a backend at its limit
//   wait without holding workers other backends' keys need;
// - the rate window runs on the injected Clock, so a FakeClock drives it in tests;
// - limits change at runtime (`configure`) without breaking either bound and without
//   touching operations in flight: a new concurrency applies to the next start; a new rate
//   applies at once to the start times already recorded;
// - with `adaptive`, the concurrency limit follows what the storage takes (adaptive-limit.ts)
//   between `minConcurrent` and `maxConcurrent`: it grows while operations succeed at
//   steady latency and is cut on a busy answer or a latency rise;
// - slots are granted in arrival order; an abort while waiting rejects and frees the place;
//   a started operation gets the signal and is never cut off;
// - every operation is counted in the in-flight gauge and timed by backend, operation and
//   result; `maxInFlight` records the highest concurrency actually reached.
import { AdaptiveLimit } from './adaptive-limit.js';
import { realClock, type Clock, type TimerHandle } from './clock.js';
import { isBusy } from './errors.js';

export interface BackendLimits {
  /** Slots held at once (the ceiling when adaptive). Default 10. */
  maxConcurrent?: number;
  /** Operations started per second; undefined or Infinity for no rate limit. */
  opsPerSecond?: number;
  /** Adapt the concurrency limit to the storage's answers. Default false. */
  adaptive?: boolean;
  /** The adaptive limit's floor. Default 1. */
  minConcurrent?: number;
}

export interface LimiterMetricsSink {
  inFlight(backend: string, count: number): void;
  operation(backend: string, operation: string, result: 'success' | 'error', seconds: number): void;
  /** The concurrency limit in force now (moves when adaptive). */
  concurrencyLimit(backend: string, limit: number): void;
}

export interface BackendLimiterOptions {
  defaults?: BackendLimits;
  clock?: Clock;
  metrics?: LimiterMetricsSink;
}

/** One of a backend's concurrency slots, held until `release`. */
export interface BackendSlot {
  readonly backend: string;
  /** Runs one storage operation in this slot; operations after the first wait for the rate window. */
  run<T>(operation: string, fn: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T>;
}

export interface HeldSlot extends BackendSlot {
  /** Frees the slot; later calls do nothing. */
  release(): void;
}

/** A request for a slot, or from a held slot for a rate start only; `grant` lets it go, saying whether it reserved a start. */
interface Waiting {
  grant(reserved: boolean): void;
}

interface BackendState {
  readonly name: string;
  limits: Required<BackendLimits>;
  adaptive?: AdaptiveLimit;
  // Requests not granted yet, in arrival order; an aborted one leaves at once. Rate waits
  // of held slots are served before new slots, so a started reconcile is never starved.
  slotWaiters: Set<Waiting>;
  rateWaiters: Set<Waiting>;
  // Held slots waiting to run an operation because the limit was lowered under them.
  executeWaiters: Set<Waiting>;
  // Start times (clock ms) of the current rate's window, oldest first; kept across rate
  // changes. Not recorded while there is no rate limit.
  starts: number[];
  // Slots granted with a start reserved that their first operation has not used yet. A
  // reservation counts in every window until it becomes a start at the operation's real
  // start time, so starts in any window plus reservations never exceed the rate.
  reserved: number;
  // Pending wake-up for when the rate window opens again; set only while requests wait.
  timer?: TimerHandle;
  // Slots held now, and operations running in them.
  held: number;
  executing: number;
  maxHeld: number;
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
    this.defaults = resolveLimits(options.defaults ?? {}, { maxConcurrent: 10, opsPerSecond: Infinity, adaptive: false, minConcurrent: 1 });
    this.clock = options.clock ?? realClock;
    this.metrics = options.metrics;
  }

  /** Sets (or changes) a backend's limits; unspecified fields keep their current value. */
  configure(backend: string, limits: BackendLimits): void {
    const state = this.backends.get(backend);
    if (!state) {
      const fresh: BackendState = { name: backend, limits: resolveLimits(limits, this.defaults), slotWaiters: new Set(), rateWaiters: new Set(), executeWaiters: new Set(), starts: [], reserved: 0, held: 0, executing: 0, maxHeld: 0 };
      this.backends.set(backend, fresh);
      this.applyAdaptive(fresh);
      return;
    }
    state.limits = resolveLimits(limits, state.limits);
    this.applyAdaptive(state);
    // A pending wake-up was computed for the old rate; recompute it.
    this.clearTimer(state);
    this.pump(state);
  }

  /** Runs `fn` in a slot of the backend, released when it settles. */
  async run<T>(backend: string, operation: string, fn: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw signal.reason;
    // A free slot is used in the same turn, so the start it records is the call's own.
    const slot = this.tryAcquire(backend) ?? (await this.acquire(backend, signal));
    try {
      return await slot.run(operation, fn, signal);
    } finally {
      slot.release();
    }
  }

  /** Waits for a slot (and a start in the rate window); an abort while waiting rejects and frees the place. */
  acquire(backend: string, signal?: AbortSignal): Promise<HeldSlot> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const slot = this.tryAcquire(backend);
    if (slot) return Promise.resolve(slot);
    const state = this.state(backend);
    return this.wait(state, true, signal).then((reserved) => this.slot(state, reserved));
  }

  /** A slot now if one is free, nobody waits before, and the rate allows a start; else undefined. */
  tryAcquire(backend: string): HeldSlot | undefined {
    const state = this.state(backend);
    if (waitingCount(state) > 0 || state.held >= this.concurrency(state) || this.rateDelay(state) > 0) return undefined;
    return this.slot(state, this.take(state, true));
  }

  limits(backend: string): Required<BackendLimits> {
    return { ...(this.backends.get(backend)?.limits ?? this.defaults) };
  }

  /** The concurrency limit in force now: the adaptive limit when adaptive, else maxConcurrent. */
  concurrencyLimit(backend: string): number {
    const state = this.backends.get(backend);
    return state ? this.concurrency(state) : this.defaults.maxConcurrent;
  }

  /** Slots held now. */
  inFlight(backend: string): number {
    return this.backends.get(backend)?.held ?? 0;
  }

  /** The highest number of slots of `backend` seen held at once. */
  maxInFlight(backend: string): number {
    return this.backends.get(backend)?.maxHeld ?? 0;
  }

  /** Requests waiting for a slot or the rate. */
  waiting(backend: string): number {
    const state = this.backends.get(backend);
    return state ? waitingCount(state) : 0;
  }

  /** Forgets a backend (it was deleted); slots already held still work and release harmlessly. */
  remove(backend: string): void {
    const state = this.backends.get(backend);
    if (state) this.clearTimer(state);
    this.backends.delete(backend);
  }

  private state(backend: string): BackendState {
    if (!this.backends.has(backend)) this.configure(backend, {});
    return this.backends.get(backend)!;
  }

  private applyAdaptive(state: BackendState): void {
    const { adaptive, minConcurrent, maxConcurrent } = state.limits;
    if (!adaptive) state.adaptive = undefined;
    else if (state.adaptive) state.adaptive.setBounds(minConcurrent, maxConcurrent);
    else state.adaptive = new AdaptiveLimit({ floor: minConcurrent, ceiling: maxConcurrent });
    this.metrics?.concurrencyLimit(state.name, this.concurrency(state));
  }

  private concurrency(state: BackendState): number {
    return state.adaptive ? state.adaptive.limit : state.limits.maxConcurrent;
  }

  private slot(state: BackendState, reserved: boolean): HeldSlot {
    let released = false;
    return {
      backend: state.name,
      run: async (operation, fn, signal) => {
        if (released) throw new Error(`slot of backend ${state.name} used after release`);
        // Held slots outnumber the limit only after it was lowered; running operations never do.
        const counted = state.executing >= this.concurrency(state);
        // Resolves with the operation already counted as running (finishExecuting does that).
        if (counted) await enqueue(state.executeWaiters, signal);
        // The start reserved with the slot happens now, ahead of waiters, unless the rate was
        // lowered since and the window has no room left: then it waits like any other.
        const hadReservation = reserved;
        if (reserved) {
          reserved = false;
          state.reserved--;
        }
        if (state.limits.opsPerSecond !== Infinity) {
          if (this.rateDelay(state) > 0 || (!hadReservation && waitingCount(state) > 0)) {
            try {
              await this.wait(state, false, signal);
            } catch (error) {
              if (counted) this.finishExecuting(state);
              throw error;
            }
          } else {
            this.take(state, false);
            // A reservation turned into a start can free a window that was all reserved.
            if (hadReservation) this.pump(state);
          }
        }
        return this.execute(state, operation, fn, signal, counted);
      },
      release: () => {
        if (released) return;
        released = true;
        if (reserved) state.reserved--;
        state.held--;
        this.metrics?.inFlight(state.name, state.held);
        this.pump(state);
      },
    };
  }

  /** Waits for a slot (`needsSlot`) or, from a held slot, for a rate start; resolves whether a start was reserved. */
  private wait(state: BackendState, needsSlot: boolean, signal?: AbortSignal): Promise<boolean> {
    const granted = enqueue(needsSlot ? state.slotWaiters : state.rateWaiters, signal, () => this.pump(state));
    this.pump(state);
    return granted;
  }

  /** Records a start now, or a slot with a start reserved; true when a start was reserved. */
  private take(state: BackendState, needsSlot: boolean): boolean {
    const limited = state.limits.opsPerSecond !== Infinity;
    if (!needsSlot) {
      if (limited) state.starts.push(this.clock.now());
      return false;
    }
    if (limited) state.reserved++;
    state.held++;
    state.maxHeld = Math.max(state.maxHeld, state.held);
    this.metrics?.inFlight(state.name, state.held);
    return limited;
  }

  private async execute<T>(state: BackendState, operation: string, fn: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal, counted = false): Promise<T> {
    const started = this.clock.now();
    // Operations calling the storage now, this one included: what the storage sees, unlike
    // held slots, which also count reconciles between calls.
    const inFlightAtStart = counted ? state.executing : ++state.executing;
    let result: 'success' | 'error' = 'error';
    try {
      const value = await fn(signal);
      result = 'success';
      state.adaptive?.succeeded(inFlightAtStart, this.clock.now() - started);
      return value;
    } catch (error) {
      if (isBusy(error)) state.adaptive?.refused(inFlightAtStart);
      throw error;
    } finally {
      this.finishExecuting(state);
      this.metrics?.operation(state.name, operation, result, (this.clock.now() - started) / 1000);
      if (state.adaptive) this.metrics?.concurrencyLimit(state.name, state.adaptive.limit);
      // A grown adaptive limit may admit a waiter.
      if (state.adaptive) this.pump(state);
    }
  }

  /** Ends a running operation and lets held slots waiting to run one go, while the limit allows. */
  private finishExecuting(state: BackendState): void {
    state.executing--;
    for (const waiting of state.executeWaiters) {
      if (state.executing >= this.concurrency(state)) break;
      state.executeWaiters.delete(waiting);
      // Counted now, so nothing else starts in its place before it resumes.
      state.executing++;
      waiting.grant(false);
    }
  }

  /** Grants waiting requests in order: rate-only waits of held slots first, then new slots while one is free. */
  private pump(state: BackendState): void {
    for (const [queue, needsSlot] of [[state.rateWaiters, false], [state.slotWaiters, true]] as const) {
      for (const next of queue) {
        if (needsSlot && state.held >= this.concurrency(state)) return;
        const delay = this.rateDelay(state);
        // Every start of the window is reserved: a first operation's start or a release pumps again.
        if (delay === Infinity) return;
        if (delay > 0) {
          state.timer ??= this.clock.setTimeout(() => {
            state.timer = undefined;
            this.pump(state);
          }, delay);
          return;
        }
        queue.delete(next);
        next.grant(this.take(state, needsSlot));
      }
    }
    this.clearTimer(state);
  }

  /** Ms until the rate allows another start or reservation (0: at once; Infinity: until a reservation is used or freed). Prunes start times no window needs. */
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
    const free = cap - state.reserved;
    if (free <= 0) return Infinity;
    if (state.starts.length < free) return 0;
    return state.starts[state.starts.length - free] + windowMs - now;
  }

  private clearTimer(state: BackendState): void {
    if (state.timer === undefined) return;
    this.clock.clearTimeout(state.timer);
    state.timer = undefined;
  }
}

/** Waits in `queue` until granted; an abort first takes the place out, rejects, then runs `afterAbort`. */
function enqueue(queue: Set<Waiting>, signal: AbortSignal | undefined, afterAbort?: () => void): Promise<boolean> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<boolean>((resolve, reject) => {
    const onAbort = () => {
      if (!queue.delete(waiting)) return;
      reject(signal?.reason);
      afterAbort?.();
    };
    const waiting: Waiting = {
      grant: (reserved) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(reserved);
      },
    };
    queue.add(waiting);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function waitingCount(state: BackendState): number {
  return state.slotWaiters.size + state.rateWaiters.size;
}

function resolveLimits(limits: BackendLimits, fallback: Required<BackendLimits>): Required<BackendLimits> {
  const resolved: Required<BackendLimits> = {
    maxConcurrent: limits.maxConcurrent ?? fallback.maxConcurrent,
    opsPerSecond: limits.opsPerSecond ?? fallback.opsPerSecond,
    adaptive: limits.adaptive ?? fallback.adaptive,
    minConcurrent: limits.minConcurrent ?? fallback.minConcurrent,
  };
  const { maxConcurrent, opsPerSecond, minConcurrent } = resolved;
  if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1)) throw new RangeError(`maxConcurrent must be an integer >= 1, got ${maxConcurrent}`);
  if (!(opsPerSecond > 0)) throw new RangeError(`opsPerSecond must be > 0, got ${opsPerSecond}`);
  if (!(Number.isInteger(minConcurrent) && minConcurrent >= 1 && minConcurrent <= maxConcurrent)) {
    throw new RangeError(`minConcurrent must be an integer from 1 to maxConcurrent (${maxConcurrent}), got ${minConcurrent}`);
  }
  return resolved;
}
