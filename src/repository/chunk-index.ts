// Where each chunk lies: in a pack (format 2) or in a file of its own (format 1, "loose").
// Guarantees:
// - load() sees every pack whose index was written before it started, and every loose
//   chunk; a chunk stored in several places (a repack, two uploads that raced) resolves
//   to one of them, and any of them holds the same bytes (they are named by their hash).
// - A pack index is written only after its pack is durable and removed before it, so a
//   location whose presence key (presenceKey) exists names bytes that exist.
// - The index in memory is a snapshot: isPresent() asks the store, which is what an upload
//   relies on after declaring its intent (see gc.ts for why that order matters).
import type { BlobStore } from './blob-store.js';
import { chunkHashOf, decodeRecord, keys, packIdOf, type PackIndex } from './format.js';

export type ChunkLocation =
  | { kind: 'pack'; pack: string; offset: number; length: number }
  | { kind: 'loose'; key: string };

/** The key whose presence says the location still holds the chunk. */
export function presenceKey(location: ChunkLocation): string {
  return location.kind === 'pack' ? keys.packIndex(location.pack) : location.key;
}

/** The blobs the location's bytes depend on (what a writer relying on them makes durable). */
export function blobKeys(location: ChunkLocation): string[] {
  return location.kind === 'pack' ? [keys.pack(location.pack), keys.packIndex(location.pack)] : [location.key];
}

/** A human-readable place, for messages: the chunk file, or the pack and offset. */
export function describeLocation(location: ChunkLocation): string {
  return location.kind === 'pack' ? `${keys.pack(location.pack)} at ${location.offset}` : location.key;
}

/** Reads the stored (encoded) bytes at a location (into `into`, for a packed one, if given); throws BlobNotFoundError when gone. */
export function readStored(store: BlobStore, location: ChunkLocation, into?: Uint8Array): Promise<Buffer> {
  return location.kind === 'pack' ? store.getRange(keys.pack(location.pack), location.offset, location.length, into) : store.get(location.key);
}

export class ChunkIndex {
  // hash -> one place holding it. Every pack in `packs` has its entries here (unless a
  // later pack holds the same chunk).
  private readonly locations = new Map<string, ChunkLocation>();
  private readonly packs = new Map<string, PackIndex>();
  private readonly loose = new Set<string>();

  constructor(private readonly store: BlobStore) {}

  /** Reads every pack index and lists loose chunks, replacing what was known. */
  static async load(store: BlobStore): Promise<ChunkIndex> {
    const index = new ChunkIndex(store);
    for await (const key of store.list(keys.chunkFolder)) {
      const hash = chunkHashOf(key);
      if (hash) index.addLoose(hash);
    }
    const indexKeys: string[] = [];
    for await (const key of store.list(keys.packIndexFolder)) if (packIdOf(key)?.kind === 'index') indexKeys.push(key);
    // Small records, many of them: read several at once.
    let next = 0;
    const reader = async (): Promise<void> => {
      for (let key = indexKeys[next++]; key !== undefined; key = indexKeys[next++]) {
        let data: Buffer;
        try {
          data = await store.get(key);
        } catch {
          continue; // removed since it was listed (a GC run): its chunks are not there to rely on
        }
        index.addPack(decodeRecord<PackIndex>(key, data));
      }
    };
    await Promise.all(Array.from({ length: 8 }, reader));
    return index;
  }

  get chunkCount(): number {
    return this.locations.size;
  }

  lookup(hash: string): ChunkLocation | undefined {
    return this.locations.get(hash);
  }

  addPack(record: PackIndex): void {
    this.packs.set(record.pack, record);
    for (const [hash, offset, length] of record.entries) this.locations.set(hash, { kind: 'pack', pack: record.pack, offset, length });
  }

  addLoose(hash: string): void {
    this.loose.add(hash);
    if (!this.locations.has(hash)) this.locations.set(hash, { kind: 'loose', key: keys.chunk(hash) });
  }

  packIndexes(): IterableIterator<PackIndex> {
    return this.packs.values();
  }

  looseChunks(): IterableIterator<string> {
    return this.loose.values();
  }

  /** Whether the store holds the location now (not when the index was loaded). */
  isPresent(location: ChunkLocation): Promise<boolean> {
    return this.store.has(presenceKey(location));
  }
}
