// Backing up one volume: the upload. Guarantees:
// - Every chunk is stored once, under the hash of its bytes (the repository's chunk hash,
//   chunk-hash.ts); a backup of data the repository already holds writes (almost) nothing
//   but its manifest.
// - Manifest last: the manifest is written only after every chunk it lists is durable (its
//   pack and the pack's index; chunks found already stored included: their blobs are
//   synced), so a crash never leaves a manifest pointing at missing data.
// - An upload declares each batch of chunks in an intent record *before* it checks whether
//   they are stored; that order is what lets garbage collection (gc.ts) see what a running
//   upload relies on.
// - An interrupted upload resumes: the next attempt re-reads the source, and every chunk
//   already durable is skipped rather than stored again.
// - A lost lease fails the upload (LostLeaseError) and writes no manifest; lost after the
//   manifest is in, with a chunk gone or the backup deleted meanwhile, the manifest is
//   withdrawn.
// - Memory is bounded: see VolumeChunks (chunking) and PackWriter (packs); batches are
//   handed over one at a time.
import { ChunkIndex, blobKeys, presenceKey, type ChunkLocation } from './chunk-index.js';
import { tryRecord, type RepositoryContext } from './context.js';
import { beginBackup, readManifest } from './catalog.js';
import { RepositoryFormatError, UploadConflictError } from './errors.js';
import { checkChunkHash } from './chunk-hash.js';
import {
  checkName,
  checksumOf,
  chunkHashOfConfig,
  chunkListSha256,
  defaultPacking,
  encodeRecord,
  keys,
  recordFormat,
  writableFormats,
  type ChunkRef,
  type Manifest,
  type VolumeSource,
} from './format.js';
import { PackWriter } from './pack-writer.js';
import { LostLeaseError } from './errors.js';
import { removeIntents, removeUpload, UploadLease } from './uploads.js';
import { volumeChunks, type VolumeChunk, type VolumeChunks } from './volume-chunks.js';

export interface BackupVolumeOptions {
  /** Chunks declared per intent record (default 16; a batch also ends at VolumeChunks.batchBytes). */
  intentBatch?: number;
  /** The backup this one is relative to (recorded in the manifest, for incremental backups). */
  parent?: string;
  onProgress?: (progress: UploadProgress) => void;
}

export interface UploadProgress {
  bytesRead: number;
  /** Chunks durable in the repository (stored by this upload, or found there). */
  chunksDone: number;
  bytesUploaded: number;
}

export interface UploadResult {
  manifest: Manifest;
  /** The manifest existed already; nothing was read. */
  alreadyComplete: boolean;
  /** 1 for a fresh upload, more when it resumed an interrupted one. */
  attempt: number;
  bytesRead: number;
  chunks: number;
  chunksUploaded: number;
  /** Uncompressed bytes of chunks this upload stored. */
  bytesUploaded: number;
  /** Bytes those chunks take in the store. */
  storedBytesUploaded: number;
  /** Bytes of chunks found in the repository already (any backup, or earlier in this volume). */
  bytesDeduplicated: number;
  /** Of those, bytes an earlier attempt of this upload had made durable. */
  bytesResumed: number;
  /** Bytes an earlier attempt had declared but not made durable, so they were uploaded again. */
  bytesReuploaded: number;
  /** Packs this upload wrote. */
  packs: number;
}

/**
 * Backs up one volume's bytes into `job`. Resumes an interrupted attempt for the same job
 * and volume; returns at once if the manifest exists already. The caller must feed the
 * same bytes on a resume (a snapshot does not change).
 */
