// Backend: a storage system Trellis drives (cluster-scoped).
import { Conditions, ObjectName, ObservedGeneration, StringEnum, Timestamp, Type, type KubeObject, type Static } from './schema.js';

export const drivers = ['sim', 'hostpath', 'csi'] as const;
export const backendPhases = ['Pending', 'Online', 'Degraded', 'Offline', 'Deleting'] as const;

export const BackendSpec = Type.Object(
  {
    driver: StringEnum(drivers, {
      description: 'The driver that speaks to this storage system: sim (a simulated array), hostpath (directories on the operator), csi (any CSI controller plugin).',
    }),
    config: Type.Optional(
      Type.Unsafe<Record<string, unknown>>({
        type: 'object',
        'x-kubernetes-preserve-unknown-fields': true,
        description: "Driver-specific connection settings, checked against the driver's own schema when the Backend is reconciled; an unknown or bad option is named in the Ready condition.",
      }),
    ),
    credentialsSecretRef: Type.Optional(
      Type.Object(
        {
          namespace: Type.String({ minLength: 1, maxLength: 63, description: 'Namespace of the Secret.' }),
          name: ObjectName('Name of the Secret.'),
        },
        { additionalProperties: false, description: 'A Secret holding the credentials for the storage system.' },
      ),
    ),
    limits: Type.Optional(
      Type.Object(
        {
          maxConcurrentOperations: Type.Optional(Type.Integer({
            minimum: 1,
            maximum: 1000,
            default: 10,
            description: 'At most this many storage operations run on this backend at once (default 10).',
          })),
          adaptive: Type.Optional(
            Type.Boolean({
              default: false,
              description:
                'Learn how many operations the storage system takes at once: the limit grows while operations succeed at steady latency and is cut when the storage answers busy or slows down, between minConcurrentOperations and maxConcurrentOperations (default false: a fixed maxConcurrentOperations).',
            }),
          ),
          minConcurrentOperations: Type.Optional(
            Type.Integer({ minimum: 1, maximum: 1000, description: 'The floor of the adaptive limit (default 1); at most maxConcurrentOperations.' }),
          ),
          operationsPerSecond: Type.Optional(
            Type.Integer({ minimum: 1, maximum: 100000, description: 'At most this many storage operations start per second; unset means no rate limit.' }),
          ),
        },
        { additionalProperties: false, description: 'How hard Trellis may drive this storage system.' },
      ),
    ),
  },
  { additionalProperties: false, description: 'The desired state of a Backend.' },
);
export type BackendSpec = Static<typeof BackendSpec>;

export const BackendStatus = Type.Object(
  {
    phase: Type.Optional(StringEnum(backendPhases, { description: 'Pending, Online, Degraded, Offline or Deleting.' })),
    conditions: Type.Optional(Conditions),
    capacityBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'Total capacity the storage system reports, in bytes.' })),
    usedBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'Capacity in use, in bytes.' })),
    volumeCount: Type.Optional(Type.Integer({ minimum: 0, description: 'Volumes Trellis manages on this backend.' })),
    capabilities: Type.Optional(
      Type.Object(
        {
          nativeGroupSnapshots: Type.Boolean({ description: 'The storage system cuts a consistent snapshot of many volumes at once (a consistency group).' }),
          snapshotData: Type.Optional(Type.Boolean({ description: 'Snapshot data can be read, so volumes on this backend can be backed up.' })),
          volumeData: Type.Optional(Type.Boolean({ description: 'Volume data can be written, so backups can be restored onto this backend.' })),
          resize: Type.Optional(Type.Boolean({ description: 'Volumes can be expanded.' })),
          topology: Type.Optional(
            Type.Boolean({ description: 'The storage system places volumes by topology (CSI VOLUME_ACCESSIBILITY_CONSTRAINTS); set accessibilityRequirements in the csi driver config to choose where.' }),
          ),
        },
        { additionalProperties: false, description: 'What the storage system can do, discovered by probing it; never set by the user.' },
      ),
    ),
    observedGeneration: Type.Optional(ObservedGeneration),
    lastProbeTime: Type.Optional(Timestamp('When the storage system was last probed.')),
  },
  { additionalProperties: false, description: 'The observed state of a Backend.' },
);
export type BackendStatus = Static<typeof BackendStatus>;

export type Backend = KubeObject<BackendSpec, BackendStatus>;
