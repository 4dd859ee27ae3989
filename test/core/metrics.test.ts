import { expect } from 'chai';
import { Registry } from 'prom-client';
import { FakeClock, settle } from '../../src/core/testing.js';
import { deferred } from './helpers.js';
import { BackendLimiter } from '../../src/core/limiter.js';
import { HierarchicalLocks } from '../../src/core/locks.js';
import { createCoreMetrics } from '../../src/core/metrics.js';
import { HierarchyPath } from '../../src/core/path.js';
import { Controller } from '../../src/core/runner.js';

describe('core/metrics', () => {
  it('registers controller-runtime and Trellis metric names on the injected registry', async () => {
    const registry = new Registry();
    const metrics = createCoreMetrics(registry);
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name).sort();
    expect(names).to.deep.equal(
      [
        'controller_runtime_reconcile_total',
        'controller_runtime_reconcile_errors_total',
        'controller_runtime_reconcile_time_seconds',
        'controller_runtime_max_concurrent_reconciles',
        'controller_runtime_active_workers',
        'workqueue_depth',
        'workqueue_adds_total',
        'workqueue_queue_duration_seconds',
        'workqueue_work_duration_seconds',
        'workqueue_unfinished_work_seconds',
        'workqueue_longest_running_processor_seconds',
        'workqueue_retries_total',
        'trellis_lock_wait_seconds',
        'trellis_backend_concurrency_limit',
      'trellis_backend_inflight_operations',
        'trellis_backend_operation_duration_seconds',
      ].sort(),
    );
    expect(metrics.lockWait).to.not.equal(undefined);
  });

  it('fills them from a controller run, with low-cardinality labels only', async () => {
    const registry = new Registry();
    const metrics = createCoreMetrics(registry);
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock, metrics: metrics.limiterSink });
    const locks = new HierarchicalLocks({ clock, observer: metrics.lockObserver });
    const controller = new Controller({
      name: 'volume',
      locks,
      clock,
      metrics,
      maxConcurrentReconciles: 2,
      reconciler: {
        plan: (key) => ({ locks: [{ path: HierarchyPath.parse(key), mode: 'write' }] }),
        reconcile: () => limiter.run('array-a', 'create', () => gate.promise),
      },
    });
    const gate = deferred();
    controller.enqueue('backends/array-a/volumes/n.v1');
    controller.start();
    await settle();
    clock.advance(3000);
    const during = await registry.metrics();
    expect(during).to.contain('workqueue_longest_running_processor_seconds{name="volume",controller="volume"} 3');
    expect(during).to.contain('workqueue_unfinished_work_seconds{name="volume",controller="volume"} 3');
    expect(during).to.contain('controller_runtime_active_workers{controller="volume"} 1');
    expect(during).to.contain('trellis_backend_inflight_operations{backend="array-a"} 1');
    expect(during).to.contain('trellis_backend_concurrency_limit{backend="array-a"} 10');
    gate.resolve();
    await controller.stop();
    const text = await registry.metrics();
    expect(text).to.contain('controller_runtime_reconcile_total{controller="volume",result="success"} 1');
    expect(text).to.contain('controller_runtime_max_concurrent_reconciles{controller="volume"} 2');
    expect(text).to.contain('workqueue_adds_total{name="volume",controller="volume"} 1');
    expect(text).to.contain('workqueue_depth{name="volume",controller="volume"} 0');
    expect(text).to.contain('workqueue_work_duration_seconds_sum{name="volume",controller="volume"} 3');
    expect(text).to.contain('trellis_lock_wait_seconds_count{mode="write"} 1');
    expect(text).to.contain('trellis_backend_inflight_operations{backend="array-a"} 0');
    expect(text).to.contain('trellis_backend_operation_duration_seconds_count{backend="array-a",operation="create",result="success"} 1');
    expect(text).not.to.contain('n.v1');
    // A stopped controller's queue no longer reports running work.
    expect(text).not.to.contain('workqueue_longest_running_processor_seconds{');
  });
});
