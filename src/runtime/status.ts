// Status writes. Guarantees:
// - a write goes to the `/status` subresource as a JSON merge patch with Trellis's field
//   manager, guarded by the object's resourceVersion, and always carries observedGeneration;
// - it is skipped when the computed status equals the cached one, so an idle operator
//   writes nothing (no hot loop: our own write comes back as a watch event, the reconcile
//   computes the same status, and stops there);
// - a 409 Conflict re-reads the object and applies the same mutation to the fresh status
//   (up to `conflictRetries` times): a conflict is never an error shown to the user;
// - progress writes (`{ progress: true }`) go out at most once per `progressIntervalMs`
//   per object; a write that is not progress always goes out;
// - the written object goes into the cache at once (unless the watch brought a newer one
//   meanwhile), so the next reconcile sees it even before its watch event arrives.
import { realClock, type Clock } from '../core/clock.js';
import { isConflict, type KubeApi } from './api.js';
import type { Cache } from './cache.js';
import { objectPath, refOf, type KindMap, type KindName } from './resources.js';

/** The status type of a kind. */
export type StatusOf<K extends KindName> = NonNullable<KindMap[K]['status']>;

/** Edits `draft` (a copy of the current status) in place, or returns a whole new status. */
export type StatusMutation<K extends KindName> = (draft: StatusOf<K>, object: KindMap[K]) => StatusOf<K> | void;

export interface StatusUpdateOptions {
  /** A progress report: dropped when the object's last write is younger than the progress interval. */
  progress?: boolean;
  signal?: AbortSignal;
}

export interface StatusWriterOptions {
  api: KubeApi;
  cache: Cache;
  clock?: Clock;
  /** Default 5 s. */
  progressIntervalMs?: number;
  /** Default 5. */
  conflictRetries?: number;
  /** Hears every write that went out and every one skipped as unchanged (metrics, tests). */
  observer?: { written(kind: KindName): void; skipped(kind: KindName): void };
}

export class StatusWriter {
  private readonly api: KubeApi;
  private readonly cache: Cache;
  private readonly clock: Clock;
  private readonly progressIntervalMs: number;
  private readonly conflictRetries: number;
  private readonly observer?: StatusWriterOptions['observer'];
  // uid (or kind/ns/name) -> when its status was last written; entries older than the
  // progress interval are dropped on the next write, so the map stays small.
  private readonly lastWrite = new Map<string, number>();

  constructor(options: StatusWriterOptions) {
    this.api = options.api;
    this.cache = options.cache;
    this.clock = options.clock ?? realClock;
    this.progressIntervalMs = options.progressIntervalMs ?? 5_000;
    this.conflictRetries = options.conflictRetries ?? 5;
    this.observer = options.observer;
  }

  /**
   * Applies `mutate` to a copy of `object`'s status, sets observedGeneration, and writes the
   * result if it differs. Resolves with the object as written, or undefined when nothing was
   * written (unchanged, or a progress write inside the interval).
   */
  async update<K extends KindName>(kind: K, object: KindMap[K], mutate: StatusMutation<K>, options: StatusUpdateOptions = {}): Promise<KindMap[K] | undefined> {
    const id = `${kind}/${object.metadata.namespace ?? ''}/${object.metadata.name}`;
    if (options.progress) {
      const last = this.lastWrite.get(id);
      if (last !== undefined && this.clock.now() - last < this.progressIntervalMs) return undefined;
    }
    let current = object;
    for (let attempt = 0; ; attempt++) {
      const before = (current.status ?? {}) as StatusOf<K>;
      const draft = structuredClone(before);
      const desired = (mutate(draft, current) ?? draft) as StatusOf<K> & { observedGeneration?: number };
      if (current.metadata.generation !== undefined) desired.observedGeneration = current.metadata.generation;
      if (deepEqual(before, desired)) {
        this.observer?.skipped(kind);
        return undefined;
      }
      const body = { metadata: { resourceVersion: current.metadata.resourceVersion }, status: mergePatch(before, desired) };
      try {
        const written = await this.api.patch<KindMap[K]>(objectPath(refOf(kind, current), 'status'), 'merge', body, { signal: options.signal });
        this.remember(id);
        this.observer?.written(kind);
        this.cache.store(kind).upsertWritten(written, current.metadata.resourceVersion);
        return written;
      } catch (error) {
        if (!isConflict(error) || attempt >= this.conflictRetries) throw error;
        current = await this.api.get<KindMap[K]>(objectPath(refOf(kind, current)), { signal: options.signal });
      }
    }
  }

  private remember(id: string): void {
    const now = this.clock.now();
    if (this.lastWrite.size > 1000) for (const [key, at] of this.lastWrite) if (now - at >= this.progressIntervalMs) this.lastWrite.delete(key);
    this.lastWrite.set(id, now);
  }
}

/** A JSON merge patch (RFC 7386) turning `from` into `to`: removed keys become null, arrays are replaced whole. */
export function mergePatch(from: unknown, to: unknown): unknown {
  if (!isPlainObject(from) || !isPlainObject(to)) return to;
  const patch: Record<string, unknown> = {};
  for (const key of Object.keys(from)) if (!(key in to)) patch[key] = null;
  for (const [key, value] of Object.entries(to)) {
    if (value === undefined) {
      if (key in from) patch[key] = null;
      continue;
    }
    if (!deepEqual(from[key], value)) patch[key] = mergePatch(from[key], value);
  }
  return patch;
}

/** Structural equality of JSON values; undefined members count as absent. */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, i) => deepEqual(item, b[i]));
  }
  if (!isPlainObject(a) || !isPlainObject(b)) return false;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) if (!deepEqual(a[key], b[key])) return false;
  return true;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