export async function backupVolume(
  repo: RepositoryContext,
  job: string,
  source: VolumeSource,
  data: AsyncIterable<Uint8Array>,
  options: BackupVolumeOptions = {},
): Promise<UploadResult> {
  checkName('job', job);
  checkName('volume', source.volume);
  const volume = source.volume;
  const manifestKey = keys.manifest(job, volume);
  const existing = await tryRecord<Manifest>(repo.store, manifestKey);
  const result: UploadResult = {
    manifest: existing as Manifest,
    alreadyComplete: existing !== undefined,
    attempt: 0,
    bytesRead: 0,
    chunks: existing?.chunks.length ?? 0,
    chunksUploaded: 0,
    bytesUploaded: 0,
    storedBytesUploaded: 0,
    bytesDeduplicated: 0,
    bytesResumed: 0,
    bytesReuploaded: 0,
    packs: 0,
  };
  if (existing) {
    // A crash between the manifest and the upload's cleanup leaves its lease and intents
    // behind; the manifest protects the chunks now, so they can go (as after a success).
    await removeUpload(repo, job, volume);
    return result;
  }
  checkChunkHash(chunkHashOfConfig(repo.config), repo.store.location);
  if (!writableFormats.includes(repo.config.format)) {
    throw new RepositoryFormatError(
      `repository at ${repo.store.location} has format ${repo.config.format}, which Trellis no longer writes; upgrade it (\`trellis repo upgrade\`, or BackupRepository.upgradeFormat) to take new backups`,
    );
  }
  // The source is read, cut and hashed, and the chunk index loaded, while the backup's
  // record and the lease are written: neither writes anything, and a backup's first
  // milliseconds were otherwise spent waiting for those records' fsyncs (9 ms of 400 for
  // 256 MB). The index may be loaded before the lease: a chunk is relied on only after its
  // intent is durable and its blob is then found present (see storeBatch).
  const chunks = volumeChunks(data, repo.config.chunking, chunkHashOfConfig(repo.config));
  const early = startedEarly(chunks);
  const index = ChunkIndex.load(repo.store);
  index.catch(() => undefined); // met in run()
  let lease: UploadLease;
  try {
    await beginBackup(repo, job);
    lease = await UploadLease.take(repo, job, volume);
  } catch (err) {
    void early.return().catch(() => undefined);
    await chunks.return();
    throw err;
  }
  result.attempt = lease.attempt;
  const upload = new Upload(repo, lease, result, options);
  const stopRenewing = lease.renewWhileRunning((err) => upload.fail(err));
  try {
    await upload.run(chunks, early, index);
  } finally {
    await stopRenewing();
  }
  // A lease that garbage collection expired no longer protected these chunks: some may be
  // gone, so this attempt must not vouch for them. A retry uploads what is missing.
  let failure = upload.failure;
  if (!failure) await lease.keep(true).catch((err: unknown) => (failure = err));
  if (failure) {
    // A lost lease leaves this attempt's intents without an owner; they would only hold
    // chunks back from garbage collection until they age out, so remove them now.
    if (failure instanceof LostLeaseError) await removeIntents(repo, job, volume, lease.attempt);
    throw failure;
  }

  const manifest: Manifest = {
    format: recordFormat(repo.config),
    job,
    volume,
    backend: source.backend,
    snapshot: source.snapshot,
    parent: options.parent,
    size: result.bytesRead,
    chunksSha256: chunkListSha256(upload.refs),
    chunking: repo.config.chunking,
    codec: repo.config.codec,
    createdAt: repo.now().toISOString(),
    chunks: upload.refs,
  };
  await writeManifest(repo, lease, manifest);
  result.manifest = manifest;
  result.chunks = manifest.chunks.length;
  // Only now may the lease go: the manifest protects the chunks from here on.
  await removeUpload(repo, job, volume);
  repo.log.info(
    { job, volume, bytes: result.bytesRead, uploaded: result.bytesUploaded, deduplicated: result.bytesDeduplicated, packs: result.packs, attempt: lease.attempt },
    'volume backed up',
  );
  return result;
}

/** Writes the manifest, then settles a lease lost meanwhile (see the guarantees above). */
async function writeManifest(repo: RepositoryContext, lease: UploadLease, manifest: Manifest): Promise<void> {
  const { job, volume } = manifest;
  const key = keys.manifest(job, volume);
  if (!(await repo.store.putIfAbsent(key, encodeRecord(manifest)))) {
    const other = await readManifest(repo, key);
    if (checksumOf(other) !== checksumOf(manifest)) {
      throw new UploadConflictError(`backup ${job} volume ${volume}: a concurrent upload wrote different data (${checksumOf(other)} vs ${checksumOf(manifest)})`);
    }
    return;
  }
  // The lease was checked before the manifest went in, but a pause in between (a stopped
  // process, a stalled mount) can outlast the ttl, and GC may then have freed chunks. Once
  // the manifest is visible GC keeps what it lists, so one more check settles it: a lost
  // lease with a chunk gone, or with the backup deleted meanwhile (which took the lease),
  // withdraws the manifest.
  const lost = await lease.keep(true).then(
    () => undefined,
    (err: unknown) => err,
  );
  if (lost === undefined) return;
  if (!(lost instanceof LostLeaseError)) throw lost;
  const missing = await firstMissingChunk(repo, manifest.chunks);
  const deleted = missing === undefined && !(await repo.store.has(keys.job(job)));
  if (missing === undefined && !deleted) return;
  await repo.store.delete(key);
  await removeIntents(repo, job, volume, lease.attempt);
  await repo.store.pruneEmptyFolders?.(keys.backup(job));
  throw lease.lost(`${deleted ? `backup ${job} was deleted meanwhile` : `chunk ${missing} went meanwhile`}, so the manifest was withdrawn`);
}

