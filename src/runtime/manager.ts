// The manager: assembles watches, cache, leader election, controllers and endpoints into
// one operator process. Guarantees:
// - watches start first and every cache syncs before this replica even tries to lead;
// - workers run only while this replica leads: controllers start when the lease is won,
//   and every API write passes the leader's fence (no write after another could lead);
// - watch handlers only enqueue: a change of an object enqueues its key; a change of a
//   related kind enqueues exactly the objects the controller's `watches` map it to (old
//   and new version); the objects present when leadership starts are enqueued at low
//   priority, so real changes overtake them;
// - losing the lease aborts every reconcile at once and ends `run` with 'lost-leadership'
//   (the process exits and restarts, as client-go's leaders do);
// - `stop` (SIGTERM): intake stops, running reconciles get `graceMs` to finish, the rest
//   are aborted through their signals, Events are flushed, the lease is released (the
//   next replica leads at once), watches and endpoints close. `run` then ends with 'stopped'.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { componentLogger, rootLogger, type Logger } from '../log.js';
import { BackendLimiter, Controller, HierarchicalLocks, createCoreMetrics, realClock, serialized, type Clock, type CoreMetrics } from '../core/index.js';
import { KubeApi } from './api.js';
import { Cache } from './cache.js';
import { ObjectReconcilerAdapter, type ControllerDefinition, type ControllerServices } from './controller.js';
import { EventRecorder } from './events.js';
import { HttpEndpoints } from './http.js';
import { keyOf } from './keys.js';
import { LeaderElector, watchLease } from './leader.js';
import { createRuntimeMetrics, resourceOfPath, type RuntimeMetrics } from './metrics.js';
import { kindNames, resourceOf, resourcePath, type AnyObject, type KindName } from './resources.js';
import { SecretReader } from './secrets.js';
import { StatusWriter } from './status.js';
import type { StoreChange } from './store.js';
import { Watcher } from './watcher.js';

/** `hierarchical`: the core's hierarchical locks; `serial`: one global lock (the classic design, for comparison). */
export type ConcurrencyMode = 'hierarchical' | 'serial';

export interface LeaderElectionSettings {
  /** The Lease's namespace and name. */
  namespace: string;
  name: string;
  /** Default: `<hostname>-<random>`. */
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

export interface ManagerOptions {
  kubeConfig: KubeConfig;
  /** Namespaces whose objects are watched; empty or absent: all. Backends (cluster-scoped) are always watched. */
  namespaces?: readonly string[];
  /** Default 'hierarchical'. */
  concurrency?: ConcurrencyMode;
  /** Workers per controller unless its definition says otherwise. Default 10. */
  workers?: number;
  /** Absent: no leader election (this replica always leads; for one replica or tests). */
  leaderElection?: LeaderElectionSettings;
  /** `host:port`; default ':8080' and ':8081', '0' disables. */
  metricsAddress?: string;
  probeAddress?: string;
  registry?: Registry;
  clock?: Clock;
  /** The parent of every component logger (each adds one `component`); default the root logger. */
  logger?: Logger;
  /** Watch silence after which a watch restarts; default 120 s. */
  watchSilenceMs?: number;
}

export type RunOutcome = 'stopped' | 'lost-leadership';

export class Manager {
  readonly cache = new Cache();
  readonly registry: Registry;
  readonly api: KubeApi;
  readonly coreMetrics: CoreMetrics;
  readonly runtimeMetrics: RuntimeMetrics;
  readonly identity: string;
  private readonly options: ManagerOptions;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly baseLogger: Logger;
  // Fixed once `run` starts.
  private readonly definitions: ControllerDefinition[] = [];
  // One per (kind, watched namespace); all started by `run`, all stopped by `shutdown`.
  private readonly watchers: Watcher<AnyObject>[] = [];
  // Non-empty only while (or after) leading: controllers exist only on the leader.
  private readonly controllers: Controller[] = [];
  // The store subscriptions that enqueue; emptied first at shutdown, so intake stops before anything else.
  private readonly unsubscribes: Array<() => void> = [];
  private readonly elector?: LeaderElector;
  private readonly events: EventRecorder;
  private readonly http: HttpEndpoints;
  private listening?: ReturnType<HttpEndpoints['start']>;
  // Aborted when shutdown begins: ends the wait for sync and for the lease.
  private readonly stopping = new AbortController();
  // new -> syncing -> standby -> leading -> stopping -> stopped; any state may go to stopping.
  private state: 'new' | 'syncing' | 'standby' | 'leading' | 'stopping' | 'stopped' = 'new';
  // Resolves `done` with how the run ended; called once, at the end of shutdown.
  private outcome?: (outcome: RunOutcome) => void;
  private readonly done: Promise<RunOutcome>;
  // Set by the first stop or lost lease: later calls share it.
  private stopped?: Promise<{ unfinished: string[] }>;

