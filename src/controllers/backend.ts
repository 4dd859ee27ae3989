// The Backend controller (`backends/<b>`): keeps one driver per Backend, its limits in the
// shared limiter, and its status true to what the storage system says.
//
// A reconcile: set the backend's limits on the limiter (live: in-flight work keeps its
// slots), get the driver from the pool (rebuilt when driver, config or Secret changed), probe
// the storage, write phase, capacity, capabilities and volume count. Online backends are
// probed again every PROBE_INTERVAL_MS; failed probes again with backoff.
//
// Locks: a read lock on `backends/<b>` (volume work below it goes on) and a slot of the
// backend's limiter for the probe, which the storage counts against its API limit like any
// other call. Deletion takes the write lock on `backends/<b>`, so it waits for every
// operation on the backend's volumes, and is held by the finalizer while Volumes refer to
// the Backend.
import type { Backend, BackendStatus } from '../api/backend.js';
import type { ProbeResult } from '../backends/driver.js';
import { ExponentialBackoff, type BackendLimits } from '../core/index.js';
import { backendPath, deepEqual, defineController, related, setCondition, type Cache, type ObjectContext } from '../runtime/index.js';
import { BackendSetupError, type DriverPool } from './driver-pool.js';

export const BACKEND_FINALIZER = 'trellis.dev/backend-protection';
/** How often an Online backend is probed again. */
export const PROBE_INTERVAL_MS = 30_000;
/** Backoff of probes after failures: 1 s, 2 s, 4 s ... up to this. */
const MAX_PROBE_BACKOFF_MS = 30_000;
/** lastProbeTime alone is written at most this often, so a steady backend costs no writes. */
const PROBE_TIME_REFRESH_MS = 5 * 60_000;
/** Volumes named in the condition that holds a deletion. */
const NAMED_VOLUMES = 5;

export function backendController(pool: DriverPool) {
  return defineController({
    name: 'backend',
    kind: 'Backend',
    finalizer: BACKEND_FINALIZER,
    // A new Volume changes the count; one leaving a Backend that waits to be deleted lets the deletion go on.
    watches: [related('Volume', (volume, cache) => (!volume.status || volume.metadata.deletionTimestamp ? backendOf(cache, volume.spec.backend) : []))],
    create: ({ cache, limiter, logger }) => {
      // Before any Volume takes a slot (a restarted operator finds Backends Online already),
      // every known Backend's limits are in force, not the limiter's defaults.
      for (const backend of cache.store('Backend').list()) limiter.configure(backend.metadata.name, limitsOf(backend));
      // Failed probes in a row, per backend, for the backoff.
      const failures = new ExponentialBackoff({ baseMs: 1000, capMs: MAX_PROBE_BACKOFF_MS });
      const retryAfterFailure = (name: string) => ({ requeueAfterMs: failures.when(name) });
      return {
        plan: (backend) =>
          backend.metadata.deletionTimestamp
            ? { locks: [{ path: backendPath(backend.metadata.name), mode: 'write' }] }
            : { locks: [{ path: backendPath(backend.metadata.name), mode: 'read' }], backend: backend.metadata.name },

        async reconcile(backend, ctx) {
          const name = backend.metadata.name;
          limiter.configure(name, limitsOf(backend));
          let probe: ProbeResult;
          try {
            const driver = await pool.driverFor(backend, ctx.secrets, ctx.signal);
            probe = ctx.backend ? await ctx.backend.run('probe', (signal) => driver.probe(signal ?? ctx.signal)) : await driver.probe(ctx.signal);
          } catch (error) {
            if (ctx.signal.aborted) throw error;
            if (error instanceof BackendSetupError) {
              await writeUnavailable(ctx, error.reason, error.message);
              // A bad config waits for the next spec change; a missing Secret (not watched) is looked for again.
              return error.reason === 'InvalidConfig' ? undefined : retryAfterFailure(name);
            }
            const message = error instanceof Error ? error.message : String(error);
            ctx.logger.info({ err: error }, `probe of backend ${name} failed: ${message}`);
            await writeUnavailable(ctx, 'ProbeFailed', message);
            return retryAfterFailure(name);
          }
          failures.forget(name);
          await ctx.updateStatus((status) => {
            const next: BackendStatus = {
              ...status,
              phase: probe.healthy ? 'Online' : 'Degraded',
              capacityBytes: probe.capacityBytes,
              usedBytes: probe.usedBytes,
              volumeCount: ctx.cache.volumesOnBackend(name).length,
              capabilities: {
                nativeGroupSnapshots: probe.capabilities.nativeGroupSnapshot,
                snapshotData: probe.capabilities.snapshotData,
                volumeData: probe.capabilities.volumeData,
                resize: probe.capabilities.resize,
                topology: probe.capabilities.topology,
              },
              conditions: setCondition(
                status.conditions,
                probe.healthy
                  ? { type: 'Ready', status: 'True', reason: 'Online', message: `${backend.spec.driver} backend answers` }
                  : { type: 'Ready', status: 'False', reason: 'Degraded', message: probe.message ?? 'the backend reports itself unhealthy' },
              ),
            };
            return withProbeTime(status, next);
          });
          return probe.healthy ? { requeueAfterMs: PROBE_INTERVAL_MS } : retryAfterFailure(name);
        },

        async cleanup(backend, ctx) {
          const name = backend.metadata.name;
          const remaining = ctx.cache.volumesOnBackend(name);
          if (remaining.length > 0) {
            const named = remaining.slice(0, NAMED_VOLUMES).map((v) => `${v.metadata.namespace}/${v.metadata.name}`);
            const more = remaining.length > NAMED_VOLUMES ? ` and ${remaining.length - NAMED_VOLUMES} more` : '';
            const message = `deletion waits: ${remaining.length} Volume${remaining.length === 1 ? '' : 's'} still on this backend (${named.join(', ')}${more}); delete them first`;
            await ctx.updateStatus((status) => {
              status.phase = 'Deleting';
              status.volumeCount = remaining.length;
              status.conditions = setCondition(status.conditions, { type: 'Ready', status: 'False', reason: 'VolumesRemain', message });
            });
            // The Volume watch brings the Backend back as each Volume goes; this is a safety net.
            return { requeueAfterMs: PROBE_INTERVAL_MS };
          }
          // The write lock on backends/<b> is held: no operation on the backend is in flight.
          await pool.remove(name);
          limiter.remove(name);
          failures.forget(name);
          logger.info({ backend: name }, `backend ${name} deleted: driver closed, limiter dropped`);
          return undefined;
        },
      };
    },
  });
}

