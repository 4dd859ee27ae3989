// A content-addressed, deduplicated backup repository on a BlobStore: the one object a
// controller holds. Each idea lives in its own module, and this class only ties them to
// one store, configuration, clock and log:
//   catalog.ts   backups, manifests, indexes, retention
//   backup.ts    backing a volume up (upload: dedup, packs, resumable, lease + intents)
//   uploads.ts   leases and intent records of uploads in progress
//   restore.ts   verified streaming reads
//   gc.ts        garbage collection, safe while uploads run (the safety argument is there)
//   inspect.ts   verify and stats
// Guarantees of each are at the top of its module.
import { hostname } from 'node:os';
import type { Readable } from 'node:stream';
import { realClock, type Clock } from '../core/clock.js';
import { componentLogger, type Logger } from '../log.js';
import { backupVolume, type BackupVolumeOptions, type UploadResult } from './backup.js';
import { BlobNotFoundError, type BlobStore } from './blob-store.js';
import * as catalog from './catalog.js';
import { checkChunkHash, defaultChunkHash, type ChunkHashName } from './chunk-hash.js';
import { ChunkIndex } from './chunk-index.js';
import { defaultChunkerOptions, defaultRollingHash, rollingHashOf, validateChunkerOptions, type ChunkerOptions } from './chunker.js';
import { defaultCodec, isCodecName, type CodecName } from './codec.js';
import { readRecord } from './context.js';
import { RepositoryFormatError, RepositoryInputError } from './errors.js';
import {
  checkConfig,
  defaultPacking,
  encodeRecord,
  keys,
  repositoryFormat,
  type BackupIndex,
  type JobRecord,
  type Manifest,
  type PackingOptions,
  type RepositoryConfig,
  type VolumeSource,
} from './format.js';
import { readChunk, restoredChunks, restoredRuns, restoreInto, restoreStream, type ChunkReadResult, type ReadContext, type RestoreOptions } from './restore.js';
import * as uploads from './uploads.js';
import { FileTarget, type FileTargetOptions } from './file-target.js';

export interface RepositoryOptions {
  /** An upload whose lease was not renewed for this long is considered dead (default 15 min). */
  leaseTtlMs?: number;
  /** How often a running upload renews its lease (default 60 s). */
  leaseRenewMs?: number;
  /** Timers and elapsed time (default the real clock); tests inject a FakeClock. */
  clock?: Clock;
  /** Wall-clock time written into records and compared with other hosts' lease times (default `new Date()`). */
  now?: () => Date;
  /** Who holds leases taken by this process, for operators reading them. */
  holder?: string;
  /** Where the repository logs (default: the operator's `repository` component logger). */
  logger?: Logger;
}

export interface CreateOptions {
  /** The hash that names chunks (default BLAKE3 where it loads, else SHA-256; see chunk-hash.ts). */
  chunkHash?: ChunkHashName;
  /**
   * Chunk sizes and rolling hash (default defaultChunkerOptions). A rolling hash left out is
   * the default one, gear-mul; options without one mean gear elsewhere (chunkStream, and
   * the configs of formats 1-4), so the config always names it.
   */
  chunking?: ChunkerOptions;
  codec?: CodecName;
  /** How uploads group chunks into packs (default 16 MiB or 4096 chunks). */
  packing?: PackingOptions;
}

function checkPacking(packing: PackingOptions): void {
  const ok = Number.isInteger(packing.targetSize) && packing.targetSize > 0 && Number.isInteger(packing.maxChunks) && packing.maxChunks > 0;
  if (!ok) throw new RepositoryInputError(`pack sizes must be positive integers: ${JSON.stringify(packing)}`);
}

export class BackupRepository implements ReadContext {
  readonly leaseTtlMs: number;
  readonly leaseRenewMs: number;
  readonly clock: Clock;
  readonly now: () => Date;
  readonly holder: string;
  readonly log: Logger;
  /** The chunk index readers use, loaded on first need and again when a chunk is not in it. */
  private index?: Promise<ChunkIndex>;

