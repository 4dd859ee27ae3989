// The repository's on-storage layout and record shapes. Everything a future reader of a
// repository needs to know is here; changing a shape means bumping `repositoryFormat`.
//
// Format 2 (written by this code):
//   config.json                               RepositoryConfig: format 2, chunking, codec, packing
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
// Format 1 (one file per chunk) differs only in where chunks live:
//   chunks/<h0h1>/<sha256>                    one chunk: codec byte + payload
// A format-2 reader reads such "loose" chunks too, so a format-1 repository restores,
// verifies and is garbage-collected as before; it takes new backups once upgraded
// (BackupRepository.upgradeFormat), since a format-1 reader cannot read packs.
import type { ChunkerOptions } from './chunker.js';
import type { CodecName } from './codec.js';
import { RepositoryFormatError, RepositoryInputError } from './errors.js';

/** The format this code writes. */
export const repositoryFormat = 2;
/** The formats this code reads (and verifies and garbage-collects). */
export const readableFormats: readonly number[] = [1, 2];

export interface PackingOptions {
  /** A pack is closed once it holds this many stored bytes (default 16 MiB: one object-store PUT). */
  targetSize: number;
  /** ... or this many chunks. */
  maxChunks: number;
}

export const defaultPacking: PackingOptions = { targetSize: 16 * 1024 * 1024, maxChunks: 4096 };

export interface RepositoryConfig {
  /** The format version: 1 (a file per chunk) or 2 (packs). */
  format: number;
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

/** One chunk reference: [sha256 hex, uncompressed size]. Tuples keep big manifests small. */
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
  /** SHA-256 of the whole volume's bytes, hex. */
  sha256: string;
  chunking: ChunkerOptions;
  codec: CodecName;
  createdAt: string;
  chunks: ChunkRef[];
}

/** Where one chunk lies in its pack: [sha256, offset, stored length, uncompressed size]. */
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
  volumes: { volume: string; size: number; sha256: string; chunks: number }[];
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

const sha256Hex = /^[0-9a-f]{64}$/;
const packId = /^[0-9a-f]{32}$/;

/** The hash of a loose chunk key (`chunks/ab/<hash>`), or undefined for anything else. */
export function chunkHashOf(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length !== 3 || parts[0] !== 'chunks') return undefined;
  const hash = parts[2]!;
  return sha256Hex.test(hash) && parts[1] === hash.slice(0, 2) ? hash : undefined;
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

export function isSha256(hash: string): boolean {
  return sha256Hex.test(hash);
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
