// The controller runner: workers over a WorkQueue. Guarantees:
// - at most `maxConcurrentReconciles` reconciles run at once, and never one key twice at
//   once (the queue hands a key out once until `done`);
// - a run first takes what its plan names, without holding a worker: all its locks at
//   once (waiting in the locks' fair queue, the engine's one fairness rule), then a slot
//   of its backend (waiting in the limiter). Only then does it take a worker. So a key
//   waiting for busy locks or for a backend at its limit never keeps a worker from keys
//   of other branches or backends: no head-of-line blocking;
// - plans may depend on data (a group's members): when the locks were granted after a
//   wait, the plan is asked again, and if it changed the locks are released and taken anew
//   at once, so a run never proceeds without the locks its current plan needs (locks
//   granted in the turn the plan was made cover it: nothing can have changed in between);
// - the result contract is controller-runtime's: ok forgets the backoff; requeueAfter
//   forgets it and adds the key after the delay; an error retries with per-key backoff, or
//   after the `retryAfterMs` it names; a terminal error (`terminal === true`) is logged and
//   not retried (errors.ts classifies);
// - the reconcile timeout starts once a worker is taken, so a long wait for locks is never
//   mistaken for a hung reconcile. A run past its timeout gets its signal aborted and
//   counts as a failure even if it later resolves, but keeps its locks, slot and worker
//   until it really returns: no operation is cut in half, and no second run of the key can
//   overlap it;
// - nothing a reconciler throws stops the dispatcher; `stop` drops keys that have not
//   started yet, lets running reconciles finish within a grace period, then aborts their
//   signals and reports the keys still unfinished.
// `serialized` turns any reconciler into the classic design, one global lock, so both
// modes run the same code and their speeds compare side by side.
import { randomUUID } from 'node:crypto';
import { componentLogger, type Logger } from '../log.js';
import { RetryLimiter, type RetryLimiterOptions } from './backoff.js';
import { realClock, type Clock } from './clock.js';
import { isTerminal, retryAfterOf } from './errors.js';
import type { BackendLimiter, BackendSlot, HeldSlot } from './limiter.js';
import type { HierarchicalLocks, LockHandle, LockRequest } from './locks.js';
import type { CoreMetrics, ReconcileResultLabel } from './metrics.js';
import { HierarchyPath } from './path.js';
import { WorkQueue, type AddOptions } from './queue.js';

/** Nothing (done), or when to look again though nothing failed. */
export type ReconcileResult = void | { requeueAfterMs: number };

/** What a run of a key needs before it starts. */
export interface RunPlan {
  /** Every lock the run needs; taken together. */
  locks: readonly LockRequest[];
  /** The backend whose limiter slot the run holds; taken after the locks, before a worker. */
  backend?: string;
}

export interface ReconcileContext {
  /** Aborts at the reconcile timeout, at the end of the stop grace, or never; pass it to every storage call. */
  signal: AbortSignal;
  /** Carries the key and a reconcile id on every line. */
  logger: Logger;
  locks: LockHandle;
  /** The slot of the plan's backend, held for the run; storage calls go through it. */
  backend?: BackendSlot;
}

export interface Reconciler {
  /** What a run of `key` needs; asked before the run, and again if its locks were granted after a wait. Must not do I/O. */
  plan(key: string): RunPlan;
  reconcile(key: string, context: ReconcileContext): Promise<ReconcileResult>;
}

export interface ControllerOptions {
  name: string;
  reconciler: Reconciler;
  /** Shared by every controller of the operator, so their locks exclude each other. */
  locks: HierarchicalLocks;
  /** Where plans' backend slots come from; shared by every controller. Without it plans' backends are ignored. */
  limiter?: BackendLimiter;
  /** Default 10. */
  maxConcurrentReconciles?: number;
  /** Default 5 min. */
  reconcileTimeoutMs?: number;
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

/** The reason runs that have not started are dropped with at `stop`; never logged as a failure. */
class ControllerStopping extends Error {
  override readonly name = 'ControllerStopping';
}

export interface StopOptions {
  /** How long running reconciles may take to finish before their signals abort. Default 30 s. */
  graceMs?: number;
}

export interface StopResult {
  /** Keys whose reconcile was still running when the grace period ran out (their signals were aborted). */
  unfinished: string[];
}

const GLOBAL_LOCK: readonly LockRequest[] = [{ path: HierarchyPath.root, mode: 'write' }];

/** The serial mode: the same reconciler under one global write lock. */
export function serialized(reconciler: Reconciler): Reconciler {
  return {
    plan: (key) => ({ ...reconciler.plan(key), locks: GLOBAL_LOCK }),
    reconcile: (key, context) => reconciler.reconcile(key, context),
  };
}

/** A plan that keeps changing under its own locks is a reconciler bug, not a reason to spin. */
const MAX_REPLANS = 100;

/** One run of a key: what it holds, and the context its reconcile gets. */
class Run implements ReconcileContext {
  readonly abort = new AbortController();
  held?: LockHandle;
  backend?: HeldSlot;
  // Aborted by `stop` while the run waits for locks or a slot; made only if it waits.
  admission?: AbortController;
  // Made on first use: most runs log nothing, and a child logger per run was a large share
  // of the garbage of a burst of small reconciles.
  private runLogger?: Logger;