  private constructor(
    readonly store: BlobStore,
    readonly config: RepositoryConfig,
    options: RepositoryOptions,
  ) {
    this.leaseTtlMs = options.leaseTtlMs ?? 15 * 60_000;
    this.leaseRenewMs = options.leaseRenewMs ?? 60_000;
    this.clock = options.clock ?? realClock;
    this.now = options.now ?? (() => new Date());
    this.holder = options.holder ?? `${hostname()}:${process.pid}`;
    this.log = options.logger ?? componentLogger('repository');
  }

  /** Opens the repository in `store`, creating it first (in the current format) if it is empty. */
  static async create(store: BlobStore, create: CreateOptions = {}, options: RepositoryOptions = {}): Promise<BackupRepository> {
    const chunking = { ...(create.chunking ?? defaultChunkerOptions) };
    chunking.rollingHash ??= defaultRollingHash;
    validateChunkerOptions(chunking);
    const packing = create.packing ?? defaultPacking;
    checkPacking(packing);
    const chunkHash = create.chunkHash ?? defaultChunkHash();
    checkChunkHash(chunkHash, store.location);
    const config: RepositoryConfig = { format: repositoryFormat, chunkHash, chunking, codec: create.codec ?? defaultCodec, packing, createdAt: new Date().toISOString() };
    // putIfAbsent: two processes creating one repository agree on the first config.
    await store.putIfAbsent(keys.config, encodeRecord(config));
    return BackupRepository.open(store, options);
  }

  /** Opens an existing repository; throws RepositoryFormatError if `store` holds none or one of an unknown format. */
  static async open(store: BlobStore, options: RepositoryOptions = {}): Promise<BackupRepository> {
    let config: RepositoryConfig;
    try {
      config = await readRecord<RepositoryConfig>(store, keys.config);
    } catch (err) {
      if (err instanceof BlobNotFoundError) throw new RepositoryFormatError(`no backup repository at ${store.location} (${keys.config} is missing)`, { cause: err });
      throw err;
    }
    checkConfig(config, store.location);
    validateChunkerOptions(config.chunking);
    if (!isCodecName(config.codec)) throw new RepositoryFormatError(`repository at ${store.location} names unknown codec ${config.codec}`);
    if (config.packing) checkPacking(config.packing);
    return new BackupRepository(store, config, options);
  }

  /**
   * Lets an older repository take new backups: its config says the current format from then
   * on, so an older Trellis refuses it rather than miss chunks in packs (format 1) or misread
   * a manifest that checksums its chunk list (formats 1 and 2). Existing chunks and
   * manifests stay as they are and are read as before; chunks stay named by their hash
   * and cut by the gear hash, so new backups deduplicate against the old. Returns the
   * repository opened anew.
   */
  async upgradeFormat(options: RepositoryOptions = {}): Promise<BackupRepository> {
    if (this.config.format >= repositoryFormat) return this;
    const config: RepositoryConfig = {
      ...this.config,
      format: repositoryFormat,
      chunkHash: this.config.chunkHash ?? 'sha256',
      chunking: { ...this.config.chunking, rollingHash: rollingHashOf(this.config.chunking) },
      packing: this.config.packing ?? defaultPacking,
    };
    await this.store.put(keys.config, encodeRecord(config));
    this.log.info({ location: this.store.location, from: this.config.format, to: repositoryFormat }, 'repository format upgraded');
    return BackupRepository.open(this.store, options);
  }

  async chunkIndex(reload = false): Promise<ChunkIndex> {
    if (!this.index || reload) {
      const loading = ChunkIndex.load(this.store);
      this.index = loading;
      loading.catch(() => this.index === loading && (this.index = undefined));
    }
    return this.index;
  }

  // ---- catalog (catalog.ts) ----

  /** Records a backup job (idempotent: a second call keeps the first record). */
  beginBackup(job: string, options: { ttlSeconds?: number } = {}): Promise<JobRecord> {
    return catalog.beginBackup(this, job, options);
  }

