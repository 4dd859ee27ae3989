// The simulated array's operation log: one entry per operation it ran or refused as an unsafe
// pair, with the ids it read and wrote and its start and end, so a checker can prove that no
// two operations on one object ever overlapped. Guarantees:
// - Sequence numbers only grow (also across `clear`), so `since(seq)` never repeats an entry.
// - At most `limit()` entries are kept; the oldest go first.
import type { OpName } from './options.js';

export interface OplogEntry {
  seq: number;
  op: OpName;
  /** The object operated on: a volume/snapshot/group id, or `name:<name>` for creates. */
  target: string;
  /**
   * Ids of the objects the operation read (a snapshot's source volume, a get's target) and
   * wrote (a resize's volume, the object a create made or found), so a checker can pair
   * operations on one object even when a create is logged under its name.
   */
  reads: string[];
  writes: string[];
  /** Epoch milliseconds (fractional). */
  start: number;
  end: number;
  /** `ok`, or the SimErrorCode it failed with (`pending` marks a refused unsafe pair). */
  outcome: string;
}

/** Wall-clock epoch milliseconds, fractional: the log's timestamps, comparable across processes. */
export const epochNow = (): number => performance.timeOrigin + performance.now();

export class Oplog {
  private entries: OplogEntry[] = [];
  private seq = 0;

  constructor(private readonly limit: () => number) {}

  append(entry: Omit<OplogEntry, 'seq'>): void {
    this.entries.push({ seq: ++this.seq, ...entry });
    const over = this.entries.length - this.limit();
    if (over > 0) this.entries.splice(0, over);
  }

  since(seq = 0): OplogEntry[] {
    return this.entries.filter((e) => e.seq > seq);
  }

  clear(): void {
    this.entries = [];
  }
}
