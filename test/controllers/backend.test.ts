import { expect } from 'chai';
import { backendController } from '../../src/controllers/backend.js';
import { DriverPool } from '../../src/controllers/driver-pool.js';
import { DriverError } from '../../src/backends/errors.js';
import { BackendLimiter } from '../../src/core/index.js';
import { backend, bumped, cacheWith, contextFor, FakeDriver, secretReader, services, volume, type Recorded } from './fixtures.js';
import type { Backend } from '../../src/api/backend.js';
import type { SecretReader } from '../../src/runtime/index.js';

function setup(options: { objects?: Parameters<typeof cacheWith>; real?: boolean; secrets?: SecretReader } = {}) {
  const driver = new FakeDriver();
  const built: Array<{ kind: string; config: unknown; credentials: Record<string, string> }> = [];
  const cache = cacheWith(...(options.objects ?? [backend('array', {}, {})]));
  const limiter = new BackendLimiter();
  const pool = options.real
    ? new DriverPool()
    : new DriverPool((kind, config, credentials) => {
        built.push({ kind, config, credentials });
        return driver.asDriver();
      });
  const reconciler = backendController(pool).create(services(cache, limiter));
  const recorded: Recorded = { events: [], statuses: [] };
  const latest = () => cache.get('Backend', undefined, 'array')!;
  const run = () => reconciler.reconcile(latest(), contextFor('Backend', latest(), cache, recorded, { slot: false, secrets: options.secrets }));
  const cleanup = () => reconciler.cleanup!(latest(), contextFor('Backend', latest(), cache, recorded, { slot: false, secrets: options.secrets }));
  const change = (mutate: (b: Backend) => void) => {
    const next = structuredClone(latest());
    mutate(next);
    cache.store('Backend').upsert({ ...next, metadata: bumped(next.metadata) });
  };
  return { driver, built, cache, limiter, pool, reconciler, recorded, latest, run, cleanup, change };
}

const ready = (b: Backend) => b.status!.conditions!.find((c) => c.type === 'Ready')!;

