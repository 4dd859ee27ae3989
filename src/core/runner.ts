// The controller runner: workers over a WorkQueue. Guarantees:
// - at most `maxConcurrentReconciles` reconciles run at once, and never one key twice at
//   once (the queue hands a key out once until `done`);
// - each run first takes, all at once, the locks its reconciler asks for (in 'serial'
//   mode: one write lock on the root, i.e. one global lock shared by every controller on
//   the same HierarchicalLocks), then runs reconcile(key, {signal}) and releases them;
// - no head-of-line blocking: a key waiting for its locks does not hold a worker, and the
//   dispatcher keeps taking keys however many wait, so keys of other backends go on. Up to
//   `maxLockWaiters` of them wait in the locks' fair queue; the rest are parked (memory
//   bounded by the keys handed out) and retried whenever a lock on a line with theirs is
//   released or a waiter slot frees, so a parked key whose locks are free runs at once.
//   Parked keys keep the locks' fairness among this controller's keys: a key never
//   overtakes an earlier parked key it conflicts with, and slots go to the oldest first.
//   The price: a parked key holds no place in the locks' queue, so other controllers'
//   requests may overtake it until it gets a slot; keep the slots many enough that
//   parking stays the exception (the stress test runs with few to exercise it);
// - the wait for locks is bounded by the controller's stop signal only (a lock wait ends
//   when its AbortSignal aborts); the reconcile timeout starts once the locks are held and
//   a worker is taken, so a long lock wait is never mistaken for a hung reconcile;
// - the result contract is controller-runtime's: ok forgets the backoff; requeueAfter
//   forgets it and adds the key after the delay; an error retries with per-key backoff; a
//   TerminalError is logged and not retried;
// - a hold ends when the run settles, never earlier: a run past its timeout (or past the
//   stop grace) gets its signal aborted and counts as a failure, but keeps its locks and its
//   worker until the reconcile really returns. On purpose: no operation is cut in half, and
//   no second run of the key can overlap it;
// - nothing a reconciler throws stops the dispatcher; `stop` drops keys that have not
//   started yet (still waiting for locks or a worker), lets running reconciles finish within
//   a grace period, then aborts their signals and reports the keys still unfinished.
import { componentLogger, type Logger } from '../log.js';
import type { RetryLimiterOptions } from './backoff.js';
import { RetryLimiter } from './backoff.js';
import { realClock, type Clock } from './clock.js';
import { isTerminal } from './errors.js';
import type { HierarchicalLocks, LockHandle, LockRequest } from './locks.js';
import type { CoreMetrics, ReconcileResultLabel } from './metrics.js';
import { HierarchyPath } from './path.js';
import { WorkQueue, type AddOptions } from './queue.js';

/** Nothing (done), or when to look again though nothing failed. */
export type ReconcileResult = void | { requeueAfterMs: number };

export interface ReconcileContext {
  /** Aborts at the reconcile timeout, at the end of the stop grace, or never; pass it to every storage call. */
  signal: AbortSignal;
  logger: Logger;
  locks: LockHandle;
}

export interface Reconciler {
  /** Every lock the run of `key` needs; they are taken together before `reconcile`. */
  locksFor(key: string): LockRequest[];
  reconcile(key: string, context: ReconcileContext): Promise<ReconcileResult>;
}

export type ConcurrencyMode = 'hierarchical' | 'serial';

export interface ControllerOptions {
  name: string;
  reconciler: Reconciler;
  /** Shared by every controller of the operator, so their locks exclude each other. */
  locks: HierarchicalLocks;
  /** Default 10. */
  maxConcurrentReconciles?: number;
  /** Keys waiting in the locks' fair queue at once; more are parked and retried. Default 4 * maxConcurrentReconciles. */
  maxLockWaiters?: number;
  /** Default 5 min. */
  reconcileTimeoutMs?: number;
  /** Default 'hierarchical'. */
  concurrency?: ConcurrencyMode;
  /** Retry pacing; default 1 s base, 5 min cap, 10 qps / 100 burst overall. */
  retry?: RetryLimiterOptions;
  clock?: Clock;
  metrics?: CoreMetrics;
  logger?: Logger;
}

export class ReconcileTimeoutError extends Error {
  override readonly name = 'ReconcileTimeoutError';
}

