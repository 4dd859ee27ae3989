// Shared set-up for the repository tests: throwaway repositories with small chunks, so
// a few MiB of data already make hundreds of chunks.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFilesystemRepository, type BackupRepository, type CreateOptions, type FilesystemBlobStore, type RepositoryOptions } from '../../src/repository/index.js';
import { sha256Of, volumeBytes, type VolumeShape } from './data.js';

export const smallChunks = { minSize: 4 * 1024, avgSize: 16 * 1024, maxSize: 64 * 1024 };
// Small packs too, so a few MiB make several packs (GC decides per pack).
export const smallPacks = { targetSize: 256 * 1024, maxChunks: 64 };

const made: string[] = [];

export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-repo-test-'));
  made.push(dir);
  return dir;
}

export async function tempRepository(create: CreateOptions = { chunking: smallChunks, packing: smallPacks }, options: RepositoryOptions = {}): Promise<BackupRepository> {
  return openFilesystemRepository(await tempDir(), { ...options, create });
}

export async function removeTempDirs(): Promise<void> {
  for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** Backs up a generated volume and returns the upload's result with the source's own checksum. */
export async function backUp(repo: BackupRepository, job: string, volume: string, shape: VolumeShape) {
  return repo.backupVolume(job, { volume, backend: 'sim-a', snapshot: `snap-${job}` }, volumeBytes(shape));
}

export async function expected(shape: VolumeShape) {
  return sha256Of(volumeBytes(shape));
}

/** Where a chunk's stored bytes are: the blob key, and the range within it. */
export async function storedChunk(repo: BackupRepository, hash: string): Promise<{ key: string; offset: number; length: number }> {
  const location = (await repo.chunkIndex(true)).lookup(hash);
  if (!location) throw new Error(`chunk ${hash} is not in the index`);
  if (location.kind === 'loose') return { key: location.key, offset: 0, length: (await repo.store.stat(location.key))!.size };
  return { key: `packs/${location.pack.slice(0, 2)}/${location.pack}`, offset: location.offset, length: location.length };
}

/** The file of a blob of a repository on a FilesystemBlobStore. */
export function blobPath(repo: BackupRepository, key: string): string {
  return join((repo.store as FilesystemBlobStore).root, ...key.split('/'));
}

/** Flips one bit in the middle of a chunk's stored bytes (on a filesystem store). */
export async function corruptStoredChunk(repo: BackupRepository, hash: string, at?: number): Promise<void> {
  const { key, offset, length } = await storedChunk(repo, hash);
  const path = blobPath(repo, key);
  const bytes = await readFile(path);
  bytes[offset + (at ?? Math.floor(length / 2))]! ^= 0x01;
  await writeFile(path, bytes);
}
