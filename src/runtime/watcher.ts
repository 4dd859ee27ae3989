// A supervised list+watch of one collection, feeding a Store. client-node 2.0.1's informer
// relists on 410 Gone and reconnects after its 30 s inactivity timeout, but stops for good
// on any other error (apiserver restarting, connection refused, 5xx, 429 "storage is
// (re)initializing", a failed relist). Guarantees here:
// - a list is read in pages of 500 (one snapshot), so a large collection is no single huge answer;
// - any such error restarts the watch after a backoff (0.5 s doubling to 30 s, with
//   jitter; reset once a list succeeds), as a fresh informer that lists first, so nothing
//   changed or deleted meanwhile is missed: the list replaces the store's part;
// - a watch silent for `silenceMs` (no event, list or reconnect; client-node reconnects an
//   idle watch every 30 s) is restarted too: a hung connection cannot freeze the cache;
// - a stopped or superseded informer can no longer touch the store;
// - `trellis_informer_restarts_total{kind}` counts restarts; `synced` turns true at the
//   first complete list and stays true (the cache keeps serving what it has while a
//   watch recovers).
import { makeInformer, type KubeConfig, type KubernetesObject, type ListPromise } from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import { ExponentialBackoff, realClock, type Clock, type TimerHandle } from '../core/index.js';
import type { KubeApi } from './api.js';
import type { RuntimeMetrics } from './metrics.js';
import type { Store, StoredObject } from './store.js';

export interface WatcherOptions<T extends StoredObject> {
  kubeConfig: KubeConfig;
  api: KubeApi;
  /** The collection, e.g. /apis/trellis.dev/v1alpha1/namespaces/a/volumes. */
  path: string;
  /** The namespace the collection is limited to, if any: a list then replaces only that part of the store. */
  namespace?: string;
  /** Filled into listed items, which the server sends without them. */
  apiVersion: string;
  kind: string;
  store: Store<T>;
  clock?: Clock;
  /** Default 120 s. */
  silenceMs?: number;
  /** Default 500 ms, doubled per failed attempt up to `maxBackoffMs` (default 30 s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  metrics?: RuntimeMetrics;
  logger?: Logger;
}

interface ListResult<T> {
  metadata?: { resourceVersion?: string; continue?: string };
  items: T[];
}

/** Objects per list page: a large collection is listed in pages, one consistent snapshot. */
const PAGE_SIZE = 500;

export class Watcher<T extends StoredObject> {
  private readonly options: WatcherOptions<T>;
  private readonly clock: Clock;
  private readonly silenceMs: number;
  // Bumped at every (re)start: callbacks of an older informer see a different number and do nothing.
  private generation = 0;
  private informer?: { stop(): Promise<void> };
  /** Restarts since the last successful list (one key: this watch). */
  private readonly backoff: ExponentialBackoff;
  private restartTimer?: TimerHandle;
  private watchdog?: TimerHandle;
  private stopped = true;
  private lastActivity = 0;
  private syncedOnce = false;
  private readonly syncWaiters: Array<() => void> = [];

  constructor(options: WatcherOptions<T>) {
    this.options = options;
    this.clock = options.clock ?? realClock;
    this.silenceMs = options.silenceMs ?? 120_000;
    this.backoff = new ExponentialBackoff({ baseMs: options.initialBackoffMs ?? 500, capMs: options.maxBackoffMs ?? 30_000 });
  }

  get kind(): string {
    return this.options.kind;
  }

  get synced(): boolean {
    return this.syncedOnce;
  }

  /** When (on the clock) the watch last listed, (re)connected or delivered an event. */
  get lastSync(): number | undefined {
    return this.syncedOnce ? this.lastActivity : undefined;
  }

  /** Resolves at the first complete list. */
  whenSynced(): Promise<void> {
    return this.syncedOnce ? Promise.resolve() : new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.lastActivity = this.clock.now();
    this.run();
    this.armWatchdog();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    if (this.restartTimer !== undefined) this.clock.clearTimeout(this.restartTimer);
    if (this.watchdog !== undefined) this.clock.clearTimeout(this.watchdog);
    this.restartTimer = this.watchdog = undefined;
    const informer = this.informer;
    this.informer = undefined;
    await informer?.stop();
  }

  private run(): void {
    const generation = ++this.generation;
    const current = () => generation === this.generation && !this.stopped;
    const { kubeConfig, api, path, store, apiVersion, kind, namespace } = this.options;
    const list = (async () => {
      const result = await api.get<ListResult<T>>(path, { query: { limit: PAGE_SIZE } });
      // Later pages continue the first page's snapshot, whose resourceVersion the watch resumes from.
      for (let next = result.metadata?.continue; next; ) {
        const page = await api.get<ListResult<T>>(path, { query: { limit: PAGE_SIZE, continue: next } });
        result.items.push(...page.items);
        next = page.metadata?.continue;
      }
      // A superseded informer's late list must not overwrite a newer one's: fail it instead.
      if (!current()) throw new Error('superseded');
      const items = result.items.map((item) => ({ apiVersion, kind, ...item }));
      store.replace(items, namespace);
      this.touch();
      this.backoff.forget('watch');
      if (!this.syncedOnce) {
        this.syncedOnce = true;
        this.options.metrics?.informerSynced.set({ kind }, 1);
        for (const resolve of this.syncWaiters.splice(0)) resolve();
      }
      return { ...result, items };
    }) as unknown as ListPromise<KubernetesObject>;
    const informer = makeInformer<KubernetesObject>(kubeConfig, path, list);
    this.informer = informer;
    const apply = (change: (object: T) => void) => (object: KubernetesObject) => {
      if (!current()) return;
      this.touch();
      change({ apiVersion, kind, ...object } as unknown as T);
    };
    informer.on('add', apply((o) => store.upsert(o)));
    informer.on('update', apply((o) => store.upsert(o)));
    informer.on('delete', apply((o) => store.delete(o)));
    informer.on('connect', () => {
      if (current()) this.touch();
    });
    informer.on('error', (error: unknown) => {
      if (current()) this.restart(error);
    });
    informer.start().catch((error: unknown) => {
      if (current()) this.restart(error);
    });
  }

  private restart(reason: unknown): void {
    const old = this.informer;
    this.informer = undefined;
    this.generation++;
    void old?.stop();
    this.options.metrics?.informerRestarts.inc({ kind: this.options.kind });
    const jittered = this.backoff.when('watch') * (0.8 + Math.random() * 0.4);
    this.options.logger?.warn({ kind: this.options.kind, path: this.options.path, retryInMs: Math.round(jittered) }, `watch stopped, restarting: ${describe(reason)}`);
    if (this.restartTimer !== undefined) this.clock.clearTimeout(this.restartTimer);
    this.restartTimer = this.clock.setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopped) this.run();
    }, jittered);
  }

  private armWatchdog(): void {
    this.watchdog = this.clock.setTimeout(() => {
      this.watchdog = undefined;
      if (this.stopped) return;
      // A restart already pending is activity enough; an informer silent too long is not.
      if (this.restartTimer === undefined && this.clock.now() - this.lastActivity >= this.silenceMs) {
        this.touch();
        this.restart(new Error(`no sign of life for ${this.silenceMs} ms`));
      }
      this.armWatchdog();
    }, Math.max(1, this.silenceMs / 4));
  }

  private touch(): void {
    this.lastActivity = this.clock.now();
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