  constructor(
    readonly key: string,
    private readonly parentLogger: Logger,
  ) {}

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get locks(): LockHandle {
    return this.held!;
  }

  get logger(): Logger {
    return (this.runLogger ??= this.parentLogger.child({ key: this.key, reconcileID: randomUUID() }));
  }
}

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly reconciler: Reconciler;
  private readonly locks: HierarchicalLocks;
  private readonly limiter?: BackendLimiter;
  private readonly maxConcurrent: number;
  private readonly timeoutMs: number;
  private readonly clock: Clock;
  private readonly metrics?: CoreMetrics;
  private readonly logger: Logger;
  private readonly untrackQueue?: () => void;
  // Reconciles running (a worker taken); never above maxConcurrent.
  private running = 0;
  // Runs holding what their plan needs and waiting for a worker; a finishing run hands its
  // worker straight to the first, so `running` never overshoots. Resolved false at stop.
  private readonly workerWaiters: Array<(gotWorker: boolean) => void> = [];
  // Reconciles started and not settled, with the controller that aborts their signal.
  private readonly inFlight = new Map<string, AbortController>();
  // Set while the dispatcher waits for room to take another key.
  private wakeDispatcher?: () => void;
  private dispatcher?: Promise<void>;
  // Aborted by `stop`: runs that have not started give up their waits.
  private readonly stopping = new AbortController();
  // One per run waiting for its locks or slot, aborted by `stop`. Not the shared `stopping`
  // signal: a signal's listeners are a list, and thousands of waits on one made each
  // grant's listener removal cost O(waits).
  private readonly admissions = new Set<AbortController>();

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.reconciler = options.reconciler;
    this.locks = options.locks;
    this.limiter = options.limiter;
    this.maxConcurrent = options.maxConcurrentReconciles ?? 10;
    this.timeoutMs = options.reconcileTimeoutMs ?? 5 * 60_000;
    this.clock = options.clock ?? realClock;
    this.metrics = options.metrics;
    this.logger = options.logger ?? componentLogger('controller').child({ controller: this.name });
    if (!(Number.isInteger(this.maxConcurrent) && this.maxConcurrent >= 1)) throw new RangeError(`maxConcurrentReconciles must be an integer >= 1, got ${this.maxConcurrent}`);
    this.queue = new WorkQueue({ clock: this.clock, retryLimiter: new RetryLimiter({ clock: this.clock, ...options.retry }), metrics: this.metrics?.queueSink(this.name) });
    this.untrackQueue = this.metrics?.trackQueue(this.name, this.queue);
    this.metrics?.maxConcurrentReconciles.set({ controller: this.name }, this.maxConcurrent);
    this.metrics?.activeWorkers.set({ controller: this.name }, 0);
  }

  /** Starts the workers. Keys may be enqueued before. */
  start(): void {
    this.dispatcher ??= this.dispatch();
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
    this.stopping.abort(new ControllerStopping(`controller ${this.name} is stopping`));
    for (const admission of this.admissions) admission.abort(this.stopping.signal.reason);
    for (const waiter of this.workerWaiters.splice(0)) waiter(false);
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

  private async dispatch(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      // Take a key only if it could run at once were its locks and slot free; keys waiting for those do not count.
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
    const run = new Run(key, this.logger);
    let hasWorker = false;
    let timer: unknown;
    let result: ReconcileResultLabel | undefined = 'error';
    try {
      await this.admit(run);
      hasWorker = await this.takeWorker();
      if (!hasWorker || this.stopping.signal.aborted) throw this.stopping.signal.reason;
      this.inFlight.set(key, run.abort);
      timer = this.clock.setTimeout(() => this.timedOut(run), this.timeoutMs);
      const outcome = await this.reconciler.reconcile(key, run);
      // Past its timeout a run has failed, however it ended: its caller gave up on it.
      if (run.signal.reason instanceof ReconcileTimeoutError) throw run.signal.reason;
      this.queue.forget(key);
      result = outcome && outcome.requeueAfterMs !== undefined ? 'requeue_after' : 'success';
      if (outcome && outcome.requeueAfterMs !== undefined) this.queue.addAfter(key, outcome.requeueAfterMs);
    } catch (error) {
      result = this.retry(run, error);
    } finally {
      if (timer !== undefined) this.clock.clearTimeout(timer);
      this.inFlight.delete(key);
      run.backend?.release();
      run.held?.release();
      this.queue.done(key);
      if (result) {
        this.metrics?.reconcileTotal.inc({ controller: this.name, result });
        this.metrics?.reconcileTime.observe({ controller: this.name }, (this.clock.now() - started) / 1000);
      }
      if (hasWorker) this.releaseWorker();
      this.wakeDispatcher?.();
    }
  }

  private timedOut(run: Run): void {
    run.abort.abort(new ReconcileTimeoutError(`reconcile of ${run.key} timed out after ${this.timeoutMs} ms`));
    // Visible so that a reconciler ignoring its signal (and so keeping its locks) is found.
    run.logger.warn(`reconcile still running after its ${this.timeoutMs} ms timeout; signal aborted, locks kept until it returns`);
  }

  /** Takes the plan's locks, then its backend's slot, holding no worker; re-plans under the locks. */
  private async admit(run: Run): Promise<void> {
    if (this.stopping.signal.aborted) throw this.stopping.signal.reason;
    try {
      for (let attempt = 0; attempt < MAX_REPLANS; attempt++) {
        const plan = this.reconciler.plan(run.key);
        let locks = this.locks.tryAcquireMany(plan.locks);
        // Granted in the turn the plan was made, the locks cover it; after a wait, the data may have moved.
        const waited = !locks;
        locks ??= await this.locks.acquireMany(plan.locks, this.waitSignal(run));
        try {
          if (waited && !samePlan(plan, this.reconciler.plan(run.key))) {
            locks.release();
            continue;
          }
          if (plan.backend && this.limiter) run.backend = this.limiter.tryAcquire(plan.backend) ?? (await this.limiter.acquire(plan.backend, this.waitSignal(run)));
          run.held = locks;
          return;
        } catch (error) {
          locks.release();
          throw error;
        }
      }
      throw new Error(`the plan of ${run.key} changed ${MAX_REPLANS} times in a row while its locks were taken`);
    } finally {
      if (run.admission) this.admissions.delete(run.admission);
    }
  }

  /** The signal a run's waits end on at `stop`; made only for a run that must wait (the usual run does not). */
  private waitSignal(run: Run): AbortSignal {
    if (this.stopping.signal.aborted) return this.stopping.signal;
    if (!run.admission) this.admissions.add((run.admission = new AbortController()));
    return run.admission.signal;
  }

  /** Requeues a failed run as its error asks; returns the result label, or undefined for a run dropped at stop. */
  private retry({ key, logger }: Run, error: unknown): ReconcileResultLabel | undefined {
    if (error instanceof ControllerStopping) {
      logger.debug('not started before the controller stopped; the next start picks it up');
      return undefined;
    }
    this.metrics?.reconcileErrors.inc({ controller: this.name });
    const retryAfterMs = retryAfterOf(error);
    if (isTerminal(error)) {
      this.queue.forget(key);
      logger.error({ err: error }, `reconcile failed for good, not retrying: ${String(error)}`);
    } else if (retryAfterMs !== undefined) {
      this.queue.addRateLimited(key, retryAfterMs);
      logger.info({ err: error, retryAfterMs }, `reconcile failed, retrying after ${retryAfterMs} ms as asked: ${String(error)}`);
    } else {
      this.queue.addRateLimited(key);
      logger.warn({ err: error, retries: this.queue.numRequeues(key) }, `reconcile failed, will retry: ${String(error)}`);
    }
    return 'error';
  }

  /** Resolves true with a worker, or false when the controller stops first. */
  private takeWorker(): Promise<boolean> | boolean {
    if (this.running < this.maxConcurrent) {
      this.setRunning(this.running + 1);
      return true;
    }
    return new Promise((resolve) => this.workerWaiters.push(resolve));
  }

  /** Hands the worker to the first run waiting for one, or frees it. */
  private releaseWorker(): void {
    const next = this.workerWaiters.shift();
    if (next) return next(true);
    this.setRunning(this.running - 1);
  }

  private setRunning(running: number): void {
    this.running = running;
    this.metrics?.activeWorkers.set({ controller: this.name }, running);
  }
}

function samePlan(a: RunPlan, b: RunPlan): boolean {
  if (a.backend !== b.backend || a.locks.length !== b.locks.length) return false;
  // A reconciler usually lists its locks in the same order each time: compare in place first.
  if (a.locks.every((lock, i) => lock.mode === b.locks[i].mode && lock.path.equals(b.locks[i].path))) return true;
  const text = (plan: RunPlan) => plan.locks.map(({ path, mode }) => `${mode} ${path}`).sort().join('\n');
  return text(a) === text(b);
}
