// Benchmarks of the core engine, printed side by side from one run:
// (1) no-op throughput of the queue + hierarchical locks through the controller runner;
// (2) makespan of simulated volume creations, hierarchical vs serial, against the ideal
//     bound ceil(ops per backend / limit) * latency;
// (3) head-of-line blocking: no-op keys of free backends while thousands of keys wait for
//     one write-locked backend (far more than the runner's lock-waiter slots);
// (4) the rate limit: makespan of operations under opsPerSecond against its ideal bound.
// `--quick` runs a tenth of the work.
import { pino } from 'pino';
import { realClock, sleep } from '../src/core/clock.js';
import { BackendLimiter } from '../src/core/limiter.js';
import { HierarchicalLocks } from '../src/core/locks.js';
import { HierarchyPath, volumePath } from '../src/core/path.js';
import { Controller, type ConcurrencyMode, type Reconciler } from '../src/core/runner.js';

const quick = process.argv.includes('--quick');
const logger = pino({ level: 'silent' });

/** Enqueues every key, runs the controller until each key has been reconciled once, returns ms. */
async function runAll(keys: string[], reconciler: Reconciler, options: { concurrency: ConcurrencyMode; workers: number; locks?: HierarchicalLocks; blocked?: string[] }): Promise<number> {
  let remaining = keys.length;
  const blocked = new Set(options.blocked ?? []);
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const controller = new Controller({
    name: 'bench',
    locks: options.locks ?? new HierarchicalLocks(),
    logger,
    concurrency: options.concurrency,
    maxConcurrentReconciles: options.workers,
    reconciler: {
      locksFor: (key) => reconciler.locksFor(key),
      reconcile: async (key, context) => {
        await reconciler.reconcile(key, context);
        if (!blocked.has(key) && --remaining === 0) finish();
      },
    },
  });
  // Blocked keys go in first, so that the measured keys queue behind them.
  for (const key of blocked) controller.enqueue(key);
  const start = performance.now();
  for (const key of keys) controller.enqueue(key);
  controller.start();
  await finished;
  const elapsed = performance.now() - start;
  // Blocked keys still waiting for their locks are dropped here.
  await controller.stop();
  return elapsed;
}

const writeOwnPath = (key: string) => [{ path: HierarchyPath.parse(key), mode: 'write' as const }];

async function throughput(): Promise<void> {
  const keys = quick ? 10_000 : 100_000;
  const backends = quick ? 100 : 1000;
  const names = Array.from({ length: keys }, (_, i) => volumePath(`b${i % backends}`, 'ns', `v${i}`).toString());
  const ms = await runAll(names, { locksFor: writeOwnPath, reconcile: async () => {} }, { concurrency: 'hierarchical', workers: 64 });
  console.log(`throughput: ${keys} no-op keys over ${backends} backends (queue + locks + runner, 64 workers): ${ms.toFixed(0)} ms, ${Math.round((keys / ms) * 1000)} keys/s`);
}

async function makespan(): Promise<void> {
  const volumes = quick ? 120 : 1200;
  const backends = 4;
  const limit = 20;
  const latencyMs = 20;
  const keys = Array.from({ length: volumes }, (_, i) => volumePath(`b${i % backends}`, 'ns', `v${i}`).toString());
  const measure = (concurrency: ConcurrencyMode) => {
    const limiter = new BackendLimiter({ defaults: { maxConcurrent: limit } });
    return runAll(
      keys,
      {
        locksFor: writeOwnPath,
        reconcile: (key) => limiter.run(HierarchyPath.parse(key).segments[1], 'create', () => sleep(realClock, latencyMs)),
      },
      // Enough workers that the backend limits, not the runner, bound the parallelism.
      { concurrency, workers: backends * limit + 20 },
    );
  };
  const ideal = Math.ceil(volumes / backends / limit) * latencyMs;
  const hierarchical = await measure('hierarchical');
  const serial = await measure('serial');
  console.log(`makespan: ${volumes} volume creations over ${backends} backends, ${latencyMs} ms latency, limit ${limit} per backend`);
  console.log(`  hierarchical ${hierarchical.toFixed(0)} ms, serial ${serial.toFixed(0)} ms, serial/hierarchical ${(serial / hierarchical).toFixed(1)}x`);
  console.log(`  ideal bound ${ideal} ms; hierarchical/ideal ${(hierarchical / ideal).toFixed(2)}x, serial/ideal ${(serial / ideal).toFixed(1)}x`);
}

async function headOfLine(): Promise<void> {
  const blockedKeys = quick ? 1_000 : 10_000;
  const freeKeys = quick ? 1_000 : 10_000;
  const locks = new HierarchicalLocks();
  // Held for the whole measurement: every key under backends/held waits.
  await locks.acquire(HierarchyPath.parse('backends/held'), 'write');
  const blocked = Array.from({ length: blockedKeys }, (_, i) => volumePath('held', 'ns', `v${i}`).toString());
  const free = Array.from({ length: freeKeys }, (_, i) => volumePath(`b${i % 100}`, 'ns', `v${i}`).toString());
  const ms = await runAll(free, { locksFor: writeOwnPath, reconcile: async () => {} }, { concurrency: 'hierarchical', workers: 64, locks, blocked });
  console.log(`head-of-line: ${freeKeys} no-op keys of 100 free backends behind ${blockedKeys} keys of one write-locked backend (64 workers, 256 waiter slots): ${ms.toFixed(0)} ms, ${Math.round((freeKeys / ms) * 1000)} keys/s`);
  // Then the backend is released while all its keys wait (most of them parked): they must drain in near-linear time.
  const released = new HierarchicalLocks();
  const held = await released.acquire(HierarchyPath.parse('backends/held'), 'write');
  setImmediate(() => held.release());
  const drainMs = await runAll(blocked, { locksFor: writeOwnPath, reconcile: async () => {} }, { concurrency: 'hierarchical', workers: 64, locks: released });
  console.log(`  release: the ${blockedKeys} keys of the write-locked backend, queued behind its lock and then released: ${drainMs.toFixed(0)} ms, ${Math.round((blockedKeys / drainMs) * 1000)} keys/s`);
}

async function rate(): Promise<void> {
  const backends = 4;
  const opsPerSecond = 50;
  const ops = quick ? 400 : 1000;
  const limiter = new BackendLimiter({ defaults: { maxConcurrent: 100, opsPerSecond } });
  const start = performance.now();
  await Promise.all(Array.from({ length: ops }, (_, i) => limiter.run(`b${i % backends}`, 'create', () => sleep(realClock, 1))));
  const ms = performance.now() - start;
  // The last window opens (ops per backend / rate - 1) seconds after the first start.
  const ideal = (Math.ceil(ops / backends / opsPerSecond) - 1) * 1000;
  console.log(`rate: ${ops} operations over ${backends} backends at ${opsPerSecond} ops/s each: ${ms.toFixed(0)} ms; ideal bound ${ideal} ms (+1 ms latency), ratio ${(ms / ideal).toFixed(3)}x`);
}

await throughput();
await makespan();
await headOfLine();
await rate();
