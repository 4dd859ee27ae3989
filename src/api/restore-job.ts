// RestoreJob: puts a BackupJob's data back into new Volumes and verifies it.
import { ObjectName, StringEnum, Type, type KubeObject, type Static } from './schema.js';
import { Progress, jobPhases, jobStatusFields, volumeJobPhases } from './backup-job.js';

export const RestoreJobSpec = Type.Object(
  {
    backupJobRef: Type.Object({ name: ObjectName('Name of the BackupJob in this namespace.') }, {
      additionalProperties: false,
      description: 'The backup to restore from.',
    }),
    volumes: Type.Optional(Type.Array(ObjectName('A volume name as recorded in the backup.'), { minItems: 1, description: 'Restore only these volumes of the backup; all when unset.' })),
    target: Type.Object(
      {
        backend: ObjectName('The Backend to create the new Volumes on.'),
        namePrefix: Type.String({ minLength: 1, maxLength: 200, pattern: '^[a-z0-9]([-a-z0-9]*)?$', description: 'New Volumes are named <namePrefix><source volume name>.' }),
      },
      { additionalProperties: false, description: 'Where the restored Volumes go.' },
    ),
    verify: Type.Optional(Type.Boolean({ default: true, description: 'Read each restored volume back and compare its checksum with the backup (default true).' })),
  },
  { additionalProperties: false, description: 'The desired state of a RestoreJob.' },
);
export type RestoreJobSpec = Static<typeof RestoreJobSpec>;

export const RestoreJobStatus = Type.Object(
  {
    phase: Type.Optional(StringEnum(jobPhases, { description: 'New, Snapshotting (unused), Uploading (writing data), Completed, PartiallyFailed or Failed.' })),
    progress: Type.Optional(Progress),
    volumes: Type.Optional(
      Type.Array(
        Type.Object(
          {
            volume: Type.String({ description: 'The source volume in the backup.' }),
            targetVolume: Type.Optional(Type.String({ description: 'The new Volume.' })),
            phase: StringEnum(volumeJobPhases, { description: 'Pending, Snapshotting (unused), Uploading (writing), Completed or Failed.' }),
            bytesTotal: Type.Optional(Type.Integer({ minimum: 0, description: 'Bytes to write.' })),
            bytesDone: Type.Optional(Type.Integer({ minimum: 0, description: 'Bytes written so far.' })),
            verified: Type.Optional(Type.Boolean({ description: 'The restored data matched the backup’s checksum.' })),
            error: Type.Optional(Type.String({ description: 'Why this volume failed, when it did.' })),
          },
          { additionalProperties: false, description: 'One volume of the restore.' },
        ),
        { description: 'Per-volume phase, bytes, verification and error.' },
      ),
    ),
    ...jobStatusFields,
  },
  { additionalProperties: false, description: 'The observed state of a RestoreJob.' },
);
export type RestoreJobStatus = Static<typeof RestoreJobStatus>;

export type RestoreJob = KubeObject<RestoreJobSpec, RestoreJobStatus>;
