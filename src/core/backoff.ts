// Retry pacing. Guarantees:
// - a key's n-th consecutive failure waits base * 2^n, never more than the cap, and
//   `forget` (after a success) starts the key over at base;
// - one overall token bucket bounds the retry rate of all keys together, so a storm of
//   failures cannot hammer a storage API; the delay is the larger of the two;
// - keys that succeeded leave no entry behind.
import { realClock, type Clock } from './clock.js';

export interface BackoffOptions {
  /** First retry delay. Default 1 s: storage calls fail for seconds, not milliseconds. */
  baseMs?: number;
  /** Longest retry delay. Default 5 min. */
  capMs?: number;
}

export class ExponentialBackoff {
  private readonly baseMs: number;
  private readonly capMs: number;
  // Consecutive failures per key; a key is present only between a failure and its forget.
  private readonly failures = new Map<string, number>();

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 1000;
    this.capMs = options.capMs ?? 5 * 60_000;
    if (!(this.baseMs > 0) || !(this.capMs >= this.baseMs)) {
      throw new RangeError(`backoff needs 0 < base <= cap, got base ${this.baseMs} ms, cap ${this.capMs} ms`);
    }
  }

  /** Records one more failure of `key` and returns how long to wait before retrying it. */
  when(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    // 2^n overflows to Infinity long before n gets large; the cap bounds it either way.
    return Math.min(this.capMs, this.baseMs * 2 ** n);
  }

  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  get size(): number {
    return this.failures.size;
  }
}

export interface TokenBucketOptions {
  /** Tokens added per second. */
  qps: number;
  /** Tokens the bucket holds at most (the burst allowed after a quiet spell). */
  burst: number;
  clock?: Clock;
}

/** Reserving token bucket: a reservation always succeeds and says how long to wait for it. */
export class TokenBucket {
  private readonly qps: number;
  private readonly burst: number;
  private readonly clock: Clock;
  // Tokens at `updatedAt`; negative when reservations ran ahead of the refill.
  private tokens: number;
  private updatedAt: number;

  constructor(options: TokenBucketOptions) {
    if (!(options.qps > 0) || !(options.burst >= 1)) {
      throw new RangeError(`token bucket needs qps > 0 and burst >= 1, got ${options.qps} and ${options.burst}`);
    }
    this.qps = options.qps;
    this.burst = options.burst;
    this.clock = options.clock ?? realClock;
    this.tokens = options.burst;
    this.updatedAt = this.clock.now();
  }

  /** Takes one token and returns the wait in ms until it is really there (0 if it is now). */
  reserve(): number {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) * this.qps) / 1000);
    this.updatedAt = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.qps;
  }
}

export interface RetryLimiterOptions extends BackoffOptions {
  /** Overall retries per second across all keys. Default 10, as client-go. */
  qps?: number;
  /** Default 100, as client-go. */
  burst?: number;
  clock?: Clock;
}

/** Per-key exponential backoff combined with the overall bucket: the longer wait wins. */
export class RetryLimiter {
  private readonly backoff: ExponentialBackoff;
  private readonly bucket: TokenBucket;

  constructor(options: RetryLimiterOptions = {}) {
    this.backoff = new ExponentialBackoff(options);
    this.bucket = new TokenBucket({ qps: options.qps ?? 10, burst: options.burst ?? 100, clock: options.clock });
  }

  when(key: string): number {
    return Math.max(this.backoff.when(key), this.bucket.reserve());
  }

  retries(key: string): number {
    return this.backoff.retries(key);
  }

  forget(key: string): void {
    this.backoff.forget(key);
  }

  /** Keys currently remembered (failing and not yet forgotten). */
  get size(): number {
    return this.backoff.size;
  }
}
