// Content-defined chunking (FastCDC-style gear hash with normalized chunking), with either of
// two rolling hashes, which the repository's config names (format 5):
// - gear: h = 2h + gear[byte], a cut candidate where the mask's bits are all clear; the gear
//   table is derived from SHA-256 (below). Formats 1-4 cut with it.
// - gear-mul: h = 2h + byte * 0x9E3779B1, a candidate where the mask's bits are all set. No
//   table lookup, so the WebAssembly scan runs eight positions at once in SIMD lanes (about
//   three times gear's speed; gear-scan.wat). New repositories cut with it.
// Guarantees:
// - Deterministic: the same bytes with the same options always give the same cut points,
//   however the input is split into pieces, so chunks deduplicate across backups.
// - Local: a cut depends only on the bytes since the previous cut (the gear hash looks at
//   the last 32 bytes), so an insert or change re-cuts only the chunks around it.
// - Bounded: every chunk but the last is between minSize and maxSize bytes; the input is
//   streamed, never buffered whole (one maxSize working buffer, plus the chunks the caller holds).
import { createHash } from 'node:crypto';
import { RepositoryInputError } from './errors.js';

/** The rolling hash whose values choose cut points (see above). */
export type RollingHashName = 'gear' | 'gear-mul';
export const rollingHashNames: readonly RollingHashName[] = ['gear', 'gear-mul'];
/** What new repositories cut with. */
export const defaultRollingHash: RollingHashName = 'gear-mul';
/** gear-mul's multiplier: a prime near 2^32 divided by the golden ratio (odd, so every byte value gets its own multiple). */
export const gearMulMultiplier = 0x9e3779b1;

export interface ChunkerOptions {
  /** No cut before this many bytes (the hash is not even computed there). */
  minSize: number;
  /** The size cuts are normalized around; a power of two. */
  avgSize: number;
  /** A cut is forced here. */
  maxSize: number;
  /** The rolling hash; absent means gear (what formats 1-4 cut with, and they name none). */
  rollingHash?: RollingHashName;
}

export const defaultChunkerOptions: ChunkerOptions = { minSize: 256 * 1024, avgSize: 1024 * 1024, maxSize: 4 * 1024 * 1024, rollingHash: defaultRollingHash };

/** The rolling hash options cut with. */
export function rollingHashOf(o: ChunkerOptions): RollingHashName {
  return o.rollingHash ?? 'gear';
}

/** Checks the options; throws a message that says which bound is wrong. */
export function validateChunkerOptions(o: ChunkerOptions): void {
  const ints = [o.minSize, o.avgSize, o.maxSize].every((n) => Number.isInteger(n) && n > 0);
  if (!ints) throw new RepositoryInputError(`chunker sizes must be positive integers: ${JSON.stringify(o)}`);
  if (!(o.minSize >= 64 && o.minSize < o.avgSize && o.avgSize < o.maxSize)) {
    throw new RepositoryInputError(`chunker sizes must satisfy 64 <= min < avg < max: ${JSON.stringify(o)}`);
  }
  if ((o.avgSize & (o.avgSize - 1)) !== 0) throw new RepositoryInputError(`chunker avgSize must be a power of two: ${o.avgSize}`);
  if (o.avgSize > 2 ** 28) throw new RepositoryInputError(`chunker avgSize must be at most 256 MiB: ${o.avgSize}`);
  if (o.rollingHash !== undefined && !rollingHashNames.includes(o.rollingHash)) {
    throw new RepositoryInputError(`chunker rollingHash ${JSON.stringify(o.rollingHash)} is not one of ${rollingHashNames.join(', ')}`);
  }
}

// The gear table is part of the repository format: changing it changes every cut point
// and so breaks deduplication against existing backups. It is derived from SHA-256 so it
// is reproducible from this one line rather than a 256-entry literal.
// Stored as int32 so the hot loop stays in small-integer arithmetic (the sums wrap the
// same way as with uint32, so cut points do not depend on it).
const gear: Int32Array = (() => {
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) table[i] = createHash('sha256').update(`trellis-gear-${i}`).digest().readInt32BE(0);
  return table;
})();

/** A copy of the gear table, for the chunk workers that scan for cut points. */
export function gearTable(): Int32Array {
  return gear.slice();
}

