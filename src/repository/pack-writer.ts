// Groups the chunks one upload stores into packs. Guarantees:
// - A pack is committed whole with one putIfAbsent-like commit (on a filesystem: one file,
//   one fsync), and only then its index: a chunk counts as stored (onDurable) once its
//   pack's index is durable, never before.
// - add() resolves once the chunk's bytes are in the pack being written (on a filesystem,
//   in the pack's temporary file): the caller may reuse the chunk's memory from then on.
//   Calls may overlap; chunks go into packs in the order add() was called.
// - Memory stays bounded: a store with createWriter (the filesystem) gets each chunk as it
//   comes and no pack is held in memory; any other store gets each pack as one buffer of
//   targetSize (or one chunk, if larger), at most 1 + maxWriting of them at a time.
// - At most `maxWriting` packs are being committed while the next fills (add() waits).
//   With createWriter, the next pack is opened while one fills (an unused one is aborted by
//   settle()), so no add() waits for a pack to be opened.
// - Every failed pack write is logged; flush() fails with the first failure.
import { randomBytes } from 'node:crypto';
import type { BlobStore, BlobWriter } from './blob-store.js';
import type { RepositoryContext } from './context.js';
import { encodeRecord, keys, recordFormat, type PackEntry, type PackIndex, type PackingOptions } from './format.js';

interface OpenPack {
  id: string;
  writer: BlobWriter;
  used: number;
  entries: PackEntry[];
}

export class PackWriter {
  private current?: Promise<OpenPack>;
  /** The next pack, opened while this one fills: opening may wait for a folder to be made durable. */
  private spare?: Promise<OpenPack>;
  /** The last add() in line: adds append one after another. */
  private tail: Promise<void> = Promise.resolve();
  /** Packs being committed; never more than maxWriting. */
  private readonly writing = new Set<Promise<void>>();
  private failure: unknown;
  private readonly capacity: number;

  constructor(
    private readonly repo: RepositoryContext,
    private readonly packing: PackingOptions,
    /** The largest stored chunk (chunker maxSize + the codec byte). */
    maxStored: number,
    private readonly onDurable: (record: PackIndex) => void,
    private readonly maxWriting = 1,
  ) {
    this.capacity = Math.max(packing.targetSize, maxStored);
  }

  /** Appends one stored chunk, given as pieces to concatenate (codec byte + payload). */
  async add(hash: string, size: number, stored: Uint8Array[]): Promise<void> {
    if (this.failure) throw this.failure;
    const length = stored.reduce((n, p) => n + p.length, 0);
    if (length > this.capacity) throw new RangeError(`stored chunk ${hash} has ${length} bytes, more than a pack holds (${this.capacity})`);
    const appended = this.tail.then(() => this.append(hash, size, stored, length));
    this.tail = appended.catch(() => undefined);
    await appended;
    while (this.writing.size >= this.maxWriting) await Promise.race(this.writing);
    if (this.failure) throw this.failure;
  }

  /** Commits the pack being filled and waits until every pack is durable; throws the first failure. */
  async flush(): Promise<void> {
    await this.tail;
    this.seal();
    await this.settle();
    if (this.failure) throw this.failure;
  }

  /** Waits for writes in flight; a pack being filled is dropped, not committed (after a failure elsewhere). */
  async settle(): Promise<void> {
    await this.tail;
    for (const open of [this.current, this.spare]) if (open) await open.then((pack) => pack.writer.abort()).catch(() => undefined);
    this.current = this.spare = undefined;
    while (this.writing.size > 0) await Promise.race(this.writing);
  }

  private async append(hash: string, size: number, stored: Uint8Array[], length: number): Promise<void> {
    if (this.failure) throw this.failure;
    let pack = await this.current;
    if (pack && pack.used + length > this.capacity) {
      this.seal();
      pack = undefined;
    }
    if (!pack) pack = await (this.current = this.open());
    const offset = pack.used;
    try {
      await pack.writer.write(stored);
    } catch (err) {
      // The pack is lost: its chunks so far are not stored (the upload fails, and a retry
      // stores them again).
      this.current = undefined;
      await pack.writer.abort();
      this.logFailure(pack, err);
      this.failure ??= err;
      throw err;
    }
    pack.used += length;
    pack.entries.push([hash, offset, length, size]);
    if (pack.used >= this.packing.targetSize || pack.entries.length >= this.packing.maxChunks) this.seal();
  }

  /**
   * The spare pack (a new one if there is none), opening the next spare meanwhile; a store
   * without createWriter opens at once (a buffer), and a spare would only hold memory.
   */
  private open(): Promise<OpenPack> {
    if (!this.repo.store.createWriter) return this.openNew();
    const pack = this.spare ?? this.openNew();
    this.spare = this.openNew();
    this.spare.catch(() => undefined); // met when it is used, or dropped by settle()
    return pack;
  }

  private async openNew(): Promise<OpenPack> {
    const id = randomBytes(16).toString('hex');
    const key = keys.pack(id);
    const writer = (await this.repo.store.createWriter?.(key)) ?? bufferedWriter(this.repo.store, key, this.capacity);
    return { id, writer, used: 0, entries: [] };
  }

  /** Starts committing the pack being filled (add() then waits while maxWriting are in flight). */
  private seal(): void {
    const open = this.current;
    this.current = undefined;
    if (!open) return;
    const task: Promise<void> = open
      .then((pack) => this.commit(pack))
      .then(
        () => {
          this.writing.delete(task);
        },
        (err: unknown) => {
          this.writing.delete(task);
          this.failure ??= err;
        },
      );
    this.writing.add(task);
  }

  private async commit(pack: OpenPack): Promise<void> {
    if (pack.entries.length === 0) return pack.writer.abort();
    try {
      await pack.writer.commit();
      const record: PackIndex = { format: recordFormat(this.repo.config), pack: pack.id, createdAt: this.repo.now().toISOString(), entries: pack.entries };
      await this.repo.store.putIfAbsent(keys.packIndex(pack.id), encodeRecord(record));
      this.onDurable(record);
    } catch (err) {
      await pack.writer.abort(); // nothing to drop once committed
      this.logFailure(pack, err);
      throw err;
    }
  }

  private logFailure(pack: OpenPack, err: unknown): void {
    this.repo.log.warn({ pack: keys.pack(pack.id), chunks: pack.entries.length, err }, 'pack write failed');
  }
}

/** A BlobWriter for a store without one: the pack gathers in a buffer and goes in with one putIfAbsent. */
function bufferedWriter(store: BlobStore, key: string, capacity: number): BlobWriter {
  const buffer = Buffer.allocUnsafeSlow(capacity);
  let used = 0;
  return {
    write: async (pieces) => {
      for (const piece of pieces) {
        buffer.set(piece, used);
        used += piece.length;
      }
    },
    commit: () => store.putIfAbsent(key, buffer.subarray(0, used)),
    abort: async () => undefined,
  };
}
