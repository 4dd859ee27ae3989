import { expect } from 'chai';
import { DriverPool } from '../../src/controllers/driver-pool.js';
import { isSettled, storageName } from '../../src/controllers/volume.js';
import { volumeController } from '../../src/controllers/volume.js';
import { backend, bumped, cacheWith, contextFor, FakeDriver, services, volume, type Recorded } from './fixtures.js';
import type { Volume } from '../../src/api/volume.js';
import type { Cache } from '../../src/runtime/index.js';

const GiB = 2 ** 30;

function setup(...objects: Parameters<typeof cacheWith>) {
  const driver = new FakeDriver();
  const cache = cacheWith(...objects);
  const reconciler = volumeController(new DriverPool(() => driver.asDriver())).create(services(cache));
  const recorded: Recorded = { events: [], statuses: [] };
  const latest = (name: string) => cache.get('Volume', 'ns', name)!;
  const run = (name: string, options: { slot?: boolean } = {}) => reconciler.reconcile(latest(name), contextFor('Volume', latest(name), cache, recorded, options));
  const cleanup = (name: string) => reconciler.cleanup!(latest(name), contextFor('Volume', latest(name), cache, recorded));
  return { driver, cache, reconciler, recorded, latest, run, cleanup };
}

function phases(recorded: Recorded): Array<string | undefined> {
  return recorded.statuses.map((s) => (s as Volume['status'])?.phase);
}

function update(cache: Cache, name: string, change: (v: Volume) => void): void {
  const v = structuredClone(cache.get('Volume', 'ns', name)!);
  change(v);
  cache.store('Volume').upsert({ ...v, metadata: bumped(v.metadata) });
}

