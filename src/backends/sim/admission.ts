// Admission to the simulated array: how many operations run at once, and which objects they
// hold. Guarantees:
// - At most `maxConcurrentOperations` operations run at once; one more is refused with `busy`
//   (and the retry-after hint), never queued. `peakInFlight` is the highest number ever
//   admitted at once, so a test can prove a client kept the limit.
// - An operation that writes an object never overlaps any other operation on it, and two
//   operations never create one name at once: the loser is refused with `pending`, counted
//   as a conflict and logged.
// - Checks and holds happen synchronously in `begin`, so two operations never both pass.
// - Every admitted operation is logged once when it ends, with what it read and wrote.
import type { OpName, SimArrayOptions } from './options.js';
import { epochNow, type Oplog } from './oplog.js';
import { SimError } from './records.js';

/** The object keys an operation holds: ids, or `name:<kind>:<name>` for a name being created. */
export interface ObjectLocks {
  read?: string[];
  write?: string[];
}

/** Ends an admitted operation with its outcome and the ids it made; a second call does nothing. */
export type EndOperation = (outcome: string, made?: string[]) => void;

const collections = new Set(['array', 'volumes', 'snapshots']);

/** The object ids an operation read and wrote, for its log entry (see OplogEntry). */
function touched(target: string, locks: ObjectLocks, made: string[] = []): { reads: string[]; writes: string[] } {
  const writes = [...new Set([...(locks.write ?? []).filter((k) => !k.startsWith('name:')), ...made])];
  const own = target.startsWith('name:') || collections.has(target) || writes.includes(target) ? [] : [target];
  return { reads: [...new Set([...(locks.read ?? []), ...own])], writes };
}

export class Admission {
  /** Object key -> holders; a key with `writer` has no readers, and vice versa. */
  private readonly held = new Map<string, { readers: number; writer: boolean }>();
  /** Operations admitted and not ended; never above the limit at admission. */
  private running = 0;
  private peak = 0;
  private counters = { admitted: 0, rejectedBusy: 0, conflicts: 0 };

  constructor(
    private readonly options: Pick<SimArrayOptions, 'maxConcurrentOperations' | 'retryAfterMs'>,
    private readonly oplog: Oplog,
  ) {}

  /** Admits one operation or throws busy/pending; the returned function ends it. */
  begin(op: OpName, target: string, locks: ObjectLocks): EndOperation {
    const limit = this.options.maxConcurrentOperations;
    if (this.running >= limit) {
      this.counters.rejectedBusy++;
      throw new SimError('busy', `array busy: ${this.running} operations in flight, limit ${limit}`, this.options.retryAfterMs);
    }
    const writes = locks.write ?? [];
    const reads = locks.read ?? [];
    const blocked = writes.find((k) => this.held.has(k)) ?? reads.find((k) => this.held.get(k)?.writer);
    if (blocked !== undefined) {
      this.counters.conflicts++;
      const t = epochNow();
      this.oplog.append({ op, target, ...touched(target, locks), start: t, end: t, outcome: 'pending' });
      throw new SimError('pending', `an operation is pending on ${blocked}`, this.options.retryAfterMs);
    }
    for (const k of writes) this.held.set(k, { readers: 0, writer: true });
    for (const k of reads) {
      const holders = this.held.get(k) ?? { readers: 0, writer: false };
      holders.readers++;
      this.held.set(k, holders);
    }
    this.running++;
    this.counters.admitted++;
    this.peak = Math.max(this.peak, this.running);
    const start = epochNow();
    let ended = false;
    return (outcome, made) => {
      if (ended) return;
      ended = true;
      for (const k of writes) this.held.delete(k);
      for (const k of reads) {
        const holders = this.held.get(k)!;
        if (--holders.readers === 0) this.held.delete(k);
      }
      this.running--;
      this.oplog.append({ op, target, ...touched(target, locks, made), start, end: epochNow(), outcome });
    };
  }

  get inFlight(): number {
    return this.running;
  }

  stats(): { inFlight: number; peakInFlight: number; admitted: number; rejectedBusy: number; conflicts: number } {
    return { inFlight: this.running, peakInFlight: this.peak, ...this.counters };
  }

  /** Zeroes the counters; the peak restarts from what runs now. */
  reset(): void {
    this.peak = this.running;
    this.counters = { admitted: 0, rejectedBusy: 0, conflicts: 0 };
  }
}
