// Verified reads. Guarantees:
// - restoreStream emits a volume's bytes in order, and no byte of a chunk before that
//   chunk's hash has been checked. A manifest's chunk list is checked against its
//   chunksSha256 before the first byte (formats 3 and 4); an older manifest's whole-volume SHA-256
//   is checked at the end, as is the size. A fault is a RepositoryIntegrityError naming the
//   volume and the chunk, never silently wrong data.
// - Reads run ahead of the consumer (up to `readAheadBytes`, default 32 MiB, across pack
//   boundaries, at most three reads at once); chunks stored next to each other in a pack are
//   read with one ranged read, and the first read is one chunk, so the first byte goes out early.
// - A chunk whose pack went since the index was loaded (a repack by GC) is looked up again
//   once before it counts as missing.
import { Readable } from 'node:stream';
import { BlobNotFoundError } from './blob-store.js';
import { describeLocation, readStored, type ChunkIndex, type ChunkLocation } from './chunk-index.js';
import { chunkWorkers } from './chunk-workers.js';
import { decodeChunk } from './codec.js';
import { getManifest } from './catalog.js';
import type { RepositoryContext } from './context.js';
import { RepositoryIntegrityError, type IntegrityProblem } from './errors.js';
import { checkChunkHash } from './chunk-hash.js';
import { chunkHashOfConfig, chunkListSha256, keys, type Manifest } from './format.js';
import { startVolumeHash } from './volume-hash.js';

export type ChunkReadResult = { ok: true; data: Buffer; key?: string } | { ok: false; problem: IntegrityProblem; detail: string; key?: string };

/** What a repository offers its readers: its context and where chunks lie. */
export interface ReadContext extends RepositoryContext {
  /** The chunk index; `reload` reads it again from the store. */
  chunkIndex(reload?: boolean): Promise<ChunkIndex>;
}

export interface RestoreOptions {
  /** Bytes read ahead of the consumer (default 32 MiB). */
  readAheadBytes?: number;
}

interface ChunkOptions extends RestoreOptions {
  /**
   * Yield views of the read buffers instead of copies: each is valid only until the
   * generator is resumed (restoreInto's contract).
   */
  lend?: boolean;
}

function corruptChunk(actual: string): ChunkReadResult & { ok: false } {
  return { ok: false, problem: 'corrupt', detail: `is corrupt: its content hashes to ${actual}` };
}

/** Finds a chunk, reading the index again once if the snapshot in memory does not have it. */
async function locate(repo: ReadContext, hash: string, stale?: ChunkLocation): Promise<ChunkLocation | undefined> {
  const index = await repo.chunkIndex();
  const location = index.lookup(hash);
  if (location && location !== stale) return location;
  return (await repo.chunkIndex(true)).lookup(hash);
}

/** Reads and decodes one chunk and checks its size; the caller checks its hash. */
export async function fetchChunk(repo: ReadContext, hash: string, size: number): Promise<ChunkReadResult> {
  let location = await locate(repo, hash);
  let stored: Buffer | undefined;
  for (let attempt = 0; location && !stored; attempt++) {
    try {
      stored = await readStored(repo.store, location);
    } catch (err) {
      if (!(err instanceof BlobNotFoundError || err instanceof RangeError) || attempt > 0) {
        if (err instanceof RangeError) return { ok: false, problem: 'corrupt', detail: `is cut short: ${err.message}`, key: describeLocation(location) };
        if (err instanceof BlobNotFoundError) return { ok: false, problem: 'missing', detail: `is missing from the repository (${err.key})`, key: describeLocation(location) };
        throw err;
      }
      location = await locate(repo, hash, location);
    }
  }
  if (!location || !stored) return { ok: false, problem: 'missing', detail: 'is missing from the repository (no pack index names it)', key: keys.chunk(hash) };
  return decodeChecked(stored, size, describeLocation(location));
}

async function decodeChecked(stored: Buffer, size: number, key: string): Promise<ChunkReadResult> {
  let data: Buffer;
  try {
    data = await decodeChunk(stored);
  } catch (err) {
    return { ok: false, problem: 'corrupt', detail: `does not decode: ${(err as Error).message}`, key };
  }
  if (data.length !== size) return { ok: false, problem: 'corrupt', detail: `has ${data.length} bytes, the manifest says ${size}`, key };
  return { ok: true, data, key };
}