describe('controllers/volume', () => {
  it('plans a write lock on the volume path, with a backend slot only while there is storage work and the Backend is Online', () => {
    const { reconciler, cache } = setup(backend('array'), volume('v'), volume('done', {}, { phase: 'Available', handle: 'vol-9', capacityBytes: 10 * GiB, observedGeneration: 1 }));
    expect(reconciler.plan(cache.get('Volume', 'ns', 'v')!, cache)).to.deep.include({ backend: 'array' });
    expect(String(reconciler.plan(cache.get('Volume', 'ns', 'v')!, cache).locks[0]!.path)).to.equal('backends/array/volumes/ns.v');
    expect(reconciler.plan(cache.get('Volume', 'ns', 'done')!, cache).backend).to.equal(undefined);
    const offline = backend('array', {}, { phase: 'Offline' });
    cache.store('Backend').upsert({ ...offline, metadata: bumped(offline.metadata) });
    expect(reconciler.plan(cache.get('Volume', 'ns', 'v')!, cache).backend).to.equal(undefined);
  });

  it('creates the volume under a name from its UID and goes Creating -> Available with handle and capacity', async () => {
    const { driver, run, latest, recorded } = setup(backend('array'), volume('v'));
    await run('v');
    expect(driver.calls).to.deep.equal([`create tvol-uid-v ${10 * GiB}`]);
    expect(phases(recorded)).to.deep.equal(['Creating', 'Available']);
    expect(latest('v').status).to.deep.include({ phase: 'Available', handle: 'vol-1', capacityBytes: 10 * GiB });
    expect(latest('v').status!.conditions!.find((c) => c.type === 'Ready')).to.deep.include({ status: 'True', reason: 'Provisioned' });
    expect(isSettled(latest('v'))).to.equal(true);
    expect(storageName(latest('v'))).to.equal('tvol-uid-v');
  });

  it('never makes a second volume: a retry whose status write was lost gets the same one back', async () => {
    const { driver, run, cache, latest } = setup(backend('array'), volume('v'));
    await run('v');
    // As if the operator died before the status write: the status is gone, the storage volume is not.
    update(cache, 'v', (v) => delete v.status);
    await run('v');
    expect(driver.volumes.size).to.equal(1);
    expect(latest('v').status!.handle).to.equal('vol-1');
  });

  it('adopts the volume an earlier create made with an older size, then grows it', async () => {
    const { driver, run, cache, latest } = setup(backend('array'), volume('v'));
    await run('v');
    update(cache, 'v', (v) => {
      delete v.status;
      v.spec.capacity = '20Gi';
      v.metadata.generation = 2;
    });
    await run('v');
    expect(latest('v').status).to.deep.include({ handle: 'vol-1', capacityBytes: 10 * GiB });
    await run('v');
    expect(driver.calls.slice(-1)).to.deep.equal([`resize vol-1 ${20 * GiB}`]);
    expect(latest('v').status).to.deep.include({ phase: 'Available', capacityBytes: 20 * GiB });
  });

  it('waits Pending with a condition naming its backend while the Backend is not Online, without calling it', async () => {
    const { driver, run, latest } = setup(backend('array', {}, { phase: 'Offline', conditions: [{ type: 'Ready', status: 'False', reason: 'ProbeFailed', message: 'sim array GET /api/array: ECONNREFUSED', lastTransitionTime: '2026-01-01T00:00:00Z' }] }), volume('v'));
    const result = await run('v', { slot: false });
    expect(result).to.deep.equal({ requeueAfterMs: 60_000 });
    expect(driver.calls).to.deep.equal([]);
    expect(latest('v').status!.phase).to.equal('Pending');
    expect(latest('v').status!.conditions![0]).to.deep.include({ type: 'Ready', status: 'False', reason: 'BackendNotReady', message: 'waiting: backend array is Offline: sim array GET /api/array: ECONNREFUSED' });
  });

  it('names a missing backend', async () => {
    const { run, latest } = setup(volume('v', { backend: 'nowhere' }));
    await run('v', { slot: false });
    expect(latest('v').status!.conditions![0]!.message).to.equal('waiting: backend nowhere does not exist');
  });

  it('grows on a capacity increase and refuses a decrease with a clear message, changing nothing', async () => {
    const { driver, run, cache, latest, recorded } = setup(backend('array'), volume('v'));
    await run('v');
    update(cache, 'v', (v) => {
      v.spec.capacity = '15Gi';
      v.metadata.generation = 2;
    });
    expect(isSettled(latest('v'))).to.equal(false);
    await run('v');
    expect(driver.calls.at(-1)).to.equal(`resize vol-1 ${15 * GiB}`);
    expect(phases(recorded).slice(-2)).to.deep.equal(['Resizing', 'Available']);
    update(cache, 'v', (v) => {
      v.spec.capacity = '5Gi';
      v.metadata.generation = 3;
    });
    const calls = driver.calls.length;
    await run('v');
    expect(driver.calls.length).to.equal(calls);
    expect(latest('v').status).to.deep.include({ phase: 'Available', capacityBytes: 15 * GiB });
    const progressing = latest('v').status!.conditions!.find((c) => c.type === 'Progressing')!;
    expect(progressing).to.deep.include({ status: 'False', reason: 'ShrinkRefused' });
    expect(progressing.message).to.equal(`spec.capacity 5Gi (${5 * GiB} bytes) is below the provisioned 15Gi: volumes can grow, never shrink; nothing was changed`);
    expect(recorded.events.at(-1)).to.deep.include({ type: 'Warning', reason: 'ShrinkRefused' });
    // Refused once: settled, so no retry storm.
    expect(isSettled(latest('v'))).to.equal(true);
  });

  it('deletes the storage volume per deletionPolicy Delete, and an already-gone volume is no error', async () => {
    const { driver, run, cache, cleanup } = setup(backend('array'), volume('v'));
    await run('v');
    update(cache, 'v', (v) => (v.metadata.deletionTimestamp = '2026-01-01T00:00:00Z'));
    await cleanup('v');
    expect(driver.calls.at(-1)).to.equal('delete vol-1');
    expect(driver.volumes.size).to.equal(0);
    await cleanup('v');
    expect(driver.calls.at(-1)).to.equal('delete vol-1');
  });

  it('keeps the storage volume for Retain and says so in an Event', async () => {
    const { driver, run, cache, cleanup, recorded } = setup(backend('array'), volume('v', { deletionPolicy: 'Retain' }));
    await run('v');
    update(cache, 'v', (v) => (v.metadata.deletionTimestamp = '2026-01-01T00:00:00Z'));
    await cleanup('v');
    expect(driver.volumes.size).to.equal(1);
    expect(recorded.events.at(-1)).to.deep.equal({ type: 'Normal', reason: 'Retained', note: 'deletionPolicy Retain: storage volume vol-1 stays on backend array' });
  });

  it('finds a volume whose create was cut short before its handle was written, and deletes it', async () => {
    const { driver, cache, cleanup } = setup(backend('array'), volume('v', {}, { phase: 'Creating' }));
    await driver.createVolume({ name: 'tvol-uid-v', capacityBytes: 10 * GiB });
    update(cache, 'v', (v) => (v.metadata.deletionTimestamp = '2026-01-01T00:00:00Z'));
    await cleanup('v');
    expect(driver.calls.slice(-2)).to.deep.equal(['list', 'delete vol-1']);
  });
});
