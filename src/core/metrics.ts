// Core metrics on an injected prom-client Registry. Guarantees: the queue and reconcile
// metrics carry controller-runtime's names and labels, so its dashboards work unchanged;
// Trellis's own metrics use only low-cardinality labels (never a key or object name).
import { Counter, Gauge, Histogram, exponentialBuckets, type Registry } from 'prom-client';
import type { LimiterMetricsSink } from './limiter.js';
import type { LockObserver } from './locks.js';
import type { QueueMetricsSink, WorkQueue } from './queue.js';

export type ReconcileResultLabel = 'success' | 'error' | 'requeue' | 'requeue_after';

export interface CoreMetrics {
  readonly reconcileTotal: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly reconcileTime: Histogram<'controller'>;
  readonly maxConcurrentReconciles: Gauge<'controller'>;
  readonly activeWorkers: Gauge<'controller'>;
  readonly lockWait: Histogram<'mode'>;
  /** The queue's hooks for controller `name`. */
  queueSink(name: string): QueueMetricsSink;
  /** Reports the ages of `queue`'s running keys at every scrape; returns an untrack function. */
  trackQueue(name: string, queue: WorkQueue): () => void;
  readonly lockObserver: LockObserver;
  readonly limiterSink: LimiterMetricsSink;
}

/** Registers every core metric on `registry`; call once per registry. */
export function createCoreMetrics(registry: Registry): CoreMetrics {
  const registers = [registry];
  // controller-runtime labels its workqueue metrics with both the queue and the controller name.
  const queueLabels = ['name', 'controller'] as const;
  const queueDurationBuckets = exponentialBuckets(1e-8, 10, 12);
  const tracked = new Map<string, WorkQueue>();

  const reconcileTotal = new Counter({ name: 'controller_runtime_reconcile_total', help: 'Total number of reconciliations per controller', labelNames: ['controller', 'result'], registers });
  const reconcileErrors = new Counter({ name: 'controller_runtime_reconcile_errors_total', help: 'Total number of reconciliation errors per controller', labelNames: ['controller'], registers });
  const reconcileTime = new Histogram({
    name: 'controller_runtime_reconcile_time_seconds',
    help: 'Length of time per reconciliation per controller',
    labelNames: ['controller'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60],
    registers,
  });
  const maxConcurrentReconciles = new Gauge({ name: 'controller_runtime_max_concurrent_reconciles', help: 'Maximum number of concurrent reconciles per controller', labelNames: ['controller'], registers });
  const activeWorkers = new Gauge({ name: 'controller_runtime_active_workers', help: 'Number of currently used workers per controller', labelNames: ['controller'], registers });

  const depth = new Gauge({ name: 'workqueue_depth', help: 'Current depth of workqueue', labelNames: queueLabels, registers });
  const adds = new Counter({ name: 'workqueue_adds_total', help: 'Total number of adds handled by workqueue', labelNames: queueLabels, registers });
  const queueDuration = new Histogram({ name: 'workqueue_queue_duration_seconds', help: 'How long in seconds an item stays in workqueue before being requested', labelNames: queueLabels, buckets: queueDurationBuckets, registers });
  const workDuration = new Histogram({ name: 'workqueue_work_duration_seconds', help: 'How long in seconds processing an item from workqueue takes', labelNames: queueLabels, buckets: queueDurationBuckets, registers });
  const retries = new Counter({ name: 'workqueue_retries_total', help: 'Total number of retries handled by workqueue', labelNames: queueLabels, registers });
  const unfinished = new Gauge({
    name: 'workqueue_unfinished_work_seconds',
    help: 'How many seconds of work has been done that is in progress and hasn\'t been observed by work_duration. Large values indicate stuck threads.',
    labelNames: queueLabels,
    registers,
    collect() {
      for (const [name, queue] of tracked) this.set({ name, controller: name }, queue.processingAges().total);
    },
  });
  const longestRunning = new Gauge({
    name: 'workqueue_longest_running_processor_seconds',
    help: 'How many seconds has the longest running processor for workqueue been running.',
    labelNames: queueLabels,
    registers,
    collect() {
      for (const [name, queue] of tracked) this.set({ name, controller: name }, queue.processingAges().longest);
    },
  });

  const lockWait = new Histogram({ name: 'trellis_lock_wait_seconds', help: 'Time a lock request waited before it was granted', labelNames: ['mode'], buckets: exponentialBuckets(1e-5, 4, 12), registers });
  const backendInflight = new Gauge({ name: 'trellis_backend_inflight_operations', help: 'Storage operations running now, per backend', labelNames: ['backend'], registers });
  const backendLimit = new Gauge({ name: 'trellis_backend_concurrency_limit', help: 'Storage operations allowed at once now, per backend (moves when the limit is adaptive)', labelNames: ['backend'], registers });
  const backendDuration = new Histogram({
    name: 'trellis_backend_operation_duration_seconds',
    help: 'Duration of storage operations, per backend, operation and result',
    labelNames: ['backend', 'operation', 'result'],
    buckets: exponentialBuckets(0.001, 2.5, 12),
    registers,
  });

  return {
    reconcileTotal,
    reconcileErrors,
    reconcileTime,
    maxConcurrentReconciles,
    activeWorkers,
    lockWait,
    queueSink(name) {
      const labels = { name, controller: name };
      return {
        added: () => adds.inc(labels),
        depth: (ready) => depth.set(labels, ready),
        queued: (seconds) => queueDuration.observe(labels, seconds),
        worked: (seconds) => workDuration.observe(labels, seconds),
        retried: () => retries.inc(labels),
      };
    },
    trackQueue(name, queue) {
      tracked.set(name, queue);
      return () => {
        if (tracked.get(name) !== queue) return;
        tracked.delete(name);
        // A stopped queue's last values would otherwise be scraped forever.
        unfinished.remove({ name, controller: name });
        longestRunning.remove({ name, controller: name });
      };
    },
    lockObserver: { waited: (mode, seconds) => lockWait.observe({ mode }, seconds) },
    limiterSink: {
      inFlight: (backend, count) => backendInflight.set({ backend }, count),
      operation: (backend, operation, result, seconds) => backendDuration.observe({ backend, operation, result }, seconds),
      concurrencyLimit: (backend, limit) => backendLimit.set({ backend }, limit),
    },
  };
}
