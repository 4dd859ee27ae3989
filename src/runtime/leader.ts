// Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm, written anew).
// Guarantees:
// - at most one replica believes it leads at a time, provided the others' clocks run at
//   the same speed (no clock is compared with another: a follower measures the lease's
//   age from when *it* saw the last change);
// - fencing: `fence()` throws once this replica's last successful renewal is older than
//   the renew deadline (10 s), which is shorter than the lease (15 s) that any other
//   replica must see unchanged before it takes over; so no write leaves a former leader
//   after another could lead. `onLost` listeners hear of it at the same moment;
// - `release()` (on SIGTERM) hands the lease back with an empty holder, so another replica
//   leads at its next try (within the retry period, 2 s), not after the lease runs out;
// - a follower given a `watch` sees each renewal as it happens and tries again the moment
//   the lease can have expired or was released: a dead leader is replaced within the lease
//   duration of its last renewal, a released lease is taken at once;
// - `leader_election_master_status{name}` is 1 exactly while this replica leads.
import { randomInt } from 'node:crypto';
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import type { Gauge } from 'prom-client';
import type { Logger } from '../log.js';
import { realClock, type Clock, type TimerHandle } from '../core/clock.js';
import { ApiError, WriteFenced, isConflict, isNotFound, type KubeApi } from './api.js';
import { leaseResource, resourcePath } from './resources.js';

export interface LeaderElectionOptions {
  /** Not fenced: the Lease is what the fence depends on. */
  api: KubeApi;
  namespace: string;
  /** The Lease's name. */
  name: string;
  /** Unique per replica (the pod name plus a random suffix). */
  identity: string;
  /** Default 15 s. */
  leaseDurationMs?: number;
  /** Default 10 s; must be below the lease duration. */
  renewDeadlineMs?: number;
  /** Default 2 s. */
  retryPeriodMs?: number;
  clock?: Clock;
  /** Wall-clock time written into the Lease (for people; the algorithm never reads it back). */
  wallClock?: () => Date;
  logger?: Logger;
  /** `leader_election_master_status`, labelled `name`. */
  status?: Gauge<'name'>;
  /**
   * Reports every change of the Lease while this replica follows (see `watchLease`), so it
   * sees a renewal when it happens and tries again the moment the lease can expire or is
   * released, instead of up to a retry period later. Without it: polling only.
   */
  watch?: LeaseWatch;
}

/** Calls `onChange` with each new state of the Lease until `signal` aborts. */
export type LeaseWatch = (onChange: (lease: Lease) => void, signal: AbortSignal) => void;

/** A LeaseWatch through the API server's watch of one Lease, restarted 1 s after it ends. */
export function watchLease(kubeConfig: KubeConfig, namespace: string, name: string): LeaseWatch {
  return (onChange, signal) => {
    const path = resourcePath(leaseResource, { namespace });
    const start = () => {
      if (signal.aborted) return;
      let restarted = false;
      const again = () => {
        if (restarted || signal.aborted) return;
        restarted = true;
        setTimeout(start, 1_000).unref();
      };
      new Watch(kubeConfig)
        .watch(path, { fieldSelector: `metadata.name=${name}` }, (type, object: Lease) => {
          if (type === 'ADDED' || type === 'MODIFIED') onChange(object);
        }, again)
        .then((request) => {
          if (signal.aborted) request.abort();
          else signal.addEventListener('abort', () => request.abort(), { once: true });
        }, again);
    };
    start();
  };
}

export interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  spec?: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string | null;
    renewTime?: string | null;
    leaseTransitions?: number;
  };
}

export class LeaderElector {
  readonly identity: string;
  private readonly api: KubeApi;
  private readonly path: string;
  private readonly options: Required<Pick<LeaderElectionOptions, 'namespace' | 'name' | 'leaseDurationMs' | 'renewDeadlineMs' | 'retryPeriodMs'>>;
  private readonly clock: Clock;
  private readonly wallClock: () => Date;
  private readonly logger?: Logger;
  private readonly status?: Gauge<'name'>;
  // The last Lease record seen and when (on `clock`) it was first seen in that state.
  private observed?: { key: string; at: number; lease: Lease };
  private leading = false;
  // When (on `clock`) the request of the last successful acquire or renew was sent.
  private renewedAt = -Infinity;
  private timer?: TimerHandle;
  // Fires at the renew deadline of the last renewal: leadership ends then, not at the next attempt.
  private deadlineTimer?: TimerHandle;
  private readonly lostListeners = new Set<() => void>();
  private readonly stopped = new AbortController();
  private readonly watch?: LeaseWatch;
  // Ends the current wait between attempts early (the watched Lease may be free now).
  private wake?: () => void;
  private wakeTimer?: TimerHandle;
  // A wake-up that came while no wait was running (an attempt was in flight): the next wait ends at once.
  private wokenEarly = false;