/**
 * Each rolling hash's rules, a position at a time: the hash after one more byte, and whether
 * a hash is a cut candidate for a mask. For code that looks at a few positions; the hot
 * loops (chunkStream's scans below, gear-scan.wat) keep the same rules inline.
 */
export interface RollingRules {
  next(h: number, byte: number): number;
  isCandidate(h: number, mask: number): boolean;
}

export const rollingRules: Record<RollingHashName, RollingRules> = {
  gear: { next: (h, byte) => ((h << 1) + gear[byte]!) | 0, isCandidate: (h, mask) => (h & mask) === 0 },
  'gear-mul': { next: (h, byte) => ((h << 1) + Math.imul(byte, gearMulMultiplier)) | 0, isCandidate: (h, mask) => (h & mask) === mask },
};

/** A mask of `bits` ones in the high half of the hash, where a gear hash mixes the most bytes. */
export function highMask(bits: number): number {
  return ((2 ** bits - 1) * 2 ** (32 - bits)) | 0;
}

/** The rolling hash, carried between scan calls (kept out of the generator's frame: a plain
 * function with module state is what V8 optimizes best for this hot loop). */
let scanHash = 0;

/** The index just past the first cut point in data[from, to), or -1; advances scanHash. */
function scanGear(data: Buffer, from: number, to: number, mask: number): number {
  let h = scanHash;
  for (let i = from; i < to; i++) {
    h = ((h << 1) + gear[data[i]!]!) | 0;
    if ((h & mask) === 0) {
      scanHash = h;
      return i + 1;
    }
  }
  scanHash = h;
  return -1;
}

/** As scanGear, with gear-mul. */
function scanGearMul(data: Buffer, from: number, to: number, mask: number): number {
  let h = scanHash;
  for (let i = from; i < to; i++) {
    h = ((h << 1) + Math.imul(data[i]!, gearMulMultiplier)) | 0;
    if ((h & mask) === mask) {
      scanHash = h;
      return i + 1;
    }
  }
  scanHash = h;
  return -1;
}

/**
 * Splits a byte stream into content-defined chunks. Each yielded Buffer is owned by the
 * caller (never reused by the chunker).
 */
export async function* chunkStream(input: AsyncIterable<Uint8Array>, options: ChunkerOptions = defaultChunkerOptions): AsyncGenerator<Buffer> {
  validateChunkerOptions(options);
  const { minSize, avgSize, maxSize } = options;
  const scan = rollingHashOf(options) === 'gear' ? scanGear : scanGearMul;
  const bits = Math.log2(avgSize);
  // Normalized chunking: a stricter mask below the average size and a looser one above
  // it pulls chunk sizes towards the average (FastCDC's normalization level 2).
  const maskSmall = highMask(bits + 2);
  const maskLarge = highMask(bits - 2);

  const chunk = Buffer.allocUnsafe(maxSize);
  let length = 0;
  let hash = 0;

  for await (const piece of input) {
    const data = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    let pos = 0;
    while (pos < data.length) {
      if (length < minSize) {
        const take = Math.min(minSize - length, data.length - pos);
        data.copy(chunk, length, pos, pos + take);
        length += take;
        pos += take;
        continue;
      }
      // Scan for a cut point from `pos`; `length` counts bytes already in the chunk.
      const start = pos;
      const smallEnd = Math.min(data.length, pos + Math.max(0, avgSize - length));
      scanHash = hash;
      let cut = scan(data, pos, smallEnd, maskSmall);
      if (cut < 0) {
        const largeEnd = Math.min(data.length, start + (maxSize - length));
        cut = scan(data, smallEnd, largeEnd, maskLarge);
        if (cut < 0 && length + (largeEnd - start) === maxSize) cut = largeEnd;
      }
      hash = scanHash;
      const end = cut < 0 ? data.length : cut;
      data.copy(chunk, length, start, end);
      length += end - start;
      pos = end;
      if (cut >= 0) {
        // A copy of exact size: the working buffer is reused, and callers that hold many
        // chunks in flight hold only their real size.
        yield Buffer.from(chunk.subarray(0, length));
        length = 0;
        hash = 0;
      }
    }
  }
  if (length > 0) yield Buffer.from(chunk.subarray(0, length));
}
