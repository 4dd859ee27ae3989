import { expect } from 'chai';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Validator, formatErrors } from '../../src/api/index.js';

const validator = new Validator();
const examplesDir = join(import.meta.dirname, '..', '..', 'examples');

const volume = { backend: 'array-a', capacity: '10Gi' };
const vgs = { source: { selector: { matchLabels: { app: 'shop' } } } };
const backup = { source: { volumes: ['db-0'] }, repository: { filesystem: { path: '/backups' } } };
const restore = { backupJobRef: { name: 'b' }, target: { backend: 'array-a', namePrefix: 'r-' } };

/** Each row: a spec that must be refused, and the field the error must name. */
const badSpecs: { name: string; kind: string; spec: unknown; field: string }[] = [
  { name: 'unknown driver', kind: 'Backend', spec: { driver: 'nfs' }, field: 'spec.driver' },
  { name: 'missing driver', kind: 'Backend', spec: {}, field: 'spec.driver' },
  { name: 'maxConcurrentOperations 0', kind: 'Backend', spec: { driver: 'sim', limits: { maxConcurrentOperations: 0 } }, field: 'spec.limits.maxConcurrentOperations' },
  { name: 'maxConcurrentOperations above 1000', kind: 'Backend', spec: { driver: 'sim', limits: { maxConcurrentOperations: 1001 } }, field: 'spec.limits.maxConcurrentOperations' },
  { name: 'unknown field in limits', kind: 'Backend', spec: { driver: 'sim', limits: { burst: 3 } }, field: 'spec.limits.burst' },
  { name: 'adaptive floor above the ceiling', kind: 'Backend', spec: { driver: 'sim', limits: { adaptive: true, minConcurrentOperations: 20, maxConcurrentOperations: 8 } }, field: 'spec.limits' },
  { name: 'adaptive not a boolean', kind: 'Backend', spec: { driver: 'sim', limits: { adaptive: 'auto' } }, field: 'spec.limits.adaptive' },
  { name: 'secret ref without name', kind: 'Backend', spec: { driver: 'csi', credentialsSecretRef: { namespace: 'x' } }, field: 'spec.credentialsSecretRef.name' },
  { name: 'negative capacity', kind: 'Volume', spec: { ...volume, capacity: '-1Gi' }, field: 'spec.capacity' },
  { name: 'zero capacity (string)', kind: 'Volume', spec: { ...volume, capacity: '0Gi' }, field: 'spec.capacity' },
  { name: 'zero capacity (integer)', kind: 'Volume', spec: { ...volume, capacity: 0 }, field: 'spec.capacity' },
  { name: 'quantity with trailing junk', kind: 'Volume', spec: { ...volume, capacity: '10Gix' }, field: 'spec.capacity' },
  { name: 'milli-bytes', kind: 'Volume', spec: { ...volume, capacity: '500m' }, field: 'spec.capacity' },
  { name: 'missing backend', kind: 'Volume', spec: { capacity: '1Gi' }, field: 'spec.backend' },
  { name: 'backend name with capitals', kind: 'Volume', spec: { ...volume, backend: 'Array-A' }, field: 'spec.backend' },
  { name: 'bad deletionPolicy', kind: 'Volume', spec: { ...volume, deletionPolicy: 'Recycle' }, field: 'spec.deletionPolicy' },
  { name: 'unknown spec field', kind: 'Volume', spec: { ...volume, size: '1Gi' }, field: 'spec.size' },
  { name: 'dataSource of unknown kind', kind: 'Volume', spec: { ...volume, dataSource: { kind: 'Snapshot', name: 's', volume: 'v' } }, field: 'spec.dataSource.kind' },
  { name: 'both selector and volumes', kind: 'VolumeGroupSnapshot', spec: { source: { selector: {}, volumes: ['a'] } }, field: 'spec.source' },
  { name: 'neither selector nor volumes', kind: 'VolumeGroupSnapshot', spec: { source: {} }, field: 'spec.source' },
  { name: 'empty volume list', kind: 'VolumeGroupSnapshot', spec: { source: { volumes: [] } }, field: 'spec.source.volumes' },
  { name: 'In without values', kind: 'VolumeGroupSnapshot', spec: { source: { selector: { matchExpressions: [{ key: 'app', operator: 'In' }] } } }, field: 'spec.source.selector.matchExpressions[0]' },
  { name: 'bad selector operator', kind: 'VolumeGroupSnapshot', spec: { source: { selector: { matchExpressions: [{ key: 'app', operator: 'Like', values: ['x'] }] } } }, field: 'spec.source.selector.matchExpressions[0].operator' },
  { name: 'parallelism 0', kind: 'BackupJob', spec: { ...backup, parallelism: 0 }, field: 'spec.parallelism' },
  { name: 'parallelism 257', kind: 'BackupJob', spec: { ...backup, parallelism: 257 }, field: 'spec.parallelism' },
  { name: 'two sources', kind: 'BackupJob', spec: { ...backup, source: { volumes: ['a'], volumeGroupSnapshotRef: { name: 'g' } } }, field: 'spec.source' },
  { name: 'relative repository path', kind: 'BackupJob', spec: { ...backup, repository: { filesystem: { path: 'backups' } } }, field: 'spec.repository.filesystem.path' },
  { name: 'unknown repository type', kind: 'BackupJob', spec: { ...backup, repository: { s3: { bucket: 'b' } } }, field: 'spec.repository.s3' },
  { name: 'ttl that is not a duration', kind: 'BackupJob', spec: { ...backup, ttl: 'forever' }, field: 'spec.ttl' },
  { name: 'restore without target', kind: 'RestoreJob', spec: { backupJobRef: { name: 'b' } }, field: 'spec.target' },
  { name: 'verify as a string', kind: 'RestoreJob', spec: { ...restore, verify: 'yes' }, field: 'spec.verify' },
  { name: 'name prefix with a dot', kind: 'RestoreJob', spec: { ...restore, target: { backend: 'array-a', namePrefix: 'r.' } }, field: 'spec.target.namePrefix' },
];