/** The reason a run's signal aborts when the stop grace period runs out before it finished. */
export class ShutdownGraceExpired extends Error {
  override readonly name = 'ShutdownGraceExpired';
}

export interface StopOptions {
  /** How long running reconciles may take to finish before their signals abort. Default 30 s. */
  graceMs?: number;
}

export interface StopResult {
  /** Keys whose reconcile was still running when the grace period ran out (their signals were aborted). */
  unfinished: string[];
}

/** A key whose locks were busy while every waiter slot was taken. */
interface ParkedRun {
  readonly requests: readonly LockRequest[];
  /** `withWorker`: a worker was taken for the run along with its locks. */
  readonly resolve: (granted: { handle: LockHandle; withWorker: boolean }) => void;
  readonly reject: (reason: unknown) => void;
}

/**
 * Parked runs in arrival order, indexed by path. Two requests conflict only if their paths
 * are on one line (equal, or one an ancestor of the other), so a release looks up only the
 * runs it may unblock, and a new key finds the earlier parked runs it must not overtake.
 */
class ParkedRuns {
  // Every run with its arrival number; a Map iterates oldest first.
  private readonly runs = new Map<ParkedRun, number>();
  private arrivals = 0;
  // Runs a release may have freed, to try as soon as a worker is free: taking locks only
  // with a worker at hand means no parked run holds locks while it waits for one.
  private readonly woken = new Set<ParkedRun>();
  // The woken runs as a min-heap by arrival, so the oldest is found in O(log n). Entries of
  // runs no longer woken are skipped when popped, and dropped when they outnumber the live.
  private wokenHeap: Array<{ arrival: number; run: ParkedRun }> = [];
  // 'w:<path>' / 'r:<path>': runs requesting exactly that path in that mode;
  // '<<path>': runs requesting that path or one below it.
  private readonly index = new Map<string, Set<ParkedRun>>();

  get size(): number {
    return this.runs.size;
  }

  add(run: ParkedRun): void {
    this.runs.set(run, this.arrivals++);
    for (const key of indexKeys(run.requests)) {
      let runs = this.index.get(key);
      if (!runs) this.index.set(key, (runs = new Set()));
      runs.add(run);
    }
  }

  delete(run: ParkedRun): void {
    if (!this.runs.delete(run)) return;
    this.woken.delete(run);
    for (const key of indexKeys(run.requests)) {
      const runs = this.index.get(key)!;
      runs.delete(run);
      if (runs.size === 0) this.index.delete(key);
    }
  }

  oldest(): ParkedRun | undefined {
    return this.runs.keys().next().value;
  }

  /** Marks the runs on a line with `released` (they may be free now) as woken. */
  wake(released: readonly LockRequest[]): void {
    const found = new Set<ParkedRun>();
    for (const { path } of released) {
      this.collect(`<${path}`, found);
      for (const ancestor of path.ancestors()) {
        this.collect(`w:${ancestor}`, found);
        this.collect(`r:${ancestor}`, found);
      }
    }
    for (const run of found) {
      if (this.woken.has(run)) continue;
      this.woken.add(run);
      heapPush(this.wokenHeap, { arrival: this.runs.get(run)!, run });
    }
    if (this.wokenHeap.length > 2 * this.woken.size + 64) {
      this.wokenHeap = [];
      for (const run of this.woken) heapPush(this.wokenHeap, { arrival: this.runs.get(run)!, run });
    }
  }

  get wokenCount(): number {
    return this.woken.size;
  }

  /** Unmarks and returns the oldest woken run. */
  takeWoken(): ParkedRun | undefined {
    for (let entry = heapPop(this.wokenHeap); entry; entry = heapPop(this.wokenHeap)) {
      if (this.woken.delete(entry.run)) return entry.run;
    }
    return undefined;
  }

  /** True when a parked run, older than `before` if given, conflicts with `requests` (the locks' rules). */
  blocks(requests: readonly LockRequest[], before?: ParkedRun): boolean {
    if (this.runs.size === 0) return false;
    const limit = before === undefined ? Infinity : this.runs.get(before)!;
    const found = new Set<ParkedRun>();
    for (const { path, mode } of requests) {
      // A write excludes everything at and below it; a read, only writes on the path itself.
      this.collect(mode === 'write' ? `<${path}` : `w:${path}`, found);
      for (const ancestor of path.ancestors()) this.collect(`w:${ancestor}`, found);
    }
    for (const run of found) if (this.runs.get(run)! < limit) return true;
    return false;
  }

