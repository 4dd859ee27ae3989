// The Volume controller (`backends/<b>/volumes/<ns>.<v>`): a volume on its backend, created
// once, grown on request, removed per its deletionPolicy.
//
// A reconcile: load the Volume and its Backend; if the backend cannot serve, say so
// (Pending, a condition naming the backend) and wait for the Backend to change; else create
// the storage volume (name from the Volume's UID, so a retry or a restart finds it instead of
// making a second one), grow it when spec.capacity went up, refuse a shrink, and write phase,
// handle and capacity. Deletion (the finalizer) removes the storage volume, or keeps it and
// says so for `Retain`.
//
// Locks: a write lock on the volume's path for every run (create, resize and delete of one
// volume never overlap) and a slot of the backend's limiter while there is storage work to
// do. A settled Volume, or one whose Backend is not Online, takes no slot: it never holds
// one of the backend's few slots while it only writes status or waits.
//
// Driver errors propagate: the core retries a busy or unreachable backend (after its
// `retryAfterMs`, or with backoff) and does not retry a terminal error.
import type { Backend } from '../api/backend.js';
import type { Volume } from '../api/volume.js';
import type { CreateVolumeRequest, StorageDriver, VolumeInfo } from '../backends/driver.js';
import { isDriverError } from '../backends/errors.js';
import { defineController, related, setCondition, volumePath, type ObjectContext, type RunPlan } from '../runtime/index.js';
import { isOnline } from './backend.js';
import type { DriverPool } from './driver-pool.js';
import { formatBytes, parseQuantity } from '../api/quantity.js';

export const VOLUME_FINALIZER = 'trellis.dev/volume-protection';
/** A Volume waiting for its Backend looks again this often, should no Backend change wake it first. */
const BACKEND_WAIT_MS = 60_000;

/** The storage name of a Volume: its UID, so one Volume object maps to one storage volume for ever. */
export function storageName(volume: Volume): string {
  const uid = volume.metadata.uid;
  if (!uid) throw new TypeError(`Volume ${volume.metadata.namespace}/${volume.metadata.name} has no uid`);
  return `tvol-${uid}`;
}

/**
 * True when status says all is done for the spec as it is: nothing to ask the backend. The
 * capacity is compared too, not only observedGeneration: a spec change that lands while a
 * create runs moves observedGeneration with the create's status write.
 */
export function isSettled(volume: Volume): boolean {
  const status = volume.status;
  if (volume.metadata.deletionTimestamp || status?.phase !== 'Available' || !status.handle || status.observedGeneration !== volume.metadata.generation) return false;
  try {
    return parseQuantity(volume.spec.capacity) <= (status.capacityBytes ?? 0);
  } catch {
    return false;
  }
}

type VolumeContext = ObjectContext<'Volume'>;

