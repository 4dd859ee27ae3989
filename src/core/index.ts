// The core engine's public surface: what a controller needs. Nothing here knows Kubernetes
// or any storage system. Test helpers (FakeClock, settle) are in ./testing.js.
export { HierarchyPath } from './path.js';
export { realClock, sleep, type Clock, type TimerHandle } from './clock.js';
export { ExponentialBackoff } from './backoff.js';
export { HierarchicalLocks, type LockHandle, type LockMode, type LockRequest } from './locks.js';
export { BackendLimiter, type BackendLimits, type BackendSlot, type HeldSlot } from './limiter.js';
export { AggregateFailure, TerminalError, aggregateFailures, isBusy, isTerminal, retryAfterOf, runAll, type ChildFailure, type ErrorClass } from './errors.js';
export { createCoreMetrics, type CoreMetrics } from './metrics.js';
export {
  Controller,
  ReconcileTimeoutError,
  ShutdownGraceExpired,
  serialized,
  type ControllerOptions,
  type ReconcileContext,
  type ReconcileResult,
  type Reconciler,
  type RunPlan,
  type StopResult,
} from './runner.js';
