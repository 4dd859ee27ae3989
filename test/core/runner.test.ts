import { expect } from 'chai';
import { FakeClock, settle } from '../../src/core/testing.js';
import { TerminalError } from '../../src/core/errors.js';
import { HierarchicalLocks } from '../../src/core/locks.js';
import { HierarchyPath } from '../../src/core/path.js';
import { BackendLimiter } from '../../src/core/limiter.js';
import { Controller, ReconcileTimeoutError, ShutdownGraceExpired, serialized, type ReconcileContext, type ReconcileResult, type Reconciler } from '../../src/core/runner.js';
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
function harness({ start = true, serial = false, limiter, ...options }: { start?: boolean; maxConcurrentReconciles?: number; serial?: boolean; reconcileTimeoutMs?: number; limiter?: (clock: FakeClock) => BackendLimiter } = {}) {
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
    limiter: limiter?.(clock),
    reconciler: (serial ? serialized : (r: Reconciler) => r)({
      // Keys are paths; a key ending in "!" wants a read instead of a write. A volume key
      // (backends/<b>/volumes/...) runs in a slot of backend <b>.
      plan: (key) => ({
        locks: [{ path: HierarchyPath.parse(key.replace(/!$/, '')), mode: key.endsWith('!') ? 'read' : 'write' }],
        backend: /^backends\/[^/]+\/volumes\//.test(key) ? key.split('/')[1] : undefined,
      }),
      reconcile: async (key, context) => {
        if (runningKeys.has(key)) violations.push(`two runs of ${key} at once`);
        runningKeys.add(key);
        running++;
        peak = Math.max(peak, running);
        const limit = serial ? 1 : (options.maxConcurrentReconciles ?? 10);
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
    }),
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

  it('a synchronous throw or a throwing plan never kills the dispatcher', async () => {
    const clock = new FakeClock();
    const seen: string[] = [];
    const controller = new Controller({
      name: 'throws',
      logger: silent,
      locks: new HierarchicalLocks({ clock }),
      clock,
      reconciler: {
        plan: (key) => {
          if (key === 'bad-locks') throw new Error('no locks for you');
          return { locks: [] };
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
    expect(h.locks.waiting).to.equal(5);
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
    const h = harness({ serial: true });
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
    expect(h.locks.waiting).to.equal(1);
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

  it('a thousand keys blocked on one backend never hold back another backend, and all run once it is free', async () => {
    const h = harness({ maxConcurrentReconciles: 2 });
    const backendWrite = await h.locks.acquire(HierarchyPath.parse('backends/a'), 'write');
    for (let i = 0; i < 1000; i++) h.controller.enqueue(`backends/a/volumes/n.v${i}`);
    h.controller.enqueue('backends/b');
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/b']);
    expect(h.locks.waiting).to.equal(1000);
    backendWrite.release();
    for (let i = 0; i < 1001; i++) {
      expect(h.runs.length, 'runs started').to.be.greaterThan(i);
      h.runs[i].gate.resolve();
      await settle();
    }
    expect(new Set(h.keysOf()).size).to.equal(1001);
    expect(h.peak).to.equal(2);
    expect(h.locks.waiting).to.equal(0);
    expect(h.locks.nodeCount()).to.equal(0);
  });

  it('a later key never overtakes an earlier waiting key it conflicts with', async () => {
    const h = harness({ maxConcurrentReconciles: 2 });
    const child = await h.locks.acquire(HierarchyPath.parse('backends/a/volumes/n.v0'), 'read');
    h.controller.enqueue('backends/a');
    // Free in the locks, but behind the waiting parent write: it waits too.
    h.controller.enqueue('backends/a/volumes/n.v1');
    await settle();
    expect(h.runs).to.have.length(0);
    child.release();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a']);
    h.runs[0].gate.resolve();
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a', 'backends/a/volumes/n.v1']);
    h.runs[1].gate.resolve();
    await settle();
    expect(h.locks.nodeCount()).to.equal(0);
  });

  it('a backend at its limit never keeps a worker from a key of another backend', async () => {
    // Two workers, backend a takes one operation at a time: a's second key waits for the
    // slot without a worker, so b's key runs at once instead of queueing behind it.
    const h = harness({ maxConcurrentReconciles: 2, limiter: (clock) => new BackendLimiter({ clock, defaults: { maxConcurrent: 1 } }) });
    for (let i = 0; i < 10; i++) h.controller.enqueue(`backends/a/volumes/n.v${i}`);
    h.controller.enqueue('backends/b/volumes/n.v0');
    await settle();
    expect(h.keysOf()).to.deep.equal(['backends/a/volumes/n.v0', 'backends/b/volumes/n.v0']);
    expect(h.runs[0].context.backend?.backend).to.equal('a');
    expect(h.running).to.equal(2);
    h.runs[1].gate.resolve();
    await settle();
    // b is done; a's keys still pass one at a time through a's single slot.
    expect(h.running).to.equal(1);
    for (let i = 0; i < 10; i++) {
      expect(h.running).to.equal(1);
      h.runs[i === 0 ? 0 : i + 1].gate.resolve();
      await settle();
    }
    expect(h.runs).to.have.length(11);
    expect(h.peak).to.equal(2);
  });

  it('a plan that changed while its locks were taken is taken again before the run', async () => {
    const clock = new FakeClock();
    const locks = new HierarchicalLocks({ clock });
    // A group whose members the test changes while the run waits for its locks.
    let members = ['n.v1'];
    const held: string[][] = [];
    const controller = new Controller({
      name: 'groups',
      logger: silent,
      locks,
      clock,
      reconciler: {
        plan: () => ({ locks: members.map((v) => ({ path: HierarchyPath.parse(`backends/a/volumes/${v}`), mode: 'read' as const })) }),
        reconcile: async (_key, { locks: handle }) => void held.push(handle.requests.map((r) => String(r.path))),
      },
    });
    const blocker = await locks.acquire(HierarchyPath.parse('backends/a/volumes/n.v1'), 'write');
    controller.start();
    controller.enqueue('groups/g');
    await settle();
    // A member is added while the run waits; it must not run with the old set.
    members = ['n.v1', 'n.v2'];
    const v2 = await locks.acquire(HierarchyPath.parse('backends/a/volumes/n.v2'), 'write');
    blocker.release();
    await settle();
    expect(held).to.deep.equal([]);
    v2.release();
    await settle();
    expect(held).to.deep.equal([['backends/a/volumes/n.v1', 'backends/a/volumes/n.v2']]);
    expect(locks.nodeCount()).to.equal(0);
    await controller.stop();
  });

  it('a run past its timeout is a failure even when it later resolves; one within it is a success', async () => {
    const h = harness({ reconcileTimeoutMs: 1000 });
    h.controller.enqueue('k');
    await settle();
    await h.clock.advanceAndSettle(1000);
    h.runs[0].gate.resolve();
    await settle();
    // Retried with backoff (100 ms), as an error.
    expect(h.controller.queue.numRequeues('k')).to.equal(1);
    await h.clock.advanceAndSettle(100);
    expect(h.runs).to.have.length(2);
    await h.clock.advanceAndSettle(999);
    h.runs[1].gate.resolve();
    await settle();
    expect(h.controller.queue.numRequeues('k')).to.equal(0);
    await h.clock.advanceAndSettle(60_000);
    expect(h.runs).to.have.length(2);
  });

  it('an error naming retryAfterMs is retried after exactly that delay, not the backoff', async () => {
    const h = harness();
    h.controller.enqueue('k');
    await settle();
    h.runs[0].gate.reject(Object.assign(new Error('array busy'), { busy: true, retryAfterMs: 2500 }));
    await h.clock.advanceAndSettle(2499);
    expect(h.runs).to.have.length(1);
    await h.clock.advanceAndSettle(1);
    expect(h.runs).to.have.length(2);
  });

  it('any error marked terminal (a driver\'s notFound, a repository integrity failure) is not retried', async () => {
    class StorageRefusal extends Error {
      readonly terminal = true;
    }
    const h = harness();
    h.controller.enqueue('k');
    await settle();
    h.runs[0].gate.reject(new StorageRefusal('volume vol-1 not found'));
    await h.clock.advanceAndSettle(600_000);
    expect(h.runs).to.have.length(1);
    expect(h.clock.pendingTimers).to.equal(0);
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
