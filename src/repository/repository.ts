// A content-addressed, deduplicated backup repository on a BlobStore.
// Guarantees:
// - Every chunk is stored once, under the SHA-256 of its bytes; a backup of data the
//   repository already holds writes (almost) nothing but its manifest.
// - A manifest is written only after every chunk it lists is durable (chunks found
//   already stored included: their folders are synced), so a crash never leaves a
//   manifest pointing at missing data; an upload that finds its lease lost once its
//   manifest is in, with a chunk gone, withdraws the manifest.
// - An interrupted upload resumes: the next attempt re-reads the source, and every chunk
//   already durable is skipped rather than uploaded again.
// - Reading a volume verifies each chunk's hash before its bytes are handed out, and the
//   whole-volume SHA-256 at the end; a fault is a RepositoryIntegrityError naming the
//   volume and the chunk, never silently wrong data.
// - An upload in progress holds a lease and declares each chunk in an intent record
//   *before* it checks whether the chunk exists; garbage collection (gc.ts) re-reads
//   leases and then manifests after it has moved its victims aside, so it never removes a
//   chunk that a concurrent upload relies on (see gc.ts for the argument). Each attempt
//   number has one owner, so two uploads of one volume never share intent records.
import { subtle } from 'node:crypto';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import { componentLogger, type Logger } from '../log.js';
import { BlobNotFoundError, type BlobStore } from './blob-store.js';
import { chunkStream, defaultChunkerOptions, validateChunkerOptions, type ChunkerOptions } from './chunker.js';
import { decodeChunk, defaultCodec, encodeChunk, isCodecName, type CodecName } from './codec.js';
import { RepositoryIntegrityError, type IntegrityProblem } from './errors.js';
import { startVolumeHash } from './volume-hash.js';
import {
  checkName,
  decodeRecord,
  encodeRecord,
  keys,
  manifestKeyParts,
  repositoryFormat,
  type BackupIndex,
  type ChunkRef,
  type IntentRecord,
  type JobRecord,
  type Lease,
  type Manifest,
  type RepositoryConfig,
  type VolumeSource,
} from './format.js';

export interface RepositoryOptions {
  /** An upload whose lease was not renewed for this long is considered dead (default 15 min). */
  leaseTtlMs?: number;
  /** How often a running upload renews its lease (default 60 s). */
  leaseRenewMs?: number;
  /** The clock; tests inject one. */
  now?: () => Date;
  /** Who holds leases taken by this process, for operators reading them. */
  holder?: string;
  /** Where the repository logs (default: the operator's `repository` component logger). */
  logger?: Logger;
}

export interface CreateOptions {
  chunking?: ChunkerOptions;
  codec?: CodecName;
}

export interface WriteVolumeOptions {
  /** Chunks compressed and written at once (default 4). */
  concurrency?: number;
  /** Chunks declared per intent record (default 16). */
  intentBatch?: number;
  onProgress?: (progress: UploadProgress) => void;
}

export interface UploadProgress {
  bytesRead: number;
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
}

export interface BackupSummary {
  job: string;
  createdAt?: string;
  complete: boolean;
  completedAt?: string;
  expiresAt?: string;
  volumes: number;
}

export interface UploadState {
  job: string;
  volume: string;
  lease?: Lease;
  /** The lease was renewed within the lease ttl (or is still being written). */
  active: boolean;
  intentKeys: string[];
}

export type ChunkReadResult = { ok: true; data: Buffer } | { ok: false; problem: IntegrityProblem; detail: string };

/** The upload's lease lapsed or was taken over; the upload may be retried. */
export class LostLeaseError extends Error {
  override name = 'LostLeaseError';
}

function corruptChunk(actual: string): ChunkReadResult & { ok: false } {
  return { ok: false, problem: 'corrupt', detail: `is corrupt: its content hashes to ${actual}` };
}

/** SHA-256 on the libuv thread pool (WebCrypto), so chunks read ahead are verified in parallel. */
async function hashOffThread(data: Buffer): Promise<string> {
  return Buffer.from(await subtle.digest('SHA-256', data)).toString('hex');
}

export class BackupRepository {
  readonly leaseTtlMs: number;
  private readonly leaseRenewMs: number;
  readonly now: () => Date;
  private readonly holder: string;
  private readonly log: Logger;

