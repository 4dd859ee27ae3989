// Groups the chunks one upload stores into packs. Guarantees:
// - A pack is written whole with one putIfAbsent (on a filesystem: one file, one fsync),
//   and only then its index: a chunk counts as stored (onDurable) once its pack's index is
//   durable, never before.
// - add() copies the chunk into the pack before it returns or waits: the caller may reuse
//   the chunk's memory as soon as add() has been called.
// - Memory stays bounded and steady: one pack fills while at most `maxWriting` earlier ones
//   are being written (add() waits while that many are in flight), each in a buffer of
//   targetSize (or one chunk, if larger) that is reused for the next pack: a chunk that
//   does not fit starts the next pack. By default one pack is written while the next
//   fills: with the default 16 MiB packs, 32 MiB (an upload writes two: 48 MiB).
// - Every failed pack write is logged; flush() fails with the first failure.
import { randomBytes } from 'node:crypto';
import type { RepositoryContext } from './context.js';
import { encodeRecord, keys, repositoryFormat, type PackEntry, type PackIndex, type PackingOptions } from './format.js';

export class PackWriter {
  private buffer?: Buffer;
  private used = 0;
  private entries: PackEntry[] = [];
  private readonly spare: Buffer[] = [];
  /** Packs being written; never more than maxWriting. */
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
    if (this.buffer && this.used + length > this.capacity) this.seal();
    this.buffer ??= this.spare.pop() ?? Buffer.allocUnsafeSlow(this.capacity);
    const offset = this.used;
    for (const piece of stored) {
      this.buffer.set(piece, this.used);
      this.used += piece.length;
    }
    this.entries.push([hash, offset, length, size]);
    if (this.used >= this.packing.targetSize || this.entries.length >= this.packing.maxChunks) this.seal();
    while (this.writing.size >= this.maxWriting) await Promise.race(this.writing);
    if (this.failure) throw this.failure;
  }

  /** Writes the pack being filled and waits until every pack is durable; throws the first failure. */
  async flush(): Promise<void> {
    this.seal();
    await this.settle();
    if (this.failure) throw this.failure;
  }

  /** Waits for writes in flight without writing the pack being filled (after a failure elsewhere). */
  async settle(): Promise<void> {
    while (this.writing.size > 0) await Promise.race(this.writing);
  }

  /** Starts writing the pack being filled (add() then waits while maxWriting are in flight). */
  private seal(): void {
    const buffer = this.buffer;
    if (!buffer || this.entries.length === 0) return;
    const data = buffer.subarray(0, this.used);
    const entries = this.entries;
    this.buffer = undefined;
    this.used = 0;
    this.entries = [];
    const id = randomBytes(16).toString('hex');
    const task: Promise<void> = this.write(id, data, entries).then(
      () => {
        this.writing.delete(task);
        this.spare.push(buffer);
      },
      (err: unknown) => {
        this.writing.delete(task);
        this.spare.push(buffer);
        this.repo.log.warn({ pack: keys.pack(id), chunks: entries.length, err }, 'pack write failed');
        this.failure ??= err;
      },
    );
    this.writing.add(task);
  }

  private async write(id: string, data: Buffer, entries: PackEntry[]): Promise<void> {
    await this.repo.store.putIfAbsent(keys.pack(id), data);
    const record: PackIndex = { format: repositoryFormat, pack: id, createdAt: this.repo.now().toISOString(), entries };
    await this.repo.store.putIfAbsent(keys.packIndex(id), encodeRecord(record));
    this.onDurable(record);
  }
}