/** Reads one stored chunk and checks its codec, size and hash. */
export async function readChunk(repo: ReadContext, hash: string, size: number): Promise<ChunkReadResult> {
  const chunkHash = chunkHashOfConfig(repo.config);
  checkChunkHash(chunkHash, repo.store.location);
  const r = await fetchChunk(repo, hash, size);
  if (!r.ok) return r;
  const actual = await chunkWorkers().hash(chunkHash, [r.data]);
  return actual === hash ? r : corruptChunk(actual);
}

/** Throws unless the manifest's chunk list is the one its chunksSha256 names and adds up to its size (format 3). */
function checkChunkList(job: string, volume: string, manifest: Manifest): void {
  if (manifest.chunksSha256 === undefined) {
    if (manifest.sha256 === undefined) throw new RepositoryIntegrityError('checksum', job, volume, 'the manifest has no checksum (neither chunksSha256 nor sha256)');
    return;
  }
  const listed = chunkListSha256(manifest.chunks);
  const size = manifest.chunks.reduce((n, [, bytes]) => n + bytes, 0);
  if (listed !== manifest.chunksSha256 || size !== manifest.size) {
    throw new RepositoryIntegrityError(
      'checksum',
      job,
      volume,
      `the manifest's chunk list does not match its checksum: ${manifest.chunks.length} chunks of ${size} bytes hashing to ${listed}, the manifest says ${manifest.size} bytes, ${manifest.chunksSha256}`,
    );
  }
}

/**
 * Streams a backed-up volume in order. Every chunk is verified before its bytes are
 * emitted; the stream fails with a RepositoryIntegrityError on the first fault.
 */
export function restoreStream(repo: ReadContext, job: string, volume: string, options: RestoreOptions = {}): Readable {
  const chunks = restoredChunks(repo, job, volume, options);
  let drained: NodeJS.Timeout | undefined;
  return new Readable({
    // Read ahead of the consumer: with the default 16 KiB mark each 1 MiB chunk would wait
    // for the consumer's write of the one before, so reading and writing would take turns.
    highWaterMark: 8 * 1024 * 1024,
    read() {
      chunks.next().then(
        (r) => this.push(r.done ? null : r.value),
        (err: unknown) => {
          const failure = err instanceof Error ? err : new Error(String(err));
          // The bytes read ahead were verified: the consumer gets them all before the error.
          const fail = () => {
            if (this.readableLength > 0 && !this.destroyed) return;
            clearInterval(drained);
            this.destroy(failure);
          };
          drained = setInterval(fail, 5);
          drained.unref();
          fail();
        },
      );
    },
    destroy(err, callback) {
      clearInterval(drained);
      chunks.return(undefined).then(
        () => callback(err),
        () => callback(err),
      );
    },
  });
}

/** A chunk read for a restore: its bytes and their hash, or what is wrong. */
type Loaded = (ChunkReadResult & { ok: false }) | { ok: true; data: Uint8Array; hash: string; key?: string };

/** One ranged read: chunks [first, first + count) of a manifest, adjacent in one pack. */
interface Extent {
  first: number;
  count: number;
  location?: Extract<ChunkLocation, { kind: 'pack' }>;
  /** Stored length of each chunk. */
  lengths: number[];
  /** Their decoded sizes, summed. */
  sizes: number;
}

/**
 * Groups the manifest's chunks into extents of at most `maxBytes` each (a chunk alone may be
 * more). The first extents are smaller, doubling from `firstBytes`: the first byte reaches
 * the consumer after one chunk's read, not after a whole extent's.
 */
function* extentsOf(manifest: Manifest, index: ChunkIndex, firstBytes: number, maxBytes: number): Generator<Extent> {
  let current: Extent | undefined;
  let limit = Math.min(firstBytes, maxBytes);
  for (const [i, [hash]] of manifest.chunks.entries()) {
    const location = index.lookup(hash);
    if (current?.location && location?.kind === 'pack') {
      const end = current.location.offset + current.location.length;
      const decoded = current.sizes + manifest.chunks[i]![1];
      if (location.pack === current.location.pack && location.offset === end && current.location.length + location.length <= limit && decoded <= limit) {
        current.sizes = decoded;
        current.location = { ...current.location, length: current.location.length + location.length };
        current.lengths.push(location.length);
        current.count++;
        continue;
      }
    }
    if (current) {
      yield current;
      limit = Math.min(2 * limit, maxBytes);
    }
    const size = manifest.chunks[i]![1];
    current = location?.kind === 'pack' ? { first: i, count: 1, location: { ...location }, lengths: [location.length], sizes: size } : { first: i, count: 1, lengths: [], sizes: size };
  }
  if (current) yield current;
}

