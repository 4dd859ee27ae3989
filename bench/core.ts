// Benchmarks of the core engine, printed side by side from one run:
// (1) no-op throughput of the queue + hierarchical locks through the controller runner, both modes;
// (2) makespan of 1,200 simulated volume creations, hierarchical vs serial, against the
//     ideal bound ceil(ops per backend / limit) * latency;
// (3) arrival order: 300 creations over 3 backends (limit 5, 15 workers) arriving
//     interleaved or backend by backend, and one hot backend with 10x the keys of the
//     others; each against its ideal bound, and the cold backends' own finish time;
// (4) head-of-line blocking: no-op keys of free backends while thousands of keys wait for
//     one write-locked backend, then the drain of those keys once it is released;
// (5) the rate limit: makespan of operations under opsPerSecond against its ideal bound.
// `--quick` runs a tenth of the work.
import { pino } from 'pino';
import { BackendLimiter, Controller, HierarchicalLocks, HierarchyPath, realClock, serialized, sleep, type Reconciler } from '../src/core/index.js';

const quick = process.argv.includes('--quick');
const logger = pino({ level: 'silent' });
type Mode = 'hierarchical' | 'serial';

const volumeKey = (backend: string, i: number) => `backends/${backend}/volumes/ns.v${i}`;

/**
 * Enqueues every key, runs a controller until each has been reconciled once, and returns
 * ms in all plus ms until each backend's last key finished.
 */
async function runAll(
  keys: string[],
  reconciler: Reconciler,
  options: { mode: Mode; workers: number; locks?: HierarchicalLocks; limiter?: BackendLimiter; blocked?: string[] },
): Promise<{ ms: number; doneAt: Map<string, number> }> {
  let remaining = keys.length;
  const blocked = new Set(options.blocked ?? []);
  const doneAt = new Map<string, number>();
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  let start = 0;
  const counted: Reconciler = {
    plan: (key) => reconciler.plan(key),
    reconcile: async (key, context) => {
      await reconciler.reconcile(key, context);
      if (blocked.has(key)) return;
      doneAt.set(key.split('/')[1], performance.now() - start);
      if (--remaining === 0) finish();
    },
  };
  const controller = new Controller({
    name: 'bench',
    locks: options.locks ?? new HierarchicalLocks(),
    limiter: options.limiter,
    logger,
    maxConcurrentReconciles: options.workers,
    reconciler: options.mode === 'serial' ? serialized(counted) : counted,
  });
  // Blocked keys go in first, so that the measured keys queue behind them.
  for (const key of blocked) controller.enqueue(key);
  start = performance.now();
  for (const key of keys) controller.enqueue(key);
  controller.start();
  await finished;
  const ms = performance.now() - start;
  // Blocked keys still waiting for their locks are dropped here.
  await controller.stop();
  return { ms, doneAt };
}

const writeOwnPath: Reconciler['plan'] = (key) => ({ locks: [{ path: HierarchyPath.parse(key), mode: 'write' }] });
const noop: Reconciler = { plan: writeOwnPath, reconcile: async () => {} };

/** A volume create: write lock on the volume, one slot of its backend, `latencyMs` of storage time. */
const create = (latencyMs: number): Reconciler => ({
  plan: (key) => ({ ...writeOwnPath(key), backend: key.split('/')[1] }),
  reconcile: async (_key, { backend }) => backend!.run('create', () => sleep(realClock, latencyMs)),
});

async function throughput(): Promise<void> {
  const keys = quick ? 10_000 : 100_000;
  const backends = quick ? 100 : 1000;
  const names = Array.from({ length: keys }, (_, i) => volumeKey(`b${i % backends}`, i));
  for (const mode of ['hierarchical', 'serial'] as const) {
    const { ms } = await runAll(names, noop, { mode, workers: 64 });
    console.log(`throughput (${mode}): ${keys} no-op keys over ${backends} backends (queue + locks + runner, 64 workers): ${ms.toFixed(0)} ms, ${Math.round((keys / ms) * 1000)} keys/s`);
  }
}

async function makespan(): Promise<void> {
  const volumes = quick ? 120 : 1200;
  const backends = 4;
  const limit = 20;
  const latencyMs = 20;
  const keys = Array.from({ length: volumes }, (_, i) => volumeKey(`b${i % backends}`, i));
  const measure = (mode: Mode) => runAll(keys, create(latencyMs), { mode, workers: backends * limit + 20, limiter: new BackendLimiter({ defaults: { maxConcurrent: limit } }) });
  const ideal = Math.ceil(volumes / backends / limit) * latencyMs;
  const hierarchical = (await measure('hierarchical')).ms;
  const serial = (await measure('serial')).ms;
  console.log(`makespan: ${volumes} volume creations over ${backends} backends, ${latencyMs} ms latency, limit ${limit} per backend`);
  console.log(`  hierarchical ${hierarchical.toFixed(0)} ms, serial ${serial.toFixed(0)} ms, serial/hierarchical ${(serial / hierarchical).toFixed(1)}x`);
  console.log(`  ideal bound ${ideal} ms; hierarchical/ideal ${(hierarchical / ideal).toFixed(2)}x, serial/ideal ${(serial / ideal).toFixed(1)}x`);
}