describe('controllers/backend', () => {
  it('probes and writes Online with capacity, capabilities and the volume count from the cache index', async () => {
    const { run, latest } = setup({ objects: [backend('array', {}, {}), volume('a'), volume('b'), volume('c', { backend: 'other' })] });
    expect(await run()).to.deep.equal({ requeueAfterMs: 30_000 });
    expect(latest().status).to.deep.include({ phase: 'Online', capacityBytes: 1000, usedBytes: 10, volumeCount: 2 });
    expect(latest().status!.capabilities).to.deep.equal({ nativeGroupSnapshots: true, snapshotData: true, volumeData: true, resize: true, topology: false });
    expect(ready(latest())).to.deep.include({ status: 'True', reason: 'Online' });
  });

  it('probes under a read lock on the backend path in one of its limiter slots; deletes under the write lock', () => {
    const { reconciler, cache, latest, change } = setup();
    const plan = reconciler.plan(latest(), cache);
    expect(plan.locks.map((l) => `${l.mode} ${String(l.path)}`)).to.deep.equal(['read backends/array']);
    expect(plan.backend).to.equal('array');
    change((b) => (b.metadata.deletionTimestamp = '2026-01-01T00:00:00Z'));
    expect(reconciler.plan(latest(), cache)).to.deep.equal({ locks: [{ path: reconciler.plan(latest(), cache).locks[0]!.path, mode: 'write' }] });
  });

  it('names an unknown config option in a failed condition and does not retry', async () => {
    const { run, latest } = setup({ objects: [backend('array', { config: { endpont: 'http://x' } }, {})], real: true });
    expect(await run()).to.equal(undefined);
    expect(latest().status!.phase).to.equal('Offline');
    expect(ready(latest())).to.deep.include({ status: 'False', reason: 'InvalidConfig', message: 'sim driver config: unknown option "endpont"' });
  });

  it('names a missing Secret, and never a credential value in status or Events', async () => {
    const ref = { credentialsSecretRef: { namespace: 'ops', name: 'array-creds' } };
    const missing = setup({ objects: [backend('array', ref, {})] });
    expect(await missing.run()).to.deep.equal({ requeueAfterMs: 1000 });
    expect(ready(missing.latest()), JSON.stringify(ready(missing.latest()))).to.deep.include({ reason: 'CredentialsUnavailable', message: 'credentials Secret ops/array-creds does not exist' });

    const wrongKey = setup({ objects: [backend('array', ref, {})], real: true, secrets: secretReader({ 'ops/array-creds': { passwd: 'hunter2-secret-value' } }) });
    await wrongKey.run();
    expect(ready(wrongKey.latest()).message).to.equal('sim credentials driver config: unknown option "passwd"');
    expect(JSON.stringify([wrongKey.recorded, wrongKey.latest()])).to.not.include('hunter2');
  });

  it('builds the driver from the Secret and rebuilds it when the Secret changes, closing the old one only later', async () => {
    const secrets: Record<string, Record<string, string>> = { 'ops/creds': { token: 'one' } };
    const { run, built, pool } = setup({ objects: [backend('array', { credentialsSecretRef: { namespace: 'ops', name: 'creds' } }, {})], secrets: secretReader(secrets) });
    await run();
    await run();
    expect(built.map((b) => b.credentials)).to.deep.equal([{ token: 'one' }]);
    secrets['ops/creds'] = { token: 'two' };
    await run();
    expect(built.map((b) => b.credentials)).to.deep.equal([{ token: 'one' }, { token: 'two' }]);
    expect(pool.current('array')).to.not.equal(undefined);
  });

  it('goes Offline with the driver\'s message when the probe fails, and probes again with growing backoff', async () => {
    const { run, latest, driver } = setup();
    driver.probeResult = new DriverError('unavailable', 'sim array GET /api/array: ECONNREFUSED');
    expect([await run(), await run(), await run()]).to.deep.equal([{ requeueAfterMs: 1000 }, { requeueAfterMs: 2000 }, { requeueAfterMs: 4000 }]);
    expect(latest().status!.phase).to.equal('Offline');
    expect(ready(latest())).to.deep.include({ reason: 'ProbeFailed', message: 'sim array GET /api/array: ECONNREFUSED' });
    driver.probeResult = { healthy: false, capacityBytes: 1, usedBytes: 0, message: 'controller B failed over', capabilities: { nativeGroupSnapshot: false, snapshotData: false, volumeData: false, resize: false, topology: false } };
    await run();
    expect(latest().status!.phase).to.equal('Degraded');
    expect(ready(latest()).message).to.equal('controller B failed over');
  });

  it('sets the limiter from spec.limits on every reconcile, so a change applies live', async () => {
    const { run, change, limiter } = setup({ objects: [backend('array', { limits: { maxConcurrentOperations: 20, operationsPerSecond: 100 } }, {})] });
    await run();
    expect(limiter.limits('array')).to.deep.include({ maxConcurrent: 20, opsPerSecond: 100 });
    const held = limiter.tryAcquire('array')!;
    change((b) => (b.spec.limits = { maxConcurrentOperations: 5, adaptive: true, minConcurrentOperations: 2 }));
    await run();
    expect(limiter.limits('array')).to.deep.equal({ maxConcurrent: 5, opsPerSecond: Infinity, adaptive: true, minConcurrent: 2 });
    expect(limiter.inFlight('array'), 'a slot in flight is kept').to.equal(1);
    held.release();
  });

  it('puts every cached Backend\'s limits in force when it starts, before any Volume can take a slot', () => {
    const { limiter } = setup({ objects: [backend('array', { limits: { maxConcurrentOperations: 4 } }, { phase: 'Online' })] });
    expect(limiter.limits('array').maxConcurrent).to.equal(4);
  });

  it('holds deletion while Volumes refer to the Backend, naming a few; then closes the driver and drops the limiter', async () => {
    const volumes = Array.from({ length: 7 }, (_, i) => volume(`v${i}`));
    const { run, cleanup, cache, latest, limiter, driver, pool } = setup({ objects: [backend('array', { limits: { maxConcurrentOperations: 3 } }, {}), ...volumes] });
    await run();
    expect(await cleanup()).to.deep.equal({ requeueAfterMs: 30_000 });
    expect(latest().status!.phase).to.equal('Deleting');
    expect(ready(latest()).message).to.equal('deletion waits: 7 Volumes still on this backend (ns/v0, ns/v1, ns/v2, ns/v3, ns/v4 and 2 more); delete them first');
    for (const v of volumes) cache.store('Volume').delete(v);
    expect(await cleanup()).to.equal(undefined);
    expect(driver.closed).to.equal(true);
    expect(pool.current('array')).to.equal(undefined);
    expect(limiter.limits('array').maxConcurrent, 'back to the default').to.equal(10);
  });
});
