// VolumeGroupSnapshot: a crash-consistent snapshot of a set of Volumes in one namespace.
import { Conditions, LabelSelector, ObjectName, ObservedGeneration, StringEnum, Timestamp, Type, type KubeObject, type Static } from './schema.js';
import { DeletionPolicy } from './volume.js';

export const groupSnapshotPhases = ['Pending', 'Snapshotting', 'Ready', 'Failed', 'Deleting'] as const;

export const VolumeGroupSnapshotSpec = Type.Object(
  {
    source: Type.Object(
      {
        selector: Type.Optional(LabelSelector),
        volumes: Type.Optional(
          Type.Array(ObjectName('A Volume name.'), { minItems: 1, maxItems: 1000, description: 'Volumes in this namespace, by name.' }),
        ),
      },
      { additionalProperties: false, description: 'The Volumes to snapshot: a label selector or a list of names, exactly one.' },
    ),
    deletionPolicy: DeletionPolicy('Delete removes the snapshots from the backends when this object is deleted; Retain keeps them.'),
  },
  { additionalProperties: false, description: 'The desired state of a VolumeGroupSnapshot.' },
);
export type VolumeGroupSnapshotSpec = Static<typeof VolumeGroupSnapshotSpec>;

export const GroupSnapshotMember = Type.Object(
  {
    volume: Type.String({ description: 'The Volume.' }),
    backend: Type.Optional(Type.String({ description: 'Its Backend.' })),
    snapshotHandle: Type.Optional(Type.String({ description: "The backend's identifier of this member's snapshot." })),
    cutTime: Type.Optional(Timestamp('When the backend cut this member’s snapshot.')),
    readyToUse: Type.Optional(Type.Boolean({ description: 'The member’s snapshot can be used as a data source.' })),
    sizeBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'Size of the member’s snapshot in bytes.' })),
    error: Type.Optional(Type.String({ description: 'Why this member failed, when it did.' })),
  },
  { additionalProperties: false, description: 'One Volume of the group and its snapshot.' },
);
export type GroupSnapshotMember = Static<typeof GroupSnapshotMember>;

export const VolumeGroupSnapshotStatus = Type.Object(
  {
    phase: Type.Optional(StringEnum(groupSnapshotPhases, { description: 'Pending, Snapshotting, Ready, Failed or Deleting.' })),
    readyToUse: Type.Optional(Type.Boolean({ description: 'Every member’s snapshot is ready.' })),
    creationTime: Type.Optional(Timestamp('When the group snapshot was cut (the first member’s cut).')),
    members: Type.Optional(Type.Array(GroupSnapshotMember, { description: 'One entry per selected Volume.' })),
    skewSeconds: Type.Optional(Type.Number({ minimum: 0, description: 'Last member cut minus first member cut, in seconds; 0 for a native consistency group.' })),
    mode: Type.Optional(StringEnum(['native', 'fan-out'] as const, {
      description: 'native: the backend cut all members at once; fan-out: Trellis cut them one by one under locks.',
    })),
    conditions: Type.Optional(Conditions),
    observedGeneration: Type.Optional(ObservedGeneration),
  },
  { additionalProperties: false, description: 'The observed state of a VolumeGroupSnapshot.' },
);
export type VolumeGroupSnapshotStatus = Static<typeof VolumeGroupSnapshotStatus>;

export type VolumeGroupSnapshot = KubeObject<VolumeGroupSnapshotSpec, VolumeGroupSnapshotStatus>;
