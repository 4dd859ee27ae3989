// The catalog: backups (jobs), their manifests and indexes, and retention. Guarantees:
// - beginBackup is idempotent: the first record of a job stands.
// - finishBackup writes the job's index last: a backup counts as complete only once every
//   manifest it lists is in.
// - deleteBackup removes the index first (the backup stops counting as complete), then the
//   manifests, uploads and record; chunks stay until garbage collection (gc.ts).
import { BlobNotFoundError } from './blob-store.js';
import { readRecord, tryRecord, type RepositoryContext } from './context.js';
import { BackupNotFoundError } from './errors.js';
import { checkName, encodeRecord, keys, manifestKeyParts, recordFormat, type BackupIndex, type JobRecord, type Manifest } from './format.js';
import { removeUpload } from './uploads.js';

export interface BackupSummary {
  job: string;
  createdAt?: string;
  complete: boolean;
  completedAt?: string;
  expiresAt?: string;
  volumes: number;
}

/** Records a backup job (idempotent: a second call keeps the first record). */
export async function beginBackup(repo: RepositoryContext, job: string, options: { ttlSeconds?: number } = {}): Promise<JobRecord> {
  checkName('job', job);
  const record: JobRecord = { format: recordFormat(repo.config), job, createdAt: repo.now().toISOString(), ttlSeconds: options.ttlSeconds };
  if (await repo.store.putIfAbsent(keys.job(job), encodeRecord(record))) return record;
  return readRecord<JobRecord>(repo.store, keys.job(job));
}

/** Writes the job's index of manifests; the backup is complete from then on. */
export async function finishBackup(repo: RepositoryContext, job: string): Promise<BackupIndex> {
  const record = await beginBackup(repo, job);
  const volumes: BackupIndex['volumes'] = [];
  for (const volume of (await listVolumes(repo, job)).sort()) {
    const m = await getManifest(repo, job, volume);
    volumes.push({ volume, size: m.size, chunksSha256: m.chunksSha256, sha256: m.sha256, chunks: m.chunks.length });
  }
  const completedAt = repo.now();
  const index: BackupIndex = {
    format: recordFormat(repo.config),
    job,
    createdAt: record.createdAt,
    completedAt: completedAt.toISOString(),
    expiresAt: record.ttlSeconds === undefined ? undefined : new Date(completedAt.getTime() + record.ttlSeconds * 1000).toISOString(),
    volumes,
  };
  await repo.store.put(keys.index(job), encodeRecord(index));
  repo.log.info({ job, volumes: volumes.length }, 'backup complete');
  return index;
}

export async function listBackups(repo: RepositoryContext): Promise<BackupSummary[]> {
  const jobs = new Set<string>();
  for await (const key of repo.store.list(keys.backups)) jobs.add(key.split('/')[1]!);
  const out: BackupSummary[] = [];
  for (const job of [...jobs].sort()) {
    const record = await tryRecord<JobRecord>(repo.store, keys.job(job));
    const index = await tryRecord<BackupIndex>(repo.store, keys.index(job));
    out.push({
      job,
      createdAt: record?.createdAt,
      complete: index !== undefined,
      completedAt: index?.completedAt,
      expiresAt: index?.expiresAt,
      volumes: index ? index.volumes.length : (await listVolumes(repo, job)).length,
    });
  }
  return out;
}

/** The job's index, once finishBackup wrote it. */
export async function getIndex(repo: RepositoryContext, job: string): Promise<BackupIndex | undefined> {
  checkName('job', job);
  return tryRecord<BackupIndex>(repo.store, keys.index(job));
}

export async function listVolumes(repo: RepositoryContext, job: string): Promise<string[]> {
  const out: string[] = [];
  for await (const key of repo.store.list(keys.manifests(job))) {
    const parts = manifestKeyParts(key);
    if (parts) out.push(parts.volume);
  }
  return out;
}

/** Every manifest key in the repository. */
export async function* manifestKeys(repo: RepositoryContext): AsyncGenerator<string> {
  for await (const key of repo.store.list(keys.backups)) if (manifestKeyParts(key)) yield key;
}

export async function getManifest(repo: RepositoryContext, job: string, volume: string): Promise<Manifest> {
  checkName('job', job);
  checkName('volume', volume);
  return readManifest(repo, keys.manifest(job, volume));
}

export async function readManifest(repo: RepositoryContext, key: string): Promise<Manifest> {
  try {
    return await readRecord<Manifest>(repo.store, key);
  } catch (err) {
    if (err instanceof BlobNotFoundError) {
      const parts = manifestKeyParts(key);
      throw new BackupNotFoundError(`backup ${parts?.job} has no volume ${parts?.volume} in ${repo.store.location}`, { cause: err });
    }
    throw err;
  }
}

/**
 * Removes a backup: its index first (so it no longer counts as complete), then its
 * manifests, uploads and record. Its chunks stay until garbage collection.
 */
export async function deleteBackup(repo: RepositoryContext, job: string): Promise<number> {
  checkName('job', job);
  await repo.store.delete(keys.index(job));
  let manifests = 0;
  for (const volume of await listVolumes(repo, job)) if (await repo.store.delete(keys.manifest(job, volume))) manifests++;
  const uploads = new Set<string>();
  for await (const key of repo.store.list(keys.jobUploads(job))) uploads.add(key.split('/')[2]!);
  for (const volume of uploads) await removeUpload(repo, job, volume);
  await repo.store.delete(keys.job(job));
  await repo.store.pruneEmptyFolders?.(keys.backup(job));
  await repo.store.pruneEmptyFolders?.(keys.jobUploads(job));
  repo.log.info({ job, manifests }, 'backup deleted');
  return manifests;
}

/** Deletes every complete backup whose ttl has passed (with dryRun, only names them); returns their names. */
export async function expireBackups(repo: RepositoryContext, options: { dryRun?: boolean } = {}): Promise<string[]> {
  const now = repo.now().getTime();
  const expired = (await listBackups(repo)).filter((b) => b.expiresAt !== undefined && Date.parse(b.expiresAt) <= now).map((b) => b.job);
  if (!options.dryRun) for (const job of expired) await deleteBackup(repo, job);
  return expired;
}
