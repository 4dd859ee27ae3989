// An adaptive concurrency limit for one backend: how many operations the storage takes at
// once, learned from its answers. Guarantees:
// - the limit stays an integer between `floor` and `ceiling` (the Backend's own limit);
// - it grows only while the backend is kept at its limit (an idle backend teaches nothing):
//   by one per success until the first refusal (slow start), then by one per `limit`
//   successes (additive increase), as TCP and Netflix's concurrency-limits do;
// - a busy answer cuts it below the in-flight count the storage refused at, and that count
//   is remembered: growth stops one below it and probes it again only every
//   `probeEvery` successes, so a storage at a fixed limit sees about one refusal per probe
//   (under 1% at the default) rather than one per additive-increase cycle;
// - a probe that holds the remembered count for a whole window of successes forgets it, so
//   a storage whose own limit was raised is followed within seconds;
// - a latency rise (short-term mean over `latencyTolerance` times the long-term mean, as
//   Netflix's gradient limiter compares them) cuts the limit by 10%, at most once per
//   `limit` completions, before the storage starts refusing.

export interface AdaptiveLimitOptions {
  floor: number;
  ceiling: number;
  /** Limit at start; default min(ceiling, max(floor, 4)). */
  initial?: number;
  /** Successes at the remembered refusal level between probes. Default 200. */
  probeEvery?: number;
  /** Short/long latency ratio taken as a rise. Default 2. */
  latencyTolerance?: number;
}

export class AdaptiveLimit {
  private floor: number;
  private ceiling: number;
  // The limit as a real number; additive increase moves it by 1/limit per success.
  private estimate: number;
  // In-flight count at which the storage last refused; growth stops below it.
  private refusedAt?: number;
  private refusedEver = false;
  private sinceProbe = 0;
  // Successes at the refused level since the probe raised the limit to it.
  private probeSuccesses = 0;
  private readonly probeEvery: number;
  private readonly tolerance: number;
  private shortLatency?: number;
  private longLatency?: number;
  private completionsSinceCut = 0;

  constructor(options: AdaptiveLimitOptions) {
    this.floor = options.floor;
    this.ceiling = options.ceiling;
    this.estimate = options.initial ?? Math.min(this.ceiling, Math.max(this.floor, 4));
    this.probeEvery = options.probeEvery ?? 200;
    this.tolerance = options.latencyTolerance ?? 2;
  }

  get limit(): number {
    return Math.max(this.floor, Math.min(this.ceiling, Math.floor(this.estimate)));
  }

  /** New bounds from a changed Backend; the estimate is clamped into them. */
  setBounds(floor: number, ceiling: number): void {
    this.floor = floor;
    this.ceiling = ceiling;
    this.estimate = Math.max(floor, Math.min(ceiling, this.estimate));
  }

  /** An operation that started with `inFlight` operations running (itself included) succeeded after `latencyMs`. */
  succeeded(inFlight: number, latencyMs: number): void {
    this.completionsSinceCut++;
    if (this.latencyRose(latencyMs)) {
      if (this.completionsSinceCut >= this.limit) this.cut(Math.max(this.floor, this.estimate * 0.9));
      return;
    }
    // Only a backend kept at its limit says anything about a higher one.
    if (inFlight < this.limit) return;
    if (this.refusedAt !== undefined) {
      if (this.limit >= this.refusedAt) {
        // Probing the refused level: a whole window of successes there means the storage takes it now.
        if (++this.probeSuccesses >= this.limit) this.refusedAt = undefined;
        return;
      }
      if (this.limit + 1 >= this.refusedAt) {
        if (++this.sinceProbe < this.probeEvery) return;
        this.sinceProbe = 0;
        this.probeSuccesses = 0;
        this.estimate = this.refusedAt;
        return;
      }
    }
    this.estimate = Math.min(this.ceiling, this.estimate + (this.refusedEver ? 1 / this.limit : 1));
  }

  /** The storage refused for load an operation that started with `inFlight` running. */
  refused(inFlight: number): void {
    this.refusedEver = true;
    // Answers of one burst come back together: the lowest level refused is the one to keep.
    this.refusedAt = Math.min(this.refusedAt ?? Infinity, inFlight);
    this.sinceProbe = 0;
    this.probeSuccesses = 0;
    this.cut(Math.max(this.floor, Math.min(this.estimate, inFlight - 1)));
  }

  private cut(to: number): void {
    this.estimate = Math.floor(to);
    this.completionsSinceCut = 0;
  }

  /** Updates the latency means; true when the short-term one rose past the tolerance. */
  private latencyRose(latencyMs: number): boolean {
    this.shortLatency = this.shortLatency === undefined ? latencyMs : this.shortLatency * 0.9 + latencyMs * 0.1;
    this.longLatency = this.longLatency === undefined ? latencyMs : this.longLatency * 0.99 + latencyMs * 0.01;
    return this.shortLatency > this.tolerance * this.longLatency;
  }
}
