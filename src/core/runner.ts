// The controller runner: workers over a WorkQueue. Guarantees:
// - at most `maxConcurrentReconciles` reconciles run at once, and never one key twice at
//   once (the queue hands a key out once until `done`);
// - each run first takes, all at once, the locks its reconciler asks for (in 'serial'
//   mode: one write lock on the root, i.e. one global lock shared by every controller on
//   the same HierarchicalLocks), then runs reconcile(key, {signal}) and releases them;
// - no head-of-line blocking: a key waiting for its locks does not hold a worker, so keys
//   of other backends go on; up to `maxLockWaiters` keys wait for locks at once;
// - the result contract is controller-runtime's: ok forgets the backoff; requeueAfter
//   forgets it and adds the key after the delay; an error retries with per-key backoff; a
//   TerminalError is logged and not retried;
// - a run past its timeout gets its signal aborted and counts as a failure, but keeps its
//   locks and its worker until the reconcile really settles: no operation is cut in half,
//   and no second run of the key can overlap it;
// - nothing a reconciler throws stops the dispatcher; `stop` lets running reconciles finish
//   and drops keys that have not started yet (still waiting for locks or a worker).
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
  /** Aborts at the timeout or never; pass it to every storage call. */
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
  /** Keys waiting for their locks at once, beside the running ones. Default 4 * maxConcurrentReconciles. */
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
  // Keys handed out and waiting for their locks; never above maxLockWaiters.
  private lockWaiting = 0;
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
    this.dispatcher ??= this.dispatch();
  }

  enqueue(key: string, options?: AddOptions): void {
    this.queue.add(key, options);
  }

  /** Stops taking keys, drops the ones not started, and resolves once every run in flight has finished. */
  async stop(): Promise<void> {
    this.stopping.abort(new ControllerStopping(`controller ${this.name} is stopping`));
    this.queue.shutdown();
    this.wakeDispatcher?.();
    await this.queue.drain();
    await this.dispatcher;
    this.untrackQueue?.();
  }

  /** Reconciles running now. */
  get activeWorkers(): number {
    return this.running;
  }

  /** Keys waiting for their locks now. */
  get waitingForLocks(): number {
    return this.lockWaiting;
  }

  private async dispatch(): Promise<void> {
    for (;;) {
      // Take a key only if it could run at once were its locks free, and lock waiters are within bounds.
      if (this.running + this.workerWaiters.length >= this.maxConcurrent || this.lockWaiting >= this.maxLockWaiters) {
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
    const timer = this.clock.setTimeout(() => {
      abort.abort(new ReconcileTimeoutError(`reconcile of ${key} timed out after ${this.timeoutMs} ms`));
      // Visible so that a reconciler ignoring its signal (and so keeping its locks) is found.
      if (hasWorker) logger.warn(`reconcile still running after its ${this.timeoutMs} ms timeout; signal aborted, locks kept until it returns`);
    }, this.timeoutMs);
    let handle: LockHandle | undefined;
    let result: ReconcileResultLabel | undefined = 'error';
    try {
      const requests = this.serial ? GLOBAL_LOCK : this.reconciler.locksFor(key);
      handle = this.locks.tryAcquireMany(requests);
      if (!handle) {
        // Busy locks: wait without a worker, so keys of other branches run meanwhile.
        this.lockWaiting++;
        try {
          handle = await this.locks.acquireMany(requests, AbortSignal.any([abort.signal, this.stopping.signal]));
        } finally {
          this.lockWaiting--;
          this.wakeDispatcher?.();
        }
      }
      await this.takeWorker();
      hasWorker = true;
      if (this.stopping.signal.aborted) throw this.stopping.signal.reason;
      if (abort.signal.aborted) throw abort.signal.reason;
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
      this.clock.clearTimeout(timer);
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
    if (next) next();
    else this.setRunning(this.running - 1);
  }

  private setRunning(running: number): void {
    this.running = running;
    this.metrics?.activeWorkers.set({ controller: this.name }, running);
  }
}