/**
 * Restores a volume by handing each verified chunk to `write` in order. The chunk is a view
 * of memory that is reused once the promise `write` returned settles, so nothing is copied:
 * the fastest way to put a backup on a disk or into a file. Resolves with the bytes written.
 */
export async function restoreInto(
  repo: ReadContext,
  job: string,
  volume: string,
  write: (chunk: Buffer) => Promise<unknown>,
  options: RestoreOptions = {},
): Promise<number> {
  let bytes = 0;
  for await (const chunk of restoredChunks(repo, job, volume, { ...options, lend: true })) {
    await write(chunk);
    bytes += chunk.length;
  }
  return bytes;
}

/** A volume's verified chunks, one at a time (see restoredRuns). */
export async function* restoredChunks(repo: ReadContext, job: string, volume: string, options: ChunkOptions = {}): AsyncGenerator<Buffer> {
  for await (const run of restoredRuns(repo, job, volume, options)) yield* run;
}

/**
 * A volume's verified chunks in runs: the chunks of one ranged read at a time (up to 8 MiB),
 * so a writer can put a run down with one call. Before a fault, the verified chunks of its
 * run come out first.
 */
export async function* restoredRuns(repo: ReadContext, job: string, volume: string, options: ChunkOptions = {}): AsyncGenerator<Buffer[]> {
  const chunkHash = chunkHashOfConfig(repo.config);
  checkChunkHash(chunkHash, repo.store.location);
  const manifest = await getManifest(repo, job, volume);
  checkChunkList(job, volume, manifest);
  const index = await repo.chunkIndex(true);
  const readAhead = Math.max(1, options.readAheadBytes ?? 32 * 1024 * 1024);
  const maxReading = 3;
  const offsets: number[] = [];
  let offset = 0;
  for (const [, size] of manifest.chunks) {
    offsets.push(offset);
    offset += size;
  }
  const fault = (i: number, r: ChunkReadResult & { ok: false }) => {
    const [hash] = manifest.chunks[i]!;
    return new RepositoryIntegrityError(r.problem, job, volume, `chunk ${r.detail}`, { hash, index: i, offset: offsets[i]!, key: r.key ?? keys.chunk(hash) });
  };
  // Extents are read into shared buffers the chunk workers decode and hash in place, and
  // the volume hash reads in place too; the consumer gets copies. The buffers are reused
  // (a worker holds on to any shared buffer it was ever sent until its own GC runs).
  const extentMax = Math.max(8 * 1024 * 1024, repo.config.chunking.maxSize + 1);
  const spare: Uint8Array[] = [];
  const acquire = (size: number): Uint8Array => {
    const i = spare.findIndex((b) => b.length >= size);
    if (i >= 0) return spare.splice(i, 1)[0]!.subarray(0, size);
    return new Uint8Array(new SharedArrayBuffer(size));
  };
  // Loads an extent: one ranged read when its chunks lie together in a pack, decoded and
  // hashed on a chunk worker; else one chunk on its own (a loose chunk, or one the index
  // does not name: looked up again) on the same workers.
  const load = async (extent: Extent): Promise<{ results: Loaded[]; buffers: Uint8Array[] }> => {
    const sizes = manifest.chunks.slice(extent.first, extent.first + extent.count).map(([, size]) => size);
    if (extent.location) {
      const input = acquire(extent.location.length);
      let bytes: Buffer | undefined;
      try {
        bytes = await readStored(repo.store, extent.location, input);
      } catch (err) {
        if (!(err instanceof BlobNotFoundError || err instanceof RangeError)) throw err;
      }
      if (bytes) {
        // Room for the chunks that are not stored raw (codec byte 0 stays where it is).
        let compressed = 0;
        for (let j = 0, at = 0; j < extent.count; at += extent.lengths[j]!, j++) if (bytes[at] !== 0) compressed += sizes[j]!;
        const output = acquire(compressed);
        const decoded = await chunkWorkers().decodeExtent(chunkHash, bytes, extent.lengths, sizes, output);
        let at = extent.location.offset;
        const results = decoded.map((d, j): Loaded => {
          const key = describeLocation({ ...extent.location!, offset: at });
          at += extent.lengths[j]!;
          if ('error' in d) return { ok: false, problem: 'corrupt', detail: d.error, key };
          const from = d.in === 'bytes' ? bytes! : output;
          return { ok: true, data: from.subarray(d.offset, d.offset + d.length), hash: d.hash, key };
        });
        return { results, buffers: [input, output] };
      }
      spare.push(input);
    }
    const results: Loaded[] = [];
    for (let j = 0; j < extent.count; j++) {
      const [hash, size] = manifest.chunks[extent.first + j]!;
      const r = await fetchChunk(repo, hash, size);
      results.push(r.ok ? { ...r, hash: await chunkWorkers().hash(chunkHash, [r.data]) } : r);
    }
    return { results, buffers: [] };
  };
  const extents = extentsOf(manifest, index, 1024 * 1024, extentMax);
  const pending: { extent: Extent; bytes: number; loading: Promise<{ results: Loaded[]; buffers: Uint8Array[] }> }[] = [];
  let inFlight = 0;
  // Reads being made: a few at once keep the disk and the workers busy, and more would only
  // queue ahead of the one the consumer waits for (the first byte waited for 32 MiB of reads).
  let reading = 0;
  let exhausted = false;
  let finished = false;
  const fill = (): void => {
    while (!exhausted && !finished && (pending.length === 0 || (inFlight < readAhead && reading < maxReading))) {
      const next = extents.next();
      if (next.done) {
        exhausted = true;
        return;
      }
      const extent = next.value;
      const bytes = extent.location?.length ?? manifest.chunks[extent.first]![1];
      reading++;
      const loading = load(extent).finally(() => {
        reading--;
        fill();
      });
      loading.catch(() => undefined); // awaited below; this only stops an early exit leaving it unhandled
      pending.push({ extent, bytes, loading });
      inFlight += bytes;
    }
  };
  // Only a manifest from before format 3 needs the bytes hashed a second time, whole.
  const volumeHash = manifest.chunksSha256 === undefined ? startVolumeHash() : undefined;
  let total = 0;
  let digest: string | undefined;
  try {
    fill();
    while (pending.length > 0) {
      const { extent, bytes, loading } = pending.shift()!;
      const { results, buffers } = await loading;
      inFlight -= bytes;
      fill();
      const appended: Promise<void>[] = [];
      const run: Buffer[] = [];
      let failure: RepositoryIntegrityError | undefined;
      for (const [j, r] of results.entries()) {
        const i = extent.first + j;
        // The worker hashed the chunk as it decoded it; nothing of it goes out unless that
        // hash is the one the manifest names.
        if (!r.ok || r.hash !== manifest.chunks[i]![0]) {
          failure = r.ok ? fault(i, { ...corruptChunk(r.hash), key: r.key }) : fault(i, r);
          break;
        }
        // In order, on the volume hash's own worker (shared memory: no copy).
        if (volumeHash) appended.push(volumeHash.append(r.data));
        total += r.data.length;
        // A copy out of a reused buffer (unless lent: the extent's buffers are reused only
        // after the consumer has resumed past its run); a chunk read on its own is the
        // consumer's already.
        const view = Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength);
        run.push(buffers.length > 0 && !options.lend ? Buffer.from(view) : view);
      }
      if (run.length > 0) yield run;
      if (failure) throw failure;
      // The extent's buffers go back once the volume hash has read them.
      void Promise.allSettled(appended).then(() => spare.push(...buffers.map((b) => new Uint8Array(b.buffer))));
    }
    digest = await volumeHash?.digest();
  } finally {
    finished = true; // an early return starts no more reads
    volumeHash?.dispose();
  }
  if (total !== manifest.size || (volumeHash && digest !== manifest.sha256)) {
    const got = volumeHash ? `${total} bytes hashing to ${digest}` : `${total} bytes`;
    const want = volumeHash ? `${manifest.size} bytes, ${manifest.sha256}` : `${manifest.size} bytes`;
    throw new RepositoryIntegrityError('checksum', job, volume, `whole-volume check failed: ${got}, the manifest says ${want}`);
  }
}
