// Volume: a volume on a Backend (namespaced).
import { Conditions, ObjectName, ObservedGeneration, PositiveQuantity, StringEnum, Type, type KubeObject, type Static } from './schema.js';

export const volumePhases = ['Pending', 'Creating', 'Available', 'Resizing', 'Deleting', 'Failed'] as const;
export const deletionPolicies = ['Delete', 'Retain'] as const;

/** Optional Delete | Retain, defaulted to Delete by the API server. */
export function DeletionPolicy(description: string) {
  return Type.Optional(StringEnum(deletionPolicies, { default: 'Delete', description }));
}

export const VolumeSpec = Type.Object(
  {
    backend: ObjectName('The Backend the volume lives on. Immutable.'),
    capacity: PositiveQuantity('Size of the volume: bytes as an integer, or a quantity such as 10Gi. Must be above zero; it can grow, never shrink.'),
    dataSource: Type.Optional(
      Type.Object(
        {
          kind: StringEnum(['VolumeGroupSnapshot', 'BackupJob'] as const, {
            description: 'Where the data comes from: a member of a VolumeGroupSnapshot (a clone) or a volume in a BackupJob (a restore).',
          }),
          name: ObjectName('Name of the VolumeGroupSnapshot or BackupJob, in the Volume’s namespace.'),
          volume: ObjectName('The source volume within it.'),
        },
        { additionalProperties: false, description: 'Create the volume with data from a snapshot or a backup. Immutable.' },
      ),
    ),
    deletionPolicy: DeletionPolicy('Delete removes the storage when the Volume is deleted; Retain keeps it on the backend.'),
  },
  { additionalProperties: false, description: 'The desired state of a Volume.' },
);
export type VolumeSpec = Static<typeof VolumeSpec>;

export const VolumeStatus = Type.Object(
  {
    phase: Type.Optional(StringEnum(volumePhases, { description: 'Pending, Creating, Available, Resizing, Deleting or Failed.' })),
    handle: Type.Optional(Type.String({ description: "The backend's identifier of the volume." })),
    capacityBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'The provisioned size in bytes.' })),
    conditions: Type.Optional(Conditions),
    observedGeneration: Type.Optional(ObservedGeneration),
  },
  { additionalProperties: false, description: 'The observed state of a Volume.' },
);
export type VolumeStatus = Static<typeof VolumeStatus>;

export type Volume = KubeObject<VolumeSpec, VolumeStatus>;
