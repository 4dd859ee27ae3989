// The simulated array's objects: what it keeps for a volume, a snapshot and a group snapshot,
// the arguments of a volume create, and the one error type every array operation fails with
// (its code is what the HTTP API and the CSI server translate).

export type SimErrorCode =
  | 'busy'
  | 'pending'
  | 'unavailable'
  | 'invalid'
  | 'outOfRange'
  | 'unsupported'
  | 'notFound'
  | 'noSpace'
  | 'alreadyExists'
  | 'inUse'
  | 'hostLimit';

export class SimError extends Error {
  override readonly name = 'SimError';
  constructor(
    readonly code: SimErrorCode,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** What a volume or snapshot holds: seeded bytes, or bytes written into it (a blob by SHA-256). */
export type Content = { kind: 'seeded'; seed: number; bytes: number } | { kind: 'blob'; sha256: string; bytes: number };

export interface VolumeRecord {
  id: string;
  name: string;
  capacityBytes: number;
  params: Record<string, string>;
  /** Tunables that may change after creation (CSI mutable parameters): iops, throughput. */
  mutableParams?: Record<string, string>;
  sourceSnapshotId?: string;
  sourceVolumeId?: string;
  content: Content;
  createdAt: string;
  /** Host -> mapping; a mapped volume cannot be deleted. */
  publishedTo?: Record<string, { readonly: boolean }>;
  /** Set while the volume is abnormal (a failed disk, say): what its condition says. Absent means healthy. */
  abnormal?: string;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  volumeId: string;
  sizeBytes: number;
  content: Content;
  createdAt: string;
  groupId?: string;
}

export interface GroupRecord {
  id: string;
  name: string;
  volumeIds: string[];
  snapshotIds: string[];
  createdAt: string;
}

export interface CreateVolumeSpec {
  name: string;
  capacityBytes: number;
  params?: Record<string, string>;
  mutableParams?: Record<string, string>;
  sourceSnapshotId?: string;
  sourceVolumeId?: string;
  /**
   * An existing volume of this name matches when its size lies in [minBytes, maxBytes]
   * (CSI capacity ranges); without them only the exact size matches.
   */
  minBytes?: number;
  maxBytes?: number;
}

/** The volume tunables the array lets a client change after creation. */
export const mutableParamKeys = ['iops', 'throughput'] as const;

/** Throws `invalid` unless every key is a known tunable with a whole-number value. */
export function checkMutableParams(params: Record<string, string>): void {
  for (const [key, value] of Object.entries(params)) {
    if (!(mutableParamKeys as readonly string[]).includes(key)) {
      throw new SimError('invalid', `unsupported mutable parameter "${key}" (supported: ${mutableParamKeys.join(', ')})`);
    }
    if (!/^\d+$/.test(value)) throw new SimError('invalid', `mutable parameter "${key}" must be a whole number, got "${value}"`);
  }
}