  private constructor(
    readonly store: BlobStore,
    readonly config: RepositoryConfig,
    options: RepositoryOptions,
  ) {
    this.leaseTtlMs = options.leaseTtlMs ?? 15 * 60_000;
    this.leaseRenewMs = options.leaseRenewMs ?? 60_000;
    this.now = options.now ?? (() => new Date());
    this.holder = options.holder ?? `${hostname()}:${process.pid}`;
    this.log = options.logger ?? componentLogger('repository');
  }

  /** Opens the repository in `store`, creating it first if it is empty. */
  static async create(store: BlobStore, create: CreateOptions = {}, options: RepositoryOptions = {}): Promise<BackupRepository> {
    const chunking = create.chunking ?? defaultChunkerOptions;
    validateChunkerOptions(chunking);
    const config: RepositoryConfig = { format: repositoryFormat, chunking, codec: create.codec ?? defaultCodec, createdAt: new Date().toISOString() };
    // putIfAbsent: two processes creating one repository agree on the first config.
    await store.putIfAbsent(keys.config, encodeRecord(config));
    return BackupRepository.open(store, options);
  }

  /** Opens an existing repository; throws if `store` holds none. */
  static async open(store: BlobStore, options: RepositoryOptions = {}): Promise<BackupRepository> {
    let config: RepositoryConfig;
    try {
      config = decodeRecord<RepositoryConfig>(keys.config, await store.get(keys.config));
    } catch (err) {
      if (err instanceof BlobNotFoundError) throw new Error(`no backup repository at ${store.location} (${keys.config} is missing)`, { cause: err });
      throw err;
    }
    if (config.format !== repositoryFormat) throw new Error(`repository at ${store.location} has format ${config.format}; this Trellis reads format ${repositoryFormat}`);
    validateChunkerOptions(config.chunking);
    if (!isCodecName(config.codec)) throw new Error(`repository at ${store.location} names unknown codec ${config.codec}`);
    return new BackupRepository(store, config, options);
  }

  // ---- backups and their records -------------------------------------------------

  /** Records a backup job (idempotent: a second call keeps the first record). */
  async beginBackup(job: string, options: { ttlSeconds?: number } = {}): Promise<JobRecord> {
    checkName('job', job);
    const record: JobRecord = { format: repositoryFormat, job, createdAt: this.now().toISOString(), ttlSeconds: options.ttlSeconds };
    if (await this.store.putIfAbsent(keys.job(job), encodeRecord(record))) return record;
    return this.readRecord<JobRecord>(keys.job(job));
  }

  /** Writes the job's index of manifests; the backup is complete from then on. */
  async finishBackup(job: string): Promise<BackupIndex> {
    const record = await this.beginBackup(job);
    const volumes: BackupIndex['volumes'] = [];
    for (const volume of (await this.listVolumes(job)).sort()) {
      const m = await this.getManifest(job, volume);
      volumes.push({ volume, size: m.size, sha256: m.sha256, chunks: m.chunks.length });
    }
    const completedAt = this.now();
    const index: BackupIndex = {
      format: repositoryFormat,
      job,
      createdAt: record.createdAt,
      completedAt: completedAt.toISOString(),
      expiresAt: record.ttlSeconds === undefined ? undefined : new Date(completedAt.getTime() + record.ttlSeconds * 1000).toISOString(),
      volumes,
    };
    await this.store.put(keys.index(job), encodeRecord(index));
    this.log.info({ job, volumes: volumes.length }, 'backup complete');
    return index;
  }

  async listBackups(): Promise<BackupSummary[]> {
    const jobs = new Set<string>();
    for await (const key of this.store.list(keys.backups)) jobs.add(key.split('/')[1]!);
    const out: BackupSummary[] = [];
    for (const job of [...jobs].sort()) {
      const record = await this.tryRecord<JobRecord>(keys.job(job));
      const index = await this.tryRecord<BackupIndex>(keys.index(job));
      out.push({
        job,
        createdAt: record?.createdAt,
        complete: index !== undefined,
        completedAt: index?.completedAt,
        expiresAt: index?.expiresAt,
        volumes: index ? index.volumes.length : (await this.listVolumes(job)).length,
      });
    }
    return out;
  }

  /** The job's index, once finishBackup wrote it. */
  async getIndex(job: string): Promise<BackupIndex | undefined> {
    checkName('job', job);
    return this.tryRecord<BackupIndex>(keys.index(job));
  }