export function volumeController(pool: DriverPool) {
  return defineController({
    name: 'volume',
    kind: 'Volume',
    finalizer: VOLUME_FINALIZER,
    // A Backend changing (coming Online, going away) wakes the Volumes that wait on it; the
    // others are in the queue already or settled, and a Backend's status write must not
    // re-enqueue hundreds of them.
    watches: [related('Backend', (backend, cache) => cache.volumesOnBackend(backend.metadata.name).filter(waitsForBackend))],
    create: () => {
      /** The driver of an Online Backend: the one the Backend controller built, else built now. */
      const driverOf = async (backend: Backend, ctx: VolumeContext): Promise<StorageDriver> =>
        pool.current(backend.metadata.name) ?? (await pool.driverFor(backend, ctx.secrets, ctx.signal));

      return {
        plan(volume, cache): RunPlan {
          const locks = [{ path: volumePath(volume.spec.backend, volume.metadata.namespace!, volume.metadata.name), mode: 'write' as const }];
          const backend = cache.get('Backend', undefined, volume.spec.backend);
          if (isSettled(volume) || !needsStorage(volume) || !serves(backend, volume)) return { locks };
          return { locks, backend: volume.spec.backend };
        },

        async reconcile(volume, ctx) {
          if (isSettled(volume)) return;
          const backend = ctx.cache.get('Backend', undefined, volume.spec.backend);
          if (!serves(backend, volume) || !ctx.backend) return waitForBackend(volume, backend, ctx);
          if (volume.spec.dataSource) return awaitDataSources(ctx);
          let desired: number;
          try {
            desired = parseQuantity(volume.spec.capacity);
          } catch (error) {
            await fail(ctx, 'InvalidCapacity', (error as Error).message);
            return;
          }
          const driver = await driverOf(backend!, ctx);
          const status = volume.status ?? {};
          if (!status.handle) return create(volume, desired, driver, ctx);
          const provisioned = status.capacityBytes ?? 0;
          if (desired > provisioned) return grow(volume, backend!, status.handle, desired, driver, ctx);
          if (desired < provisioned) return refuseShrink(volume, desired, provisioned, ctx);
          await ctx.updateStatus((s) => available(s, volume));
        },

        async cleanup(volume, ctx) {
          const backendName = volume.spec.backend;
          if ((volume.spec.deletionPolicy ?? 'Delete') === 'Retain') {
            if (volume.status?.handle) ctx.event('Normal', 'Retained', `deletionPolicy Retain: storage volume ${volume.status.handle} stays on backend ${backendName}`, 'Delete');
            return;
          }
          const backend = ctx.cache.get('Backend', undefined, backendName);
          // The Backend's finalizer holds it while Volumes refer to it: no Backend means no storage was ever made.
          if (!backend) return;
          if (!serves(backend, volume) || !ctx.backend) return waitForBackend(volume, backend, ctx);
          const driver = await driverOf(backend, ctx);
          const slot = ctx.backend;
          await ctx.updateStatus((s) => {
            s.phase = 'Deleting';
            s.conditions = setCondition(s.conditions, { type: 'Ready', status: 'False', reason: 'Deleting', message: `deleting the storage volume on backend ${backendName}` });
          });
          // A create cut short before its status was written left no handle (phase Creating, or
          // Deleting once a first cleanup got this far): find the volume by its name.
          const mayExist = volume.status?.phase === 'Creating' || volume.status?.phase === 'Deleting';
          const handle = volume.status?.handle ?? (mayExist ? (await slot.run('listVolumes', (signal) => findByName(driver, storageName(volume), signal ?? ctx.signal)))?.handle : undefined);
          if (!handle) return;
          await slot.run('deleteVolume', async (signal) => {
            try {
              await driver.deleteVolume(handle, signal ?? ctx.signal);
            } catch (error) {
              // Gone already is what we wanted.
              if (!isDriverError(error, 'notFound')) throw error;
            }
          });
          ctx.logger.info({ handle }, `storage volume ${handle} deleted from backend ${backendName}`);
        },
      };
    },
  });
}

/**
 * Whether the Backend takes work for the Volume now: Online; or, for a Volume being deleted,
 * also while the Backend itself waits to be deleted (it waits for exactly these deletions).
 */
function serves(backend: Backend | undefined, volume: Volume): boolean {
  if (isOnline(backend)) return true;
  return !!volume.metadata.deletionTimestamp && backend?.status?.phase === 'Deleting';
}

/** True for a Volume that stopped for its Backend (said so in a condition) or is being deleted. */
function waitsForBackend(volume: Volume): boolean {
  return !!volume.metadata.deletionTimestamp || !!volume.status?.conditions?.some((c) => c.reason === 'BackendNotReady' && c.status === 'False');
}

/** Whether a run of the Volume may call its backend (so its plan takes a slot). */
function needsStorage(volume: Volume): boolean {
  if (!volume.metadata.deletionTimestamp) return true;
  return (volume.spec.deletionPolicy ?? 'Delete') === 'Delete';
}

async function create(volume: Volume, capacityBytes: number, driver: StorageDriver, ctx: VolumeContext): Promise<void> {
  const backendName = volume.spec.backend;
  await ctx.updateStatus((s) => {
    s.phase = 'Creating';
    s.conditions = setCondition(s.conditions, { type: 'Ready', status: 'False', reason: 'Creating', message: `creating ${formatBytes(capacityBytes)} on backend ${backendName}` });
  });
  const request: CreateVolumeRequest = { name: storageName(volume), capacityBytes };
  const info = await ctx.backend!.run('createVolume', (signal) => createOrAdopt(driver, request, signal ?? ctx.signal));
  await ctx.updateStatus((s) => {
    s.handle = info.handle;
    s.capacityBytes = info.capacityBytes;
    return available(s, volume);
  });
}