  /** Removes and returns every run, oldest first. */
  clear(): ParkedRun[] {
    const runs = [...this.runs.keys()];
    this.runs.clear();
    this.woken.clear();
    this.wokenHeap = [];
    this.index.clear();
    return runs;
  }

  private collect(key: string, into: Set<ParkedRun>): void {
    this.index.get(key)?.forEach((run) => into.add(run));
  }
}

/** Adds to a binary min-heap ordered by `arrival`. */
function heapPush<T extends { arrival: number }>(heap: T[], item: T): void {
  heap.push(item);
  for (let i = heap.length - 1; i > 0; ) {
    const parent = (i - 1) >> 1;
    if (heap[parent].arrival <= heap[i].arrival) break;
    [heap[parent], heap[i]] = [heap[i], heap[parent]];
    i = parent;
  }
}

/** Removes and returns the smallest `arrival` of a binary min-heap. */
function heapPop<T extends { arrival: number }>(heap: T[]): T | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length === 0 || last === undefined) return top;
  heap[0] = last;
  for (let i = 0; ; ) {
    const left = 2 * i + 1;
    const right = left + 1;
    let smallest = i;
    if (left < heap.length && heap[left].arrival < heap[smallest].arrival) smallest = left;
    if (right < heap.length && heap[right].arrival < heap[smallest].arrival) smallest = right;
    if (smallest === i) break;
    [heap[smallest], heap[i]] = [heap[i], heap[smallest]];
    i = smallest;
  }
  return top;
}

/** Each index key of a run once, though its paths repeat or share ancestors. */
function indexKeys(requests: readonly LockRequest[]): Set<string> {
  return new Set(requests.flatMap(({ path, mode }) => [`${mode === 'write' ? 'w' : 'r'}:${path}`, `<${path}`, ...path.ancestors().map((ancestor) => `<${ancestor}`)]));
}

const GLOBAL_LOCK: readonly LockRequest[] = [{ path: HierarchyPath.root, mode: 'write' }];