  async listVolumes(job: string): Promise<string[]> {
    const out: string[] = [];
    for await (const key of this.store.list(keys.manifests(job))) {
      const parts = manifestKeyParts(key);
      if (parts) out.push(parts.volume);
    }
    return out;
  }

  /** Every manifest key in the repository. */
  async *manifestKeys(): AsyncGenerator<string> {
    for await (const key of this.store.list(keys.backups)) if (manifestKeyParts(key)) yield key;
  }

  async getManifest(job: string, volume: string): Promise<Manifest> {
    checkName('job', job);
    checkName('volume', volume);
    return this.readManifest(keys.manifest(job, volume));
  }

  async readManifest(key: string): Promise<Manifest> {
    try {
      return await this.readRecord<Manifest>(key);
    } catch (err) {
      if (err instanceof BlobNotFoundError) {
        const parts = manifestKeyParts(key);
        throw new Error(`backup ${parts?.job} has no volume ${parts?.volume} in ${this.store.location}`, { cause: err });
      }
      throw err;
    }
  }

  /**
   * Removes a backup: its index first (so it no longer counts as complete), then its
   * manifests, uploads and record. Its chunks stay until garbage collection.
   */
  async deleteBackup(job: string): Promise<number> {
    checkName('job', job);
    await this.store.delete(keys.index(job));
    let manifests = 0;
    for (const volume of await this.listVolumes(job)) if (await this.store.delete(keys.manifest(job, volume))) manifests++;
    const uploads = new Set<string>();
    for await (const key of this.store.list(keys.jobUploads(job))) uploads.add(key.split('/')[2]!);
    for (const volume of uploads) await this.removeUpload(job, volume);
    await this.store.delete(keys.job(job));
    await this.store.pruneEmptyFolders?.(keys.backup(job));
    await this.store.pruneEmptyFolders?.(keys.jobUploads(job));
    this.log.info({ job, manifests }, 'backup deleted');
    return manifests;
  }

  /** Deletes every complete backup whose ttl has passed (with dryRun, only names them); returns their names. */
  async expireBackups(options: { dryRun?: boolean } = {}): Promise<string[]> {
    const now = this.now().getTime();
    const expired = (await this.listBackups()).filter((b) => b.expiresAt !== undefined && Date.parse(b.expiresAt) <= now).map((b) => b.job);
    if (!options.dryRun) for (const job of expired) await this.deleteBackup(job);
    return expired;
  }

  // ---- upload ----------------------------------------------------------------------

  /**
   * Backs up one volume's bytes into `job`. Resumes an interrupted attempt for the same
   * job and volume; returns at once if the manifest exists already. The caller must feed
   * the same bytes on a resume (a snapshot does not change).
   */
  async writeVolume(job: string, source: VolumeSource, data: AsyncIterable<Uint8Array>, options: WriteVolumeOptions = {}): Promise<UploadResult> {
    checkName('job', job);
    checkName('volume', source.volume);
    const volume = source.volume;
    const manifestKey = keys.manifest(job, volume);
    const existing = await this.tryRecord<Manifest>(manifestKey);
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
    };
    if (existing) {
      // A crash between the manifest and the upload's cleanup leaves its lease and intents
      // behind; the manifest protects the chunks now, so they can go (as after a success).
      await this.removeUpload(job, volume);
      return result;
    }
    await this.beginBackup(job);

    const concurrency = options.concurrency ?? 4;
    const intentBatch = options.intentBatch ?? 16;
    const { lease, declaredBefore } = await this.takeLease(job, volume);
    result.attempt = lease.attempt;
    let lastRenew = Date.parse(lease.renewedAt);
    const lostLease = () =>
      new LostLeaseError(`backup ${job} volume ${volume}: upload attempt ${lease.attempt} lost its lease (not renewed within ${this.leaseTtlMs} ms, or taken over); retry the upload`);
    // Renews the lease when due. Throws if it may have lapsed (garbage collection may then
    // have taken chunks this upload relies on) or another attempt took it over: renewing
    // blindly would resurrect a lease GC already gave up on.
    const keepLease = async (force = false): Promise<void> => {
      const now = this.now().getTime();
      if (now - lastRenew >= this.leaseTtlMs) throw lostLease();
      if (!force && now - lastRenew < this.leaseRenewMs) return;
      const held = await this.tryRecord<Lease>(keys.lease(job, volume));
      if (held?.attempt !== lease.attempt) throw lostLease();
      lease.renewedAt = new Date(now).toISOString();
      await this.store.put(keys.lease(job, volume), encodeRecord(lease));
      lastRenew = now;
    };