  constructor(options: ManagerOptions) {
    this.options = options;
    this.done = new Promise((resolve) => (this.outcome = resolve));
    this.clock = options.clock ?? realClock;
    // Each component's logger hangs off the base, so a line carries one `component`.
    this.baseLogger = options.logger ?? rootLogger;
    this.logger = componentLogger('manager', this.baseLogger);
    this.registry = options.registry ?? new Registry();
    if (!options.registry) collectDefaultMetrics({ register: this.registry });
    this.coreMetrics = createCoreMetrics(this.registry);
    this.runtimeMetrics = createRuntimeMetrics(this.registry, () => this.clock.now());
    this.identity = options.leaderElection?.identity ?? `${hostname()}-${randomBytes(3).toString('hex')}`;
    this.api = new KubeApi(options.kubeConfig, { observer: { wrote: (verb, path) => this.runtimeMetrics.apiWrites.inc({ verb, resource: resourceOfPath(path) }) } });
    if (options.leaderElection) {
      const election = options.leaderElection;
      this.elector = new LeaderElector({
        api: this.api.unfenced(),
        namespace: election.namespace,
        name: election.name,
        identity: this.identity,
        leaseDurationMs: election.leaseDurationMs,
        renewDeadlineMs: election.renewDeadlineMs,
        retryPeriodMs: election.retryPeriodMs,
        clock: this.clock,
        logger: componentLogger('leader-election', this.baseLogger),
        status: this.runtimeMetrics.leaderStatus,
        watch: watchLease(options.kubeConfig, election.namespace, election.name),
      });
      const elector = this.elector;
      this.api.setFence(() => elector.fence());
    }
    this.events = new EventRecorder({ api: this.api, instance: this.identity, clock: this.clock, logger: componentLogger('events', this.baseLogger) });
    this.http = new HttpEndpoints({
      registry: this.registry,
      metricsAddress: options.metricsAddress ?? ':8080',
      probeAddress: options.probeAddress ?? ':8081',
      healthz: () => (this.state === 'stopped' ? 'stopped' : undefined),
      readyz: () => this.notReadyBecause(),
    });
  }

  /** Adds a controller; call before `run`. */
  register(definition: ControllerDefinition): void {
    if (this.state !== 'new') throw new Error('controllers are registered before the manager runs');
    if (this.definitions.some((d) => d.name === definition.name)) throw new Error(`a controller named ${definition.name} is registered already`);
    this.definitions.push(definition);
  }

  /** True while this replica leads (always, without leader election, once running). */
  get leading(): boolean {
    return this.state === 'leading';
  }

  /** Why /readyz fails now, or undefined when ready. */
  notReadyBecause(): string | undefined {
    if (this.state === 'stopping' || this.state === 'stopped') return 'shutting down';
    const unsynced = this.watchers.filter((w) => !w.synced).length;
    if (this.state === 'new' || unsynced > 0) return `caches not synced (${unsynced} of ${this.watchers.length} watches pending)`;
    return undefined;
  }

  /** Binds the endpoints, returns their addresses. Called by `run` if not before. */
  async listen(): Promise<Awaited<ReturnType<HttpEndpoints['start']>>> {
    return (this.listening ??= this.http.start());
  }

  /**
   * Runs until `stop` or until leadership is lost. Resolves with why it ended; rejects only
   * when the endpoints cannot bind.
   */
  async run(): Promise<RunOutcome> {
    if (this.state !== 'new') throw new Error('a manager runs once');
    this.state = 'syncing';
    await this.listen();
    this.startWatches();
    void this.lead().catch((error: unknown) => {
      if (!this.stopping.signal.aborted) this.logger.error({ err: error }, 'the manager failed');
    });
    return this.done;
  }

  /** See the module comment. Idempotent; resolves with the keys aborted past the grace. */
  stop({ graceMs = 30_000 }: { graceMs?: number } = {}): Promise<{ unfinished: string[] }> {
    this.stopped ??= this.shutdown(graceMs, 'stopped');
    return this.stopped;
  }

  private async shutdown(graceMs: number, outcome: RunOutcome): Promise<{ unfinished: string[] }> {
    this.state = 'stopping';
    this.stopping.abort(new Error('the manager is stopping'));
    for (const unsubscribe of this.unsubscribes.splice(0)) unsubscribe();
    const results = await Promise.all(this.controllers.map((c) => c.stop({ graceMs })));
    const unfinished = results.flatMap((r) => r.unfinished);
    await this.events.flush();
    await this.elector?.release();
    await Promise.all(this.watchers.map((w) => w.stop()));
    await this.http.close();
    this.state = 'stopped';
    this.logger.info({ unfinished }, `operator stopped (${outcome})`);
    this.outcome?.(outcome);
    return { unfinished };
  }

