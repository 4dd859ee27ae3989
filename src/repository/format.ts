// The repository's on-storage layout and record shapes. Everything a future reader of a
// repository needs to know is here; changing a shape means bumping `repositoryFormat`.
//
// Format 5 (written by this code):
//   config.json                               RepositoryConfig: format 5, chunk hash, chunking
//                                             (with its rolling hash), codec, packing
//   packs/<p0p1>/<pack>                       a pack: stored chunks one after another, each a
//                                             codec byte + payload (see codec.ts); written whole
//   index/<p0p1>/<pack>.json                  PackIndex: where each chunk of the pack lies; written
//                                             only after its pack is durable, removed before it
//   backups/<job>/job.json                    JobRecord (created, ttl)
//   backups/<job>/volumes/<volume>.json       Manifest, written only after its chunks are durable
//   backups/<job>/index.json                  BackupIndex, written when the job finishes
//   uploads/<job>/<volume>/lease.json         Lease of an upload in progress
//   uploads/<job>/<volume>/attempt-<a>.json   the Lease an attempt started with; written with
//                                             putIfAbsent, so each attempt number has one owner
//   uploads/<job>/<volume>/intent-<a>-<s>.json  IntentRecord: chunks the upload is about to rely on
//   trash/<gc-run>/<key>                      blobs a running garbage collection is deleting
//
// A chunk is named by its hash (64 hex digits): the config's `chunkHash` (chunk-hash.ts),
// BLAKE3 in new repositories; SHA-256 in formats 1-3, which have no `chunkHash`, and in a
// repository upgraded from them (its new chunks must deduplicate against its old ones).
//
// Cut points are chosen by the rolling hash that `chunking.rollingHash` names (chunker.ts):
// gear-mul in new repositories; gear in formats 1-4, which name none, and in a repository
// upgraded from them (its new chunks must deduplicate against its old ones).
//
// A manifest checks its volume with `chunksSha256`, the SHA-256 of its chunk list (see
// chunkListSha256): each chunk's bytes are checked against their hash as they are read,
// and the list's hash checks the manifest itself, so a backup or restore hashes each byte
// once. The SHA-256 of a volume's raw bytes, to compare with `sha256sum` of a disk, is
// computed on demand by reading the backup (`trellis repo checksum`).
//
// Format 4 differs only in the config: it names no rolling hash, as it cuts with gear. Format
// 3 also names no chunk hash, as chunks are SHA-256. Their records are format 5's, so a
// format-3 or -4 repository takes new backups as it is (their records say its format, and
// the Trellis that wrote it reads them); only upgrading it writes format 5.
// Format 2 differs from 3 only in the manifest: `sha256` is the SHA-256 of the volume's bytes,
// which a backup and a restore computed in a second pass beside the chunk hashes.
// Format 1 (one file per chunk) also differs in where chunks live:
//   chunks/<h0h1>/<sha256>                    one chunk: codec byte + payload
// This code reads both: loose chunks and byte-checksummed manifests restore, verify and
// are garbage-collected as before. A repository of format 1 or 2 takes new backups once upgraded
// (BackupRepository.upgradeFormat), so that older Trellis versions, which would misread
// the new manifests (or miss chunks in packs), refuse it instead.
import { createHash } from 'node:crypto';
import { checkChunkHashName, type ChunkHashName } from './chunk-hash.js';
import { rollingHashNames, type ChunkerOptions } from './chunker.js';
import type { CodecName } from './codec.js';
import { RepositoryFormatError, RepositoryInputError } from './errors.js';

/** The format this code writes. */
export const repositoryFormat = 5;
/** The formats this code reads (and verifies and garbage-collects). */
export const readableFormats: readonly number[] = [1, 2, 3, 4, 5];
/**
 * The formats this code takes new backups into as they are: the current one, and formats 3
 * and 4, whose records are the current format's (format 3's naming chunks by SHA-256; both
 * cutting with gear), so an update of Trellis does not stop their backups, and an older
 * Trellis still reads what it gets.
 */
export const writableFormats: readonly number[] = [3, 4, 5];

/** The format a repository's new records say they are: its own where it takes backups as it is (see writableFormats). */
export function recordFormat(config: RepositoryConfig): number {
  return writableFormats.includes(config.format) ? config.format : repositoryFormat;
}

export interface PackingOptions {
  /** A pack is closed once it holds this many stored bytes (default 16 MiB: one object-store PUT). */
  targetSize: number;
  /** ... or this many chunks. */
  maxChunks: number;
}

export const defaultPacking: PackingOptions = { targetSize: 16 * 1024 * 1024, maxChunks: 4096 };

