// Whole-repository checks for operators: verify (every manifest's chunks exist and hash
// right; each distinct chunk is read once however many manifests share it) and stats
// (what is stored, and what deduplication and compression save).
import { ChunkIndex } from './chunk-index.js';
import type { IntegrityProblem } from './errors.js';
import type { ChunkHashName } from './chunk-hash.js';
import { rollingHashOf, type RollingHashName } from './chunker.js';
import { checksumOf, chunkHashOfConfig, chunkListSha256, keys, manifestKeyParts, type Manifest } from './format.js';
import type { BackupRepository } from './repository.js';

export interface VerifyProblem {
  job: string;
  volume: string;
  problem: IntegrityProblem | 'manifest';
  /** The chunk at fault, with its position in the volume. */
  chunk?: { hash: string; index: number; key: string };
  message: string;
}

export interface VerifyResult {
  manifests: number;
  chunksChecked: number;
  bytesChecked: number;
  problems: VerifyProblem[];
}

export interface VerifyOptions {
  /** Chunks read at once (default 4). */
  concurrency?: number;
  onProgress?: (chunksChecked: number, bytesChecked: number) => void;
}

export async function verifyRepository(repo: BackupRepository, options: VerifyOptions = {}): Promise<VerifyResult> {
  const result: VerifyResult = { manifests: 0, chunksChecked: 0, bytesChecked: 0, problems: [] };
  // hash -> undefined when fine, else what is wrong with it; shared across manifests.
  const checked = new Map<string, { problem: IntegrityProblem; detail: string; key?: string } | undefined>();
  const concurrency = Math.max(1, options.concurrency ?? 4);
  await repo.chunkIndex(true); // what the store holds now, not when this process last looked

  for await (const key of repo.manifestKeys()) {
    const { job, volume } = manifestKeyParts(key)!;
    let manifest: Manifest;
    try {
      manifest = await repo.readManifest(key);
    } catch (err) {
      result.problems.push({ job, volume, problem: 'manifest', message: `${key}: ${(err as Error).message}` });
      continue;
    }
    result.manifests++;
    const sum = manifest.chunks.reduce((n, [, size]) => n + size, 0);
    if (sum !== manifest.size) {
      result.problems.push({ job, volume, problem: 'manifest', message: `${key}: chunk sizes add up to ${sum} bytes, the manifest says ${manifest.size}` });
    }
    if (manifest.chunksSha256 !== undefined && chunkListSha256(manifest.chunks) !== manifest.chunksSha256) {
      result.problems.push({ job, volume, problem: 'manifest', message: `${key}: its chunk list hashes to ${chunkListSha256(manifest.chunks)}, the manifest says ${manifest.chunksSha256}` });
    }

    const todo = manifest.chunks.map(([hash, size], index) => ({ hash, size, index })).filter((c) => !checked.has(c.hash));
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let c = todo[next++]; c; c = todo[next++]) {
        if (checked.has(c.hash)) continue;
        checked.set(c.hash, undefined);
        const r = await repo.readChunk(c.hash, c.size);
        checked.set(c.hash, r.ok ? undefined : { problem: r.problem, detail: r.detail, key: r.key });
        result.chunksChecked++;
        result.bytesChecked += c.size;
        options.onProgress?.(result.chunksChecked, result.bytesChecked);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));

    for (const [index, [hash]] of manifest.chunks.entries()) {
      const fault = checked.get(hash);
      if (!fault) continue;
      const key = fault.key ?? keys.chunk(hash);
      result.problems.push({
        job,
        volume,
        problem: fault.problem,
        chunk: { hash, index, key },
        message: `backup ${job} volume ${volume}: chunk ${index} ${hash} (${key}) ${fault.detail}`,
      });
    }
  }
  // A complete backup's index must agree with the manifests it lists.
  for (const backup of await repo.listBackups()) {
    if (!backup.complete) continue;
    for (const entry of (await repo.getIndex(backup.job))?.volumes ?? []) {
      const manifest = await repo.getManifest(backup.job, entry.volume).catch(() => undefined);
      if (manifest && checksumOf(manifest) === checksumOf(entry) && manifest.size === entry.size) continue;
      result.problems.push({
        job: backup.job,
        volume: entry.volume,
        problem: 'manifest',
        message: `backup ${backup.job}: its index lists volume ${entry.volume} (${checksumOf(entry)}) but ${manifest ? `the manifest says ${checksumOf(manifest)}` : 'there is no such manifest'}`,
      });
    }
  }
  return result;
}

export interface RepositoryStats {
  format: number;
  /** The hash that names chunks (chunk-hash.ts). */
  chunkHash: ChunkHashName;
  /** The rolling hash that chooses cut points (chunker.ts). */
  rollingHash: RollingHashName;
  backups: number;
  completeBackups: number;
  manifests: number;
  /** Chunks in the store (every copy: a chunk in two packs counts twice). */
  chunks: number;
  /** Packs in the store (format 2). */
  packs: number;
  /** Distinct chunks some manifest references. */
  referencedChunks: number;
  /** Sum of all manifests' volume sizes: what a naive copy would store. */
  logicalBytes: number;
  /** Uncompressed bytes of the distinct referenced chunks. */
  uniqueBytes: number;
  /** Bytes all chunks take in the store (after compression, including unreferenced ones). */
  storedBytes: number;
  unreferencedChunks: number;
  uploadsInProgress: number;
  /** logicalBytes / uniqueBytes. */
  dedupRatio: number;
  /** uniqueBytes / bytes of the referenced chunks as stored. */
  compressionRatio: number;
}

export async function repositoryStats(repo: BackupRepository, onProgress?: (chunks: number) => void): Promise<RepositoryStats> {
  const backups = await repo.listBackups();
  const referenced = new Map<string, number>();
  let manifests = 0;
  let logicalBytes = 0;
  for await (const key of repo.manifestKeys()) {
    const manifest = await repo.readManifest(key);
    manifests++;
    logicalBytes += manifest.size;
    for (const [hash, size] of manifest.chunks) referenced.set(hash, size);
  }
  const index = await ChunkIndex.load(repo.store);
  let chunks = 0;
  let packs = 0;
  let storedBytes = 0;
  const referencedStored = new Map<string, number>();
  let unreferencedChunks = 0;
  const count = (hash: string, length: number): void => {
    chunks++;
    storedBytes += length;
    if (referenced.has(hash)) referencedStored.set(hash, length);
    else unreferencedChunks++;
    if (chunks % 1000 === 0) onProgress?.(chunks);
  };
  for (const record of index.packIndexes()) {
    packs++;
    for (const [hash, , length] of record.entries) count(hash, length);
  }
  for (const hash of index.looseChunks()) count(hash, (await repo.store.stat(keys.chunk(hash)))?.size ?? 0);
  const uniqueBytes = [...referenced.values()].reduce((n, s) => n + s, 0);
  const referencedStoredBytes = [...referencedStored.values()].reduce((n, s) => n + s, 0);
  return {
    format: repo.config.format,
    chunkHash: chunkHashOfConfig(repo.config),
    rollingHash: rollingHashOf(repo.config.chunking),
    backups: backups.length,
    completeBackups: backups.filter((b) => b.complete).length,
    manifests,
    chunks,
    packs,
    referencedChunks: referenced.size,
    logicalBytes,
    uniqueBytes,
    storedBytes,
    unreferencedChunks,
    uploadsInProgress: (await repo.listUploads()).length,
    dedupRatio: uniqueBytes === 0 ? 1 : logicalBytes / uniqueBytes,
    compressionRatio: referencedStoredBytes === 0 ? 1 : uniqueBytes / referencedStoredBytes,
  };
}
