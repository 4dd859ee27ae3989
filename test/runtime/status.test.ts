import { expect } from 'chai';
import type { Volume } from '../../src/api/volume.js';
import { FakeClock } from '../../src/core/testing.js';
import { Cache } from '../../src/runtime/cache.js';
import { setCondition } from '../../src/runtime/conditions.js';
import { StatusWriter, mergePatch } from '../../src/runtime/status.js';
import { FakeApiServer } from './fake-api.js';

const path = '/apis/trellis.dev/v1alpha1/namespaces/ns/volumes/v';

describe('runtime/status: status writes that happen only when something changed', () => {
  const setup = () => {
    const clock = new FakeClock();
    const server = new FakeApiServer();
    const api = server.client();
    const cache = new Cache();
    const created = server.store<Volume>(path, {
      apiVersion: 'trellis.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name: 'v', namespace: 'ns', generation: 3 },
      spec: { backend: 'a', capacity: '1Gi' },
    });
    cache.store('Volume').upsert(created);
    const writer = new StatusWriter({ api, cache, clock, progressIntervalMs: 5_000 });
    const latest = () => cache.get('Volume', 'ns', 'v')!;
    const writes = () => server.requests.filter((r) => r.verb.startsWith('patch')).length;
    return { clock, server, writer, latest, writes };
  };

  it('writes a changed status once with observedGeneration, then skips the same status', async () => {
    const { writer, latest, writes } = setup();
    const ready = (s: NonNullable<Volume['status']>) => {
      s.phase = 'Available';
      s.conditions = setCondition(s.conditions, { type: 'Ready', status: 'True', reason: 'Provisioned' }, () => new Date('2026-01-01T00:00:00Z'));
    };
    const written = await writer.update('Volume', latest(), ready);
    expect(written?.status).to.include({ phase: 'Available', observedGeneration: 3 });
    for (let i = 0; i < 5; i++) expect(await writer.update('Volume', latest(), ready)).to.equal(undefined);
    expect(writes()).to.equal(1);
  });

  it('on a 409 re-reads the object and applies the mutation to the fresh status', async () => {
    const { server, writer, latest, writes } = setup();
    const stale = latest();
    // Someone else writes meanwhile: the cached object is now stale.
    server.store(path, { ...server.objects.get(path)!, status: { capacityBytes: 7 } } as never);
    const written = await writer.update('Volume', stale, (s) => {
      s.phase = 'Creating';
    });
    expect(written?.status).to.deep.include({ phase: 'Creating', capacityBytes: 7 });
    expect(writes()).to.equal(2);
  });

  it('bounds progress writes per object to one per interval; a final write always goes', async () => {
    const { clock, writer, latest, writes } = setup();
    for (let i = 1; i <= 20; i++) {
      await writer.update('Volume', latest(), (s) => void (s.capacityBytes = i), { progress: true });
      clock.advance(500);
    }
    expect(writes()).to.equal(2);
    await writer.update('Volume', latest(), (s) => void (s.phase = 'Available'));
    expect(writes()).to.equal(3);
  });

  it('setCondition moves lastTransitionTime only when the status changes', () => {
    const t1 = () => new Date('2026-01-01T00:00:00.123Z');
    const t2 = () => new Date('2026-01-02T00:00:00Z');
    const a = setCondition([], { type: 'Ready', status: 'False', reason: 'Creating' }, t1);
    expect(a[0].lastTransitionTime).to.equal('2026-01-01T00:00:00Z');
    const b = setCondition(a, { type: 'Ready', status: 'False', reason: 'StillCreating', message: 'x' }, t2);
    expect(b[0]).to.include({ reason: 'StillCreating', lastTransitionTime: '2026-01-01T00:00:00Z' });
    const c = setCondition(b, { type: 'Ready', status: 'True', reason: 'Provisioned' }, t2);
    expect(c[0].lastTransitionTime).to.equal('2026-01-02T00:00:00Z');
    expect(c).to.have.length(1);
  });

  it('mergePatch nulls removed keys and replaces arrays whole', () => {
    expect(mergePatch({ a: 1, b: { c: 1, d: 2 }, l: [1, 2] }, { b: { c: 1 }, l: [2], e: 'x' })).to.deep.equal({ a: null, b: { d: null }, l: [2], e: 'x' });
  });
});