export interface RepositoryConfig {
  /**
   * The format version: 1 (a file per chunk), 2 (packs), 3 (packs; manifests checksum their
   * chunk list), 4 (the config names the chunk hash) or 5 (the chunking names its rolling hash).
   */
  format: number;
  /** Format 4: the hash that names chunks (formats 1-3: sha256). */
  chunkHash?: ChunkHashName;
  chunking: ChunkerOptions;
  codec: CodecName;
  /** Format 2: how uploads group chunks into packs. */
  packing?: PackingOptions;
  createdAt: string;
}

/** Where a volume's data came from; recorded in its manifest. */
export interface VolumeSource {
  /** The volume's name in the backup, e.g. `<namespace>.<volume>`. */
  volume: string;
  backend?: string;
  /** The backend's handle of the snapshot the data was read from. */
  snapshot?: string;
}

/** One chunk reference: [chunk hash hex, uncompressed size]. Tuples keep big manifests small. */
export type ChunkRef = [string, number];

export interface Manifest extends VolumeSource {
  format: number;
  job: string;
  /**
   * The backup (job name) this one was taken relative to, for incremental backups: an
   * informational link today (a manifest always lists every chunk of its volume).
   */
  parent?: string;
  size: number;
  /** Format 3: SHA-256 of the chunk list, hex (chunkListSha256). */
  chunksSha256?: string;
  /** Formats 1 and 2: SHA-256 of the whole volume's bytes, hex. */
  sha256?: string;
  chunking: ChunkerOptions;
  codec: CodecName;
  createdAt: string;
  chunks: ChunkRef[];
}

/** Where one chunk lies in its pack: [chunk hash, offset, stored length, uncompressed size]. */
export type PackEntry = [string, number, number, number];

export interface PackIndex {
  format: number;
  pack: string;
  createdAt: string;
  entries: PackEntry[];
}

export interface JobRecord {
  format: number;
  job: string;
  createdAt: string;
  /** Delete the backup this long after it completes. */
  ttlSeconds?: number;
}

export interface BackupIndex {
  format: number;
  job: string;
  createdAt: string;
  completedAt: string;
  expiresAt?: string;
  /** Each volume's checksum as its manifest gives it (chunksSha256, or sha256 before format 3). */
  volumes: { volume: string; size: number; chunksSha256?: string; sha256?: string; chunks: number }[];
}

export interface Lease {
  job: string;
  volume: string;
  /** Increases by one each time the upload is (re)started. */
  attempt: number;
  startedAt: string;
  renewedAt: string;
  holder: string;
}

export interface IntentRecord {
  attempt: number;
  seq: number;
  chunks: string[];
}

const namePattern = /^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$/;

/** Job and volume names become key segments: Kubernetes-style names, '.' allowed (ns.name). */
export function checkName(kind: 'job' | 'volume', name: string): void {
  if (!namePattern.test(name)) throw new RepositoryInputError(`invalid ${kind} name ${JSON.stringify(name)}: use lowercase letters, digits, '.', '_' and '-'`);
}

/** Throws unless `config` is a repository this code can read. */
export function checkConfig(config: RepositoryConfig, location: string): void {
  if (!readableFormats.includes(config.format)) {
    throw new RepositoryFormatError(`repository at ${location} has format ${config.format}; this Trellis reads formats ${readableFormats.join(', ')}`);
  }
  if (config.format >= 4 && config.chunkHash === undefined) throw new RepositoryFormatError(`repository at ${location} has format ${config.format} but names no chunkHash`);
  if (config.format < 4 && (config.chunkHash ?? 'sha256') !== 'sha256') {
    throw new RepositoryFormatError(`repository at ${location} has format ${config.format}, whose chunks are SHA-256, but names chunkHash ${config.chunkHash}`);
  }
  // Known, but not necessarily computable here: a repository whose hash does not load on
  // this machine still lists, deletes and collects garbage; backups, restores and verify
  // refuse it then (checkChunkHash).
  checkChunkHashName(chunkHashOfConfig(config), location);
  const rolling = config.chunking?.rollingHash;
  if (config.format >= 5 && rolling === undefined) throw new RepositoryFormatError(`repository at ${location} has format ${config.format} but its chunking names no rollingHash`);
  if (config.format < 5 && (rolling ?? 'gear') !== 'gear') {
    throw new RepositoryFormatError(`repository at ${location} has format ${config.format}, which cuts with the gear hash, but names rollingHash ${String(rolling)}`);
  }
  if (rolling !== undefined && !rollingHashNames.includes(rolling)) {
    throw new RepositoryFormatError(`repository at ${location} names rolling hash ${JSON.stringify(rolling)}, which this Trellis does not know (it knows ${rollingHashNames.join(', ')})`);
  }
}

/** The hash that names a repository's chunks. */
export function chunkHashOfConfig(config: RepositoryConfig): ChunkHashName {
  return config.chunkHash ?? 'sha256';
}