    const volumeHash = startVolumeHash();
    let volumeSha256: string | undefined;
    const refs: ChunkRef[] = [];
    const seen = new Set<string>();
    const inflight = new Set<Promise<void>>();
    let failure: unknown;
    let seq = 0;
    let chunksDone = 0;
    type Pending = { ref: ChunkRef; hashing: Promise<string>; data: Buffer };
    let batch: Pending[] = [];
    // The batch being handed to writers while the next one is chunked (one at a time,
    // which bounds read-ahead to two batches).
    let dispatching: Promise<void> = Promise.resolve();

    // Chunks found already stored, whose folder entries this upload has not yet made
    // durable: a concurrent (or killed) writer may not have fsynced them.
    const foundPresent = new Set<string>();
    const syncFoundPresent = async (): Promise<void> => {
      if (foundPresent.size === 0 || !this.store.syncBlobs) return;
      const found = [...foundPresent];
      foundPresent.clear();
      await this.store.syncBlobs(found);
    };

    const storeChunk = async (hash: string, chunk: Buffer): Promise<void> => {
      const key = keys.chunk(hash);
      let wrote = false;
      if (!(await this.store.has(key))) {
        const encoded = await encodeChunk(this.config.codec, chunk);
        wrote = await this.store.putIfAbsent(key, encoded);
        if (wrote) result.storedBytesUploaded += encoded.length;
      }
      if (wrote) {
        result.chunksUploaded++;
        result.bytesUploaded += chunk.length;
        if (declaredBefore.has(hash)) result.bytesReuploaded += chunk.length;
      } else {
        foundPresent.add(key);
        result.bytesDeduplicated += chunk.length;
        if (declaredBefore.has(hash)) result.bytesResumed += chunk.length;
      }
    };

    const dispatch = async (pending: Pending[]): Promise<void> => {
      if (foundPresent.size >= 4096) await syncFoundPresent(); // bounds the set's memory
      const hashes = await Promise.all(pending.map((p) => p.hashing));
      pending.forEach((p, i) => (p.ref[0] = hashes[i]!));
      await keepLease();
      // The intent record must be durable before any existence check of its chunks:
      // that order is what lets garbage collection see what this upload relies on.
      const record: IntentRecord = { attempt: lease.attempt, seq: ++seq, chunks: hashes };
      await this.store.put(keys.intent(job, volume, lease.attempt, seq), encodeRecord(record));
      for (const [i, { data: chunk }] of pending.entries()) {
        const hash = hashes[i]!;
        while (inflight.size >= concurrency) await Promise.race(inflight);
        if (failure) return;
        if (seen.has(hash)) {
          result.bytesDeduplicated += chunk.length;
          chunksDone++;
          continue;
        }
        seen.add(hash);
        const task: Promise<void> = storeChunk(hash, chunk).then(
          () => {
            inflight.delete(task);
            chunksDone++;
            options.onProgress?.({ bytesRead: result.bytesRead, chunksDone, bytesUploaded: result.bytesUploaded });
          },
          (err: unknown) => {
            inflight.delete(task);
            // The upload fails with the first error; every failed chunk is logged, so a
            // second cause (a different disk error) is not lost behind the first.
            this.log.warn({ job, volume, chunk: hash, err }, 'chunk write failed');
            failure ??= err;
          },
        );
        inflight.add(task);
      }
    };

    const handOver = async (): Promise<void> => {
      await dispatching;
      if (failure) throw failure;
      if (batch.length === 0) return;
      const pending = batch;
      batch = [];
      dispatching = dispatch(pending).catch((err: unknown) => {
        failure ??= err;
      });
    };

    // Renew on a timer too, so a source that stalls longer than the ttl keeps its lease.
    let renewing: Promise<void> | undefined;
    const renewTimer = setInterval(() => {
      renewing ??= keepLease()
        .catch((err: unknown) => {
          failure ??= err;
        })
        .finally(() => (renewing = undefined));
    }, this.leaseRenewMs);
    renewTimer.unref();

