import { expect } from 'chai';
import { FakeClock, settle } from '../../src/core/testing.js';
import { HierarchicalLocks, type LockHandle, type LockMode } from '../../src/core/locks.js';
import { HierarchyPath } from '../../src/core/path.js';
import { track, volumePath } from './helpers.js';

const p = HierarchyPath.parse;

describe('core/locks', () => {
  let locks: HierarchicalLocks;
  beforeEach(() => {
    locks = new HierarchicalLocks({ clock: new FakeClock() });
  });

  /** Takes a lock that must be granted at once. */
  async function hold(path: string, mode: LockMode): Promise<LockHandle> {
    const pending = track(locks.acquire(p(path), mode));
    await settle();
    expect(pending.settled, `${mode} ${path} granted at once`).to.equal(true);
    return pending.value!;
  }

  /** Starts a request and reports whether it is granted after promises settle. */
  async function request(path: string, mode: LockMode, signal?: AbortSignal) {
    const pending = track(locks.acquire(p(path), mode, signal));
    await settle();
    return pending;
  }

  it('a parent write blocks a child until released', async () => {
    const parent = await hold('backends/a', 'write');
    const child = await request('backends/a/volumes/n.v', 'read');
    expect(child.settled).to.equal(false);
    parent.release();
    await settle();
    expect(child.settled).to.equal(true);
  });

  it('a child lock (read or write) blocks a parent write until released', async () => {
    for (const mode of ['read', 'write'] as const) {
      const child = await hold('backends/a/volumes/n.v/snapshots/s', mode);
      const parent = await request('backends/a', 'write');
      expect(parent.settled, `parent write vs child ${mode}`).to.equal(false);
      child.release();
      await settle();
      expect(parent.settled).to.equal(true);
      parent.value!.release();
    }
    expect(locks.nodeCount()).to.equal(0);
  });

  it('backends/a and backends/ab do not conflict', async () => {
    await hold('backends/a', 'write');
    await hold('backends/ab/volumes/n.v', 'write');
    await hold('backends/ab', 'read');
    await hold('backends/abc', 'write');
  });

  it('sibling reads and writes run together, under a shared parent read', async () => {
    await hold('backends/a', 'read');
    await hold('backends/a/volumes/n.v1', 'write');
    await hold('backends/a/volumes/n.v2', 'write');
    await hold('backends/a/volumes/n.v3', 'read');
    await hold('backends/a/volumes/n.v3', 'read');
    await hold('backends/a/volumes/n.v3/snapshots/s1', 'write');
    // But a write on the same path, or on the parent, waits.
    expect((await request('backends/a/volumes/n.v1', 'read')).settled).to.equal(false);
    expect((await request('backends/a', 'write')).settled).to.equal(false);
  });

  it('the root write (serial mode) excludes everything and is excluded by anything', async () => {
    const any = await hold('backends/x/volumes/n.v', 'read');
    const global = await request('', 'write');
    expect(global.settled).to.equal(false);
    any.release();
    await settle();
    expect(global.settled).to.equal(true);
    expect((await request('backends/y', 'read')).settled).to.equal(false);
  });

  it('a writer is not starved by a stream of readers', async () => {
    const readers = [await hold('backends/a', 'read')];
    const writer = await request('backends/a', 'write');
    // Readers arriving after the writer queue behind it, even though they are compatible with the holders.
    const late = [];
    for (let i = 0; i < 20; i++) late.push(await request(i % 2 ? 'backends/a' : 'backends/a/volumes/n.v', 'read'));
    expect(late.every((r) => !r.settled)).to.equal(true);
    readers[0].release();
    await settle();
    expect(writer.settled).to.equal(true);
    expect(late.some((r) => r.settled)).to.equal(false);
    writer.value!.release();
    await settle();
    expect(late.every((r) => r.settled)).to.equal(true);
    for (const r of late) r.value!.release();
    expect(locks.nodeCount()).to.equal(0);
    expect(locks.waiting).to.equal(0);
  });

  it('waiters that do not conflict with an earlier waiter are not held back by it', async () => {
    await hold('backends/a', 'write');
    const blocked = await request('backends/a/volumes/n.v', 'write');
    const other = await request('backends/b/volumes/n.v', 'write');
    expect(blocked.settled).to.equal(false);
    expect(other.settled).to.equal(true);
  });

  it('acquireMany takes 50 volumes at once, in global order, whatever the input order', async () => {
    const volumes = Array.from({ length: 50 }, (_, i) => volumePath(`b${i % 3}`, 'ns', `v${(i * 37) % 50}`));
    const handle = await locks.acquireMany(volumes.map((path) => ({ path, mode: 'write' as const })));
    const got = handle.requests.map((r) => r.path.toString());
    expect(got).to.have.length(50);
    expect(got).to.deep.equal([...volumes].sort(HierarchyPath.compare).map(String));
    expect((await request(volumes[17].toString(), 'read')).settled).to.equal(false);
    handle.release();
  });

  it('a group request does not deadlock against a parent writer that arrived in between', async () => {
    // The group wants v1 and v2 of backend a; v1 is busy. A backend writer then waits
    // for v1 too. Taking the group's locks one by one would hold v2 while waiting for v1;
    // atomic grants mean everybody gets served once v1 is released.
    const v1 = await hold('backends/a/volumes/n.v1', 'write');
    const group = track(locks.acquireMany([p('backends/a/volumes/n.v2'), p('backends/a/volumes/n.v1')].map((path) => ({ path, mode: 'write' as const }))));
    const backendWrite = await request('backends/a', 'write');
    await settle();
    expect(group.settled).to.equal(false);
    expect(backendWrite.settled).to.equal(false);
    v1.release();
    await settle();
    expect(group.settled).to.equal(true);
    group.value!.release();
    await settle();
    expect(backendWrite.settled).to.equal(true);
    backendWrite.value!.release();
    expect(locks.nodeCount()).to.equal(0);
  });

  it('a request never conflicts with itself (duplicates and covered descendants are merged)', async () => {
    const handle = await locks.acquireMany([
      { path: p('backends/a/volumes/n.v'), mode: 'read' },
      { path: p('backends/a'), mode: 'write' },
      { path: p('backends/a/volumes/n.v'), mode: 'write' },
      { path: p('backends/a'), mode: 'read' },
    ]);
    expect(handle.requests.map((r) => `${r.mode} ${r.path}`)).to.deep.equal(['write backends/a']);
  });

  it('abort while waiting rejects with the reason, leaves no state, and unblocks those behind it', async () => {
    const holder = await hold('backends/a/volumes/n.v', 'read');
    const abort = new AbortController();
    const writer = await request('backends/a', 'write', abort.signal);
    const reader = await request('backends/a/volumes/n.w', 'read');
    expect(reader.settled).to.equal(false);
    abort.abort(new Error('gave up'));
    await settle();
    expect((writer.error as Error).message).to.equal('gave up');
    expect(reader.settled).to.equal(true);
    reader.value!.release();
    holder.release();
    expect(locks.nodeCount()).to.equal(0);
    expect(locks.waiting).to.equal(0);
  });

  it('tryAcquireMany grants only what acquire would grant now, and queues nothing otherwise', async () => {
    const reader = await hold('backends/a', 'read');
    const writer = await request('backends/a', 'write');
    // Compatible with the holder, but a writer waits first: fairness says no.
    expect(locks.tryAcquireMany([{ path: p('backends/a/volumes/n.v'), mode: 'read' }])).to.equal(undefined);
    expect(locks.waiting).to.equal(1);
    const other = locks.tryAcquireMany([{ path: p('backends/b'), mode: 'write' }]);
    expect(other).to.not.equal(undefined);
    other!.release();
    reader.release();
    await settle();
    expect(writer.settled).to.equal(true);
  });

  it('an already aborted signal rejects without waiting', async () => {
    const abort = new AbortController();
    abort.abort(new Error('late'));
    const result = track(locks.acquire(p('x'), 'read', abort.signal));
    await settle();
    expect((result.error as Error).message).to.equal('late');
    expect(locks.nodeCount()).to.equal(0);
  });

  it('release is idempotent: a second release does not free somebody else’s lock', async () => {
    const first = await hold('backends/a', 'read');
    const second = await hold('backends/a', 'read');
    first.release();
    first.release();
    const writer = await request('backends/a', 'write');
    expect(writer.settled).to.equal(false);
    second.release();
    await settle();
    expect(writer.settled).to.equal(true);
  });

  it('a release examines only waiters on a line with it: blocked keys of another backend cost nothing', async () => {
    const blocker = await hold('backends/hot', 'write');
    const waiting = await Promise.all(Array.from({ length: 500 }, (_, i) => request(`backends/hot/volumes/n.v${i}`, 'write')));
    expect(locks.waiting).to.equal(500);
    const before = locks.examined;
    for (let i = 0; i < 100; i++) (await hold(`backends/cold/volumes/n.v${i}`, 'write')).release();
    expect(locks.examined - before, 'waiters examined by releases on another backend').to.equal(0);
    // A sibling on the hot backend is on no line with the waiters either.
    const sibling = locks.tryAcquireMany([{ path: p('backends/hot2'), mode: 'write' }]);
    sibling!.release();
    expect(locks.examined - before).to.equal(0);
    blocker.release();
    await settle();
    // The release that frees them looks at each once, and grants all.
    expect(locks.examined - before).to.equal(500);
    expect(waiting.every((w) => w.settled)).to.equal(true);
    for (const w of waiting) w.value!.release();
    expect(locks.nodeCount()).to.equal(0);
  });

  it('a queue behind the global write lock (serial mode) costs each release O(1), not O(queue)', async () => {
    const first = await hold('', 'write');
    const queued = await Promise.all(Array.from({ length: 1000 }, () => request('', 'write')));
    const before = locks.examined;
    first.release();
    for (const [i, waiter] of queued.entries()) {
      await settle();
      expect(waiter.settled, `waiter ${i} granted in turn`).to.equal(true);
      waiter.value!.release();
    }
    expect(locks.examined - before, 'waiters examined over 1000 releases').to.be.at.most(1000);
    expect(locks.nodeCount()).to.equal(0);
  });

  it('a release under a waiting parent write wakes that write once its subtree is free', async () => {
    const child = await hold('backends/a/volumes/n.v', 'read');
    const parent = await request('backends/a', 'write');
    const other = await request('backends/a/volumes/n.w', 'read');
    expect([parent.settled, other.settled]).to.deep.equal([false, false]);
    child.release();
    await settle();
    // The parent write goes first; the later reader waits behind it (fairness).
    expect([parent.settled, other.settled]).to.deep.equal([true, false]);
    parent.value!.release();
    await settle();
    expect(other.settled).to.equal(true);
    other.value!.release();
    expect(locks.nodeCount()).to.equal(0);
  });

  it('reports lock waits by mode', async () => {
    const clock = new FakeClock();
    const waits: Array<[LockMode, number]> = [];
    locks = new HierarchicalLocks({ clock, observer: { waited: (mode, seconds) => waits.push([mode, seconds]) } });
    const first = await hold('a', 'write');
    const second = track(locks.acquire(p('a/b'), 'read'));
    clock.advance(250);
    first.release();
    await settle();
    expect(second.settled).to.equal(true);
    expect(waits).to.deep.equal([
      ['write', 0],
      ['read', 0.25],
    ]);
  });
});