async function arrivalOrder(): Promise<void> {
  const latencyMs = 20;
  const limit = 5;
  const workers = 15;
  const perBackend = quick ? 20 : 100;
  const backends = ['a', 'b', 'c'];
  const measure = (keys: string[]) => runAll(keys, create(latencyMs), { mode: 'hierarchical', workers, limiter: new BackendLimiter({ defaults: { maxConcurrent: limit } }) });
  const byBackend = backends.flatMap((b) => Array.from({ length: perBackend }, (_, i) => volumeKey(b, i)));
  const interleaved = Array.from({ length: perBackend }, (_, i) => backends.map((b) => volumeKey(b, i))).flat();
  const ideal = Math.ceil(perBackend / limit) * latencyMs;
  const inOrder = (await measure(byBackend)).ms;
  const mixed = (await measure(interleaved)).ms;
  console.log(`arrival order: ${backends.length * perBackend} creations over ${backends.length} backends (limit ${limit} each, ${workers} workers, ${latencyMs} ms latency); ideal bound ${ideal} ms`);
  console.log(`  interleaved ${mixed.toFixed(0)} ms (${(mixed / ideal).toFixed(2)}x ideal), backend by backend ${inOrder.toFixed(0)} ms (${(inOrder / ideal).toFixed(2)}x ideal); by-backend/interleaved ${(inOrder / mixed).toFixed(2)}x`);
  // One hot backend with 10x the keys of each cold one, arriving first.
  const cold = ['b', 'c', 'd', 'e'];
  const coldKeys = quick ? 5 : 25;
  const hot = Array.from({ length: coldKeys * 10 }, (_, i) => volumeKey('hot', i));
  const rest = cold.flatMap((b) => Array.from({ length: coldKeys }, (_, i) => volumeKey(b, i)));
  const { ms, doneAt } = await runAll([...hot, ...rest], create(latencyMs), { mode: 'hierarchical', workers, limiter: new BackendLimiter({ defaults: { maxConcurrent: limit } }) });
  const hotIdeal = Math.ceil((coldKeys * 10) / limit) * latencyMs;
  const coldIdeal = Math.ceil(coldKeys / limit) * latencyMs;
  const coldDone = Math.max(...cold.map((b) => doneAt.get(b) ?? Infinity));
  console.log(`  hot backend (${hot.length} keys first, then ${coldKeys} on each of ${cold.length} cold ones): ${ms.toFixed(0)} ms, ideal ${hotIdeal} ms, ${(ms / hotIdeal).toFixed(2)}x; cold backends done at ${coldDone.toFixed(0)} ms (their own bound ${coldIdeal} ms)`);
}

async function headOfLine(): Promise<void> {
  const blockedKeys = quick ? 1_000 : 10_000;
  const freeKeys = quick ? 1_000 : 10_000;
  const locks = new HierarchicalLocks();
  // Held for the whole measurement: every key under backends/held waits.
  await locks.acquire(HierarchyPath.parse('backends/held'), 'write');
  const blocked = Array.from({ length: blockedKeys }, (_, i) => volumeKey('held', i));
  const free = Array.from({ length: freeKeys }, (_, i) => volumeKey(`b${i % 100}`, i));
  const { ms } = await runAll(free, noop, { mode: 'hierarchical', workers: 64, locks, blocked });
  console.log(`head-of-line: ${freeKeys} no-op keys of 100 free backends behind ${blockedKeys} keys of one write-locked backend (64 workers): ${ms.toFixed(0)} ms, ${Math.round((freeKeys / ms) * 1000)} keys/s`);
  // Then the backend is released while all its keys wait: they must drain in near-linear time.
  const released = new HierarchicalLocks();
  const held = await released.acquire(HierarchyPath.parse('backends/held'), 'write');
  setImmediate(() => held.release());
  const drain = await runAll(blocked, noop, { mode: 'hierarchical', workers: 64, locks: released });
  console.log(`  release: the ${blockedKeys} keys of the write-locked backend, queued behind its lock and then released: ${drain.ms.toFixed(0)} ms, ${Math.round((blockedKeys / drain.ms) * 1000)} keys/s`);
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
await arrivalOrder();
await headOfLine();
await rate();