export const keys = {
  config: 'config.json',
  chunkFolder: 'chunks',
  chunk: (hash: string) => `chunks/${hash.slice(0, 2)}/${hash}`,
  packFolder: 'packs',
  pack: (id: string) => `packs/${id.slice(0, 2)}/${id}`,
  packIndexFolder: 'index',
  packIndex: (id: string) => `index/${id.slice(0, 2)}/${id}.json`,
  backups: 'backups',
  backup: (job: string) => `backups/${job}`,
  job: (job: string) => `backups/${job}/job.json`,
  index: (job: string) => `backups/${job}/index.json`,
  manifests: (job: string) => `backups/${job}/volumes`,
  manifest: (job: string, volume: string) => `backups/${job}/volumes/${volume}.json`,
  uploads: 'uploads',
  jobUploads: (job: string) => `uploads/${job}`,
  upload: (job: string, volume: string) => `uploads/${job}/${volume}`,
  lease: (job: string, volume: string) => `uploads/${job}/${volume}/lease.json`,
  attempt: (job: string, volume: string, attempt: number) => `uploads/${job}/${volume}/attempt-${String(attempt).padStart(6, '0')}.json`,
  intentPrefix: (job: string, volume: string, attempt: number) => `uploads/${job}/${volume}/intent-${String(attempt).padStart(6, '0')}-`,
  intent: (job: string, volume: string, attempt: number, seq: number) =>
    `uploads/${job}/${volume}/intent-${String(attempt).padStart(6, '0')}-${String(seq).padStart(9, '0')}.json`,
  trash: 'trash',
  /** Where a GC run keeps `key` while it decides (format 1 runs kept a chunk as `trash/<run>/<sha256>`). */
  trashed: (run: string, key: string) => `trash/${run}/${key}`,
};

const chunkHashHex = /^[0-9a-f]{64}$/;
const packId = /^[0-9a-f]{32}$/;

/** The hash of a loose chunk key (`chunks/ab/<hash>`), or undefined for anything else. */
export function chunkHashOf(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length !== 3 || parts[0] !== 'chunks') return undefined;
  const hash = parts[2]!;
  return chunkHashHex.test(hash) && parts[1] === hash.slice(0, 2) ? hash : undefined;
}

/** The pack id of a pack key (`packs/ab/<id>`) or pack index key (`index/ab/<id>.json`). */
export function packIdOf(key: string): { id: string; kind: 'pack' | 'index' } | undefined {
  const parts = key.split('/');
  if (parts.length !== 3) return undefined;
  if (parts[0] === 'packs' && packId.test(parts[2]!) && parts[1] === parts[2]!.slice(0, 2)) return { id: parts[2]!, kind: 'pack' };
  const id = parts[2]!.replace(/\.json$/, '');
  if (parts[0] === 'index' && parts[2]!.endsWith('.json') && packId.test(id) && parts[1] === id.slice(0, 2)) return { id, kind: 'index' };
  return undefined;
}

/**
 * The SHA-256 (hex) of a chunk list: for each chunk in order, its hash (32 bytes) and then
 * its size (8 bytes, big-endian). Part of the format: changing it breaks every format-3
 * manifest.
 */
export function chunkListSha256(chunks: readonly ChunkRef[]): string {
  const hash = createHash('sha256');
  const entry = Buffer.alloc(40);
  for (const [chunk, size] of chunks) {
    entry.write(chunk, 0, 32, 'hex');
    entry.writeBigUInt64BE(BigInt(size), 32);
    hash.update(entry);
  }
  return hash.digest('hex');
}

/** A manifest's (or index entry's) checksum as one comparable string, whichever kind it has. */
export function checksumOf(m: { chunksSha256?: string; sha256?: string }): string {
  if (m.chunksSha256 !== undefined) return `chunks-sha256:${m.chunksSha256}`;
  return m.sha256 !== undefined ? `sha256:${m.sha256}` : 'none';
}

export function isChunkHash(hash: string): boolean {
  return chunkHashHex.test(hash);
}

/** Splits `backups/<job>/volumes/<volume>.json` into job and volume. */
export function manifestKeyParts(key: string): { job: string; volume: string } | undefined {
  const m = /^backups\/([^/]+)\/volumes\/([^/]+)\.json$/.exec(key);
  return m ? { job: m[1]!, volume: m[2]! } : undefined;
}

export function encodeRecord(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** Parses a JSON record, naming the key when it is not JSON (a torn or foreign file). */
export function decodeRecord<T>(key: string, data: Buffer): T {
  try {
    return JSON.parse(data.toString('utf8')) as T;
  } catch (err) {
    throw new RepositoryFormatError(`${key}: not a valid repository record: ${(err as Error).message}`, { cause: err });
  }
}
