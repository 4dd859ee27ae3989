// BackupJob: a backup of a set of Volumes into a backup repository, with bounded parallelism.
import { Conditions, LabelSelector, ObjectName, StringEnum, Timestamp, Type, durationPattern, type KubeObject, type Static } from './schema.js';

export const jobPhases = ['New', 'Snapshotting', 'Uploading', 'Completed', 'PartiallyFailed', 'Failed'] as const;
export const volumeJobPhases = ['Pending', 'Snapshotting', 'Uploading', 'Completed', 'Failed'] as const;

export const Repository = Type.Object(
  {
    filesystem: Type.Object(
      {
        path: Type.String({ minLength: 1, pattern: '^/', description: 'An absolute path on the operator, usually an NFS or PVC mount.' }),
      },
      { additionalProperties: false, description: 'A repository on a filesystem path.' },
    ),
  },
  { additionalProperties: false, description: 'Where backup data goes. Only filesystem repositories exist today; object storage will be a sibling field.' },
);

/** Status fields every job kind shares, so BackupJob and RestoreJob read alike in kubectl. */
export const jobStatusFields = {
    startTime: Type.Optional(Timestamp('When the job started.')),
    completionTime: Type.Optional(Timestamp('When the job finished.')),
    errors: Type.Optional(Type.Integer({ minimum: 0, description: 'How many volumes failed.' })),
    conditions: Type.Optional(Conditions),
    observedGeneration: Type.Optional(Type.Integer({ minimum: 0, description: 'The metadata.generation the status was computed from.' })),
};

export const Progress = Type.Object(
  {
    volumesTotal: Type.Integer({ minimum: 0, description: 'Volumes in the job.' }),
    volumesCompleted: Type.Integer({ minimum: 0, description: 'Volumes finished.' }),
    volumesFailed: Type.Integer({ minimum: 0, description: 'Volumes that failed.' }),
    bytesTotal: Type.Integer({ minimum: 0, description: 'Bytes to move, as far as known.' }),
    bytesDone: Type.Integer({ minimum: 0, description: 'Bytes moved so far.' }),
  },
  { additionalProperties: false, description: 'How far the job has come.' },
);
export type Progress = Static<typeof Progress>;

export const BackupJobSpec = Type.Object(
  {
    source: Type.Object(
      {
        selector: Type.Optional(LabelSelector),
        volumes: Type.Optional(Type.Array(ObjectName('A Volume name.'), { minItems: 1, maxItems: 10000, description: 'Volumes in this namespace, by name.' })),
        volumeGroupSnapshotRef: Type.Optional(
          Type.Object({ name: ObjectName('Name of the VolumeGroupSnapshot.') }, {
            additionalProperties: false,
            description: 'Back up the members of an existing VolumeGroupSnapshot in this namespace.',
          }),
        ),
      },
      { additionalProperties: false, description: 'What to back up: a selector, a list of Volumes, or a VolumeGroupSnapshot, exactly one.' },
    ),
    repository: Repository,
    parallelism: Type.Optional(Type.Integer({ minimum: 1, maximum: 256, default: 4, description: 'At most this many volumes are uploaded at once (default 4); each backend’s own limits apply as well.' })),
    ttl: Type.Optional(Type.String({ pattern: durationPattern, description: 'Delete the job and its backup data this long after it completes, e.g. 720h or 30d.' })),
  },
  { additionalProperties: false, description: 'The desired state of a BackupJob.' },
);
export type BackupJobSpec = Static<typeof BackupJobSpec>;

export const BackupVolumeStatus = Type.Object(
  {
    volume: Type.String({ description: 'The Volume.' }),
    backend: Type.Optional(Type.String({ description: 'Its Backend.' })),
    phase: StringEnum(volumeJobPhases, { description: 'Pending, Snapshotting, Uploading, Completed or Failed.' }),
    bytesTotal: Type.Optional(Type.Integer({ minimum: 0, description: 'Bytes to upload.' })),
    bytesDone: Type.Optional(Type.Integer({ minimum: 0, description: 'Bytes uploaded so far.' })),
    snapshotHandle: Type.Optional(Type.String({ description: 'The snapshot the data was read from.' })),
    error: Type.Optional(Type.String({ description: 'Why this volume failed, when it did.' })),
  },
  { additionalProperties: false, description: 'One volume of the job.' },
);

export const BackupJobStatus = Type.Object(
  {
    phase: Type.Optional(StringEnum(jobPhases, { description: 'New, Snapshotting, Uploading, Completed, PartiallyFailed or Failed.' })),
    progress: Type.Optional(Progress),
    volumes: Type.Optional(Type.Array(BackupVolumeStatus, { description: 'Per-volume phase, bytes and error.' })),
    ...jobStatusFields,
  },
  { additionalProperties: false, description: 'The observed state of a BackupJob.' },
);
export type BackupJobStatus = Static<typeof BackupJobStatus>;

export type BackupJob = KubeObject<BackupJobSpec, BackupJobStatus>;
