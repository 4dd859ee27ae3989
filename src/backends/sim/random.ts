// Deterministic randomness for the simulated array: a seeded PRNG (so a run with the same
// seed sees the same latencies and faults), a long-tailed latency model, and seeded byte
// streams (so a snapshot's data is the same bytes on every read and after a restart).
import { Readable } from 'node:stream';

/** mulberry32: a small, fast 32-bit PRNG; returns floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a over the parts: a stable 32-bit seed derived from names and numbers. */
export function deriveSeed(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export interface LatencyOptions {
  /** Median latency of an operation, in ms; 0 disables latency. */
  medianMs: number;
  /** Log-normal shape: 0 is constant, 1 gives a p99 about 10x the median. */
  sigma: number;
  /** Upper bound of one operation's latency, in ms. */
  maxMs: number;
  /** Per-operation multiplier of the median (e.g. createGroupSnapshot: 10). */
  factors: Record<string, number>;
}

export const defaultLatency: LatencyOptions = {
  medianMs: 0,
  sigma: 0.8,
  maxMs: 10_000,
  factors: { createGroupSnapshot: 8, createSnapshot: 3, createVolume: 2, deleteVolume: 2 },
};

/** Draws a log-normal latency in ms for `op` (Box-Muller on the seeded PRNG). */
export function drawLatency(opts: LatencyOptions, op: string, random: () => number): number {
  const median = opts.medianMs * (opts.factors[op] ?? 1);
  if (median <= 0) return 0;
  const u1 = Math.max(random(), Number.EPSILON);
  const u2 = random();
  const normal = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  return Math.min(opts.maxMs, median * Math.exp(opts.sigma * normal));
}

const chunkBytes = 64 * 1024;

/** The seeded stream in 64 KiB chunks: xorshift32 words, little-endian. */
function* seededChunks(seed: number, totalBytes: number): Generator<Buffer> {
  let x = seed >>> 0 || 0x9e3779b9;
  let left = totalBytes;
  while (left > 0) {
    const n = Math.min(chunkBytes, left);
    const words = new Uint32Array(Math.ceil(n / 4));
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      words[i] = x;
    }
    yield Buffer.from(words.buffer, 0, n);
    left -= n;
  }
}

/** A stream of `totalBytes` deterministic bytes for `seed`. */
export function seededStream(seed: number, totalBytes: number): Readable {
  return Readable.from(seededChunks(seed, totalBytes), { objectMode: false });
}
