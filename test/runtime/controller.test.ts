import { expect } from 'chai';
import type { Volume } from '../../src/api/volume.js';
import { HierarchicalLocks, realClock, type BackendLimiter, type CoreMetrics, type ReconcileContext } from '../../src/core/index.js';
import { rootLogger } from '../../src/log.js';
import { Cache } from '../../src/runtime/cache.js';
import { ObjectReconcilerAdapter, defineController, type ControllerServices } from '../../src/runtime/controller.js';
import type { EventRecorder } from '../../src/runtime/events.js';
import { keyOf, volumePath } from '../../src/runtime/keys.js';
import type { SecretReader } from '../../src/runtime/secrets.js';
import { StatusWriter } from '../../src/runtime/status.js';
import { FakeApiServer } from './fake-api.js';

const objectPath = '/apis/trellis.dev/v1alpha1/namespaces/ns/volumes/v';

describe('runtime/controller: the object reconciler adapter', () => {
  const setup = () => {
    const server = new FakeApiServer();
    const api = server.client();
    const cache = new Cache();
    const events: unknown[] = [];
    const services: ControllerServices = {
      cache,
      api,
      secrets: {} as SecretReader,
      status: new StatusWriter({ api, cache }),
      events: { record: (_subject: unknown, event: unknown) => events.push(event) } as unknown as EventRecorder,
      limiter: {} as BackendLimiter,
      coreMetrics: {} as CoreMetrics,
      clock: realClock,
      logger: rootLogger,
    };
    const seen: string[] = [];
    const definition = defineController({
      name: 'volume',
      kind: 'Volume',
      create: () => ({
        plan: (volume) => ({ locks: [{ path: volumePath(volume.spec.backend, volume.metadata.namespace!, volume.metadata.name), mode: 'write' }], backend: volume.spec.backend }),
        async reconcile(volume, context) {
          seen.push(`reconcile ${volume.metadata.name} ${context.ref.namespace}/${context.ref.name}`);
          if (volume.metadata.annotations?.fail) throw new Error('array refused');
          await context.updateStatus((s) => void (s.phase = 'Available'));
        },
      }),
    });
    const adapter = new ObjectReconcilerAdapter(definition, definition.create(services), services);
    const put = (volume: Partial<Volume['metadata']> = {}) => {
      const stored = server.store<Volume>(objectPath, { apiVersion: 'trellis.dev/v1alpha1', kind: 'Volume', metadata: { name: 'v', namespace: 'ns', generation: 1, ...volume }, spec: { backend: 'a', capacity: '1Gi' } });
      cache.store('Volume').upsert(stored);
      return stored;
    };
    const context = (): ReconcileContext => ({ signal: new AbortController().signal, logger: rootLogger, locks: new HierarchicalLocks().tryAcquireMany([])! });
    return { server, cache, adapter, put, context, seen, events };
  };

  it('plans from the cached object and hands the reconciler the object, with a phase-change Event on the status write', async () => {
    const { adapter, put, context, seen, events } = setup();
    const key = keyOf('Volume', put());
    expect(adapter.plan(key)).to.deep.equal({ locks: [{ path: volumePath('a', 'ns', 'v'), mode: 'write' }], backend: 'a' });
    await adapter.reconcile(key, context());
    expect(seen).to.deep.equal(['reconcile v ns/v']);
    expect(events).to.deep.equal([{ type: 'Normal', reason: 'Available', note: 'phase (none) -> Available', action: 'PhaseChange' }]);
  });

  it('ends quietly for an object gone from the cache, and records a Warning for a failure', async () => {
    const { adapter, put, context, seen, events, cache } = setup();
    const volume = put({ annotations: { fail: 'yes' } });
    const key = keyOf('Volume', volume);
    await adapter.reconcile(key, context()).then(() => expect.fail('should throw'), (e: Error) => expect(e.message).to.equal('array refused'));
    expect(events).to.deep.equal([{ type: 'Warning', reason: 'ReconcileFailed', note: 'array refused', action: 'Reconcile' }]);
    cache.store('Volume').delete(volume);
    await adapter.reconcile(key, context());
    expect(seen).to.have.length(1);
    expect(adapter.plan(key).locks.map((l) => [String(l.path), l.mode])).to.deep.equal([[key, 'write']]);
  });
});