    try {
      for await (const chunk of chunkStream(data, this.config.chunking)) {
        const ref: ChunkRef = ['', chunk.length];
        refs.push(ref);
        result.bytesRead += chunk.length;
        batch.push({ ref, hashing: volumeHash.update(chunk), data: chunk });
        if (batch.length >= intentBatch) await handOver();
      }
      await handOver();
      volumeSha256 = await volumeHash.digest();
    } catch (err) {
      failure ??= err;
    } finally {
      clearInterval(renewTimer);
      await renewing;
      volumeHash.dispose();
      // Never leave writes running behind the caller's back, even on failure.
      await dispatching;
      for (const p of batch) await p.hashing.catch(() => undefined);
      while (inflight.size > 0) await Promise.race(inflight);
    }
    // A lease that garbage collection expired no longer protected these chunks: some may
    // be gone, so this attempt must not vouch for them. A retry uploads what is missing.
    // The manifest must not outlive, in a power loss, a chunk it lists.
    if (!failure) await syncFoundPresent().catch((err: unknown) => (failure = err));
    if (!failure) await keepLease(true).catch((err: unknown) => (failure = err));
    if (failure) {
      // A lost lease leaves this attempt's intents without an owner; they would only hold
      // chunks back from garbage collection until they age out, so remove them now.
      if (failure instanceof LostLeaseError) await this.removeIntents(job, volume, lease.attempt);
      throw failure;
    }

