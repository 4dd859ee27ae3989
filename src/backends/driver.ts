// The StorageDriver contract every backend implements. Guarantees a caller can rely on:
// - Creates are idempotent by `name` (derived by the caller from the owning object's UID):
//   the same name with the same parameters returns the existing object, the same name with
//   other parameters fails with a terminal `alreadyExists` error; a retry or an operator
//   restart never creates a duplicate.
// - Deletes of an object that is already gone succeed.
// - Every call takes an AbortSignal; once it fires the call rejects with the signal's reason
//   and starts no further backend requests.
// - Failures are DriverErrors (see errors.ts): retryable or terminal, with the backend's
//   own message.
// - A call that rejects because its signal fired has stopped waiting, not necessarily
//   stopped the backend: an array may finish a job it had accepted. Creates and deletes
//   being idempotent, the next reconcile converges either way.
// - A stream from readSnapshot holds backend resources (on an array, one of its operation
//   slots) until it ends or is destroyed. A caller that bounds concurrency must count the
//   stream, not just the call that opened it: `openHeld` keeps a slot until the stream closes.
import type { Readable } from 'node:stream';
import type { Clock } from '../core/clock.js';
import { abortReason } from './errors.js';

/** What a driver takes besides its config: the one Clock the core runs on (default realClock). */
export interface DriverOptions {
  clock?: Clock;
}

export interface DriverCapabilities {
  /** The backend cuts one crash-consistent snapshot of many volumes at once. */
  nativeGroupSnapshot: boolean;
  /** readSnapshot works (volumes can be backed up). */
  snapshotData: boolean;
  /** writeVolume works (backups can be restored). */
  volumeData: boolean;
  /** resizeVolume can grow a volume. */
  resize: boolean;
  /**
   * Volumes are accessible from some nodes only (CSI VOLUME_ACCESSIBILITY_CONSTRAINTS): a
   * volume's `accessibleTopology` says from where.
   */
  topology: boolean;
}

/** A topology segment, e.g. {"topology.kubernetes.io/zone": "z1"}. */
export type TopologySegment = Record<string, string>;

/** The condition a backend reports for a volume (CSI VOLUME_CONDITION). */
export interface VolumeCondition {
  /** The volume is not available for use or not operating optimally. */
  abnormal: boolean;
  /** The backend's own words. */
  message: string;
}

export interface ProbeResult {
  healthy: boolean;
  capacityBytes: number;
  usedBytes: number;
  capabilities: DriverCapabilities;
  /** Why the backend is unhealthy, in its own words. */
  message?: string;
}

export interface VolumeInfo {
  handle: string;
  name: string;
  capacityBytes: number;
  /** The parameters as the backend reports them (for CSI, the volume context), not as sent. */
  params: Record<string, string>;
  /** The snapshot this volume was created from, if any. */
  sourceSnapshot?: string;
  /** Bytes of data last written (or seeded) into the volume; what a snapshot of it reads. */
  dataBytes?: number;
  /** The condition the backend reports, where it reports one; abnormal ones deserve a Volume condition. */
  condition?: VolumeCondition;
  /** Where the volume can be reached from, where the backend has topology. */
  accessibleTopology?: TopologySegment[];
}

export interface SnapshotInfo {
  handle: string;
  name: string;
  sourceVolume: string;
  sizeBytes: number;
  readyToUse: boolean;
  createdAt: string;
  /** The native group snapshot this snapshot is a member of. */
  groupHandle?: string;
}

export interface GroupSnapshotInfo {
  handle: string;
  name: string;
  /** One member per requested volume, in the order the volumes were given. */
  snapshots: SnapshotInfo[];
  /** True when the backend cut all members at one instant; false for a fan-out. */
  native: boolean;
  createdAt: string;
}

export interface CreateVolumeRequest {
  /** Idempotency key. */
  name: string;
  capacityBytes: number;
  params?: Record<string, string>;
  /** Create the volume from this snapshot's content. */
  sourceSnapshot?: string;
}

export interface CreateSnapshotRequest {
  /** Idempotency key. */
  name: string;
  sourceVolume: string;
}