  constructor(options: LeaderElectionOptions) {
    this.api = options.api;
    this.identity = options.identity;
    this.options = {
      namespace: options.namespace,
      name: options.name,
      leaseDurationMs: options.leaseDurationMs ?? 15_000,
      renewDeadlineMs: options.renewDeadlineMs ?? 10_000,
      retryPeriodMs: options.retryPeriodMs ?? 2_000,
    };
    if (this.options.renewDeadlineMs >= this.options.leaseDurationMs) throw new RangeError('the renew deadline must be shorter than the lease duration');
    if (this.options.retryPeriodMs >= this.options.renewDeadlineMs) throw new RangeError('the retry period must be shorter than the renew deadline');
    this.path = resourcePath(leaseResource, { namespace: options.namespace, name: options.name });
    this.clock = options.clock ?? realClock;
    this.wallClock = options.wallClock ?? (() => new Date());
    this.logger = options.logger;
    this.status = options.status;
    this.watch = options.watch;
    this.status?.set({ name: options.name }, 0);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Throws a WriteFenced unless this replica leads and renewed within the renew deadline. */
  fence(): void {
    if (!this.leading) throw new WriteFenced(`${this.identity} does not lead ${this.options.namespace}/${this.options.name}`);
    if (this.clock.now() - this.renewedAt >= this.options.renewDeadlineMs) {
      this.lose('the renew deadline passed');
      throw new WriteFenced(`${this.identity} could not renew its lease within ${this.options.renewDeadlineMs} ms`);
    }
  }

  /** Called once, when leadership is lost (not on release). */
  onLost(listener: () => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  /** Tries every retry period until this replica leads, then keeps renewing. Rejects when `signal` aborts first. */
  async acquire(signal?: AbortSignal): Promise<void> {
    const abort = signal ? AbortSignal.any([signal, this.stopped.signal]) : this.stopped.signal;
    const following = new AbortController();
    this.watch?.((lease) => this.onWatched(lease), AbortSignal.any([abort, following.signal]));
    try {
      for (;;) {
        if (abort.aborted) throw abort.reason;
        if (await this.tryAcquireOrRenew(abort)) break;
        await this.wait(this.jittered(this.options.retryPeriodMs), abort);
      }
    } finally {
      following.abort();
      this.wokenEarly = false;
      if (this.wakeTimer !== undefined) this.clock.clearTimeout(this.wakeTimer);
      this.wakeTimer = undefined;
    }
    this.logger?.info({ lease: `${this.options.namespace}/${this.options.name}`, identity: this.identity }, 'became the leader');
    this.scheduleRenew();
  }

  /** Stops renewing and, when leading, hands the lease back at once. Never throws. */
  async release(): Promise<void> {
    this.stopped.abort(new Error('leader election stopped'));
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    if (this.deadlineTimer !== undefined) this.clock.clearTimeout(this.deadlineTimer);
    this.timer = this.deadlineTimer = undefined;
    if (!this.leading) return;
    this.leading = false;
    this.status?.set({ name: this.options.name }, 0);
    const lease = this.observed?.lease;
    if (!lease) return;
    try {
      const now = this.microTime();
      await this.api.update<Lease>(this.path, {
        ...lease,
        spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: now, acquireTime: now },
      }, { timeoutMs: this.options.retryPeriodMs });
      this.logger?.info({ lease: `${this.options.namespace}/${this.options.name}` }, 'released the lease');
    } catch (error) {
      this.logger?.warn({ err: error }, 'could not release the lease; the next leader waits for it to expire');
    }
  }

  /** A Lease change seen by the watch: try again when it is released or when it can have expired. */
  private onWatched(lease: Lease): void {
    if (this.leading) return;
    this.observe(lease);
    const holder = lease.spec?.holderIdentity ?? '';
    const expiresIn = holder === '' ? 0 : this.observed!.at + (lease.spec?.leaseDurationSeconds ?? this.leaseSeconds()) * 1000 - this.clock.now() + 50;
    if (this.wakeTimer !== undefined) this.clock.clearTimeout(this.wakeTimer);
    this.wakeTimer = this.clock.setTimeout(() => {
      this.wakeTimer = undefined;
      if (this.wake) this.wake();
      else this.wokenEarly = true;
    }, Math.max(0, expiresIn));
  }

  private scheduleRenew(): void {
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      void this.renew();
    }, this.options.retryPeriodMs);
  }

  private async renew(): Promise<void> {
    if (this.stopped.signal.aborted || !this.leading) return;
    const ok = await this.tryAcquireOrRenew(this.stopped.signal);
    if (this.stopped.signal.aborted || !this.leading) return;
    if (!ok && this.clock.now() - this.renewedAt >= this.options.renewDeadlineMs) {
      this.lose(`no renewal for ${this.options.renewDeadlineMs} ms`);
      return;
    }
    this.scheduleRenew();
  }

  private lose(why: string): void {
    if (this.deadlineTimer !== undefined) this.clock.clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    if (!this.leading) return;
    this.leading = false;
    this.status?.set({ name: this.options.name }, 0);
    this.logger?.error({ lease: `${this.options.namespace}/${this.options.name}` }, `lost leadership: ${why}`);
    for (const listener of this.lostListeners) listener();
  }

  /** One attempt; true when this replica holds the lease afterwards. Never throws. */
  private async tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const sent = this.clock.now();
    const timeoutMs = this.options.retryPeriodMs;
    try {
      let lease: Lease;
      try {
        lease = await this.api.get<Lease>(this.path, { signal, timeoutMs });
      } catch (error) {
        if (!isNotFound(error)) throw error;
        const now = this.microTime();
        const created = await this.api.create<Lease>(resourcePath(leaseResource, { namespace: this.options.namespace }), {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.options.name, namespace: this.options.namespace },
          spec: { holderIdentity: this.identity, leaseDurationSeconds: this.leaseSeconds(), acquireTime: now, renewTime: now, leaseTransitions: 0 },
        }, { signal, timeoutMs });
        return this.held(created, sent);
      }
      this.observe(lease);
      const holder = lease.spec?.holderIdentity ?? '';
      const durationMs = (lease.spec?.leaseDurationSeconds ?? this.leaseSeconds()) * 1000;
      if (holder !== '' && holder !== this.identity && this.clock.now() < this.observed!.at + durationMs) return false;
      const now = this.microTime();
      const takingOver = holder !== this.identity;
      const updated = await this.api.update<Lease>(this.path, {
        ...lease,
        spec: {
          holderIdentity: this.identity,
          leaseDurationSeconds: this.leaseSeconds(),
          acquireTime: takingOver ? now : lease.spec?.acquireTime ?? now,
          renewTime: now,
          leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + (takingOver && holder !== '' ? 1 : 0),
        },
      }, { signal, timeoutMs });
      return this.held(updated, sent);
    } catch (error) {
      if (!signal.aborted && !isConflict(error)) {
        const detail = error instanceof ApiError ? error.message : String(error);
        this.logger?.warn({ lease: `${this.options.namespace}/${this.options.name}` }, `lease attempt failed: ${detail}`);
      }
      return false;
    }
  }

  private held(lease: Lease, sent: number): boolean {
    this.observe(lease);
    this.renewedAt = sent;
    if (this.deadlineTimer !== undefined) this.clock.clearTimeout(this.deadlineTimer);
    this.deadlineTimer = this.clock.setTimeout(() => {
      this.deadlineTimer = undefined;
      this.lose(`no renewal for ${this.options.renewDeadlineMs} ms`);
    }, sent + this.options.renewDeadlineMs - this.clock.now());
    if (!this.leading) {
      this.leading = true;
      this.status?.set({ name: this.options.name }, 1);
    }
    return true;
  }

  private observe(lease: Lease): void {
    const key = JSON.stringify([lease.spec?.holderIdentity, lease.spec?.renewTime, lease.metadata.resourceVersion]);
    if (this.observed?.key !== key) this.observed = { key, at: this.clock.now(), lease };
    else this.observed.lease = lease;
  }

  private leaseSeconds(): number {
    return Math.ceil(this.options.leaseDurationMs / 1000);
  }

  private jittered(ms: number): number {
    return ms + randomInt(0, Math.max(1, Math.floor(ms / 5)));
  }

  /** Waits `ms`, or less when the watch wakes it; rejects when `signal` aborts. */
  private wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.wokenEarly) {
      this.wokenEarly = false;
      return signal.aborted ? Promise.reject(signal.reason) : Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        this.clock.clearTimeout(handle);
        signal.removeEventListener('abort', onAbort);
        this.wake = undefined;
      };
      const onAbort = () => {
        done();
        reject(signal.reason);
      };
      const handle = this.clock.setTimeout(() => {
        done();
        resolve();
      }, ms);
      this.wake = () => {
        done();
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private microTime(): string {
    return this.wallClock().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
  }
}