    const manifest: Manifest = {
      format: repositoryFormat,
      job,
      volume,
      backend: source.backend,
      snapshot: source.snapshot,
      size: result.bytesRead,
      sha256: volumeSha256!,
      chunking: this.config.chunking,
      codec: this.config.codec,
      createdAt: this.now().toISOString(),
      chunks: refs,
    };
    if (!(await this.store.putIfAbsent(manifestKey, encodeRecord(manifest)))) {
      const other = await this.readManifest(manifestKey);
      if (other.sha256 !== manifest.sha256) throw new Error(`backup ${job} volume ${volume}: a concurrent upload wrote different data (${other.sha256} vs ${manifest.sha256})`);
    } else {
      // The lease was checked before the manifest went in, but a pause in between (a
      // stopped process, a stalled mount) can outlast the ttl, and GC may then have freed
      // chunks. Once the manifest is visible GC keeps what it lists, so one more check
      // settles it: a lost lease with a chunk gone, or with the backup deleted meanwhile
      // (which took the lease), withdraws the manifest.
      const lost = await keepLease(true).then(
        () => undefined,
        (err: unknown) => err,
      );
      if (lost !== undefined) {
        if (!(lost instanceof LostLeaseError)) throw lost;
        const missing = await this.firstMissingChunk(refs);
        const deleted = missing === undefined && !(await this.store.has(keys.job(job)));
        if (missing !== undefined || deleted) {
          await this.store.delete(manifestKey);
          await this.removeIntents(job, volume, lease.attempt);
          await this.store.pruneEmptyFolders?.(keys.backup(job));
          const why = deleted ? `backup ${job} was deleted meanwhile` : `chunk ${missing} went meanwhile`;
          throw new LostLeaseError(`${lost.message}; ${why}, so the manifest was withdrawn`);
        }
      }
    }
    result.manifest = manifest;
    result.chunks = refs.length;
    // Only now may the lease go: the manifest protects the chunks from here on. Intents
    // go before the lease so a half-removed upload is still seen as one.
    await this.removeUpload(job, volume);
    this.log.info(
      { job, volume, bytes: result.bytesRead, uploaded: result.bytesUploaded, deduplicated: result.bytesDeduplicated, attempt: lease.attempt },
      'volume backed up',
    );
    return result;
  }

  private async takeLease(job: string, volume: string): Promise<{ lease: Lease; declaredBefore: Set<string> }> {
    const previous = await this.tryRecord<Lease>(keys.lease(job, volume));
    const now = this.now().toISOString();
    const lease: Lease = {
      job,
      volume,
      attempt: (previous?.attempt ?? 0) + 1,
      startedAt: previous?.startedAt ?? now,
      renewedAt: now,
      holder: this.holder,
    };
    // Intent records are keyed by attempt, so two uploads of one volume started at the
    // same moment must not share one: each would overwrite the other's intents and GC
    // would miss chunks one relies on. putIfAbsent gives each attempt number one owner;
    // whichever lease is written last wins, and the other upload fails with a lost lease.
    while (!(await this.store.putIfAbsent(keys.attempt(job, volume, lease.attempt), encodeRecord(lease)))) lease.attempt++;
    await this.store.put(keys.lease(job, volume), encodeRecord(lease));
    const declaredBefore = new Set<string>();
    if (previous) {
      const intentPrefix = keys.intent(job, volume, 0, 0).replace(/intent-.*$/, 'intent-');
      for await (const key of this.store.list(keys.upload(job, volume))) {
        if (!key.startsWith(intentPrefix)) continue;
        const record = await this.tryRecord<IntentRecord>(key);
        for (const hash of record?.chunks ?? []) declaredBefore.add(hash);
      }
      this.log.info({ job, volume, attempt: lease.attempt, declaredChunks: declaredBefore.size }, 'resuming interrupted upload');
    }
    return { lease, declaredBefore };
  }

  /** The first chunk of `refs` the store does not hold, if any. */
  private async firstMissingChunk(refs: ChunkRef[]): Promise<string | undefined> {
    const checked = new Set<string>();
    for (const [hash] of refs) {
      if (checked.has(hash)) continue;
      checked.add(hash);
      if (!(await this.store.has(keys.chunk(hash)))) return hash;
    }
    return undefined;
  }

  /** Removes the intent records one attempt of an upload wrote. */
  private async removeIntents(job: string, volume: string, attempt: number): Promise<void> {
    const prefix = keys.intent(job, volume, attempt, 0).replace(/-0+\.json$/, '-');
    for await (const key of this.store.list(keys.upload(job, volume))) if (key.startsWith(prefix)) await this.store.delete(key);
    await this.store.pruneEmptyFolders?.(keys.upload(job, volume));
  }

  /** Removes an upload's intents and then its lease. */
  async removeUpload(job: string, volume: string): Promise<void> {
    const leaseKey = keys.lease(job, volume);
    for await (const key of this.store.list(keys.upload(job, volume))) if (key !== leaseKey) await this.store.delete(key);
    await this.store.delete(leaseKey);
    await this.store.pruneEmptyFolders?.(keys.upload(job, volume));
  }

  /** Every upload in progress (or abandoned), with whether its lease still holds. */
  async listUploads(): Promise<UploadState[]> {
    const uploads = new Map<string, UploadState>();
    for await (const key of this.store.list(keys.uploads)) {
      const [, job, volume] = key.split('/');
      if (!job || !volume) continue;
      const id = `${job}/${volume}`;
      let state = uploads.get(id);
      if (!state) uploads.set(id, (state = { job, volume, active: true, intentKeys: [] }));
      if (key !== keys.lease(job, volume)) state.intentKeys.push(key);
    }
    const now = this.now().getTime();
    for (const state of uploads.values()) {
      state.lease = await this.tryRecord<Lease>(keys.lease(state.job, state.volume));
      if (state.lease) {
        state.active = now - Date.parse(state.lease.renewedAt) < this.leaseTtlMs;
        continue;
      }
      // Intents without a lease belong to an upload being removed, or to one that lost
      // its lease while a batch was in flight: they protect (the safe side) until the
      // newest of them is a lease ttl old.
      let newest = 0;
      for (const key of state.intentKeys) newest = Math.max(newest, (await this.store.stat(key))?.modifiedAt.getTime() ?? 0);
      state.active = now - newest < this.leaseTtlMs;
    }
    return [...uploads.values()];
  }

  /** The chunks every active upload has declared. */
  async leasedChunks(uploads?: UploadState[]): Promise<Set<string>> {
    const out = new Set<string>();
    for (const upload of uploads ?? (await this.listUploads())) {
      if (!upload.active) continue;
      for (const key of upload.intentKeys) for (const hash of (await this.tryRecord<IntentRecord>(key))?.chunks ?? []) out.add(hash);
    }
    return out;
  }

  /** Chunks referenced by active leases, then by manifests; this order is what gc.ts relies on. */
  async referencedChunks(): Promise<{ leased: Set<string>; referenced: Set<string> }> {
    const leased = await this.leasedChunks();
    const referenced = new Set(leased);
    for await (const key of this.manifestKeys()) {
      const manifest = await this.tryRecord<Manifest>(key);
      for (const [hash] of manifest?.chunks ?? []) referenced.add(hash);
    }
    return { leased, referenced };
  }

  // ---- read ------------------------------------------------------------------------

  /** Reads one stored chunk and checks its codec, size and hash. */
  async readChunk(hash: string, size: number): Promise<ChunkReadResult> {
    const r = await this.fetchChunk(hash, size);
    if (!r.ok) return r;
    const actual = await hashOffThread(r.data);
    return actual === hash ? r : corruptChunk(actual);
  }

  /** Reads and decodes one chunk and checks its size; the caller checks its hash. */
  private async fetchChunk(hash: string, size: number): Promise<ChunkReadResult> {
    let stored: Buffer;
    try {
      stored = await this.store.get(keys.chunk(hash));
    } catch (err) {
      if (err instanceof BlobNotFoundError) return { ok: false, problem: 'missing', detail: 'is missing from the repository' };
      throw err;
    }
    let data: Buffer;
    try {
      data = await decodeChunk(stored);
    } catch (err) {
      return { ok: false, problem: 'corrupt', detail: `does not decode: ${(err as Error).message}` };
    }
    if (data.length !== size) return { ok: false, problem: 'corrupt', detail: `has ${data.length} bytes, the manifest says ${size}` };
    return { ok: true, data };
  }

  /**
   * Streams a backed-up volume in order. Every chunk is verified before its bytes are
   * emitted; the stream fails with a RepositoryIntegrityError on the first fault.
   */
  readVolume(job: string, volume: string, options: { concurrency?: number } = {}): Readable {
    return Readable.from(this.volumeChunks(job, volume, options), { objectMode: false });
  }

  async *volumeChunks(job: string, volume: string, options: { concurrency?: number } = {}): AsyncGenerator<Buffer> {
    const manifest = await this.getManifest(job, volume);
    const readAhead = Math.max(1, options.concurrency ?? 4);
    const offsets: number[] = [];
    let offset = 0;
    for (const [, size] of manifest.chunks) {
      offsets.push(offset);
      offset += size;
    }
    const fault = (index: number, r: ChunkReadResult & { ok: false }) => {
      const [hash] = manifest.chunks[index]!;
      return new RepositoryIntegrityError(r.problem, job, volume, `chunk ${r.detail}`, { hash, index, offset: offsets[index]!, key: keys.chunk(hash) });
    };
    const load = async (index: number): Promise<Buffer> => {
      const [hash, size] = manifest.chunks[index]!;
      const r = await this.fetchChunk(hash, size);
      if (r.ok) return r.data;
      throw fault(index, r);
    };
    const pending: Promise<Buffer>[] = [];
    const schedule = (index: number): void => {
      if (index >= manifest.chunks.length) return;
      const p = load(index);
      p.catch(() => undefined); // awaited below; this only stops an early exit leaving it unhandled
      pending.push(p);
    };
    for (let i = 0; i < readAhead; i++) schedule(i);
    const hash = startVolumeHash();
    let total = 0;
    let digest: string;
    try {
      for (let i = 0; i < manifest.chunks.length; i++) {
        const data = await pending.shift()!;
        schedule(i + readAhead);
        // The worker hashes the chunk for the volume's checksum and returns the chunk's
        // own hash in the same pass; it is checked before a byte of the chunk goes out.
        const actual = await hash.update(data);
        if (actual !== manifest.chunks[i]![0]) throw fault(i, corruptChunk(actual));
        total += data.length;
        yield data;
      }
      digest = await hash.digest();
    } finally {
      hash.dispose();
    }
    if (total !== manifest.size || digest !== manifest.sha256) {
      throw new RepositoryIntegrityError('checksum', job, volume, `whole-volume check failed: ${total} bytes hashing to ${digest}, the manifest says ${manifest.size} bytes, ${manifest.sha256}`);
    }
  }

  // ---- records ---------------------------------------------------------------------

  private async readRecord<T>(key: string): Promise<T> {
    return decodeRecord<T>(key, await this.store.get(key));
  }

  private async tryRecord<T>(key: string): Promise<T | undefined> {
    try {
      return await this.readRecord<T>(key);
    } catch (err) {
      if (err instanceof BlobNotFoundError) return undefined;
      throw err;
    }
  }
}
