// Shared set-up for the repository tests: throwaway repositories with small chunks, so
// a few MiB of data already make hundreds of chunks.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFilesystemRepository, type BackupRepository, type CreateOptions, type RepositoryOptions } from '../../src/repository/index.js';
import { sha256Of, volumeBytes, type VolumeShape } from './data.js';

export const smallChunks = { minSize: 4 * 1024, avgSize: 16 * 1024, maxSize: 64 * 1024 };

const made: string[] = [];

export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-repo-test-'));
  made.push(dir);
  return dir;
}

export async function tempRepository(create: CreateOptions = { chunking: smallChunks }, options: RepositoryOptions = {}): Promise<BackupRepository> {
  return openFilesystemRepository(await tempDir(), { ...options, create });
}

export async function removeTempDirs(): Promise<void> {
  for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** Backs up a generated volume and returns the upload's result with the source's own checksum. */
export async function backUp(repo: BackupRepository, job: string, volume: string, shape: VolumeShape) {
  return repo.writeVolume(job, { volume, backend: 'sim-a', snapshot: `snap-${job}` }, volumeBytes(shape));
}

export async function expected(shape: VolumeShape) {
  return sha256Of(volumeBytes(shape));
}
