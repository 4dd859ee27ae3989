// The StorageDriver contract as one mocha suite that every driver runs: idempotent
// create/get/delete, duplicate names with other parameters, not-found, resize, snapshots,
// group snapshots (native or fanned out), busy handling, abort, and data round trips where
// the driver has a data path.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { realClock, sleep } from '../../src/core/clock.js';
import { snapshotGroup, type StorageDriver } from '../../src/backends/driver.js';
import { DriverError, type DriverErrorReason } from '../../src/backends/errors.js';

export interface ContractFixture {
  driver: StorageDriver;
  /**
   * Makes the backend refuse work as busy until `release` is called; `refusals` counts
   * what it refused. Absent where the backend has no notion of busy.
   */
  busy?: () => Promise<{ release: () => Promise<void>; refusals: () => Promise<number> }>;
  /** Makes the next `createVolume` hang on the backend until released. */
  stallCreates?: () => Promise<() => Promise<void>>;
  teardown: () => Promise<void>;
}

const MiB = 1024 * 1024;
const never = new AbortController().signal;

export async function expectDriverError(p: Promise<unknown>, reason: DriverErrorReason): Promise<DriverError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected a DriverError (${reason})`).to.be.instanceOf(DriverError);
  const err = caught as DriverError;
  expect(err.reason, err.message).to.equal(reason);
  const retryable = ['busy', 'timeout', 'unavailable'].includes(reason);
  expect(err.kind).to.equal(retryable ? 'retryable' : 'terminal');
  // What the core reads, by shape: terminal, busy, and a retry-after on every busy error.
  expect(err.terminal).to.equal(!retryable);
  expect(err.busy).to.equal(reason === 'busy');
  if (reason === 'busy') expect(err.retryAfterMs).to.be.a('number');
  return err;
}

export async function sha256(stream: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** `bytes` of data that differ per `seed`. */
export function pattern(seed: number, bytes: number): Buffer {
  const buf = Buffer.alloc(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
  return buf;
}

/**
 * Calls `fn` until it does not fail busy, waiting each busy answer's `retryAfterMs` between
 * tries with no slot held: a stand-in for what the core's runner does above a driver.
 */
export async function untilNotBusy<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const busy = err as { busy?: boolean; retryAfterMs?: number };
      if (!busy.busy) throw err;
      await sleep(realClock, busy.retryAfterMs ?? 0);
    }
  }
}

export function driverContract(title: string, setup: () => Promise<ContractFixture>): void {
  describe(`StorageDriver contract: ${title}`, function () {
    let fx: ContractFixture;
    let d: StorageDriver;
    let n = 0;
    const unique = (what: string) => `${what}-${process.pid}-${++n}`;

    beforeEach(async () => {
      fx = await setup();
      d = fx.driver;
    });

    afterEach(async () => {
      await fx.driver.close();
      await fx.teardown();
    });

    it('probe reports health, capacity and capabilities', async () => {
      const p = await d.probe(never);
      expect(p.healthy, p.message).to.equal(true);
      expect(p.capacityBytes).to.be.greaterThan(0);
      expect(p.usedBytes).to.be.at.least(0);
      expect(p.capabilities).to.have.keys('nativeGroupSnapshot', 'snapshotData', 'volumeData', 'resize', 'topology');
    });

    it('create is idempotent by name; get and list see the volume; delete is idempotent', async () => {
      const name = unique('vol');
      const a = await d.createVolume({ name, capacityBytes: 8 * MiB, params: { tier: 'gold' } }, never);
      const b = await d.createVolume({ name, capacityBytes: 8 * MiB, params: { tier: 'gold' } }, never);
      expect(b.handle).to.equal(a.handle);
      expect(a.capacityBytes).to.equal(8 * MiB);
      const got = await d.getVolume(a.handle, never);
      expect(got.handle).to.equal(a.handle);
      expect(got.capacityBytes).to.equal(8 * MiB);
      expect((await d.listVolumes(never)).filter((v) => v.handle === a.handle)).to.have.length(1);
      await d.deleteVolume(a.handle, never);
      await d.deleteVolume(a.handle, never);
      await expectDriverError(d.getVolume(a.handle, never), 'notFound');
      expect((await d.listVolumes(never)).map((v) => v.handle)).not.to.include(a.handle);
    });

    it('concurrent creates of one name converge on one volume', async () => {
      const name = unique('vol-race');
      // A backend may refuse the racing ones as busy (an operation pending on the name): the
      // caller waits and tries again, and all converge.
      const made = await Promise.all(Array.from({ length: 6 }, () => untilNotBusy(() => d.createVolume({ name, capacityBytes: 4 * MiB }, never))));
      expect(new Set(made.map((v) => v.handle)).size).to.equal(1);
      expect((await d.listVolumes(never)).filter((v) => v.handle === made[0]!.handle)).to.have.length(1);
    });

    it('the same name with other parameters is a terminal alreadyExists', async () => {
      const name = unique('vol-dup');
      await d.createVolume({ name, capacityBytes: 4 * MiB, params: { tier: 'gold' } }, never);
      await expectDriverError(d.createVolume({ name, capacityBytes: 16 * MiB, params: { tier: 'gold' } }, never), 'alreadyExists');
      await expectDriverError(d.createVolume({ name, capacityBytes: 4 * MiB, params: { tier: 'bronze' } }, never), 'alreadyExists');
    });

    it('missing objects are a terminal notFound; deleting them succeeds', async () => {
      const vol = await d.createVolume({ name: unique('vol-gone'), capacityBytes: 4 * MiB }, never);
      await d.deleteVolume(vol.handle, never);
      await expectDriverError(d.getVolume(vol.handle, never), 'notFound');
      await expectDriverError(d.resizeVolume(vol.handle, 8 * MiB, never), 'notFound');
      await expectDriverError(d.createSnapshot({ name: unique('snap-of-gone'), sourceVolume: vol.handle }, never), 'notFound');
      const snap = await d.createSnapshot({ name: unique('snap'), sourceVolume: (await d.createVolume({ name: unique('vol'), capacityBytes: 4 * MiB }, never)).handle }, never);
      await d.deleteSnapshot(snap.handle, never);
      await expectDriverError(d.getSnapshot(snap.handle, never), 'notFound');
      await d.deleteSnapshot(snap.handle, never);
    });

    it('resize grows a volume and refuses to shrink it', async () => {
      const vol = await d.createVolume({ name: unique('vol-grow'), capacityBytes: 4 * MiB }, never);
      const grown = await d.resizeVolume(vol.handle, 12 * MiB, never);
      expect(grown.capacityBytes).to.equal(12 * MiB);
      expect((await d.getVolume(vol.handle, never)).capacityBytes).to.equal(12 * MiB);
      await expectDriverError(d.resizeVolume(vol.handle, 4 * MiB, never), 'invalid');
      expect((await d.getVolume(vol.handle, never)).capacityBytes).to.equal(12 * MiB);
    });

    it('snapshots are idempotent by name, listed, restorable into a new volume, and deletable', async () => {
      const vol = await d.createVolume({ name: unique('vol-src'), capacityBytes: 4 * MiB }, never);
      const other = await d.createVolume({ name: unique('vol-other'), capacityBytes: 4 * MiB }, never);
      const name = unique('snap');
      const s1 = await d.createSnapshot({ name, sourceVolume: vol.handle }, never);
      const s2 = await d.createSnapshot({ name, sourceVolume: vol.handle }, never);
      expect(s2.handle).to.equal(s1.handle);
      expect(s1.sourceVolume).to.equal(vol.handle);
      expect(s1.sizeBytes).to.equal(4 * MiB);
      await expectDriverError(d.createSnapshot({ name, sourceVolume: other.handle }, never), 'alreadyExists');
      expect((await d.getSnapshot(s1.handle, never)).sourceVolume).to.equal(vol.handle);
      expect((await d.listSnapshots(never)).map((s) => s.handle)).to.include(s1.handle);
      const restored = await d.createVolume({ name: unique('vol-restored'), capacityBytes: 4 * MiB, sourceSnapshot: s1.handle }, never);
      expect(restored.sourceSnapshot).to.equal(s1.handle);
      await d.deleteSnapshot(s1.handle, never);
      expect((await d.listSnapshots(never)).map((s) => s.handle)).not.to.include(s1.handle);
    });

    it('group snapshots cover every volume once, natively where the backend can, and are idempotent', async () => {
      const vols = await Promise.all([1, 2, 3].map((i) => d.createVolume({ name: unique(`vol-g${i}`), capacityBytes: 4 * MiB }, never)));
      const handles = vols.map((v) => v.handle);
      const name = unique('group');
      const g1 = await snapshotGroup(d, name, handles, never);
      const g2 = await snapshotGroup(d, name, handles, never);
      const { capabilities } = await d.probe(never);
      expect(g1.native).to.equal(capabilities.nativeGroupSnapshot);
      expect(g1.snapshots.map((s) => s.sourceVolume)).to.deep.equal(handles);
      expect(g2.snapshots.map((s) => s.handle)).to.deep.equal(g1.snapshots.map((s) => s.handle));
      if (g1.native) {
        for (const s of g1.snapshots) expect(s.groupHandle).to.equal(g1.handle);
        await d.deleteGroupSnapshot(g1.handle, never);
        await d.deleteGroupSnapshot(g1.handle, never);
      } else {
        for (const s of g1.snapshots) await d.deleteSnapshot(s.handle, never);
      }
      const left = new Set((await d.listSnapshots(never)).map((s) => s.handle));
      for (const s of g1.snapshots) expect(left.has(s.handle), s.handle).to.equal(false);
    });

    it('a busy backend is refused at once: one try, a busy error with retryAfterMs; the retry after it frees up succeeds', async function () {
      if (!fx.busy) this.skip();
      const busy = await fx.busy!();
      const req = { name: unique('vol-busy'), capacityBytes: 4 * MiB };
      const err = await expectDriverError(d.createVolume(req, never), 'busy');
      expect(err.busy).to.equal(true);
      expect(err.terminal).to.equal(false);
      expect(err.retryAfterMs).to.be.a('number').and.to.be.greaterThan(0);
      expect(await busy.refusals(), 'the driver made one try and gave up: the caller waits').to.equal(1);
      await busy.release();
      const vol = await d.createVolume(req, never);
      expect((await d.getVolume(vol.handle, never)).handle).to.equal(vol.handle);
    });

    it('an aborted signal stops a call: already aborted creates nothing; aborting mid-call rejects with the reason', async () => {
      const name = unique('vol-abort');
      const pre = new AbortController();
      pre.abort(new Error('stop before'));
      let err: unknown;
      await d.createVolume({ name, capacityBytes: 4 * MiB }, pre.signal).catch((e: unknown) => (err = e));
      expect((err as Error)?.message).to.equal('stop before');
      expect((await d.listVolumes(never)).map((v) => v.name)).not.to.include(name);

      // Mid-call: with a stall hook the create hangs on the backend until the abort; without
      // one (a plain CSI socket, say) the abort fires once the request is on its way.
      const before = (await d.listVolumes(never)).length;
      const midName = unique('vol-abort-mid');
      const reason = new Error('stop during');
      const ctl = new AbortController();
      const release = fx.stallCreates ? await fx.stallCreates() : undefined;
      const p = d.createVolume({ name: midName, capacityBytes: 4 * MiB }, ctl.signal);
      if (release) setTimeout(() => ctl.abort(reason), 20);
      else setImmediate(() => ctl.abort(reason));
      let mid: unknown;
      await p.then(
        () => undefined,
        (e: unknown) => (mid = e),
      );
      await release?.();
      // Unstalled, a fast backend may have answered first: then the call succeeded, never
      // failed some other way.
      if (release || mid !== undefined) expect(mid).to.equal(reason);
      // Either way the backend converges: the same create again makes one volume, no second.
      const made = await untilNotBusy(() => d.createVolume({ name: midName, capacityBytes: 4 * MiB }, never));
      expect((await d.getVolume(made.handle, never)).capacityBytes).to.equal(4 * MiB);
      expect((await d.listVolumes(never)).length).to.equal(before + 1);
    });

    it('aborting a write whose data never ends rejects with the reason and leaves the volume as it was', async function () {
      if (!(await d.probe(never)).capabilities.volumeData) this.skip();
      const vol = await d.createVolume({ name: unique('vol-abort-write'), capacityBytes: 4 * MiB }, never);
      const dataBefore = (await d.getVolume(vol.handle, never)).dataBytes ?? 0;
      const endless = new Readable({ read() {} });
      endless.push(Buffer.alloc(1024));
      const reason = new Error('stop writing');
      const ctl = new AbortController();
      const p = d.writeVolume(vol.handle, endless, ctl.signal);
      setTimeout(() => ctl.abort(reason), 20);
      let mid: unknown;
      await p.catch((e: unknown) => (mid = e));
      expect(mid).to.equal(reason);
      expect((await d.getVolume(vol.handle, never)).dataBytes ?? 0).to.equal(dataBefore);
    });

    it('data written into a volume reads back from its snapshot with the same SHA-256', async function () {
      const { capabilities } = await d.probe(never);
      if (!capabilities.volumeData || !capabilities.snapshotData) {
        await expectDriverError(d.readSnapshot('no-such-snapshot', never), capabilities.snapshotData ? 'notFound' : 'invalid');
        return;
      }
      const vol = await d.createVolume({ name: unique('vol-data'), capacityBytes: 4 * MiB }, never);
      const data = pattern(n, 3 * MiB + 17);
      const { bytes } = await d.writeVolume(vol.handle, Readable.from([data.subarray(0, MiB), data.subarray(MiB)]), never);
      expect(bytes).to.equal(data.length);
      const snap = await d.createSnapshot({ name: unique('snap-data'), sourceVolume: vol.handle }, never);
      expect(await sha256(await d.readSnapshot(snap.handle, never))).to.equal(createHash('sha256').update(data).digest('hex'));
      await expectDriverError(d.writeVolume(vol.handle, Readable.from([Buffer.alloc(5 * MiB)]), never), 'noSpace');
    });
  });
}
