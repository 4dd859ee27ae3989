import { expect } from 'chai';
import type { Volume } from '../../src/api/volume.js';
import type { VolumeGroupSnapshot } from '../../src/api/volume-group-snapshot.js';
import { Cache, Index } from '../../src/runtime/cache.js';
import { Store, type StoreChange } from '../../src/runtime/store.js';
import { selectorMatches } from '../../src/runtime/selector.js';

const volume = (name: string, backend: string, labels: Record<string, string> = {}, rv = '1', namespace = 'ns'): Volume => ({
  apiVersion: 'trellis.dev/v1alpha1',
  kind: 'Volume',
  metadata: { name, namespace, labels, resourceVersion: rv },
  spec: { backend, capacity: '1Gi' },
});

describe('runtime/store and cache: indexes that map an event to exactly the objects it affects', () => {
  it('an update with a resourceVersion already held changes nothing and notifies nobody', () => {
    const store = new Store<Volume>();
    const changes: StoreChange<Volume>[] = [];
    store.subscribe((c) => changes.push(c));
    store.upsert(volume('v', 'a'));
    store.upsert(volume('v', 'a'));
    store.replace([volume('v', 'a')]);
    expect(changes.map((c) => c.type)).to.deep.equal(['added']);
  });

  it('keeps indexes exact through updates, deletes and a namespace-scoped relist', () => {
    const cache = new Cache();
    const volumes = cache.store('Volume');
    volumes.upsert(volume('v1', 'a', { app: 'db' }));
    volumes.upsert(volume('v2', 'a', { app: 'web' }));
    volumes.upsert(volume('x1', 'b', {}, '1', 'other'));
    expect(cache.volumesOnBackend('a').map((v) => v.metadata.name).sort()).to.deep.equal(['v1', 'v2']);
    volumes.upsert(volume('v2', 'a', { app: 'db' }, '2'));
    expect(volumes.byIndex(Index.label, 'app=db').map((v) => v.metadata.name).sort()).to.deep.equal(['v1', 'v2']);
    expect(volumes.byIndex(Index.label, 'app=web')).to.deep.equal([]);
    // A relist of namespace `ns` that lacks v1 deletes it, and leaves `other` alone.
    volumes.replace([volume('v2', 'a', { app: 'db' }, '2')], 'ns');
    expect(volumes.list().map((v) => v.metadata.name).sort()).to.deep.equal(['v2', 'x1']);
    expect(cache.volumesOnBackend('a').map((v) => v.metadata.name)).to.deep.equal(['v2']);
  });

  it('finds the groups a volume is in: by name, by selector, and per status members', () => {
    const cache = new Cache();
    const group = (name: string, source: VolumeGroupSnapshot['spec']['source'], members: string[] = []): VolumeGroupSnapshot => ({
      apiVersion: 'trellis.dev/v1alpha1',
      kind: 'VolumeGroupSnapshot',
      metadata: { name, namespace: 'ns', resourceVersion: '1' },
      spec: { source },
      status: { members: members.map((m) => ({ volume: m })) },
    });
    const groups = cache.store('VolumeGroupSnapshot');
    groups.upsert(group('by-name', { volumes: ['v1'] }));
    groups.upsert(group('by-label', { selector: { matchLabels: { app: 'db' } } }));
    groups.upsert(group('was-member', { selector: { matchLabels: { app: 'gone' } } }, ['v1']));
    groups.upsert(group('unrelated', { volumes: ['v9'] }));
    const names = (v: Volume) => cache.groupsSelecting(v).map((g) => g.metadata.name).sort();
    expect(names(volume('v1', 'a', { app: 'db' }))).to.deep.equal(['by-label', 'by-name', 'was-member']);
    expect(names(volume('v2', 'a', { app: 'web' }))).to.deep.equal([]);
    expect(cache.volumesSelectedBy('ns', { matchLabels: { app: 'db' } })).to.deep.equal([]);
  });

  it('evaluates selectors as the API server does', () => {
    expect(selectorMatches({}, { a: '1' })).to.equal(true);
    expect(selectorMatches({ matchExpressions: [{ key: 'a', operator: 'In', values: ['1', '2'] }] }, { a: '2' })).to.equal(true);
    expect(selectorMatches({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, {})).to.equal(true);
    expect(selectorMatches({ matchExpressions: [{ key: 'a', operator: 'Exists' }] }, {})).to.equal(false);
    expect(selectorMatches({ matchLabels: { a: '1' }, matchExpressions: [{ key: 'b', operator: 'DoesNotExist' }] }, { a: '1', b: 'x' })).to.equal(false);
  });
});

describe('runtime/store: answers to writes', () => {
  it('a write answer never puts an older version back over a newer one from the watch', () => {
    const store = new Store<Volume>();
    store.upsert(volume('v', 'a', {}, '5'));
    // Our write went from 5 to 6, but the watch already brought 7 (someone else's change).
    store.upsert(volume('v', 'a', { by: 'someone' }, '7'));
    store.upsertWritten(volume('v', 'a', {}, '6'), '5');
    expect(store.get('ns', 'v')!.metadata.resourceVersion).to.equal('7');
    store.upsertWritten(volume('v', 'a', {}, '8'), '7');
    expect(store.get('ns', 'v')!.metadata.resourceVersion).to.equal('8');
  });
});