/** The reason runs that have not started are dropped with at `stop`; never logged as a failure. */
class ControllerStopping extends Error {
  override readonly name = 'ControllerStopping';
}

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly reconciler: Reconciler;
  private readonly locks: HierarchicalLocks;
  private readonly maxConcurrent: number;
  private readonly maxLockWaiters: number;
  private readonly timeoutMs: number;
  private readonly serial: boolean;
  private readonly clock: Clock;
  private readonly metrics?: CoreMetrics;
  private readonly logger: Logger;
  private readonly untrackQueue?: () => void;
  // Reconciles running (locks held, a worker taken); never above maxConcurrent.
  private running = 0;
  // Keys handed out and waiting in the locks' queue; never above maxLockWaiters.
  private lockWaiting = 0;
  // Keys handed out whose locks were busy while every waiter slot was taken, oldest first;
  // each leaves for a waiter slot or straight to its locks, or is rejected at stop.
  private readonly parked = new ParkedRuns();
  private unwatchLocks?: () => void;
  // Reconciles started and not settled, with the controller that aborts their signal.
  private readonly inFlight = new Map<string, AbortController>();
  // Runs holding their locks and waiting for a worker; a finishing run hands its worker
  // straight to the first, so `running` never overshoots.
  private readonly workerWaiters: Array<() => void> = [];
  // Set while the dispatcher waits for room to take another key.
  private wakeDispatcher?: () => void;
  private dispatcher?: Promise<void>;
  // Aborted by `stop`: runs that have not started give up instead of starting.
  private readonly stopping = new AbortController();

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.reconciler = options.reconciler;
    this.locks = options.locks;
    this.maxConcurrent = options.maxConcurrentReconciles ?? 10;
    this.maxLockWaiters = options.maxLockWaiters ?? 4 * this.maxConcurrent;
    this.timeoutMs = options.reconcileTimeoutMs ?? 5 * 60_000;
    this.serial = options.concurrency === 'serial';
    this.clock = options.clock ?? realClock;
    this.metrics = options.metrics;
    this.logger = options.logger ?? componentLogger('controller').child({ controller: this.name });
    for (const [name, value] of [['maxConcurrentReconciles', this.maxConcurrent], ['maxLockWaiters', this.maxLockWaiters]] as const) {
      if (!(Number.isInteger(value) && value >= 1)) throw new RangeError(`${name} must be an integer >= 1, got ${value}`);
    }
    this.queue = new WorkQueue({
      clock: this.clock,
      retryLimiter: new RetryLimiter({ clock: this.clock, ...options.retry }),
      metrics: this.metrics?.queueSink(this.name),
    });
    this.untrackQueue = this.metrics?.trackQueue(this.name, this.queue);
    this.metrics?.maxConcurrentReconciles.set({ controller: this.name }, this.maxConcurrent);
    this.metrics?.activeWorkers.set({ controller: this.name }, 0);
  }

  /** Starts the workers. Keys may be enqueued before. */
  start(): void {
    if (this.dispatcher) return;
    this.unwatchLocks = this.locks.onRelease((released) => this.serveParked(released));
    this.dispatcher = this.dispatch();
  }

  enqueue(key: string, options?: AddOptions): void {
    this.queue.add(key, options);
  }

  /**
   * Stops taking keys and drops the ones not started. Running reconciles get `graceMs` to
   * finish; past it their signals abort and `stop` resolves at once with their keys (their
   * locks are kept until they really settle). Resolves once every run finished or the grace ran out.
   */
  async stop({ graceMs = 30_000 }: StopOptions = {}): Promise<StopResult> {
    const stopping = new ControllerStopping(`controller ${this.name} is stopping`);
    // Parked keys go first, so that lock waits given up below do not hand them locks.
    this.unwatchLocks?.();
    for (const run of this.parked.clear()) run.reject(stopping);
    this.stopping.abort(stopping);
    this.queue.shutdown();
    this.wakeDispatcher?.();
    let timer: unknown;
    const graceOver = new Promise<'grace'>((resolve) => (timer = this.clock.setTimeout(() => resolve('grace'), graceMs)));
    const outcome = await Promise.race([this.queue.drain().then(() => 'drained' as const), graceOver]);
    this.clock.clearTimeout(timer);
    const unfinished = outcome === 'grace' ? [...this.inFlight.keys()] : [];
    if (unfinished.length > 0) {
      const reason = new ShutdownGraceExpired(`controller ${this.name} stopped after its ${graceMs} ms grace period`);
      for (const abort of this.inFlight.values()) abort.abort(reason);
      this.logger.warn({ unfinished }, `stop grace of ${graceMs} ms over: aborted ${unfinished.length} running reconcile(s); their locks are kept until they return`);
    } else {
      await this.dispatcher;
    }
    this.untrackQueue?.();
    return { unfinished };
  }

  /** Reconciles running now. */
  get activeWorkers(): number {
    return this.running;
  }

  /** Keys waiting for their locks now (in the locks' queue or parked). */
  get waitingForLocks(): number {
    return this.lockWaiting + this.parked.size;
  }

  private async dispatch(): Promise<void> {
    for (;;) {
      if (this.stopping.signal.aborted) return;
      // Take a key only if it could run at once were its locks free; keys waiting for locks do not count.
      if (this.running + this.workerWaiters.length >= this.maxConcurrent) {
        await new Promise<void>((resolve) => (this.wakeDispatcher = resolve));
        this.wakeDispatcher = undefined;
        continue;
      }
      const key = await this.queue.get();
      if (key === undefined) return;
      void this.process(key);
    }
  }

  private async process(key: string): Promise<void> {
    const started = this.clock.now();
    const logger = this.logger.child({ key });
    const abort = new AbortController();
    let hasWorker = false;
    let timer: unknown;
    let handle: LockHandle | undefined;
    let result: ReconcileResultLabel | undefined = 'error';
    try {
      const requests = this.serial ? GLOBAL_LOCK : this.reconciler.locksFor(key);
      // Busy locks: wait without a worker, so keys of other branches run meanwhile. A key
      // never overtakes an earlier parked key it conflicts with, as in the locks' own queue.
      handle = this.parked.blocks(requests) ? undefined : this.locks.tryAcquireMany(requests);
      let withWorker = false;
      if (!handle) ({ handle, withWorker } = await this.waitForLocks(requests));
      if (!withWorker) await this.takeWorker();
      hasWorker = true;
      if (this.stopping.signal.aborted) throw this.stopping.signal.reason;
      this.inFlight.set(key, abort);
      timer = this.clock.setTimeout(() => {
        abort.abort(new ReconcileTimeoutError(`reconcile of ${key} timed out after ${this.timeoutMs} ms`));
        // Visible so that a reconciler ignoring its signal (and so keeping its locks) is found.
        logger.warn(`reconcile still running after its ${this.timeoutMs} ms timeout; signal aborted, locks kept until it returns`);
      }, this.timeoutMs);
      const outcome = await this.reconciler.reconcile(key, { signal: abort.signal, logger, locks: handle });
      this.queue.forget(key);
      if (outcome && outcome.requeueAfterMs !== undefined) {
        result = 'requeue_after';
        this.queue.addAfter(key, outcome.requeueAfterMs);
      } else {
        result = 'success';
      }
    } catch (error) {
      if (error instanceof ControllerStopping) {
        result = undefined;
        logger.debug('not started before the controller stopped; the next start picks it up');
      } else if (isTerminal(error)) {
        this.metrics?.reconcileErrors.inc({ controller: this.name });
        this.queue.forget(key);
        logger.error({ err: error }, `reconcile failed for good, not retrying: ${String(error)}`);
      } else {
        this.metrics?.reconcileErrors.inc({ controller: this.name });
        this.queue.addRateLimited(key);
        logger.warn({ err: error, retries: this.queue.numRequeues(key) }, `reconcile failed, will retry: ${String(error)}`);
      }
    } finally {
      if (timer !== undefined) this.clock.clearTimeout(timer);
      this.inFlight.delete(key);
      handle?.release();
      this.queue.done(key);
      if (result) {
        this.metrics?.reconcileTotal.inc({ controller: this.name, result });
        this.metrics?.reconcileTime.observe({ controller: this.name }, (this.clock.now() - started) / 1000);
      }
      if (hasWorker) this.releaseWorker();
      this.wakeDispatcher?.();
    }
  }

  /** Waits for busy locks: in the locks' fair queue if a waiter slot is free, else parked. */
  private waitForLocks(requests: readonly LockRequest[]): Promise<{ handle: LockHandle; withWorker: boolean }> {
    if (this.stopping.signal.aborted) return Promise.reject(this.stopping.signal.reason);
    return new Promise((resolve, reject) => {
      this.parked.add({ requests, resolve, reject });
      this.serveParked();
    });
  }

  /**
   * Moves parked keys on: after a release, parked keys on a line with the released paths
   * are woken; woken keys whose locks are free take them together with a free worker,
   * oldest first; then the oldest parked keys fill the free waiter slots.
   */
  private serveParked(released?: readonly LockRequest[]): void {
    if (this.parked.size === 0) return;
    if (released) this.parked.wake(released);
    while (this.parked.wokenCount > 0 && this.running < this.maxConcurrent && this.workerWaiters.length === 0) {
      const run = this.parked.takeWoken()!;
      // Still held back by an earlier parked key: that one's release wakes it again.
      if (this.parked.blocks(run.requests, run)) continue;
      const handle = this.locks.tryAcquireMany(run.requests);
      if (!handle) continue;
      this.parked.delete(run);
      this.setRunning(this.running + 1);
      run.resolve({ handle, withWorker: true });
    }
    for (let run = this.parked.oldest(); run && this.lockWaiting < this.maxLockWaiters; run = this.parked.oldest()) {
      this.parked.delete(run);
      this.lockWaiting++;
      this.locks
        .acquireMany(run.requests, this.stopping.signal)
        .then((handle) => run.resolve({ handle, withWorker: false }), run.reject)
        .finally(() => {
          this.lockWaiting--;
          this.serveParked();
        });
    }
  }

  private takeWorker(): Promise<void> | void {
    if (this.running < this.maxConcurrent) {
      this.setRunning(this.running + 1);
      return;
    }
    return new Promise((resolve) => this.workerWaiters.push(resolve));
  }

  /** Hands the worker to the first run waiting for one, or frees it. */
  private releaseWorker(): void {
    const next = this.workerWaiters.shift();
    if (next) return next();
    this.setRunning(this.running - 1);
    // Woken parked keys were waiting for this worker.
    this.serveParked();
  }

  private setRunning(running: number): void {
    this.running = running;
    this.metrics?.activeWorkers.set({ controller: this.name }, running);
  }
}
