// The keyed work queue. Guarantees (after client-go's workqueue):
// - Fair: keys are handed out in the order they were added, normal priority before low.
// - Stingy: a key is never handed out while it is being processed; adds before it is
//   handed out collapse into one run, adds while it is processed into exactly one re-run
//   after `done`, never lost.
// - No head-of-line blocking: a key being processed is simply not ready; others go on.
// - Delayed adds keep the earliest ready time; `addRateLimited` paces a key's retries.
// - Shutdown rejects new adds and hands out nothing more; `drain` waits for in-flight keys.
// - Idle keys leave no state: every map is empty when nothing is queued, delayed or running.
import { RetryLimiter } from './backoff.js';
import { realClock, type Clock, type TimerHandle } from './clock.js';

export type Priority = 'normal' | 'low';

export interface AddOptions {
  /** `low` for startup lists and resyncs, so that real changes overtake them. */
  priority?: Priority;
}

/** What the queue reports; metrics.ts turns it into controller-runtime's workqueue metrics. */
export interface QueueMetricsSink {
  added(): void;
  depth(ready: number): void;
  /** Seconds a key waited between becoming ready and being handed out. */
  queued(seconds: number): void;
  /** Seconds a key was processed, from hand-out to `done`. */
  worked(seconds: number): void;
  retried(): void;
}

export interface WorkQueueOptions {
  clock?: Clock;
  retryLimiter?: RetryLimiter;
  metrics?: QueueMetricsSink;
}

interface DirtyEntry {
  priority: Priority;
  readySince: number;
  // Sequence number of the key's one live FIFO entry; 0 while none (the key is processing).
  seq: number;
}

/** A FIFO slot; live only while its `seq` matches the key's DirtyEntry. */
interface ReadyEntry {
  key: string;
  seq: number;
}

interface Delayed {
  readyAt: number;
  timer: TimerHandle;
  priority: Priority;
}