/** The first chunk of `refs` the store does not hold now, if any. */
async function firstMissingChunk(repo: RepositoryContext, refs: ChunkRef[]): Promise<string | undefined> {
  const index = await ChunkIndex.load(repo.store);
  const checked = new Set<string>();
  for (const [hash] of refs) {
    if (checked.has(hash)) continue;
    checked.add(hash);
    const location = index.lookup(hash);
    if (!location || !(await index.isPresent(location))) return hash;
  }
  return undefined;
}

/**
 * `chunks`, with the first chunk asked for now: the pipeline reads and scans ahead of it
 * (readAhead blocks) before anyone consumes it.
 */
function startedEarly(chunks: VolumeChunks): AsyncIterableIterator<VolumeChunk> & { return(): Promise<IteratorResult<VolumeChunk>> } {
  const source = chunks[Symbol.asyncIterator]();
  let first: Promise<IteratorResult<VolumeChunk>> | undefined = source.next();
  first.catch(() => undefined); // met by the first next()
  return {
    next: () => {
      const r = first ?? source.next();
      first = undefined;
      return r;
    },
    return: async () => (source.return ? source.return(undefined) : { done: true, value: undefined }),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/** Batches of one upload stored at once. */
const batchesInFlight = 2;

/** One attempt's data path: chunks in, batches declared, new chunks packed. */
class Upload {
  readonly refs: ChunkRef[] = [];
  failure: unknown;
  private index!: ChunkIndex;
  private readonly writer: PackWriter;
  /** Chunks this attempt stored or found stored: a repeat within the volume is not looked up again. */
  private readonly seen = new Set<string>();
  /** Blobs holding chunks found already stored, not yet made durable by this upload. */
  private readonly foundPresent = new Set<string>();
  private chunksDone = 0;
  private readonly intentBatch: number;
  /** Settles when the last batch handed over is done packing (see store()). */
  private packTurn: Promise<void> = Promise.resolve();

  constructor(
    private readonly repo: RepositoryContext,
    private readonly lease: UploadLease,
    private readonly result: UploadResult,
    private readonly options: BackupVolumeOptions,
  ) {
    this.intentBatch = options.intentBatch ?? 16;
    // Packs committed while the next fills, so a pack's fsyncs (its own, its folder's, its
    // index's) overlap the filling of the next: four where no pack is held in memory (a
    // store with createWriter, e.g. a filesystem), else two (each is a buffer). With two on a
    // filesystem, appends waited for a commit slot a quarter of the time.
    this.writer = new PackWriter(
      repo,
      repo.config.packing ?? defaultPacking,
      repo.config.chunking.maxSize + 1,
      (record) => {
        result.packs++;
        this.done(record.entries.length);
      },
      repo.store.createWriter ? 4 : 2,
    );
  }

  fail(err: unknown): void {
    this.failure ??= err;
  }

  /**
   * Takes `chunks` (through `early`, which has them started) to their end, storing what is
   * new; a failure is left in `failure`.
   */
  async run(chunks: VolumeChunks, early: AsyncIterableIterator<VolumeChunk>, index: Promise<ChunkIndex>): Promise<void> {
    let batch: VolumeChunk[] = [];
    let batchBytes = 0;
    // Batches being stored (declared, looked up, packed) while the next one is chunked.
    // Several at once hide the latency of each intent's durable write; memory stays
    // bounded all the same, since chunking waits for stored batches to release their
    // blocks, and a stored batch never waits for chunking.
    const storing = new Set<Promise<void>>();
    const settle = async (): Promise<void> => {
      while (storing.size > 0) await Promise.race(storing);
    };
    const handOver = async (): Promise<void> => {
      while (storing.size >= batchesInFlight) await Promise.race(storing);
      if (this.failure) throw this.failure;
      const pending = batch;
      batch = [];
      batchBytes = 0;
      if (pending.length === 0) return;
      const task: Promise<void> = this.store(pending)
        .catch((err: unknown) => this.fail(err))
        .finally(() => storing.delete(task));
      storing.add(task);
    };
    try {
      this.index = await index;
      for await (const chunk of early) {
        this.refs.push(chunk.ref);
        this.result.bytesRead += chunk.size;
        batch.push(chunk);
        batchBytes += chunk.size;
        if (batch.length >= this.intentBatch || batchBytes >= chunks.batchBytes) await handOver();
      }
      await handOver();
      await settle();
      if (this.failure) throw this.failure;
      await this.writer.flush();
      // The manifest must not outlive, in a power loss, a chunk it lists.
      await this.syncFoundPresent();
    } catch (err) {
      this.fail(err);
    } finally {
      // Never leave writes running behind the caller's back, even on failure.
      await settle();
      await this.writer.settle();
      await chunks.return();
      // Ends the pipeline's generator too when the loop was never entered (the index failed
      // to load); not awaited, like the source's own return.
      void early.return?.().catch(() => undefined);
    }
  }

  private done(chunks: number): void {
    this.chunksDone += chunks;
    this.options.onProgress?.({ bytesRead: this.result.bytesRead, chunksDone: this.chunksDone, bytesUploaded: this.result.bytesUploaded });
  }

  /** Declares a batch, then stores what the repository does not hold; releases the batch's chunks. */
  private async store(batch: VolumeChunk[]): Promise<void> {
    // The turn is taken before the first await, so turns follow the order batches come in.
    const turn = this.packTurn;
    let done!: () => void;
    this.packTurn = new Promise<void>((resolve) => (done = resolve));
    try {
      await this.storeBatch(batch, turn);
    } finally {
      done();
      for (const chunk of batch) chunk.release();
    }
  }

  /** Stores a batch; its new chunks go to the packs once `turn` (the batch before it is done packing) comes. */
  private async storeBatch(batch: VolumeChunk[], turn: Promise<void>): Promise<void> {
    if (this.foundPresent.size >= 4096) await this.syncFoundPresent(); // bounds the set's memory
    const hashes = await Promise.all(batch.map((c) => c.hashed));
    await this.lease.keep();
    // The intent must be durable before any existence check of its chunks.
    await this.lease.declare(hashes);
    const present = new Map<string, Promise<boolean>>();
    const isPresent = (location: ChunkLocation): Promise<boolean> => {
      const key = presenceKey(location);
      let p = present.get(key);
      if (!p) present.set(key, (p = this.index.isPresent(location)));
      return p;
    };
    const fresh: { hash: string; chunk: VolumeChunk }[] = [];
    for (const [i, chunk] of batch.entries()) {
      const hash = hashes[i]!;
      const size = chunk.size;
      if (this.seen.has(hash)) {
        chunk.release();
        this.result.bytesDeduplicated += size;
        this.done(1);
        continue;
      }
      this.seen.add(hash);
      const location = this.index.lookup(hash);
      if (location && (await isPresent(location))) {
        chunk.release();
        for (const key of blobKeys(location)) this.foundPresent.add(key);
        this.result.bytesDeduplicated += size;
        if (this.lease.declaredBefore.has(hash)) this.result.bytesResumed += size;
        this.done(1);
        continue;
      }
      fresh.push({ hash, chunk });
    }
    // Encoded in parallel on the workers, packed in order; each chunk's memory is released
    // once the pack writer has copied it. Batches pack one after another, so a volume's new
    // chunks lie in its packs in the volume's order, and a restore reads runs of them with
    // one read (with two batches adding at once, they interleaved).
    const encoded = fresh.map(({ chunk }) => chunk.encode(this.repo.config.codec));
    for (const p of encoded) p.catch(() => undefined); // awaited in turn below
    await turn;
    for (const [i, { hash, chunk }] of fresh.entries()) {
      const stored = await encoded[i]!;
      await this.writer.add(hash, chunk.size, stored);
      chunk.release();
      this.result.chunksUploaded++;
      this.result.bytesUploaded += chunk.size;
      this.result.storedBytesUploaded += stored.reduce((n, piece) => n + piece.length, 0);
      if (this.lease.declaredBefore.has(hash)) this.result.bytesReuploaded += chunk.size;
    }
  }

  private async syncFoundPresent(): Promise<void> {
    if (this.foundPresent.size === 0 || !this.repo.store.syncBlobs) return;
    const found = [...this.foundPresent];
    this.foundPresent.clear();
    await this.repo.store.syncBlobs(found);
  }
}
