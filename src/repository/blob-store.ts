// The storage a backup repository sits on: named immutable-or-replaced blobs. The
// repository only ever talks to this interface, so an object-store backend can be added
// beside the filesystem one: every operation maps onto S3 (putIfAbsent = PUT with
// If-None-Match: *, put = PUT, get/getRange = GET with Range, list = ListObjectsV2,
// delete = DELETE, move = copy then delete; the optional ones are no-ops there).
//
// Contract every implementation keeps:
// - Keys are '/'-separated segments of [A-Za-z0-9._-] that do not start with '.' (names
//   starting with '.' are the store's own, e.g. temporary files).
// - putIfAbsent and put are atomic (a reader sees the old blob or the whole new one, never
//   a part) and durable once they resolve.
// - putIfAbsent never replaces an existing blob; it reports whether it wrote.
// - list(prefix) yields every key under the folder `prefix` (recursively), each once, in no
//   particular order; a blob whose put resolved before list started is always listed.
// - getRange reads part of a blob (packs are read a chunk at a time).
// - move is atomic where the medium allows (a filesystem rename); elsewhere copy-then-delete.
// - has, get and stat may already see a blob whose put has not resolved (another writer's):
//   syncBlobs makes such blobs durable before anything that relies on them is written.
// - createWriter (optional) writes a blob piece by piece, as putIfAbsent would write it
//   whole: nothing is visible under the key until commit() resolves true, and commit()
//   never replaces. A pack goes this way, chunk by chunk, so it is never held in memory
//   whole (an object store can map it onto a multipart upload).

import { RepositoryInputError } from './errors.js';

export interface BlobStat {
  size: number;
  modifiedAt: Date;
}

/** A blob being written piece by piece (see BlobStore.createWriter). */
export interface BlobWriter {
  /** Appends the pieces, one after another; the caller may reuse their memory once this resolves. */
  write(pieces: Uint8Array[]): Promise<void>;
  /** putIfAbsent of everything written: atomic and durable; false (and nothing written) when the key exists. */
  commit(): Promise<boolean>;
  /** Drops what was written; safe after a failed write or commit. */
  abort(): Promise<void>;
}

export interface BlobStore {
  /** A human-readable location for messages, e.g. the filesystem path. */
  readonly location: string;
  /** Writes `data` under `key` unless a blob is already there. True when it wrote. */
  putIfAbsent(key: string, data: Buffer): Promise<boolean>;
  /** Starts a blob written piece by piece (optional: putIfAbsent of a whole buffer works everywhere). */
  createWriter?(key: string): Promise<BlobWriter>;
  /** Writes or replaces `key`. */
  put(key: string, data: Buffer): Promise<void>;
  /** The blob's bytes; throws BlobNotFoundError when absent. */
  get(key: string): Promise<Buffer>;
  /**
   * `length` bytes of the blob from `offset` (an object store's ranged GET); throws
   * BlobNotFoundError when absent and RangeError when the blob is shorter. With `into`
   * (at least `length` bytes), the bytes land there and the Buffer returned is over it.
   */
  getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer>;
  has(key: string): Promise<boolean>;
  /** Size and modification time, or undefined when absent. */
  stat(key: string): Promise<BlobStat | undefined>;
  list(prefix: string): AsyncIterable<string>;
  /** Removes `key`; false when it was not there. */
  delete(key: string): Promise<boolean>;
  /** Renames `from` to `to` (replacing `to`); false when `from` was not there. */
  move(from: string, to: string): Promise<boolean>;
  /**
   * Makes durable blobs this store saw but may not have written itself (a concurrent or
   * killed writer's). Optional: where a blob is durable once it is visible, nothing to do.
   */
  syncBlobs?(keys: Iterable<string>): Promise<void>;
  /** Removes leftovers of interrupted writes older than `before`; returns how many. Optional. */
  removeStaleTemporaries?(before: Date): Promise<number>;
  /** Removes folders left empty under `prefix`, where the medium has folders. Optional. */
  pruneEmptyFolders?(prefix: string): Promise<void>;
}

export class BlobNotFoundError extends Error {
  constructor(
    readonly key: string,
    location: string,
  ) {
    super(`blob ${key} not found in ${location}`);
    this.name = 'BlobNotFoundError';
  }
}

const segment = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** Throws unless `key` is a valid blob key (see the contract above). */
export function checkKey(key: string): void {
  const parts = key.split('/');
  for (const part of parts) {
    if (!segment.test(part)) throw new RepositoryInputError(`invalid blob key ${JSON.stringify(key)}`);
  }
}
