import { expect } from 'chai';
import { FakeClock, settle } from '../../src/core/clock.js';
import { TerminalError } from '../../src/core/errors.js';
import { HierarchicalLocks } from '../../src/core/locks.js';
import { HierarchyPath } from '../../src/core/path.js';
import { Controller, ReconcileTimeoutError, ShutdownGraceExpired, type ConcurrencyMode, type ReconcileContext, type ReconcileResult } from '../../src/core/runner.js';
import { pino } from 'pino';
import { deferred, track, type Deferred } from './helpers.js';

interface Run {
  key: string;
  context: ReconcileContext;
  gate: Deferred<ReconcileResult>;
}

const silent = pino({ level: 'silent' });

// A thrown assertion inside reconcile would be retried as an ordinary error: harnesses record
// violations here instead, and every test asserts none happened.
let violations: string[] = [];

/** A controller whose reconciles each wait for the test to resolve them. */
function harness({ start = true, ...options }: { start?: boolean; maxConcurrentReconciles?: number; maxLockWaiters?: number; concurrency?: ConcurrencyMode; reconcileTimeoutMs?: number } = {}) {
  const clock = new FakeClock();
  const locks = new HierarchicalLocks({ clock });
  const runs: Run[] = [];
  let running = 0;
  let peak = 0;
  const runningKeys = new Set<string>();
  const controller = new Controller({
    name: 'test',
    locks,
    clock,
    logger: silent,
    retry: { baseMs: 100, capMs: 1000, qps: 1000, burst: 1000 },
    ...options,
    reconciler: {
      // Keys are paths; a key ending in "!" wants a read instead of a write.
      locksFor: (key) => [{ path: HierarchyPath.parse(key.replace(/!$/, '')), mode: key.endsWith('!') ? 'read' : 'write' }],
      reconcile: async (key, context) => {
        if (runningKeys.has(key)) violations.push(`two runs of ${key} at once`);
        runningKeys.add(key);
        running++;
        peak = Math.max(peak, running);
        const limit = options.concurrency === 'serial' ? 1 : (options.maxConcurrentReconciles ?? 10);
        if (running > limit) violations.push(`${running} runs at once, over ${limit}`);
        const gate = deferred<ReconcileResult>();
        runs.push({ key, context, gate });
        try {
          return await gate.promise;
        } finally {
          running--;
          runningKeys.delete(key);
        }
      },
    },
  });
  if (start) controller.start();
  return {
    clock,
    locks,
    controller,
    runs,
    get running() {
      return running;
    },
    get peak() {
      return peak;
    },
    keysOf: (from = 0) => runs.slice(from).map((r) => r.key),
  };
}

