import { expect } from 'chai';
import { HierarchyPath } from '../../src/core/path.js';
import { backendOfKey, keyOf, refOfKey, volumePath } from '../../src/runtime/keys.js';

describe('runtime/keys: one queue key per object, and back', () => {
  it('gives each kind its DESIGN key and names the object back from it', () => {
    const cases = [
      { kind: 'Backend', object: { metadata: { name: 'array-a' } }, key: 'backends/array-a' },
      { kind: 'Volume', object: { metadata: { name: 'db.0', namespace: 'team-a' }, spec: { backend: 'array-a' } }, key: 'backends/array-a/volumes/team-a.db.0' },
      { kind: 'VolumeGroupSnapshot', object: { metadata: { name: 'g', namespace: 'team-a' } }, key: 'groups/team-a.g' },
      { kind: 'BackupJob', object: { metadata: { name: 'nightly', namespace: 'team-a' } }, key: 'jobs/backup/team-a.nightly' },
      { kind: 'RestoreJob', object: { metadata: { name: 'r', namespace: 'team-a' } }, key: 'jobs/restore/team-a.r' },
    ] as const;
    for (const { kind, object, key } of cases) {
      expect(keyOf(kind, object)).to.equal(key);
      expect(refOfKey(key)).to.deep.equal({ kind, name: object.metadata.name, ...('namespace' in object.metadata ? { namespace: object.metadata.namespace } : {}) });
    }
  });

  it('puts a volume below its backend, so a write on the backend excludes it', () => {
    const backend = HierarchyPath.parse(keyOf('Backend', { metadata: { name: 'a' } }));
    expect(backend.isAncestorOf(volumePath('a', 'ns', 'v'))).to.equal(true);
    expect(backend.isAncestorOf(volumePath('ab', 'ns', 'v'))).to.equal(false);
    expect(backendOfKey('backends/a/volumes/ns.v')).to.equal('a');
  });

  it('refuses what cannot be keyed, and names no object for other paths', () => {
    expect(() => keyOf('Volume', { metadata: { name: 'v', namespace: 'ns' }, spec: {} })).to.throw(/spec.backend/);
    expect(() => volumePath('a', 'bad.ns', 'v')).to.throw(/dot/);
    expect(refOfKey('backends/a/volumes/ns.v/snapshots/s')).to.equal(undefined);
    expect(refOfKey('groups/nodot')).to.equal(undefined);
  });
});
