// The reconcile contract between the runtime and a Trellis controller, and the adapter that
// turns an object reconciler into the core's keyed reconciler. Guarantees:
// - a reconciler is handed the cached object (never a key to parse), a context bound to
//   it (status, events, cache, secrets, the core's signal, locks and backend slot), and
//   a logger whose every line carries the object's key and a reconcile id;
// - `plan` is computed from the cached object each time the core asks (before the run,
//   and again once the locks are granted), so a lock set that depends on data (a group's
//   members) is always the current one;
// - an object gone from the cache ends the run quietly (its deletion already happened);
// - with a `finalizer`, the runtime adds it before the first reconcile, runs `cleanup`
//   once the object is being deleted, and removes the finalizer only when cleanup
//   returned without asking to requeue: storage is never orphaned;
// - a status write that moves `status.phase` records one Event; a failed reconcile records
//   a Warning Event, aggregated into a series (one per error text, not one per retry).
import type { Logger } from '../log.js';
import type { BackendLimiter, BackendSlot, Clock, CoreMetrics, LockHandle, ReconcileContext, ReconcileResult, Reconciler, RunPlan } from '../core/index.js';
import { HierarchyPath } from '../core/path.js';
import { WriteFenced, type KubeApi } from './api.js';
import type { Cache } from './cache.js';
import type { EventRecorder, EventType } from './events.js';
import { addFinalizer, hasFinalizer, removeFinalizer } from './finalizer.js';
import { keyOf, refOfKey } from './keys.js';
import { resourceOf, type AnyObject, type KindMap, type KindName, type ObjectRef } from './resources.js';
import type { SecretReader } from './secrets.js';
import type { StatusMutation, StatusUpdateOptions, StatusWriter } from './status.js';

export type { RunPlan, ReconcileResult, BackendSlot };

/** What a reconcile of one object gets besides the object itself. */
export interface ObjectContext<K extends KindName> {
  readonly kind: K;
  readonly ref: ObjectRef;
  /** The queue key (a hierarchy path); for logs and lock requests, never to parse. */
  readonly key: string;
  /** Unique per run; on every log line of `logger`. */
  readonly reconcileId: string;
  /** Aborts at the reconcile timeout or the end of the stop grace: pass it to every storage and API call. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** The locks the core granted for the run's plan. */
  readonly locks: LockHandle;
  /** The slot of `plan.backend` in the backend's limiter, when the plan named one. */
  readonly backend?: BackendSlot;
  readonly cache: Cache;
  readonly secrets: SecretReader;
  /**
   * Writes the status computed by `mutate` from the latest cached object (skipped when
   * unchanged; observedGeneration set; 409 retried). Resolves with the written object, or
   * undefined when nothing was written.
   */
  updateStatus(mutate: StatusMutation<K>, options?: StatusUpdateOptions): Promise<KindMap[K] | undefined>;
  /** Records an Event about the object (aggregated into a series when repeated). */
  event(type: EventType, reason: string, note: string, action?: string): void;
}

export interface ObjectReconciler<K extends KindName> {
  /**
   * The locks (and backend slot) a run needs, from the cached object. Must not do I/O.
   * Called before the run and again once its locks are granted.
   */
  plan(object: KindMap[K], cache: Cache): RunPlan;
  /** Brings the world in line with the object. Throw a TerminalError for what retrying cannot fix. */
  reconcile(object: KindMap[K], context: ObjectContext<K>): Promise<ReconcileResult>;
  /**
   * With a finalizer: undoes what reconcile made, once the object is being deleted. The
   * finalizer is removed when it resolves without `requeueAfterMs`.
   */
  cleanup?(object: KindMap[K], context: ObjectContext<K>): Promise<ReconcileResult>;
}

/** What the manager gives a controller when it creates its reconciler. */
export interface ControllerServices {
  readonly cache: Cache;
  /** Fenced: writes fail with WriteFenced unless this replica leads. */
  readonly api: KubeApi;
  readonly secrets: SecretReader;
  readonly status: StatusWriter;
  readonly events: EventRecorder;
  /** Shared by every controller; the Backend controller sets each backend's limits on it. */
  readonly limiter: BackendLimiter;
  readonly coreMetrics: CoreMetrics;
  readonly clock: Clock;
  readonly logger: Logger;
}

/** Another kind whose changes re-enqueue objects of the controller's kind. */
export interface RelatedWatch {
  kind: KindName;
  /** The controller's objects a change of `changed` affects (it is called with the old and the new version). */
  map(changed: AnyObject, cache: Cache): Iterable<{ metadata: { name: string; namespace?: string }; spec?: unknown }>;
}

/** Builds a typed RelatedWatch. */
export function related<W extends KindName>(kind: W, map: (changed: KindMap[W], cache: Cache) => Iterable<{ metadata: { name: string; namespace?: string }; spec?: unknown }>): RelatedWatch {
  return { kind, map: (changed, cache) => map(changed as unknown as KindMap[W], cache) };
}

