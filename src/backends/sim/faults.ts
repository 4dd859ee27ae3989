// Faults injected into the simulated array, per operation: an error rate, a stall, a crash.
// Guarantees:
// - Faults apply while the operation holds its admission slot, as a slow or failing
//   controller would hold it.
// - Error rates draw from the array's seeded PRNG, so a seeded run fails the same calls.
// - A stall ends when its time runs out (on the injected clock), when `releaseStalls` is
//   called (the stalled operation then goes on), or when the array closes (it fails).
import { sleep, type Clock } from '../../core/clock.js';
import { operations, type OpName } from './options.js';
import { SimError } from './records.js';

export interface FaultSpec {
  /** Probability in [0, 1] that the operation fails with `unavailable`. */
  errorRate?: number;
  /** Extra time the operation holds its slot before it proceeds, in ms. */
  stallMs?: number;
  /** The array crashes (drops every connection and stops) when this operation starts. */
  crash?: boolean;
}

export class Faults {
  private readonly specs = new Map<OpName, FaultSpec>();
  /** Aborted (and replaced) to end every running stall early. */
  private stallRelease = new AbortController();
  private count = 0;

  constructor(
    private readonly clock: Clock,
    private readonly random: () => number,
    /** Called when a `crash` fault fires. */
    private readonly crash: () => void,
  ) {}

  /** Sets (or, with an empty spec, clears) the faults injected into `op`. */
  set(op: OpName, spec: FaultSpec): void {
    if (!operations.includes(op)) throw new SimError('invalid', `unknown operation "${op}"`);
    if (spec.errorRate !== undefined && !(spec.errorRate >= 0 && spec.errorRate <= 1)) {
      throw new SimError('invalid', 'errorRate must be within [0, 1]');
    }
    if (spec.stallMs !== undefined && !(spec.stallMs >= 0)) throw new SimError('invalid', 'stallMs must be >= 0');
    if (!spec.errorRate && !spec.stallMs && !spec.crash) this.specs.delete(op);
    else this.specs.set(op, { ...spec });
  }

  list(): Partial<Record<OpName, FaultSpec>> {
    return Object.fromEntries(this.specs);
  }

  /** Ends every stall now; the stalled operations go on as if their stall had run out. */
  releaseStalls(): void {
    this.stallRelease.abort();
    this.stallRelease = new AbortController();
  }

  /** Faults injected (crashes and errors) since the last reset. */
  get injected(): number {
    return this.count;
  }

  resetCount(): void {
    this.count = 0;
  }

  /** Applies `op`'s faults: crash, then stall, then error; `closing` fails a running stall. */
  async apply(op: OpName, closing: AbortSignal): Promise<void> {
    const fault = this.specs.get(op);
    if (fault?.crash) {
      this.count++;
      this.crash();
      throw new SimError('unavailable', `array crashed during ${op} (injected)`);
    }
    if (fault?.stallMs) {
      const released = this.stallRelease.signal;
      await sleep(this.clock, fault.stallMs, AbortSignal.any([closing, released])).catch((err: unknown) => {
        if (!released.aborted || closing.aborted) throw err;
      });
    }
    if (fault?.errorRate && this.random() < fault.errorRate) {
      this.count++;
      throw new SimError('unavailable', `${op} failed: controller error (injected)`);
    }
  }
}
