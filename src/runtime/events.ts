// Kubernetes Events (events.k8s.io/v1) about Trellis objects. Guarantees:
// - the same event (object, type, reason, action, note) repeated within the series window
//   (6 min, as client-go) becomes one Event whose `series.count` grows, not one per retry;
//   the series is written back at most once per `seriesIntervalMs`, so a hot retry loop
//   costs one API write per interval at most;
// - recording never throws and never blocks the caller: failures are logged at debug
//   level (an Event is a courtesy, never a reason to fail a reconcile); `flush` waits for
//   the writes in flight, for shutdown;
// - Events go through the fenced KubeApi: a replica that is not the leader records none.
import { createHash } from 'node:crypto';
import type { Logger } from '../log.js';
import { realClock, type Clock } from '../core/clock.js';
import type { KubeApi } from './api.js';
import { eventResource, resourcePath } from './resources.js';

export type EventType = 'Normal' | 'Warning';

export interface EventDescription {
  type: EventType;
  /** CamelCase, why: `Provisioned`, `ReconcileFailed`. */
  reason: string;
  /** CamelCase, what was done or tried: `Create`, `Reconcile`, `PhaseChange`. */
  action: string;
  /** For a person; never a Secret's value. Cut to 1 kB. */
  note: string;
}

export interface EventSubject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string };
}

export interface EventRecorderOptions {
  api: KubeApi;
  /** This replica's name (the pod name), as `reportingInstance`. */
  instance: string;
  controller?: string;
  clock?: Clock;
  /** Default 30 s. */
  seriesIntervalMs?: number;
  logger?: Logger;
  /** Wall-clock time for the Events' timestamps; default Date. */
  wallClock?: () => Date;
}

const SERIES_WINDOW_MS = 6 * 60_000;
const NOTE_LIMIT = 1024;

interface Series {
  name: string;
  namespace: string;
  count: number;
  // On `clock`: when the event was last seen, and when the API last heard of it.
  lastSeen: number;
  lastWritten: number;
  // The creation request, while in flight: a repeat waits for it before patching.
  created: Promise<boolean>;
}

export class EventRecorder {
  private readonly api: KubeApi;
  private readonly instance: string;
  private readonly controller: string;
  private readonly clock: Clock;
  private readonly seriesIntervalMs: number;
  private readonly logger?: Logger;
  private readonly wallClock: () => Date;
  // Aggregation key -> its series; entries past the window are dropped on the next record.
  private readonly series = new Map<string, Series>();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(options: EventRecorderOptions) {
    this.api = options.api;
    this.instance = options.instance;
    this.controller = options.controller ?? 'trellis.dev/operator';
    this.clock = options.clock ?? realClock;
    this.seriesIntervalMs = options.seriesIntervalMs ?? 30_000;
    this.logger = options.logger;
    this.wallClock = options.wallClock ?? (() => new Date());
  }

  record(subject: EventSubject, event: EventDescription): void {
    const now = this.clock.now();
    const note = event.note.length > NOTE_LIMIT ? `${event.note.slice(0, NOTE_LIMIT - 1)}…` : event.note;
    const key = JSON.stringify([subject.metadata.uid ?? subject.metadata.namespace, subject.kind, subject.metadata.name, event.type, event.reason, event.action, note]);
    this.forgetOld(now);
    const known = this.series.get(key);
    if (known && now - known.lastSeen < SERIES_WINDOW_MS) {
      known.count++;
      known.lastSeen = now;
      if (now - known.lastWritten >= this.seriesIntervalMs) {
        known.lastWritten = now;
        this.track(known.created.then((ok) => (ok ? this.patchSeries(known) : false)));
      }
      return;
    }
    const namespace = subject.metadata.namespace ?? 'default';
    const name = `${subject.metadata.name}.${createHash('sha256').update(`${key}${this.wallClock().getTime()}`).digest('hex').slice(0, 16)}`;
    const body = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace },
      eventTime: this.microTime(),
      reportingController: this.controller,
      reportingInstance: this.instance,
      action: event.action,
      reason: event.reason,
      type: event.type,
      note,
      regarding: {
        apiVersion: subject.apiVersion,
        kind: subject.kind,
        name: subject.metadata.name,
        namespace: subject.metadata.namespace,
        uid: subject.metadata.uid,
        resourceVersion: subject.metadata.resourceVersion,
      },
    };
    const created = this.api.create(resourcePath(eventResource, { namespace }), body).then(
      () => true,
      (error: unknown) => {
        this.logger?.debug({ err: error, reason: event.reason }, 'could not record an Event');
        return false;
      },
    );
    this.series.set(key, { name, namespace, count: 1, lastSeen: now, lastWritten: now, created });
    this.track(created);
  }

  /** Waits for the Event writes in flight. */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private async patchSeries(series: Series): Promise<boolean> {
    try {
      await this.api.patch(resourcePath(eventResource, { namespace: series.namespace, name: series.name }), 'merge', {
        series: { count: series.count, lastObservedTime: this.microTime() },
      });
      return true;
    } catch (error) {
      this.logger?.debug({ err: error }, 'could not update an Event series');
      return false;
    }
  }

  private track(promise: Promise<unknown>): void {
    this.inFlight.add(promise);
    void promise.finally(() => this.inFlight.delete(promise));
  }

  private forgetOld(now: number): void {
    if (this.series.size < 256) return;
    for (const [key, series] of this.series) if (now - series.lastSeen >= SERIES_WINDOW_MS) this.series.delete(key);
  }

  /** metav1.MicroTime: RFC 3339 with microseconds. */
  private microTime(): string {
    return this.wallClock().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
  }
}