export interface ControllerDefinition<K extends KindName = KindName> {
  /** The controller's name in metrics and logs: `volume`, `backend`. */
  name: string;
  /** The kind it reconciles; its objects' keys come from `keyOf(kind, object)`. */
  kind: K;
  create(services: ControllerServices): ObjectReconciler<K>;
  /** A finalizer the runtime manages for it, e.g. `trellis.dev/volume-protection`. */
  finalizer?: string;
  /** Changes of other kinds that re-enqueue this kind's objects. */
  watches?: RelatedWatch[];
  /** Default: the operator's `--workers`. */
  maxConcurrentReconciles?: number;
  reconcileTimeoutMs?: number;
}

/** Declares a controller (only to get the kind's types checked). */
export function defineController<K extends KindName>(definition: ControllerDefinition<K>): ControllerDefinition<K> {
  return definition;
}

const WARNING_PHASES = new Set(['Failed', 'Degraded', 'Offline', 'PartiallyFailed']);

/** The core-facing side of one controller: keys in, objects out. */
export class ObjectReconcilerAdapter<K extends KindName> implements Reconciler {
  constructor(
    private readonly definition: ControllerDefinition<K>,
    private readonly reconciler: ObjectReconciler<K>,
    private readonly services: ControllerServices,
  ) {}

  plan(key: string): RunPlan {
    const object = this.lookup(key);
    // Gone from the cache: nothing will run, but hold the key's own path so a
    // recreation racing this run waits for it.
    if (!object) return { locks: [{ path: HierarchyPath.parse(key), mode: 'write' }] };
    return this.reconciler.plan(object, this.services.cache);
  }

  async reconcile(key: string, context: ReconcileContext): Promise<ReconcileResult> {
    let object = this.lookup(key);
    if (!object) return;
    // The key may be stale (a Volume key names its backend): run only for the object's own key.
    if (keyOf(this.definition.kind, object) !== key) return;
    const { kind, finalizer } = this.definition;
    const { api, cache } = this.services;
    const objectContext = this.context(object, key, context);
    try {
      if (finalizer) {
        if (object.metadata.deletionTimestamp) {
          if (!hasFinalizer(object, finalizer)) return;
          const result = await this.reconciler.cleanup?.(object, objectContext);
          if (result && result.requeueAfterMs !== undefined) return result;
          await removeFinalizer(api, kind, object, finalizer, context.signal);
          return;
        }
        if (!hasFinalizer(object, finalizer)) {
          const before = object.metadata.resourceVersion;
          object = await addFinalizer(api, kind, object, finalizer, context.signal);
          cache.store(kind).upsertWritten(object, before);
        }
      }
      return await this.reconciler.reconcile(object, objectContext);
    } catch (error) {
      if (!(error instanceof WriteFenced) && !context.signal.aborted) {
        objectContext.event('Warning', 'ReconcileFailed', error instanceof Error ? error.message : String(error), 'Reconcile');
      }
      throw error;
    }
  }

  private lookup(key: string): KindMap[K] | undefined {
    const ref = refOfKey(key);
    if (!ref || ref.kind !== this.definition.kind) return undefined;
    return this.services.cache.get(this.definition.kind, ref.namespace, ref.name);
  }

  private context(object: KindMap[K], key: string, core: ReconcileContext): ObjectContext<K> {
    const { kind } = this.definition;
    const { cache, status, events, secrets } = this.services;
    const ref = refOfKey(key)!;
    const latest = () => cache.get(kind, ref.namespace, ref.name) ?? object;
    const subject = () => ({ apiVersion: resourceOf(kind).apiVersion, kind, metadata: latest().metadata });
    const event = (type: EventType, reason: string, note: string, action = 'Reconcile') => events.record(subject(), { type, reason, note, action });
    return {
      kind,
      ref,
      key,
      // Read on use: the core makes a run's logger (with its reconcileID) only when asked.
      get reconcileId() {
        return String((core.logger.bindings() as { reconcileID?: unknown }).reconcileID ?? '');
      },
      signal: core.signal,
      get logger() {
        return core.logger;
      },
      locks: core.locks,
      backend: core.backend,
      cache,
      secrets,
      event,
      async updateStatus(mutate, options = {}) {
        const before = latest();
        const written = await status.update(kind, before, mutate, { signal: core.signal, ...options });
        const from = (before.status as { phase?: string } | undefined)?.phase;
        const to = (written?.status as { phase?: string } | undefined)?.phase;
        if (written && to !== undefined && to !== from) {
          event(WARNING_PHASES.has(to) ? 'Warning' : 'Normal', to, `phase ${from ?? '(none)'} -> ${to}`, 'PhaseChange');
        }
        return written;
      },
    };
  }
}
