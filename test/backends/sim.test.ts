// The simulated array and its driver beyond the shared contract: behaviour under 10x its
// API limit, the job protocol, fault injection, the operation log, seeded data and state
// that survives a restart or a crash.
import { readdir, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { expect } from 'chai';
import { FakeClock, settle } from '../../src/core/testing.js';
import { BackendLimiter } from '../../src/core/limiter.js';
import { openHeld, snapshotGroup } from '../../src/backends/driver.js';
import { createDriver } from '../../src/backends/registry.js';
import { SimArrayServer } from '../../src/backends/sim/array.js';
import type { OplogEntry } from '../../src/backends/sim/oplog.js';
import { expectDriverError, sha256, untilNotBusy } from './contract.js';
import { startArray, tempDir } from './fixtures.js';

const never = new AbortController().signal;
const MiB = 1024 * 1024;

/**
 * Pairs of successful operations that overlapped in time while one wrote an object the other
 * read or wrote: what must never happen. Objects come from the entries' ids, so a create
 * (logged under its name) pairs with writes of the object it made or found.
 */
function unsafeOverlaps(log: OplogEntry[]): [OplogEntry, OplogEntry][] {
  const ok = log.filter((e) => e.outcome === 'ok');
  const clash = (w: OplogEntry, o: OplogEntry) => w.writes.some((id) => o.writes.includes(id) || o.reads.includes(id));
  const pairs: [OplogEntry, OplogEntry][] = [];
  for (let i = 0; i < ok.length; i++) {
    for (let j = i + 1; j < ok.length; j++) {
      const a = ok[i]!;
      const b = ok[j]!;
      if (a.start < b.end && b.start < a.end && (clash(a, b) || clash(b, a))) pairs.push([a, b]);
    }
  }
  return pairs;
}

describe('sim array', function () {
  let array: SimArrayServer;
  let dir: string;

  afterEach(async () => {
    await array?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describe('under 10x its API limit', () => {
    const limit = 8;
    const clients = limit * 10;

    async function workload(run: <T>(op: string, fn: () => Promise<T>) => Promise<T>, driverUrl: string) {
      const driver = createDriver('sim', { endpoint: driverUrl });
      // Each client: create a volume, snapshot it, resize it, read it back.
      const results = await Promise.all(
        Array.from({ length: clients }, async (_, i) => {
          const vol = await run('createVolume', () => driver.createVolume({ name: `load-${i}`, capacityBytes: 4 * MiB }, never));
          const snap = await run('createSnapshot', () => driver.createSnapshot({ name: `load-snap-${i}`, sourceVolume: vol.handle }, never));
          await run('resizeVolume', () => driver.resizeVolume(vol.handle, 8 * MiB, never));
          const got = await run('getVolume', () => driver.getVolume(vol.handle, never));
          return { vol, snap, got };
        }),
      );
      await driver.close();
      return results;
    }

    const latency = { medianMs: 3, sigma: 0.6, maxMs: 50, factors: { createSnapshot: 2 } };

    it("10x over the array's own limit: the driver answers busy, the caller waits it out, and every operation succeeds once", async () => {
      ({ array, dir } = await startArray({ maxConcurrentOperations: limit, retryAfterMs: 10, latency }));
      const results = await workload((_op, fn) => untilNotBusy(fn), array.url);
      const stats = array.state.stats();
      expect(stats.rejectedBusy, 'the array must have refused some requests').to.be.greaterThan(0);
      expect(results.map((r) => r.got.capacityBytes)).to.deep.equal(Array(clients).fill(8 * MiB));
      // Retries after busy created nothing twice.
      expect(stats.volumes).to.equal(clients);
      expect(stats.snapshots).to.equal(clients);
      expect(stats.conflicts, 'the client never asked for an unsafe pair').to.equal(0);
      expect(unsafeOverlaps(array.state.oplog())).to.deep.equal([]);
    });

    it("through the core's BackendLimiter: an array with 10x the room sees at most the Backend's maxConcurrentOperations", async () => {
      // The array would admit all clients at once: only the limiter can keep the peak down.
      ({ array, dir } = await startArray({ maxConcurrentOperations: clients * 10, retryAfterMs: 10, latency }));
      const limiter = new BackendLimiter();
      limiter.configure('sim', { maxConcurrent: limit });
      const results = await workload((op, fn) => limiter.run('sim', op, fn), array.url);
      const stats = array.state.stats();
      expect(results).to.have.length(clients);
      expect(stats.peakInFlight).to.be.at.most(limit);
      expect(stats.peakInFlight, 'the load must have run in parallel').to.be.greaterThan(1);
      expect(stats.rejectedBusy).to.equal(0);
      expect(stats.conflicts, 'the client never asked for an unsafe pair').to.equal(0);
      expect(limiter.maxInFlight('sim')).to.be.at.most(limit);
      expect(stats.volumes).to.equal(clients);
      expect(unsafeOverlaps(array.state.oplog())).to.deep.equal([]);
    });

    it('the overlap checker catches a create that returns a volume while that volume is written', async () => {
      ({ array, dir } = await startArray());
      const s = array.state;
      const vol = await s.createVolume({ name: 'twice', capacityBytes: MiB });
      // Straight on the state, past any client: a repeated create runs during a resize.
      s.setFault('resizeVolume', { stallMs: 60_000 });
      const resize = s.resizeVolume(vol.id, 2 * MiB);
      await s.createVolume({ name: 'twice', capacityBytes: MiB }).catch(() => undefined);
      s.abortStalls();
      await resize;
      const pairs = unsafeOverlaps(s.oplog());
      expect(pairs.map(([a, b]) => [a.op, b.op].sort().join('+'))).to.deep.equal(['createVolume+resizeVolume']);
    });
  });

  describe('on the injected clock', () => {
    it('the request timeout runs on the Clock the driver was given: a FakeClock times out a mute array without real waiting', async () => {
      const held: Socket[] = [];
      const mute = createServer((c) => void held.push(c));
      await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
      const { port } = mute.address() as AddressInfo;
      const clock = new FakeClock();
      const driver = createDriver('sim', { endpoint: `http://127.0.0.1:${port}`, requestTimeoutMs: 3_600_000 }, {}, { clock });
      try {
        const pending = driver.getVolume('v', never).catch((e: unknown) => e);
        while (clock.pendingTimers === 0) await settle();
        await clock.advanceAndSettle(3_600_000);
        const err = await pending;
        expect(err).to.have.property('reason', 'timeout');
        expect((err as Error).message).to.match(/no answer within 3600000 ms/);
      } finally {
        for (const c of held) c.destroy();
        await new Promise<void>((resolve) => mute.close(() => resolve()));
      }
    });
  });

  describe('job completion', () => {
    it("a job's end is seen within one round trip of the array finishing it (long-poll), not at the next poll", async () => {
      // 250 ms: a poll every 10 ms growing 1.5x would next look at ~322 ms.
      ({ array, dir } = await startArray({ latency: { medianMs: 250, sigma: 0, maxMs: 1000, factors: {} } }));
      const driver = createDriver('sim', { endpoint: array.url });
      await driver.createVolume({ name: 'warm-up', capacityBytes: MiB }, never);
      await driver.createVolume({ name: 'timed', capacityBytes: MiB }, never);
      const seen = performance.timeOrigin + performance.now();
      const ran = array.state.oplog().find((e) => e.op === 'createVolume' && e.target === 'name:timed')!;
      expect(ran.end - ran.start).to.be.at.least(249);
      expect(seen - ran.end, 'ms from the array finishing to the caller seeing it').to.be.below(40);
    });

    it('a long-poll is held until the job ends, and no longer than asked', async () => {
      ({ array, dir } = await startArray());
      array.state.setFault('createVolume', { stallMs: 60_000 });
      const post = await fetch(`${array.url}/api/volumes`, { method: 'POST', body: JSON.stringify({ name: 'held', capacityBytes: MiB }) });
      const { jobId } = (await post.json()) as { jobId: string };
      const t0 = performance.now();
      const running = (await (await fetch(`${array.url}/api/jobs/${jobId}?waitMs=50`)).json()) as { state: string };
      expect(running.state).to.equal('running');
      expect(performance.now() - t0).to.be.at.least(45);
      const done = fetch(`${array.url}/api/jobs/${jobId}?waitMs=10000`).then(async (r) => (await r.json()) as { state: string });
      setTimeout(() => array.state.abortStalls(), 20);
      expect((await done).state).to.equal('succeeded');
    });
  });

  describe('HTTP API', () => {
    beforeEach(async () => {
      ({ array, dir } = await startArray({ maxConcurrentOperations: 1, retryAfterMs: 1500 }));
    });

    it('a create answers 202 with a job that the client polls to its result', async () => {
      const res = await fetch(`${array.url}/api/volumes`, { method: 'POST', body: JSON.stringify({ name: 'j', capacityBytes: MiB }) });
      expect(res.status).to.equal(202);
      const { jobId } = (await res.json()) as { jobId: string };
      let job: { state: string; result?: { name: string } };
      do job = (await (await fetch(`${array.url}/api/jobs/${jobId}`)).json()) as typeof job;
      while (job.state === 'running');
      expect(job.state).to.equal('succeeded');
      expect(job.result?.name).to.equal('j');
    });

    it('beyond the limit a request gets 429 with Retry-After, and job polls are never refused', async () => {
      array.state.setFault('createVolume', { stallMs: 60_000 });
      const first = await fetch(`${array.url}/api/volumes`, { method: 'POST', body: JSON.stringify({ name: 'a', capacityBytes: MiB }) });
      const { jobId } = (await first.json()) as { jobId: string };
      const refused = await fetch(`${array.url}/api/volumes`, { method: 'POST', body: JSON.stringify({ name: 'b', capacityBytes: MiB }) });
      expect(refused.status).to.equal(429);
      expect(refused.headers.get('retry-after')).to.equal('2');
      expect(((await refused.json()) as { error: { code: string; retryAfterMs: number } }).error).to.include({ code: 'busy', retryAfterMs: 1500 });
      expect((await fetch(`${array.url}/api/jobs/${jobId}`)).status).to.equal(200);
      // A repeat of the running create joins its job instead of asking for a second slot.
      const again = await fetch(`${array.url}/api/volumes`, { method: 'POST', body: JSON.stringify({ name: 'a', capacityBytes: MiB }) });
      expect(again.status).to.equal(202);
      expect(((await again.json()) as { jobId: string }).jobId).to.equal(jobId);
      array.state.abortStalls();
    });

    it('a repeat of a running create with other parameters is refused as alreadyExists, not joined', async () => {
      array.state.setFault('createVolume', { stallMs: 60_000 });
      const post = (body: object) => fetch(`${array.url}/api/volumes`, { method: 'POST', body: JSON.stringify(body) });
      const first = await post({ name: 'a', capacityBytes: MiB, params: { tier: 'gold', zone: 'z1' } });
      const { jobId } = (await first.json()) as { jobId: string };
      const other = await post({ name: 'a', capacityBytes: 2 * MiB, params: { tier: 'gold', zone: 'z1' } });
      expect(other.status).to.equal(409);
      expect(((await other.json()) as { error: { code: string } }).error.code).to.equal('alreadyExists');
      // The same parameters in another order are the same request.
      const same = await post({ name: 'a', capacityBytes: MiB, params: { zone: 'z1', tier: 'gold' } });
      expect(((await same.json()) as { jobId: string }).jobId).to.equal(jobId);
      array.state.abortStalls();
    });
  });

  describe('startup', () => {
    it('a port already taken fails the start and leaves no state or temp dir open', async () => {
      ({ array, dir } = await startArray());
      const scratch = await tempDir('sim-tmp');
      const saved = process.env.TMPDIR;
      // Without a state path the array keeps its blobs in a temp dir under TMPDIR.
      process.env.TMPDIR = scratch;
      try {
        let err: unknown;
        await SimArrayServer.start({ port: array.port }).catch((e: unknown) => (err = e));
        expect((err as NodeJS.ErrnoException)?.code).to.equal('EADDRINUSE');
        expect(await readdir(scratch)).to.deep.equal([]);
      } finally {
        if (saved === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = saved;
        await rm(scratch, { recursive: true, force: true });
      }
    });
  });

  describe('busy as 503', () => {
    it('an array that answers busy with 503 and Retry-After is busy like a 429, with the hint as retryAfterMs', async () => {
      ({ array, dir } = await startArray({ maxConcurrentOperations: 1, retryAfterMs: 5, busyStatus: 503 }));
      array.state.setFault('getArray', { stallMs: 60_000 });
      const holder = array.state.getArray();
      array.state.setFault('getArray', {});
      const raw = await fetch(`${array.url}/api/volumes`);
      expect(raw.status).to.equal(503);
      expect(raw.headers.get('retry-after')).to.equal('1');
      const driver = createDriver('sim', { endpoint: array.url });
      const err = await expectDriverError(driver.createVolume({ name: 'after-503', capacityBytes: MiB }, never), 'busy');
      expect(err.retryAfterMs).to.equal(5);
      array.state.abortStalls();
      await holder;
      expect((await driver.createVolume({ name: 'after-503', capacityBytes: MiB }, never)).name).to.equal('after-503');
    });
  });

  describe('faults, log and data', () => {
    beforeEach(async () => {
      ({ array, dir } = await startArray({ seed: 42 }));
    });

    it('an injected error rate fails operations as retryable unavailable, with the array\'s message', async () => {
      const driver = createDriver('sim', { endpoint: array.url });
      const vol = await driver.createVolume({ name: 'f', capacityBytes: MiB }, never);
      const set = await fetch(`${array.url}/admin/faults`, { method: 'POST', body: JSON.stringify({ getVolume: { errorRate: 1 } }) });
      expect(set.status).to.equal(200);
      const err = await expectDriverError(driver.getVolume(vol.handle, never), 'unavailable');
      expect(err.message).to.match(/injected/);
      await fetch(`${array.url}/admin/faults`, { method: 'POST', body: JSON.stringify({ getVolume: {} }) });
      expect((await driver.getVolume(vol.handle, never)).handle).to.equal(vol.handle);
      expect(array.state.stats().faultsInjected).to.equal(1);
    });

    it('the operation log records op, target, start and end of each operation, served at /admin/oplog', async () => {
      const driver = createDriver('sim', { endpoint: array.url });
      const vol = await driver.createVolume({ name: 'logged', capacityBytes: MiB }, never);
      await driver.resizeVolume(vol.handle, 2 * MiB, never);
      const { entries } = (await (await fetch(`${array.url}/admin/oplog`)).json()) as { entries: OplogEntry[] };
      const ops = entries.map((e) => `${e.op} ${e.target} ${e.outcome}`);
      expect(ops).to.deep.equal(['createVolume name:logged ok', `resizeVolume ${vol.handle} ok`]);
      for (const e of entries) expect(e.end).to.be.at.least(e.start);
      expect(entries[1]!.start).to.be.at.least(entries[0]!.end);
    });

    it('an operation on a volume that is being written is refused as pending, never run alongside', async () => {
      const driver = createDriver('sim', { endpoint: array.url });
      const vol = await driver.createVolume({ name: 'busyvol', capacityBytes: MiB }, never);
      array.state.setFault('resizeVolume', { stallMs: 60_000 });
      const resize = driver.resizeVolume(vol.handle, 2 * MiB, never);
      while (array.state.stats().inFlight === 0) await new Promise((r) => setTimeout(r, 2));
      const del = await fetch(`${array.url}/api/volumes/${vol.handle}`, { method: 'DELETE' });
      expect(del.status).to.equal(409);
      expect(((await del.json()) as { error: { code: string } }).error.code).to.equal('pending');
      expect(array.state.stats().conflicts).to.equal(1);
      array.state.abortStalls();
      await resize;
      expect(unsafeOverlaps(array.state.oplog())).to.deep.equal([]);
    });

    it('snapshot data is a deterministic seeded stream per volume, the same on every read', async () => {
      const driver = createDriver('sim', { endpoint: array.url });
      const a = await driver.createVolume({ name: 'da', capacityBytes: 2 * MiB }, never);
      const b = await driver.createVolume({ name: 'db', capacityBytes: 2 * MiB }, never);
      const sa = await driver.createSnapshot({ name: 'sa', sourceVolume: a.handle }, never);
      const sb = await driver.createSnapshot({ name: 'sb', sourceVolume: b.handle }, never);
      const ha1 = await sha256(await driver.readSnapshot(sa.handle, never));
      const ha2 = await sha256(await driver.readSnapshot(sa.handle, never));
      const hb = await sha256(await driver.readSnapshot(sb.handle, never));
      expect(ha1).to.equal(ha2);
      expect(ha1).not.to.equal(hb);
      let bytes = 0;
      for await (const chunk of await driver.readSnapshot(sa.handle, never)) bytes += (chunk as Buffer).length;
      expect(bytes).to.equal(MiB);
    });

    it('a snapshot read slower than the request timeout is not cut off: the timeout bounds only the wait for headers', async () => {
      const requestTimeoutMs = 1_000;
      const driver = createDriver('sim', { endpoint: array.url, requestTimeoutMs });
      const vol = await driver.createVolume({ name: 'slow-read', capacityBytes: MiB }, never);
      const snap = await driver.createSnapshot({ name: 'slow-read-snap', sourceVolume: vol.handle }, never);
      let bytes = 0;
      for await (const chunk of await driver.readSnapshot(snap.handle, never)) {
        // After the first chunk the reader stalls well past the request timeout.
        if (bytes === 0) await new Promise((r) => setTimeout(r, 2 * requestTimeoutMs));
        bytes += (chunk as Buffer).length;
      }
      expect(bytes).to.equal(MiB);
    });

    it("a snapshot stream opened with openHeld keeps its limiter slot until it closes, as the array keeps its own", async () => {
      const driver = createDriver('sim', { endpoint: array.url });
      const vol = await driver.createVolume({ name: 'held', capacityBytes: 2 * MiB }, never);
      const snap = await driver.createSnapshot({ name: 'held-snap', sourceVolume: vol.handle }, never);
      const limiter = new BackendLimiter();
      limiter.configure('sim', { maxConcurrent: 1 });
      const stream = await openHeld((fn) => limiter.run('sim', 'readSnapshot', fn), () => driver.readSnapshot(snap.handle, never));
      let next = false;
      const after = limiter.run('sim', 'getVolume', async () => {
        next = true;
        // The array must have let go of the transfer's slot by now.
        return array.state.stats().inFlight;
      });
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      expect(next, 'the slot is still the stream\'s').to.equal(false);
      expect(await sha256(stream)).to.have.length(64);
      expect(await after).to.equal(0);
      expect(next).to.equal(true);
    });

    it('native group snapshots can be switched off: the driver then reports them absent and the caller fans out', async () => {
      const driver = createDriver('sim', { endpoint: array.url });
      const vols = await Promise.all(['g1', 'g2'].map((name) => driver.createVolume({ name, capacityBytes: MiB }, never)));
      const native = await snapshotGroup(driver, 'cg', vols.map((v) => v.handle), never);
      expect(native.native).to.equal(true);
      await fetch(`${array.url}/admin/config`, { method: 'PATCH', body: JSON.stringify({ nativeConsistencyGroups: false }) });
      expect((await driver.probe(never)).capabilities.nativeGroupSnapshot).to.equal(false);
      expect(await driver.createGroupSnapshot('cg2', vols.map((v) => v.handle), never)).to.equal(undefined);
      const fanned = await snapshotGroup(driver, 'cg2', vols.map((v) => v.handle), never);
      expect(fanned.native).to.equal(false);
      expect(fanned.snapshots.map((s) => s.sourceVolume)).to.deep.equal(vols.map((v) => v.handle));
    });

    it('capacity is enforced: a volume beyond the free space is a terminal noSpace', async () => {
      await array.close();
      ({ array } = await startArray({ capacityBytes: 10 * MiB }, dir));
      const driver = createDriver('sim', { endpoint: array.url });
      await driver.createVolume({ name: 'fits', capacityBytes: 8 * MiB }, never);
      await expectDriverError(driver.createVolume({ name: 'too-big', capacityBytes: 4 * MiB }, never), 'noSpace');
      const p = await driver.probe(never);
      expect(p).to.include({ capacityBytes: 10 * MiB, usedBytes: 8 * MiB });
    });
  });

  describe('persistence', () => {
    it('a restarted array keeps every acknowledged volume, snapshot and group, and keeps ids unique', async () => {
      ({ array, dir } = await startArray());
      let driver = createDriver('sim', { endpoint: array.url });
      const vol = await driver.createVolume({ name: 'keep', capacityBytes: 2 * MiB, params: { tier: 'gold' } }, never);
      const snap = await driver.createSnapshot({ name: 'keep-snap', sourceVolume: vol.handle }, never);
      const group = await snapshotGroup(driver, 'keep-group', [vol.handle], never);
      const before = await sha256(await driver.readSnapshot(snap.handle, never));
      await array.close();

      ({ array } = await startArray({}, dir));
      driver = createDriver('sim', { endpoint: array.url });
      expect(await driver.getVolume(vol.handle, never)).to.deep.include({ name: 'keep', capacityBytes: 2 * MiB, params: { tier: 'gold' } });
      expect((await driver.getSnapshot(snap.handle, never)).sourceVolume).to.equal(vol.handle);
      expect(await sha256(await driver.readSnapshot(snap.handle, never))).to.equal(before);
      expect((await snapshotGroup(driver, 'keep-group', [vol.handle], never)).handle).to.equal(group.handle);
      // Idempotency survives the restart, and new objects get fresh ids.
      expect((await driver.createVolume({ name: 'keep', capacityBytes: 2 * MiB, params: { tier: 'gold' } }, never)).handle).to.equal(vol.handle);
      const fresh = await driver.createVolume({ name: 'fresh', capacityBytes: MiB }, never);
      expect([vol.handle, snap.handle, group.handle, ...group.snapshots.map((s) => s.handle)]).not.to.include(fresh.handle);
    });

    it('a job the array lost in a restart is submitted again, and the create still happens once', async () => {
      ({ array, dir } = await startArray());
      const port = array.port;
      array.state.setFault('createVolume', { stallMs: 60_000 });
      const driver = createDriver('sim', { endpoint: array.url });
      const pending = driver.createVolume({ name: 'lost-job', capacityBytes: MiB }, never);
      let settled = false;
      void pending.catch(() => undefined).finally(() => (settled = true));
      while (array.state.stats().inFlight === 0) await new Promise((r) => setTimeout(r, 2));
      await array.close();
      // While the array is down its port drops every connection: polls must fail and go on.
      let refused = 0;
      const down = createServer((socket) => {
        refused++;
        socket.destroy();
      });
      await new Promise<void>((resolve) => down.listen(port, '127.0.0.1', resolve));
      while (refused < 3 && !settled) await new Promise((r) => setTimeout(r, 2));
      await new Promise<void>((resolve) => down.close(() => resolve()));
      // The new array has never heard of the job.
      ({ array } = await startArray({ port }, dir));
      const vol = await pending;
      expect(vol.name).to.equal('lost-job');
      expect((await driver.listVolumes(never)).filter((v) => v.name === 'lost-job')).to.have.length(1);
    });

    it('a crash drops every connection; after a restart from the state file, acknowledged work is there and the retry succeeds', async () => {
      ({ array, dir } = await startArray());
      const driver = createDriver('sim', { endpoint: array.url });
      const kept = await driver.createVolume({ name: 'before-crash', capacityBytes: MiB }, never);
      const port = array.port;
      await fetch(`${array.url}/admin/faults`, { method: 'POST', body: JSON.stringify({ createVolume: { crash: true } }) });
      await expectDriverError(driver.createVolume({ name: 'during-crash', capacityBytes: MiB }, never), 'unavailable');
      expect(array.isCrashed).to.equal(true);

      ({ array } = await startArray({ port }, dir));
      expect((await driver.getVolume(kept.handle, never)).name).to.equal('before-crash');
      const retried = await driver.createVolume({ name: 'during-crash', capacityBytes: MiB }, never);
      expect((await driver.listVolumes(never)).filter((v) => v.name === 'during-crash').map((v) => v.handle)).to.deep.equal([retried.handle]);
    });
  });
});
