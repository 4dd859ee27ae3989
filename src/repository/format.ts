// The repository's on-storage layout and record shapes. Everything a future reader of a
// repository needs to know is here; changing a shape means bumping `repositoryFormat`.
//
//   config.json                               RepositoryConfig (chunking, codec)
//   chunks/<h0h1>/<sha256>                    one chunk: codec byte + payload (see codec.ts)
//   backups/<job>/job.json                    JobRecord (created, ttl)
//   backups/<job>/volumes/<volume>.json       Manifest, written only after its chunks are durable
//   backups/<job>/index.json                  BackupIndex, written when the job finishes
//   uploads/<job>/<volume>/lease.json         Lease of an upload in progress
//   uploads/<job>/<volume>/attempt-<a>.json   the Lease an attempt started with; written with
//                                             putIfAbsent, so each attempt number has one owner
//   uploads/<job>/<volume>/intent-<a>-<s>.json  IntentRecord: chunks the upload is about to rely on
//   trash/<gc-run>/<sha256>                   chunks a running garbage collection is deleting
import type { ChunkerOptions } from './chunker.js';
import type { CodecName } from './codec.js';

export const repositoryFormat = 1;

export interface RepositoryConfig {
  format: typeof repositoryFormat;
  chunking: ChunkerOptions;
  codec: CodecName;
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
  format: typeof repositoryFormat;
  job: string;
  size: number;
  /** SHA-256 of the whole volume's bytes, hex. */
  sha256: string;
  chunking: ChunkerOptions;
  codec: CodecName;
  createdAt: string;
  chunks: ChunkRef[];
}

export interface JobRecord {
  format: typeof repositoryFormat;
  job: string;
  createdAt: string;
  /** Delete the backup this long after it completes. */
  ttlSeconds?: number;
}

export interface BackupIndex {
  format: typeof repositoryFormat;
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
  if (!namePattern.test(name)) throw new Error(`invalid ${kind} name ${JSON.stringify(name)}: use lowercase letters, digits, '.', '_' and '-'`);
}

export const keys = {
  config: 'config.json',
  chunkFolder: 'chunks',
  chunk: (hash: string) => `chunks/${hash.slice(0, 2)}/${hash}`,
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
  intent: (job: string, volume: string, attempt: number, seq: number) =>
    `uploads/${job}/${volume}/intent-${String(attempt).padStart(6, '0')}-${String(seq).padStart(9, '0')}.json`,
  trash: 'trash',
  trashed: (run: string, hash: string) => `trash/${run}/${hash}`,
};

const sha256Hex = /^[0-9a-f]{64}$/;

/** The hash of a chunk key (`chunks/ab/<hash>`), or undefined for anything else. */
export function chunkHashOf(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length !== 3 || parts[0] !== 'chunks') return undefined;
  const hash = parts[2]!;
  return sha256Hex.test(hash) && parts[1] === hash.slice(0, 2) ? hash : undefined;
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
    throw new Error(`${key}: not a valid repository record: ${(err as Error).message}`, { cause: err });
  }
}