async function grow(volume: Volume, backend: Backend, handle: string, capacityBytes: number, driver: StorageDriver, ctx: VolumeContext): Promise<void> {
  if (backend.status?.capabilities?.resize === false) {
    await refuse(ctx, 'ResizeUnsupported', `backend ${backend.metadata.name} cannot resize volumes; spec.capacity ${String(volume.spec.capacity)} is not applied`);
    return;
  }
  await ctx.updateStatus((s) => {
    s.phase = 'Resizing';
    s.conditions = setCondition(s.conditions, { type: 'Progressing', status: 'True', reason: 'Resizing', message: `growing to ${formatBytes(capacityBytes)}` });
  });
  const info = await ctx.backend!.run('resizeVolume', (signal) => driver.resizeVolume(handle, capacityBytes, signal ?? ctx.signal));
  await ctx.updateStatus((s) => {
    s.capacityBytes = info.capacityBytes;
    return available(s, volume);
  });
}

async function refuseShrink(volume: Volume, desired: number, provisioned: number, ctx: VolumeContext): Promise<void> {
  await refuse(ctx, 'ShrinkRefused', `spec.capacity ${String(volume.spec.capacity)} (${desired} bytes) is below the provisioned ${formatBytes(provisioned)}: volumes can grow, never shrink; nothing was changed`);
}

/** A spec Trellis will not apply: said once in a condition and an Event, and not retried. */
async function refuse(ctx: VolumeContext, reason: string, message: string): Promise<void> {
  await ctx.updateStatus((s) => {
    s.conditions = setCondition(s.conditions, { type: 'Progressing', status: 'False', reason, message });
  });
  ctx.event('Warning', reason, message, 'Resize');
}

async function fail(ctx: VolumeContext, reason: string, message: string): Promise<void> {
  await ctx.updateStatus((s) => {
    s.phase = 'Failed';
    s.conditions = setCondition(s.conditions, { type: 'Ready', status: 'False', reason, message });
  });
}

/** Status of a Volume whose storage matches its spec. */
function available(s: NonNullable<Volume['status']>, volume: Volume): NonNullable<Volume['status']> {
  s.phase = 'Available';
  const size = formatBytes(s.capacityBytes ?? 0);
  s.conditions = setCondition(s.conditions, { type: 'Ready', status: 'True', reason: 'Provisioned', message: `${size} on backend ${volume.spec.backend} as ${s.handle}` });
  s.conditions = setCondition(s.conditions, { type: 'Progressing', status: 'False', reason: 'Provisioned', message: 'the storage volume matches the spec' });
  return s;
}

/** The Backend cannot serve: Pending (or the phase it has) with a condition naming it; the Backend watch wakes it. */
async function waitForBackend(volume: Volume, backend: Backend | undefined, ctx: VolumeContext): Promise<{ requeueAfterMs: number }> {
  const name = volume.spec.backend;
  const why = !backend
    ? `backend ${name} does not exist`
    : backend.metadata.deletionTimestamp
      ? `backend ${name} is being deleted`
      : `backend ${name} is ${backend.status?.phase ?? 'not probed yet'}${readyMessage(backend)}`;
  await ctx.updateStatus((s) => {
    if (!s.handle) s.phase = 'Pending';
    s.conditions = setCondition(s.conditions, { type: s.handle ? 'Progressing' : 'Ready', status: 'False', reason: 'BackendNotReady', message: `waiting: ${why}` });
  });
  return { requeueAfterMs: BACKEND_WAIT_MS };
}

function readyMessage(backend: Backend): string {
  const ready = backend.status?.conditions?.find((c) => c.type === 'Ready');
  return ready?.message ? `: ${ready.message}` : '';
}

/** The seam for issue 21: volumes from a group snapshot member or a backup. */
async function awaitDataSources(ctx: VolumeContext): Promise<void> {
  await ctx.updateStatus((s) => {
    s.phase = 'Pending';
    s.conditions = setCondition(s.conditions, { type: 'Ready', status: 'False', reason: 'DataSourceUnsupported', message: 'volumes from a dataSource (clones and restores) are not provisioned yet' });
  });
}

/** Creates the volume, or takes the one an earlier attempt made under the same name with other parameters. */
async function createOrAdopt(driver: StorageDriver, request: CreateVolumeRequest, signal: AbortSignal): Promise<VolumeInfo> {
  try {
    return await driver.createVolume(request, signal);
  } catch (error) {
    if (!isDriverError(error, 'alreadyExists')) throw error;
    // Same name, another size: an earlier create (before a restart) of an older spec; the grow step follows.
    const existing = await findByName(driver, request.name, signal);
    if (!existing) throw error;
    return existing;
  }
}

async function findByName(driver: StorageDriver, name: string, signal: AbortSignal): Promise<VolumeInfo | undefined> {
  return (await driver.listVolumes(signal)).find((v) => v.name === name);
}