export interface StorageDriver {
  readonly kind: string;
  probe(signal: AbortSignal): Promise<ProbeResult>;

  createVolume(req: CreateVolumeRequest, signal: AbortSignal): Promise<VolumeInfo>;
  deleteVolume(handle: string, signal: AbortSignal): Promise<void>;
  /** Grows a volume; shrinking is a terminal `invalid` error. Returns the new size. */
  resizeVolume(handle: string, capacityBytes: number, signal: AbortSignal): Promise<VolumeInfo>;
  /** Terminal `notFound` when the volume does not exist. */
  getVolume(handle: string, signal: AbortSignal): Promise<VolumeInfo>;
  listVolumes(signal: AbortSignal): Promise<VolumeInfo[]>;

  createSnapshot(req: CreateSnapshotRequest, signal: AbortSignal): Promise<SnapshotInfo>;
  deleteSnapshot(handle: string, signal: AbortSignal): Promise<void>;
  getSnapshot(handle: string, signal: AbortSignal): Promise<SnapshotInfo>;
  listSnapshots(signal: AbortSignal): Promise<SnapshotInfo[]>;

  /**
   * Cuts one native, crash-consistent snapshot of all `volumeHandles`. Resolves `undefined`
   * when the backend has no native group snapshots: the caller then fans out (see
   * snapshotGroup) under its own locks.
   */
  createGroupSnapshot(name: string, volumeHandles: string[], signal: AbortSignal): Promise<GroupSnapshotInfo | undefined>;
  /** Deletes a native group snapshot and its members; gone already is success. */
  deleteGroupSnapshot(handle: string, signal: AbortSignal): Promise<void>;

  /**
   * The snapshot's data; terminal `invalid` where the backend cannot expose data. The backend
   * may count the transfer against its limits until the stream closes (see `openHeld`).
   */
  readSnapshot(handle: string, signal: AbortSignal): Promise<Readable>;
  /** Replaces the volume's data with `data`; resolves with the bytes written. */
  writeVolume(handle: string, data: Readable, signal: AbortSignal): Promise<{ bytes: number }>;

  /** Releases connections and timers; the driver is unusable afterwards. */
  close(): Promise<void>;
}

/** True when two parameter maps hold the same keys and values. */
export function sameParams(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

/** The snapshot name used for one volume of a fanned-out group snapshot `name`. */
export function groupMemberName(name: string, volumeHandle: string): string {
  return `${name}.${volumeHandle}`;
}

/**
 * A group snapshot of `volumeHandles`: native when the driver has it, else one snapshot per
 * volume, taken in the order given (the caller sorts and locks). A fan-out is only
 * crash-consistent if the caller has quiesced writes to the group.
 */
export async function snapshotGroup(
  driver: StorageDriver,
  name: string,
  volumeHandles: string[],
  signal: AbortSignal,
): Promise<GroupSnapshotInfo> {
  const native = await driver.createGroupSnapshot(name, volumeHandles, signal);
  if (native) return native;
  const snapshots: SnapshotInfo[] = [];
  for (const handle of volumeHandles) {
    snapshots.push(await driver.createSnapshot({ name: groupMemberName(name, handle), sourceVolume: handle }, signal));
  }
  return { handle: name, name, snapshots, native: false, createdAt: snapshots[0]?.createdAt ?? new Date().toISOString() };
}

/**
 * Opens a stream inside `run` (a limiter slot, say) and keeps `run` from finishing until the
 * stream has closed, so the slot covers the transfer the backend still counts. Rejects when
 * `run` or `open` does; a stream's own error leaves the slot once it closes.
 */
export function openHeld<S extends Readable>(run: (fn: () => Promise<void>) => Promise<void>, open: () => Promise<S>): Promise<S> {
  return new Promise<S>((resolve, reject) => {
    run(async () => {
      const stream = await open();
      resolve(stream);
      if (!stream.closed) await new Promise<void>((done) => stream.once('close', () => done()));
    }).catch(reject);
  });
}

export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw abortReason(signal);
}
