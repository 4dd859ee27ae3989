// The core's reconcile contract as the runtime uses it: `plan(key)` returns a RunPlan
// (locks, and the backend whose limiter slot the run holds), `serialized()` wraps a
// reconciler for --concurrency=serial. Until the core on this branch has them (the
// integrator is landing them on main), this file bridges to the older
// `locksFor(key)` / `concurrency` API; after the merge it re-exports the core's.
import type { Logger } from '../log.js';
import { Controller, type BackendLimiter, type ConcurrencyMode, type CoreMetrics, type HierarchicalLocks, type LockHandle, type LockRequest, type ReconcileResult } from '../core/index.js';

export type { ReconcileResult };

export interface RunPlan {
  locks: readonly LockRequest[];
  /** The backend whose limiter slot the run holds; taken after the locks, before a worker. */
  backend?: string;
}

export interface BackendSlot {
  readonly backend: string;
  run<T>(operation: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T>;
}

export interface ReconcileContext {
  signal: AbortSignal;
  logger: Logger;
  locks: LockHandle;
  backend?: BackendSlot;
}

export interface PlannedReconciler {
  plan(key: string): RunPlan;
  reconcile(key: string, context: ReconcileContext): Promise<ReconcileResult>;
}

export interface CoreControllerOptions {
  name: string;
  reconciler: PlannedReconciler;
  locks: HierarchicalLocks;
  limiter?: BackendLimiter;
  concurrency: ConcurrencyMode;
  maxConcurrentReconciles?: number;
  reconcileTimeoutMs?: number;
  metrics?: CoreMetrics;
  logger?: Logger;
}

/** A core Controller running `reconciler`. */
export function createCoreController(options: CoreControllerOptions): Controller {
  const { reconciler, limiter } = options;
  return new Controller({
    name: options.name,
    locks: options.locks,
    concurrency: options.concurrency,
    maxConcurrentReconciles: options.maxConcurrentReconciles,
    reconcileTimeoutMs: options.reconcileTimeoutMs,
    metrics: options.metrics,
    logger: options.logger,
    reconciler: {
      locksFor: (key) => [...reconciler.plan(key).locks],
      reconcile: (key, context) => {
        // The old core has no limiter slot: run the backend's operations through the limiter directly.
        const backend = reconciler.plan(key).backend;
        const slot: BackendSlot | undefined =
          backend === undefined || !limiter ? undefined : { backend, run: (operation, fn) => limiter.run(backend, operation, (signal) => fn(signal ?? context.signal), context.signal) };
        return reconciler.reconcile(key, { ...context, backend: slot });
      },
    },
  });
}