describe('core/runner', () => {
  beforeEach(() => (violations = []));
  afterEach(() => expect(violations).to.deep.equal([]));

  it('the never-two-at-once guard can fail: a second run of a busy key is recorded', async () => {
    // Drives the harness's reconcile directly, as a broken runner would, to prove the guard bites.
    const h = harness({ start: false });
    const reconcile = (h.controller as unknown as { reconciler: { reconcile: (key: string, context: unknown) => Promise<unknown> } }).reconciler.reconcile;
    void reconcile('a', {});
    void reconcile('a', {});
    await settle();
    expect(violations).to.deep.equal(['two runs of a at once']);
    violations = [];
  });

  it('add while processing runs exactly twice, never at once', async () => {
    const h = harness();
    h.controller.enqueue('a');
    await settle();
    expect(h.keysOf()).to.deep.equal(['a']);
    for (let i = 0; i < 5; i++) h.controller.enqueue('a');
    await settle();
    expect(h.runs).to.have.length(1);
    h.runs[0].gate.resolve();
    await settle();
    expect(h.keysOf()).to.deep.equal(['a', 'a']);
    h.runs[1].gate.resolve();
    await settle();
    expect(h.runs).to.have.length(2);
    await h.controller.stop();
  });

  it('N adds before dispatch run once', async () => {
    const h = harness({ start: false });
    for (let i = 0; i < 10; i++) h.controller.enqueue('a');
    h.controller.start();
    await settle();
    h.runs[0].gate.resolve();
    await settle();
    expect(h.runs).to.have.length(1);
  });

  it('runs at most maxConcurrentReconciles at once', async () => {
    const h = harness({ maxConcurrentReconciles: 3 });
    for (let i = 0; i < 10; i++) h.controller.enqueue(`backends/b${i}`);
    await settle();
    expect(h.running).to.equal(3);
    for (let i = 0; i < 10; i++) {
      h.runs[i].gate.resolve();
      await settle();
    }
    expect(h.runs).to.have.length(10);
    expect(h.peak).to.equal(3);
    expect(h.controller.activeWorkers).to.equal(0);
  });

  it('an error retries with per-key backoff; success forgets it', async () => {
    const h = harness();
    h.controller.enqueue('k');
    const runTimes: number[] = [];
    const untilRun = async (n: number) => {
      await settle();
      while (h.runs.length < n) await h.clock.runNext();
    };
    for (let attempt = 0; attempt < 4; attempt++) {
      await untilRun(attempt + 1);
      runTimes.push(h.clock.now());
      h.runs[attempt].gate.reject(new Error('array busy'));
      await settle();
    }
    expect(runTimes).to.deep.equal([0, 100, 300, 700]);
    await untilRun(5);
    h.runs[4].gate.resolve();
    await settle();
    expect(h.controller.queue.numRequeues('k')).to.equal(0);
    expect(h.clock.pendingTimers).to.equal(0);
  });

  it('a failing key does not slow another', async () => {
    const h = harness();
    h.controller.enqueue('bad');
    await settle();
    h.runs[0].gate.reject(new Error('no'));
    h.controller.enqueue('good');
    await settle();
    expect(h.keysOf()).to.deep.equal(['bad', 'good']);
    expect(h.clock.now()).to.equal(0);
  });

  it('requeueAfter runs the key again after the delay and resets its backoff', async () => {
    const h = harness();
    h.controller.enqueue('k');
    await settle();
    h.runs[0].gate.reject(new Error('once'));
    await h.clock.advanceAndSettle(100);
    h.runs[1].gate.resolve({ requeueAfterMs: 5000 });
    await h.clock.advanceAndSettle(4999);
    expect(h.runs).to.have.length(2);
    expect(h.controller.queue.numRequeues('k')).to.equal(0);
    await h.clock.advanceAndSettle(1);
    expect(h.runs).to.have.length(3);
  });

  it('a TerminalError is not retried', async () => {
    const h = harness();
    h.controller.enqueue('k');
    await settle();
    h.runs[0].gate.reject(new TerminalError('bad spec'));
    await h.clock.advanceAndSettle(60_000);
    expect(h.runs).to.have.length(1);
    expect(h.clock.pendingTimers).to.equal(0);
    expect(h.controller.queue.stats()).to.deep.equal({ dirty: 0, processing: 0, delayed: 0, ready: 0, fifo: 0, backoff: 0, getters: 1 });
  });

  it('a synchronous throw or a throwing locksFor never kills the dispatcher', async () => {
    const clock = new FakeClock();
    const seen: string[] = [];
    const controller = new Controller({
      name: 'throws',
      logger: silent,
      locks: new HierarchicalLocks({ clock }),
      clock,
      reconciler: {
        locksFor: (key) => {
          if (key === 'bad-locks') throw new Error('no locks for you');
          return [];
        },
        reconcile: (key) => {
          seen.push(key);
          if (key === 'sync') throw new Error('thrown before any await');
          return Promise.resolve();
        },
      },
    });
    controller.start();
    for (const key of ['sync', 'bad-locks', 'after']) controller.enqueue(key);
    await settle();
    expect(seen).to.deep.equal(['sync', 'after']);
    await controller.stop();
  });

  it('a timeout aborts the signal but keeps the locks and the key until the reconcile settles', async () => {
    const h = harness({ reconcileTimeoutMs: 1000 });
    h.controller.enqueue('backends/a');
    await settle();
    const first = h.runs[0];
    await h.clock.advanceAndSettle(1000);
    expect(first.context.signal.aborted).to.equal(true);
    h.controller.enqueue('backends/a');
    h.controller.enqueue('backends/a/volumes/n.v');
    await settle();
    expect(h.runs).to.have.length(1);
    first.gate.reject(first.context.signal.reason);
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a', 'backends/a/volumes/n.v']);
  });

  it('a parent write waits for a running child, and siblings run together', async () => {
    const h = harness();
    h.controller.enqueue('backends/a/volumes/n.v1');
    h.controller.enqueue('backends/a/volumes/n.v2');
    h.controller.enqueue('backends/a');
    h.controller.enqueue('backends/b');
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a/volumes/n.v1', 'backends/a/volumes/n.v2', 'backends/b']);
    h.runs[0].gate.resolve();
    await settle();
    expect(h.runs).to.have.length(3);
    h.runs[1].gate.resolve();
    await settle();
    expect(h.keysOf(3)).to.deep.equal(['backends/a']);
  });

  it('keys waiting for busy locks do not hold workers: other backends go on (no head-of-line blocking)', async () => {
    const h = harness({ maxConcurrentReconciles: 2 });
    const backendWrite = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    for (let i = 0; i < 5; i++) h.controller.enqueue(`backends/a/volumes/n.v${i}`);
    h.controller.enqueue('backends/b/volumes/n.v0');
    h.controller.enqueue('backends/c/volumes/n.v0');
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/b/volumes/n.v0', 'backends/c/volumes/n.v0']);
    expect(h.controller.waitingForLocks).to.equal(5);
    backendWrite.release();
    h.runs[0].gate.resolve();
    await settle();
    // Granted runs still wait for a worker: never more than two at once.
    expect(h.running).to.equal(2);
    for (let i = 1; i < 7; i++) {
      h.runs[i].gate.resolve();
      await settle();
    }
    expect(h.runs).to.have.length(7);
    expect(h.peak).to.equal(2);
    expect(h.controller.activeWorkers).to.equal(0);
  });

  it('serial mode never runs two at once, even on different backends', async () => {
    const h = harness({ concurrency: 'serial' });
    for (const key of ['backends/a', 'backends/b', 'backends/c/volumes/n.v']) h.controller.enqueue(key);
    for (let i = 0; i < 3; i++) {
      await settle();
      expect(h.running).to.equal(1);
      h.runs[i].gate.resolve();
    }
    await settle();
    expect(h.runs).to.have.length(3);
    expect(h.peak).to.equal(1);
  });

  it('stop drops keys still waiting for locks or a worker, without running them', async () => {
    const h = harness({ maxConcurrentReconciles: 1 });
    const busy = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    h.controller.enqueue('backends/a/volumes/n.v');
    h.controller.enqueue('backends/b');
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/b']);
    expect(h.controller.waitingForLocks).to.equal(1);
    const stopping = h.controller.stop();
    h.runs[0].gate.resolve();
    await stopping;
    busy.release();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/b']);
    expect(h.locks.waiting).to.equal(0);
    expect(h.locks.nodeCount()).to.equal(0);
  });

  it('stop drains: in-flight runs finish, queued keys and later adds are dropped', async () => {
    const h = harness({ maxConcurrentReconciles: 1 });
    h.controller.enqueue('a');
    h.controller.enqueue('b');
    await settle();
    let stopped = false;
    const stopping = h.controller.stop().then(() => (stopped = true));
    h.controller.enqueue('c');
    await settle();
    expect(stopped).to.equal(false);
    h.runs[0].gate.resolve();
    await stopping;
    expect(h.keysOf()).to.deep.equal(['a']);
    expect(h.locks.nodeCount()).to.equal(0);
  });

  it('more keys blocked on one backend than waiter slots never hold back another backend', async () => {
    const h = harness({ maxConcurrentReconciles: 2 });
    const backendWrite = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    // Default waiter slots: 4 x 2 workers = 8; ten keys overflow them.
    for (let i = 0; i < 10; i++) h.controller.enqueue(`backends/a/volumes/n.v${i}`);
    h.controller.enqueue('backends/b');
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/b']);
    expect(h.controller.waitingForLocks).to.equal(10);
    expect(h.locks.waiting).to.equal(8);
    backendWrite.release();
    for (let i = 0; i < 11; i++) {
      expect(h.runs.length, 'runs started').to.be.greaterThan(i);
      h.runs[i].gate.resolve();
      await settle();
    }
    expect(new Set(h.keysOf()).size).to.equal(11);
    expect(h.peak).to.equal(2);
    expect(h.controller.waitingForLocks).to.equal(0);
    expect(h.locks.nodeCount()).to.equal(0);
  });

  it('a parked key whose locks come free runs at once, though every waiter slot is taken', async () => {
    const h = harness({ maxConcurrentReconciles: 2, maxLockWaiters: 1 });
    const a = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    const c = await h.locks.acquire(HierarchyPath.parse('backends/c'), 'write');
    h.controller.enqueue('backends/a/volumes/n.v0');
    h.controller.enqueue('backends/a/volumes/n.v1');
    h.controller.enqueue('backends/c/volumes/n.v0');
    await settle();
    expect(h.controller.waitingForLocks).to.equal(3);
    expect(h.locks.waiting).to.equal(1);
    c.release();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/c/volumes/n.v0']);
    a.release();
    h.runs[0].gate.resolve();
    await settle();
    expect(h.keysOf(1).sort()).to.deep.equal(['backends/a/volumes/n.v0', 'backends/a/volumes/n.v1']);
    for (const run of h.runs) run.gate.resolve();
    await settle();
    expect(h.locks.nodeCount()).to.equal(0);
  });

  it('a later key never overtakes an earlier parked key it conflicts with', async () => {
    const h = harness({ maxConcurrentReconciles: 2, maxLockWaiters: 1 });
    const b = await h.locks.acquire(HierarchyPath.parse('backends/b'), 'write');
    const child = await h.locks.acquire(HierarchyPath.parse('backends/a/volumes/n.v0'), 'read');
    h.controller.enqueue('backends/b/volumes/n.v');
    h.controller.enqueue('backends/a');
    // Free in the locks, but behind the parked parent write: it parks too.
    h.controller.enqueue('backends/a/volumes/n.v1');
    await settle();
    expect(h.runs).to.have.length(0);
    expect(h.controller.waitingForLocks).to.equal(3);
    child.release();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a']);
    h.runs[0].gate.resolve();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a', 'backends/a/volumes/n.v1']);
    h.runs[1].gate.resolve();
    b.release();
    await settle();
    h.runs[2].gate.resolve();
    await settle();
    expect(h.controller.waitingForLocks).to.equal(0);
  });

  it('a parked parent write runs once the child lock it waited on is released', async () => {
    const h = harness({ maxConcurrentReconciles: 2, maxLockWaiters: 1 });
    const a = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    const child = await h.locks.acquire(HierarchyPath.parse('backends/c/volumes/n.v'), 'read');
    h.controller.enqueue('backends/a/volumes/n.v0');
    h.controller.enqueue('backends/c');
    await settle();
    expect(h.controller.waitingForLocks).to.equal(2);
    child.release();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/c']);
    a.release();
    h.runs[0].gate.resolve();
    await settle();
    h.runs[1].gate.resolve();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/c', 'backends/a/volumes/n.v0']);
  });

  it('a parked key asking for one path twice, and for siblings, parks and runs like any other', async () => {
    const clock = new FakeClock();
    const locks = new HierarchicalLocks({ clock });
    const seen: string[] = [];
    const controller = new Controller({
      name: 'groups',
      logger: silent,
      locks,
      clock,
      maxConcurrentReconciles: 1,
      maxLockWaiters: 1,
      reconciler: {
        // A group over volumes listed with repeats, as a selector may yield them.
        locksFor: (key) => ['n.v1', 'n.v2', 'n.v1'].map((v) => ({ path: HierarchyPath.parse(`backends/${key}/volumes/${v}`), mode: 'write' as const })),
        reconcile: async (key) => void seen.push(key),
      },
    });
    const a = await locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    const b = await locks.acquire(HierarchyPath.parse('backends/b'), 'write');
    controller.start();
    controller.enqueue('a');
    controller.enqueue('b');
    await settle();
    expect(controller.waitingForLocks).to.equal(2);
    b.release();
    await settle();
    a.release();
    await settle();
    expect(seen).to.deep.equal(['b', 'a']);
    expect(controller.queue.numRequeues('b')).to.equal(0);
    expect(locks.nodeCount()).to.equal(0);
    await controller.stop();
  });

  it('the reconcile timeout starts once the locks are held, not during the wait for them', async () => {
    const h = harness({ reconcileTimeoutMs: 1000 });
    const busy = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    h.controller.enqueue('backends/a/volumes/n.v');
    await h.clock.advanceAndSettle(5000);
    expect(h.runs).to.have.length(0);
    busy.release();
    await settle();
    expect(h.runs).to.have.length(1);
    const { signal } = h.runs[0].context;
    await h.clock.advanceAndSettle(999);
    expect(signal.aborted).to.equal(false);
    await h.clock.advanceAndSettle(1);
    expect(signal.reason).to.be.instanceOf(ReconcileTimeoutError);
    h.runs[0].gate.resolve();
    await settle();
  });

  it('stop resolves as soon as running reconciles finish within the grace, leaving no timer', async () => {
    const h = harness();
    h.controller.enqueue('a');
    await settle();
    const stopping = track(h.controller.stop({ graceMs: 1000 }));
    await h.clock.advanceAndSettle(500);
    expect(stopping.settled).to.equal(false);
    h.runs[0].gate.resolve();
    await settle();
    expect(stopping.value).to.deep.equal({ unfinished: [] });
    expect(h.runs[0].context.signal.aborted).to.equal(false);
    expect(h.clock.pendingTimers).to.equal(0);
  });

  it('stop past its grace aborts the signals of runs still going, resolves, and names them; locks stay until they return', async () => {
    const h = harness({ maxConcurrentReconciles: 3 });
    h.controller.enqueue('backends/a');
    h.controller.enqueue('backends/b');
    h.controller.enqueue('backends/c');
    await settle();
    // b honours its signal; a ignores it; c finishes within the grace.
    const b = h.runs[1];
    b.context.signal.addEventListener('abort', () => b.gate.reject(b.context.signal.reason));
    const stopping = track(h.controller.stop({ graceMs: 1000 }));
    await h.clock.advanceAndSettle(999);
    h.runs[2].gate.resolve();
    await settle();
    expect(stopping.settled).to.equal(false);
    expect(h.runs[0].context.signal.aborted).to.equal(false);
    await h.clock.advanceAndSettle(1);
    expect(stopping.value).to.deep.equal({ unfinished: ['backends/a', 'backends/b'] });
    expect(h.runs[0].context.signal.reason).to.be.instanceOf(ShutdownGraceExpired);
    // b gave up and released; a still holds its write lock: no operation is cut in half.
    expect(h.locks.tryAcquireMany([{ path: HierarchyPath.parse('backends/b'), mode: 'write' }])).to.not.equal(undefined);
    expect(h.locks.tryAcquireMany([{ path: HierarchyPath.parse('backends/a'), mode: 'read' }])).to.equal(undefined);
    h.runs[0].gate.resolve();
    await settle();
    expect(h.controller.activeWorkers).to.equal(0);
  });
});
