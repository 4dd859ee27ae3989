// The five kinds of trellis.dev/v1alpha1: names, scope, printer columns, schemas and CEL rules.
// This table is the single source of truth; `crd.ts` turns it into CRD objects and
// `validation.ts` into ajv validators.
import type { TSchema } from 'typebox';
import { BackendSpec, BackendStatus } from './backend.js';
import { BackupJobSpec, BackupJobStatus } from './backup-job.js';
import { RestoreJobSpec, RestoreJobStatus } from './restore-job.js';
import type { CelRule } from './schema.js';
import { VolumeSpec, VolumeStatus } from './volume.js';
import { VolumeGroupSnapshotSpec, VolumeGroupSnapshotStatus } from './volume-group-snapshot.js';

export const group = 'trellis.dev';
export const version = 'v1alpha1';
export const apiVersion = `${group}/${version}`;

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description: string;
  priority?: number;
}

export interface KindDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: 'Cluster' | 'Namespaced';
  description: string;
  spec: TSchema;
  status: TSchema;
  /** CEL rules, by JSON pointer of the schema node they sit on ('' is the spec itself). */
  rules: Record<string, CelRule[]>;
  columns: PrinterColumn[];
}

const age: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Time since creation.' };
const phase: PrinterColumn = { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Where the object is in its lifecycle.' };

/** Rules that appear on several kinds. */
const selectorRequirementRule: CelRule = {
  rule: "(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)",
  message: 'values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist',
};

export const kinds: KindDefinition[] = [
  {
    kind: 'Backend',
    plural: 'backends',
    singular: 'backend',
    shortNames: ['tbe'],
    scope: 'Cluster',
    description: 'A storage system Trellis drives: its driver, connection settings, credentials and how hard it may be driven.',
    spec: BackendSpec,
    status: BackendStatus,
    rules: {
      '/properties/limits': [
        {
          rule: '!has(self.minConcurrentOperations) || self.minConcurrentOperations <= (has(self.maxConcurrentOperations) ? self.maxConcurrentOperations : 10)',
          message: 'minConcurrentOperations must not exceed maxConcurrentOperations',
          fieldPath: '.minConcurrentOperations',
        },
      ],
    },
    columns: [
      { name: 'Driver', type: 'string', jsonPath: '.spec.driver', description: 'The storage driver.' },
      phase,
      { name: 'Volumes', type: 'integer', jsonPath: '.status.volumeCount', description: 'Volumes on this backend.' },
      { name: 'Capacity', type: 'integer', jsonPath: '.status.capacityBytes', description: 'Total capacity in bytes.', priority: 1 },
      { name: 'Used', type: 'integer', jsonPath: '.status.usedBytes', description: 'Used capacity in bytes.', priority: 1 },
      age,
    ],
  },
  {
    kind: 'Volume',
    plural: 'volumes',
    singular: 'volume',
    shortNames: ['tvol'],
    scope: 'Namespaced',
    description: 'A volume on a Backend, created empty or from a group snapshot member or a backup.',
    spec: VolumeSpec,
    status: VolumeStatus,
    rules: {
      '': [
        {
          rule: 'has(self.dataSource) == has(oldSelf.dataSource) && (!has(self.dataSource) || self.dataSource == oldSelf.dataSource)',
          message: 'dataSource is immutable',
          fieldPath: '.dataSource',
        },
      ],
      '/properties/backend': [{ rule: 'self == oldSelf', message: 'backend is immutable' }],
    },
    columns: [
      { name: 'Backend', type: 'string', jsonPath: '.spec.backend', description: 'The Backend.' },
      { name: 'Capacity', type: 'string', jsonPath: '.spec.capacity', description: 'Requested size.' },
      phase,
      { name: 'Handle', type: 'string', jsonPath: '.status.handle', description: "The backend's volume id.", priority: 1 },
      age,
    ],
  },
  {
    kind: 'VolumeGroupSnapshot',
    plural: 'volumegroupsnapshots',
    singular: 'volumegroupsnapshot',
    shortNames: ['tvgs'],
    scope: 'Namespaced',
    description: 'A crash-consistent snapshot of a set of Volumes in one namespace, chosen by a label selector or by name.',
    spec: VolumeGroupSnapshotSpec,
    status: VolumeGroupSnapshotStatus,
    rules: {
      '/properties/source': [
        { rule: 'has(self.selector) != has(self.volumes)', message: 'exactly one of source.selector or source.volumes must be set' },
      ],
      '/properties/source/properties/selector/properties/matchExpressions/items': [selectorRequirementRule],
    },
    columns: [
      phase,
      { name: 'Ready', type: 'boolean', jsonPath: '.status.readyToUse', description: 'Every member is ready to use.' },
      { name: 'Mode', type: 'string', jsonPath: '.status.mode', description: 'native or fan-out.' },
      { name: 'Skew', type: 'number', jsonPath: '.status.skewSeconds', description: 'Seconds between the first and last member cut.' },
      age,
    ],
  },
  {
    kind: 'BackupJob',
    plural: 'backupjobs',
    singular: 'backupjob',
    shortNames: ['tbj'],
    scope: 'Namespaced',
    description: 'A backup of a set of Volumes into a repository, with bounded parallelism and per-volume progress and errors.',
    spec: BackupJobSpec,
    status: BackupJobStatus,
    rules: {
      '/properties/source': [
        {
          rule: '(has(self.selector) ? 1 : 0) + (has(self.volumes) ? 1 : 0) + (has(self.volumeGroupSnapshotRef) ? 1 : 0) == 1',
          message: 'exactly one of source.selector, source.volumes or source.volumeGroupSnapshotRef must be set',
        },
      ],
      '/properties/source/properties/selector/properties/matchExpressions/items': [selectorRequirementRule],
      '': [{ rule: 'self == oldSelf', message: 'a BackupJob spec is immutable: create a new BackupJob instead' }],
    },
    columns: [
      phase,
      { name: 'Volumes', type: 'integer', jsonPath: '.status.progress.volumesTotal', description: 'Volumes in the job.' },
      { name: 'Completed', type: 'integer', jsonPath: '.status.progress.volumesCompleted', description: 'Volumes finished.' },
      { name: 'Failed', type: 'integer', jsonPath: '.status.progress.volumesFailed', description: 'Volumes failed.' },
      { name: 'Bytes', type: 'integer', jsonPath: '.status.progress.bytesDone', description: 'Bytes uploaded.', priority: 1 },
      age,
    ],
  },
  {
    kind: 'RestoreJob',
    plural: 'restorejobs',
    singular: 'restorejob',
    shortNames: ['trj'],
    scope: 'Namespaced',
    description: "Puts a BackupJob's data back into new Volumes and verifies it.",
    spec: RestoreJobSpec,
    status: RestoreJobStatus,
    rules: {
      '': [{ rule: 'self == oldSelf', message: 'a RestoreJob spec is immutable: create a new RestoreJob instead' }],
    },
    columns: [
      { name: 'Backup', type: 'string', jsonPath: '.spec.backupJobRef.name', description: 'The BackupJob restored from.' },
      { name: 'Backend', type: 'string', jsonPath: '.spec.target.backend', description: 'The target Backend.' },
      phase,
      { name: 'Completed', type: 'integer', jsonPath: '.status.progress.volumesCompleted', description: 'Volumes restored.' },
      { name: 'Failed', type: 'integer', jsonPath: '.status.progress.volumesFailed', description: 'Volumes failed.' },
      age,
    ],
  },
];

export function kindByName(kind: string): KindDefinition {
  const found = kinds.find((k) => k.kind === kind);
  if (!found) throw new Error(`unknown kind ${kind}`);
  return found;
}