/** Array-backed FIFO with O(1) amortized shift. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }

  get length(): number {
    return this.items.length - this.head;
  }
}

export class WorkQueue {
  private readonly clock: Clock;
  private readonly retryLimiter: RetryLimiter;
  private readonly metrics?: QueueMetricsSink;

  // Keys that need a run. A key here and not in `processing` is ready and has an entry in
  // the FIFO of its priority; a key here and in `processing` re-runs after `done`.
  private readonly dirty = new Map<string, DirtyEntry>();
  // Keys handed out and not yet `done`, with the hand-out time.
  private readonly processing = new Map<string, number>();
  // Ready keys per priority. May hold stale entries (a key promoted from low to normal, or
  // handed out and added again since): an entry is live only if its seq is the key's
  // current one. `take` skips stale ones; both are cleared whenever nothing is ready.
  private readonly normal = new Fifo<ReadyEntry>();
  private readonly low = new Fifo<ReadyEntry>();
  private nextSeq = 1;
  // Number of keys in `dirty` and not in `processing`.
  private readyCount = 0;
  // Keys waiting for a delayed add; one timer per key, the earliest ready time wins.
  private readonly delayed = new Map<string, Delayed>();
  // Callers of `get` waiting for a key, served in order.
  private readonly getters = new Fifo<(key: string | undefined) => void>();
  private readonly drainers: Array<() => void> = [];
  private shuttingDown = false;

  constructor(options: WorkQueueOptions = {}) {
    this.clock = options.clock ?? realClock;
    this.retryLimiter = options.retryLimiter ?? new RetryLimiter({ clock: this.clock });
    this.metrics = options.metrics;
  }

  /** Marks `key` as needing a run. Ignored after shutdown. A normal add promotes a low one. */
  add(key: string, options: AddOptions = {}): void {
    if (this.shuttingDown) return;
    const priority = options.priority ?? 'normal';
    this.metrics?.added();
    const entry = this.dirty.get(key);
    if (entry) {
      if (priority === 'normal' && entry.priority === 'low') {
        entry.priority = 'normal';
        if (!this.processing.has(key)) {
          // The low entry goes stale; the key keeps its place in `readyCount`.
          entry.seq = this.nextSeq++;
          this.normal.push({ key, seq: entry.seq });
        }
      }
      return;
    }
    this.dirty.set(key, { priority, readySince: this.clock.now(), seq: 0 });
    if (this.processing.has(key)) return;
    this.makeReady(key, this.dirty.get(key)!);
  }

  /** Adds `key` after `delayMs`; an earlier pending delayed add of the same key wins. */
  addAfter(key: string, delayMs: number, options: AddOptions = {}): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) return this.add(key, options);
    const readyAt = this.clock.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending) {
      if (pending.readyAt <= readyAt) return;
      this.clock.clearTimeout(pending.timer);
    }
    const priority = options.priority ?? 'normal';
    const timer = this.clock.setTimeout(() => {
      this.delayed.delete(key);
      this.add(key, { priority });
    }, delayMs);
    this.delayed.set(key, { readyAt, timer, priority });
  }

  /**
   * Adds `key` again after a failure: after its next backoff delay (per-key exponential,
   * overall token bucket), or after exactly `delayMs` when the failure named one.
   */
  addRateLimited(key: string, delayMs?: number): void {
    if (this.shuttingDown) return;
    this.metrics?.retried();
    this.addAfter(key, delayMs ?? this.retryLimiter.when(key));
  }

  /** Ends the key's backoff: its next failure waits the base delay again. */
  forget(key: string): void {
    this.retryLimiter.forget(key);
  }

  numRequeues(key: string): number {
    return this.retryLimiter.retries(key);
  }

  /** Resolves with the next ready key, or undefined once the queue shuts down. */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.take();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** The next ready key if there is one now, without waiting. */
  tryGet(): string | undefined {
    return this.shuttingDown ? undefined : this.take();
  }

  /** Ends the processing of `key`; if it was added meanwhile it becomes ready again. Idempotent. */
  done(key: string): void {
    const startedAt = this.processing.get(key);
    if (startedAt === undefined) return;
    this.processing.delete(key);
    this.metrics?.worked((this.clock.now() - startedAt) / 1000);
    const entry = this.dirty.get(key);
    if (entry) {
      if (this.shuttingDown) {
        this.dirty.delete(key);
      } else {
        entry.readySince = this.clock.now();
        this.makeReady(key, entry);
      }
    }
    if (this.processing.size === 0 && this.shuttingDown) this.wakeDrainers();
  }

  /**
   * Stops the queue: later adds are ignored, pending delayed adds and ready keys are dropped
   * (status and the next list bring them back after a restart), waiting `get`s resolve with
   * undefined. Keys in processing finish normally; `drain` waits for them.
   */
  shutdown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) this.clock.clearTimeout(timer);
    this.delayed.clear();
    for (const key of this.dirty.keys()) if (!this.processing.has(key)) this.dirty.delete(key);
    this.clearReady();
    this.metrics?.depth(0);
    for (let getter = this.getters.shift(); getter; getter = this.getters.shift()) getter(undefined);
    if (this.processing.size === 0) this.wakeDrainers();
  }

  /** Resolves once the queue is shut down and no key is being processed. */
  drain(): Promise<void> {
    if (this.shuttingDown && this.processing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainers.push(resolve));
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Ready keys (the queue's depth). */
  len(): number {
    return this.readyCount;
  }

  /** Seconds the longest-running key has been processed, and the sum over all (for metrics). */
  processingAges(): { longest: number; total: number } {
    const now = this.clock.now();
    let longest = 0;
    let total = 0;
    for (const startedAt of this.processing.values()) {
      const age = (now - startedAt) / 1000;
      longest = Math.max(longest, age);
      total += age;
    }
    return { longest, total };
  }

  /** Sizes of every internal structure; all zero when the queue is idle. */
  stats(): { dirty: number; processing: number; delayed: number; ready: number; fifo: number; backoff: number; getters: number } {
    return {
      dirty: this.dirty.size,
      processing: this.processing.size,
      delayed: this.delayed.size,
      ready: this.readyCount,
      fifo: this.normal.length + this.low.length,
      backoff: this.retryLimiter.size,
      getters: this.getters.length,
    };
  }

  private makeReady(key: string, entry: DirtyEntry): void {
    entry.seq = this.nextSeq++;
    (entry.priority === 'normal' ? this.normal : this.low).push({ key, seq: entry.seq });
    this.readyCount++;
    this.metrics?.depth(this.readyCount);
    this.serveGetters();
  }

  private serveGetters(): void {
    while (this.getters.length > 0 && this.readyCount > 0) {
      const key = this.take();
      if (key === undefined) break;
      this.getters.shift()?.(key);
    }
  }

  private take(): string | undefined {
    while (this.readyCount > 0) {
      const ready = (this.normal.length > 0 ? this.normal : this.low).shift();
      if (ready === undefined) break;
      const { key } = ready;
      const entry = this.dirty.get(key);
      // Stale: handed out since (and maybe added again), or promoted to `normal`.
      if (!entry || entry.seq !== ready.seq || this.processing.has(key)) continue;
      this.dirty.delete(key);
      const now = this.clock.now();
      this.processing.set(key, now);
      this.readyCount--;
      if (this.readyCount === 0) this.clearReady();
      this.metrics?.depth(this.readyCount);
      this.metrics?.queued((now - entry.readySince) / 1000);
      return key;
    }
    return undefined;
  }

  private clearReady(): void {
    this.normal.clear();
    this.low.clear();
    this.readyCount = 0;
  }

  private wakeDrainers(): void {
    for (const resolve of this.drainers.splice(0)) resolve();
  }
}
