// Groups the chunks one upload stores into packs. Guarantees:
// - A pack is written whole with one putIfAbsent (on a filesystem: one file, one fsync),
//   and only then its index: a chunk counts as stored (onDurable) once its pack's index is
//   durable, never before.
// - Memory stays bounded: one pack fills while at most `maxWriting` earlier ones are being
//   written; add() waits (back-pressure) when that many are in flight.
// - Every failed pack write is logged; flush() fails with the first failure.
import { randomBytes } from 'node:crypto';
import type { RepositoryContext } from './context.js';
import { encodeRecord, keys, repositoryFormat, type PackEntry, type PackIndex, type PackingOptions } from './format.js';

export class PackWriter {
  private parts: Buffer[] = [];
  private entries: PackEntry[] = [];
  private bytes = 0;
  /** Packs being written; never more than maxWriting. */
  private readonly writing = new Set<Promise<void>>();
  private failure: unknown;

  constructor(
    private readonly repo: RepositoryContext,
    private readonly packing: PackingOptions,
    private readonly onDurable: (record: PackIndex) => void,
    private readonly maxWriting = 2,
  ) {}

  /** Appends one stored (encoded) chunk; resolves once it is queued. */
  async add(hash: string, size: number, stored: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.entries.push([hash, this.bytes, stored.length, size]);
    this.parts.push(stored);
    this.bytes += stored.length;
    if (this.bytes >= this.packing.targetSize || this.entries.length >= this.packing.maxChunks) await this.seal();
  }

  /** Writes the pack being filled and waits until every pack is durable; throws the first failure. */
  async flush(): Promise<void> {
    await this.seal();
    while (this.writing.size > 0) await Promise.race(this.writing);
    if (this.failure) throw this.failure;
  }

  /** Waits for writes in flight without writing the pack being filled (after a failure elsewhere). */
  async settle(): Promise<void> {
    while (this.writing.size > 0) await Promise.race(this.writing);
  }

  private async seal(): Promise<void> {
    while (this.writing.size >= this.maxWriting) await Promise.race(this.writing);
    if (this.failure) throw this.failure;
    if (this.entries.length === 0) return;
    const parts = this.parts;
    const entries = this.entries;
    this.parts = [];
    this.entries = [];
    this.bytes = 0;
    const id = randomBytes(16).toString('hex');
    const task: Promise<void> = this.write(id, parts, entries).then(
      () => void this.writing.delete(task),
      (err: unknown) => {
        this.writing.delete(task);
        this.repo.log.warn({ pack: keys.pack(id), chunks: entries.length, err }, 'pack write failed');
        this.failure ??= err;
      },
    );
    this.writing.add(task);
  }

  private async write(id: string, parts: Buffer[], entries: PackEntry[]): Promise<void> {
    await this.repo.store.putIfAbsent(keys.pack(id), parts.length === 1 ? parts[0]! : Buffer.concat(parts));
    const record: PackIndex = { format: repositoryFormat, pack: id, createdAt: this.repo.now().toISOString(), entries };
    await this.repo.store.putIfAbsent(keys.packIndex(id), encodeRecord(record));
    this.onDurable(record);
  }
}
