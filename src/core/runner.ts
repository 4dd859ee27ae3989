// The controller runner: workers over a WorkQueue. Guarantees:
// - at most `maxConcurrentReconciles` keys run at once, and never one key twice at once
//   (the queue hands a key to one worker until `done`);
// - each run first takes, all at once, the locks its reconciler asks for (in 'serial'
//   mode: one write lock on the root, i.e. one global lock shared by every controller on
//   the same HierarchicalLocks), then runs reconcile(key, {signal}) and releases them;
// - the result contract is controller-runtime's: ok forgets the backoff; requeueAfter
//   forgets it and adds the key after the delay; an error retries with per-key backoff; a
//   TerminalError is logged and not retried;
// - a run past its timeout gets its signal aborted and counts as a failure, but keeps its
//   locks and its worker until the reconcile really settles: no operation is cut in half,
//   and no second run of the key can overlap it;
// - nothing a reconciler throws stops the dispatcher; `stop` drains the runs in flight.
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

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly reconciler: Reconciler;
  private readonly locks: HierarchicalLocks;
  private readonly maxConcurrent: number;
  private readonly timeoutMs: number;
  private readonly serial: boolean;
  private readonly clock: Clock;
  private readonly metrics?: CoreMetrics;
  private readonly logger: Logger;
  private readonly untrackQueue?: () => void;
  // Runs in flight (lock wait included); never above maxConcurrent.
  private active = 0;
  // Set while the dispatcher waits for a free worker.
  private workerFreed?: () => void;
  private dispatcher?: Promise<void>;

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.reconciler = options.reconciler;
    this.locks = options.locks;
    this.maxConcurrent = options.maxConcurrentReconciles ?? 10;
    this.timeoutMs = options.reconcileTimeoutMs ?? 5 * 60_000;
    this.serial = options.concurrency === 'serial';
    this.clock = options.clock ?? realClock;
    this.metrics = options.metrics;
    this.logger = options.logger ?? componentLogger('controller').child({ controller: this.name });
    if (!(Number.isInteger(this.maxConcurrent) && this.maxConcurrent >= 1)) {
      throw new RangeError(`maxConcurrentReconciles must be an integer >= 1, got ${this.maxConcurrent}`);
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
    this.queue.shutdown();
    this.workerFreed?.();
    await this.queue.drain();
    await this.dispatcher;
    this.untrackQueue?.();
  }

  /** Runs in flight now. */
  get activeWorkers(): number {
    return this.active;
  }

  private async dispatch(): Promise<void> {
    for (;;) {
      if (this.active >= this.maxConcurrent) {
        await new Promise<void>((resolve) => (this.workerFreed = resolve));
        this.workerFreed = undefined;
        continue;
      }
      const key = await this.queue.get();
      if (key === undefined) return;
      void this.process(key);
    }
  }

  private async process(key: string): Promise<void> {
    const started = this.clock.now();
    this.setActive(this.active + 1);
    const logger = this.logger.child({ key });
    const abort = new AbortController();
    const timer = this.clock.setTimeout(() => abort.abort(new ReconcileTimeoutError(`reconcile of ${key} timed out after ${this.timeoutMs} ms`)), this.timeoutMs);
    let handle: LockHandle | undefined;
    let result: ReconcileResultLabel = 'error';
    try {
      handle = await this.locks.acquireMany(this.serial ? GLOBAL_LOCK : this.reconciler.locksFor(key), abort.signal);
      const outcome = await this.reconciler.reconcile(key, { signal: abort.signal, logger, locks: handle });
      this.queue.forget(key);
      if (outcome && outcome.requeueAfterMs !== undefined) {
        result = 'requeue_after';
        this.queue.addAfter(key, outcome.requeueAfterMs);
      } else {
        result = 'success';
      }
    } catch (error) {
      this.metrics?.reconcileErrors.inc({ controller: this.name });
      if (isTerminal(error)) {
        this.queue.forget(key);
        logger.error({ err: error }, `reconcile failed for good, not retrying: ${String(error)}`);
      } else {
        this.queue.addRateLimited(key);
        logger.warn({ err: error, retries: this.queue.numRequeues(key) }, `reconcile failed, will retry: ${String(error)}`);
      }
    } finally {
      this.clock.clearTimeout(timer);
      handle?.release();
      this.queue.done(key);
      this.metrics?.reconcileTotal.inc({ controller: this.name, result });
      this.metrics?.reconcileTime.observe({ controller: this.name }, (this.clock.now() - started) / 1000);
      this.setActive(this.active - 1);
      this.workerFreed?.();
    }
  }

  private setActive(active: number): void {
    this.active = active;
    this.metrics?.activeWorkers.set({ controller: this.name }, active);
  }
}