/** The Backend's limits as the limiter takes them; unset fields fall back to the CRD's defaults. */
export function limitsOf(backend: Backend): BackendLimits {
  const limits = backend.spec.limits ?? {};
  return {
    maxConcurrent: limits.maxConcurrentOperations ?? 10,
    opsPerSecond: limits.operationsPerSecond ?? Infinity,
    adaptive: limits.adaptive ?? false,
    minConcurrent: limits.minConcurrentOperations ?? 1,
  };
}

/** True when Volumes may use the backend now. */
export function isOnline(backend: Backend | undefined): boolean {
  return !!backend && !backend.metadata.deletionTimestamp && backend.status?.phase === 'Online';
}

async function writeUnavailable(ctx: ObjectContext<'Backend'>, reason: string, message: string): Promise<void> {
  await ctx.updateStatus((status) =>
    withProbeTime(status, {
      ...status,
      phase: 'Offline',
      volumeCount: ctx.cache.volumesOnBackend(ctx.ref.name).length,
      conditions: setCondition(status.conditions, { type: 'Ready', status: 'False', reason, message }),
    }),
  );
}

/** `next` with lastProbeTime now when anything else changed or the last one is old; else unchanged. */
function withProbeTime(previous: BackendStatus, next: BackendStatus): BackendStatus {
  const now = Date.now();
  const { lastProbeTime, ...rest } = next;
  const { lastProbeTime: _previousTime, observedGeneration: _g1, ...before } = previous;
  const { observedGeneration: _g2, ...after } = rest;
  const unchanged = deepEqual(before, after);
  const fresh = lastProbeTime !== undefined && now - Date.parse(lastProbeTime) < PROBE_TIME_REFRESH_MS;
  return { ...rest, lastProbeTime: unchanged && fresh ? lastProbeTime : new Date(now).toISOString().replace(/\.\d+Z$/, 'Z') };
}

function backendOf(cache: Cache, name: string): Backend[] {
  const backend = cache.get('Backend', undefined, name);
  return backend ? [backend] : [];
}