describe('API validation', () => {
  it('accepts every example under examples/', async () => {
    const files = (await readdir(examplesDir)).filter((f) => f.endsWith('.yaml'));
    let checked = 0;
    for (const file of files) {
      for (const doc of parseAllDocuments(await readFile(join(examplesDir, file), 'utf8'))) {
        const object = doc.toJS() as { apiVersion: string; kind: string; spec: unknown };
        if (object.apiVersion !== 'trellis.dev/v1alpha1') continue;
        const result = validator.validate(object);
        expect(result.errors, `${file} ${object.kind}: ${formatErrors(result.errors)}`).to.deep.equal([]);
        checked++;
      }
    }
    expect(checked).to.be.at.least(5);
  });

  it('accepts the good twins of the bad specs (so each rejection below is about its field)', () => {
    for (const [kind, spec] of [['Volume', volume], ['VolumeGroupSnapshot', vgs], ['BackupJob', backup], ['RestoreJob', restore], ['Volume', { ...volume, capacity: 1 }], ['Volume', { ...volume, capacity: '0.5Gi' }]] as const) {
      expect(validator.validate({ kind, spec }).errors, kind).to.deep.equal([]);
    }
  });

  for (const row of badSpecs) {
    it(`rejects ${row.name}, naming ${row.field}`, () => {
      const result = validator.validate({ kind: row.kind, spec: row.spec });
      expect(result.valid).to.equal(false);
      expect(result.errors.map((e) => e.field), formatErrors(result.errors)).to.include(row.field);
    });
  }

  it('has at least 20 bad specs in its table', () => {
    expect(badSpecs.length).to.be.at.least(20);
  });

  it('validates status too, so a controller cannot write a phase the CRD would refuse', () => {
    const result = validator.validate({ kind: 'Volume', spec: volume, status: { phase: 'Ready' } });
    expect(result.errors.map((e) => e.field)).to.deep.equal(['status.phase']);
  });
});