  /** Writes the job's index of manifests; the backup is complete from then on. */
  finishBackup(job: string): Promise<BackupIndex> {
    return catalog.finishBackup(this, job);
  }

  listBackups(): Promise<catalog.BackupSummary[]> {
    return catalog.listBackups(this);
  }

  getIndex(job: string): Promise<BackupIndex | undefined> {
    return catalog.getIndex(this, job);
  }

  listVolumes(job: string): Promise<string[]> {
    return catalog.listVolumes(this, job);
  }

  manifestKeys(): AsyncGenerator<string> {
    return catalog.manifestKeys(this);
  }

  getManifest(job: string, volume: string): Promise<Manifest> {
    return catalog.getManifest(this, job, volume);
  }

  readManifest(key: string): Promise<Manifest> {
    return catalog.readManifest(this, key);
  }

  /** Removes a backup's index, manifests, uploads and record; its chunks stay until GC. */
  deleteBackup(job: string): Promise<number> {
    return catalog.deleteBackup(this, job);
  }

  /** Deletes every complete backup whose ttl has passed (with dryRun, only names them). */
  expireBackups(options: { dryRun?: boolean } = {}): Promise<string[]> {
    return catalog.expireBackups(this, options);
  }

  // ---- backup and restore (backup.ts, restore.ts) ----

  /**
   * Backs up one volume's bytes into `job` (the repository's side of a BackupJob). Resumes
   * an interrupted attempt; returns at once if the volume is backed up already. A resumed
   * upload must be fed the same bytes (the same snapshot).
   */
  backupVolume(job: string, source: VolumeSource, data: AsyncIterable<Uint8Array>, options: BackupVolumeOptions = {}): Promise<UploadResult> {
    return backupVolume(this, job, source, data, options);
  }

  /** A backed-up volume's bytes, verified as they stream (the repository's side of a RestoreJob). */
  restoreStream(job: string, volume: string, options: RestoreOptions = {}): Readable {
    return restoreStream(this, job, volume, options);
  }

  /**
   * The same bytes as restoreStream, handed to `write` chunk by chunk without a copy: a
   * chunk's memory is reused once its write settles. Resolves with the bytes written.
   */
  restoreInto(job: string, volume: string, write: (chunk: Buffer) => Promise<unknown>, options: RestoreOptions = {}): Promise<number> {
    return restoreInto(this, job, volume, write, options);
  }

  /**
   * Restores a volume into a file or block device (written in place), a run of chunks per
   * write, flushing as it writes (see FileTarget); resolves with the bytes written once they
   * are all durable. On a failure the target holds the verified bytes before it and the
   * error is thrown.
   */
  async restoreToFile(job: string, volume: string, path: string, options: RestoreOptions & FileTargetOptions & { onProgress?: (bytes: number) => void } = {}): Promise<number> {
    const target = await FileTarget.open(path, options);
    try {
      // A run of verified chunks at a time, with one writev; their memory is lent until the
      // next run is asked for, by which time the write is done.
      for await (const run of restoredRuns(this, job, volume, { ...options, lend: true })) {
        await target.write(run);
        options.onProgress?.(target.bytesWritten);
      }
    } catch (err) {
      await target.abort();
      throw err;
    }
    await target.finish();
    return target.bytesWritten;
  }

  /** The same bytes as restoreStream, as verified chunks. */
  restoredChunks(job: string, volume: string, options: RestoreOptions = {}): AsyncGenerator<Buffer> {
    return restoredChunks(this, job, volume, options);
  }

  /** Reads one stored chunk and checks its codec, size and hash. */
  readChunk(hash: string, size: number): Promise<ChunkReadResult> {
    return readChunk(this, hash, size);
  }

  // ---- uploads in progress (uploads.ts) ----

  listUploads(): Promise<uploads.UploadState[]> {
    return uploads.listUploads(this);
  }

  /** Removes an upload's intents and then its lease. */
  removeUpload(job: string, volume: string): Promise<void> {
    return uploads.removeUpload(this, job, volume);
  }
}
