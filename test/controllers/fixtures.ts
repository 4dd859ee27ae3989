// Reconcilers of src/controllers driven without a cluster: a Cache holding the objects, a
// context whose status writes land in that cache (with observedGeneration, as the runtime's
// StatusWriter sets it), Events collected in a list, a backend slot that just runs the
// operation, and a StorageDriver fake that records every call.
import { pino } from 'pino';
import type { Backend } from '../../src/api/backend.js';
import type { Volume } from '../../src/api/volume.js';
import type { CreateVolumeRequest, ProbeResult, StorageDriver, VolumeInfo } from '../../src/backends/driver.js';
import { DriverError } from '../../src/backends/errors.js';
import { BackendLimiter, realClock, type BackendSlot, type CoreMetrics } from '../../src/core/index.js';
import { Cache, SecretNotReadable, keyOf, refOfKey, type ControllerServices, type KindMap, type KindName, type ObjectContext, type SecretReader } from '../../src/runtime/index.js';

export const silent = pino({ level: 'silent' });

export function backend(name: string, overrides: Partial<Backend['spec']> = {}, status: Backend['status'] = { phase: 'Online' }): Backend {
  return { apiVersion: 'trellis.dev/v1alpha1', kind: 'Backend', metadata: { name, uid: `uid-${name}`, generation: 1, resourceVersion: '1' }, spec: { driver: 'sim', config: { endpoint: 'http://127.0.0.1:1' }, ...overrides }, status } as Backend;
}

export function volume(name: string, spec: Partial<Volume['spec']> = {}, status?: Volume['status']): Volume {
  return { apiVersion: 'trellis.dev/v1alpha1', kind: 'Volume', metadata: { name, namespace: 'ns', uid: `uid-${name}`, generation: 1, resourceVersion: '1' }, spec: { backend: 'array', capacity: '10Gi', ...spec }, ...(status ? { status } : {}) } as Volume;
}

export interface Recorded {
  events: Array<{ type: string; reason: string; note: string }>;
  /** Every status written, in order. */
  statuses: unknown[];
}

/** Secrets by `ns/name`. */
export function secretReader(secrets: Record<string, Record<string, string>>): SecretReader {
  return {
    read: async (namespace: string, name: string) => {
      const data = secrets[`${namespace}/${name}`];
      if (!data) throw new SecretNotReadable(namespace, name, 404);
      return new Map(Object.entries(data).map(([k, v]) => [k, Buffer.from(v)]));
    },
    forget: () => {},
  } as unknown as SecretReader;
}

export function services(cache: Cache, limiter = new BackendLimiter()): ControllerServices {
  return { cache, limiter, logger: silent, clock: realClock, coreMetrics: {} as CoreMetrics } as unknown as ControllerServices;
}

/** A context for one run of `object`, as the runtime's adapter builds it. */
export function contextFor<K extends KindName>(kind: K, object: KindMap[K], cache: Cache, recorded: Recorded, options: { slot?: boolean; secrets?: SecretReader } = {}): ObjectContext<K> {
  const key = keyOf(kind, object);
  const ref = refOfKey(key)!;
  const signal = new AbortController().signal;
  const slot: BackendSlot = { backend: 'array', run: (_operation, fn) => fn(signal) };
  const latest = () => cache.get(kind, ref.namespace, ref.name) ?? object;
  return {
    kind,
    ref,
    key,
    reconcileId: 'test',
    signal,
    logger: silent,
    locks: { requests: [], release: () => {} },
    backend: options.slot === false ? undefined : slot,
    cache,
    secrets: options.secrets ?? secretReader({}),
    async updateStatus(mutate) {
      const current = latest();
      const draft = structuredClone(current.status ?? {}) as never;
      const next = (mutate(draft, current) ?? draft) as { observedGeneration?: number };
      next.observedGeneration = current.metadata.generation;
      const written = { ...current, metadata: bumped(current.metadata), status: next } as KindMap[K];
      cache.store(kind).upsert(written);
      recorded.statuses.push(structuredClone(next));
      return written;
    },
    event(type, reason, note) {
      recorded.events.push({ type, reason, note });
    },
  };
}

/** A StorageDriver that keeps volumes in a map by name and records each call. */
export class FakeDriver implements Partial<StorageDriver> {
  readonly kind = 'fake';
  readonly calls: string[] = [];
  readonly volumes = new Map<string, VolumeInfo>();
  probeResult: ProbeResult | Error = { healthy: true, capacityBytes: 1000, usedBytes: 10, capabilities: { nativeGroupSnapshot: true, snapshotData: true, volumeData: true, resize: true, topology: false } };
  closed = false;
  private next = 1;

  async probe(): Promise<ProbeResult> {
    this.calls.push('probe');
    if (this.probeResult instanceof Error) throw this.probeResult;
    return this.probeResult;
  }

  async createVolume(req: CreateVolumeRequest): Promise<VolumeInfo> {
    this.calls.push(`create ${req.name} ${req.capacityBytes}`);
    const existing = this.volumes.get(req.name);
    if (existing && existing.capacityBytes !== req.capacityBytes) throw new DriverError('alreadyExists', `volume ${req.name} exists with other parameters`);
    if (existing) return existing;
    const made = { handle: `vol-${this.next++}`, name: req.name, capacityBytes: req.capacityBytes, params: {} };
    this.volumes.set(req.name, made);
    return made;
  }

  async resizeVolume(handle: string, capacityBytes: number): Promise<VolumeInfo> {
    this.calls.push(`resize ${handle} ${capacityBytes}`);
    const found = [...this.volumes.values()].find((v) => v.handle === handle)!;
    found.capacityBytes = capacityBytes;
    return found;
  }

  async deleteVolume(handle: string): Promise<void> {
    this.calls.push(`delete ${handle}`);
    const found = [...this.volumes.values()].find((v) => v.handle === handle);
    if (!found) throw new DriverError('notFound', `volume ${handle} not found`);
    this.volumes.delete(found.name);
  }

  async listVolumes(): Promise<VolumeInfo[]> {
    this.calls.push('list');
    return [...this.volumes.values()];
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  asDriver(): StorageDriver {
    return this as unknown as StorageDriver;
  }
}

/** Metadata with the next resourceVersion, as after a write (the cache ignores a version it holds). */
export function bumped<M extends { resourceVersion?: string }>(metadata: M): M {
  return { ...metadata, resourceVersion: String(Number(metadata.resourceVersion ?? 0) + 1) };
}

export function cacheWith(...objects: Array<Backend | Volume>): Cache {
  const cache = new Cache();
  for (const object of objects) {
    if (object.kind === 'Backend') cache.store('Backend').upsert(object as Backend);
    else cache.store('Volume').upsert(object as Volume);
  }
  return cache;
}