  private startWatches(): void {
    const namespaces = this.options.namespaces?.length ? this.options.namespaces : [undefined];
    for (const kind of kindNames) {
      const resource = resourceOf(kind);
      for (const namespace of resource.namespaced ? namespaces : [undefined]) {
        const watcher = new Watcher<AnyObject>({
          kubeConfig: this.options.kubeConfig,
          api: this.api,
          path: resourcePath(resource, { namespace }),
          namespace,
          apiVersion: resource.apiVersion,
          kind,
          store: this.cache.store(kind) as never,
          clock: this.clock,
          silenceMs: this.options.watchSilenceMs,
          metrics: this.runtimeMetrics,
          logger: componentLogger('watch', this.baseLogger),
        });
        this.watchers.push(watcher);
        watcher.start();
      }
      const watchers = this.watchers.filter((w) => w.kind === kind);
      this.runtimeMetrics.trackSyncAge(kind, () => {
        const times = watchers.map((w) => w.lastSync);
        return times.some((t) => t === undefined) ? undefined : Math.min(...(times as number[]));
      });
    }
  }

  private async lead(): Promise<void> {
    const abort = this.stopping.signal;
    await Promise.race([Promise.all(this.watchers.map((w) => w.whenSynced())), new Promise((_, reject) => abort.addEventListener('abort', () => reject(abort.reason), { once: true }))]);
    this.logger.info({ watches: this.watchers.length, objects: Object.fromEntries(kindNames.map((k) => [k, this.cache.store(k).size])) }, 'caches synced');
    this.state = 'standby';
    if (this.elector) {
      this.logger.info({ identity: this.identity }, 'waiting to lead');
      await this.elector.acquire(abort);
      this.elector.onLost(() => {
        this.stopped ??= this.shutdown(0, 'lost-leadership');
      });
    }
    if (abort.aborted) return;
    this.state = 'leading';
    this.startControllers();
  }

  private startControllers(): void {
    const limiter = new BackendLimiter({ clock: this.clock, metrics: this.coreMetrics.limiterSink });
    const locks = new HierarchicalLocks({ clock: this.clock, observer: this.coreMetrics.lockObserver });
    const services: ControllerServices = {
      cache: this.cache,
      api: this.api,
      secrets: new SecretReader({ api: this.api, clock: this.clock }),
      status: new StatusWriter({
        api: this.api,
        cache: this.cache,
        clock: this.clock,
        observer: {
          written: (kind) => this.runtimeMetrics.statusWrites.inc({ kind, result: 'written' }),
          skipped: (kind) => this.runtimeMetrics.statusWrites.inc({ kind, result: 'skipped' }),
        },
      }),
      events: this.events,
      limiter,
      coreMetrics: this.coreMetrics,
      clock: this.clock,
      logger: this.logger,
    };
    for (const definition of this.definitions) {
      const logger = componentLogger('controller', this.baseLogger).child({ controller: definition.name });
      const adapter = new ObjectReconcilerAdapter(definition, definition.create({ ...services, logger }), services);
      const controller = new Controller({
        name: definition.name,
        reconciler: this.options.concurrency === 'serial' ? serialized(adapter) : adapter,
        locks,
        limiter,
        maxConcurrentReconciles: definition.maxConcurrentReconciles ?? this.options.workers ?? 10,
        reconcileTimeoutMs: definition.reconcileTimeoutMs,
        metrics: this.coreMetrics,
        logger,
      });
      this.controllers.push(controller);
      const enqueue = (object: AnyObject, priority: 'normal' | 'low') => {
        try {
          controller.enqueue(keyOf(definition.kind, object), { priority });
        } catch (error) {
          // A Volume without spec.backend cannot be keyed; the API schema makes it required.
          logger.warn({ err: error }, 'object without a key ignored');
        }
      };
      const primary = this.cache.store(definition.kind) as unknown as { subscribe(l: (c: StoreChange<AnyObject>) => void): () => void; list(): AnyObject[] };
      this.unsubscribes.push(
        primary.subscribe((change) => {
          // A Volume whose key changed (it cannot: backend is immutable) would leave its old key to end quietly.
          if (change.old && change.type !== 'deleted') enqueue(change.old, 'normal');
          enqueue(change.object, 'normal');
        }),
      );
      for (const related of definition.watches ?? []) {
        const store = this.cache.store(related.kind as KindName) as unknown as { subscribe(l: (c: StoreChange<AnyObject>) => void): () => void };
        this.unsubscribes.push(
          store.subscribe((change) => {
            const affected = new Map<string, AnyObject>();
            for (const version of [change.old, change.object]) {
              if (!version) continue;
              for (const object of related.map(version, this.cache)) affected.set(JSON.stringify([object.metadata.namespace, object.metadata.name]), object as AnyObject);
            }
            for (const object of affected.values()) enqueue(object, 'normal');
          }),
        );
      }
      for (const object of primary.list()) enqueue(object, 'low');
      controller.start();
    }
    this.logger.info({ controllers: this.definitions.map((d) => d.name), identity: this.identity }, 'leading: controllers started');
  }

  /** Resolves how `run` ended. */
  get finished(): Promise<RunOutcome> {
    return this.done;
  }
}
