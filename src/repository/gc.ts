// Garbage collection: removes chunks no manifest references, safe while uploads run.
//
// Why a concurrent upload never loses a chunk it relies on:
// - An upload writes an intent record naming a chunk before it checks whether the chunk
//   exists (repository.ts), and writes its manifest before it drops its lease.
// - GC first moves each victim into trash/, then reads leases (with their intents), then
//   manifests, and puts back every victim either of them names.
// Take an upload that found chunk X present and so did not write it. Its check came
// before GC's move, so its intent came before GC's move too, and GC reads intents after
// the move: if the lease is still there, GC sees X. If the lease is gone, the upload
// wrote its manifest before dropping it, and GC reads manifests after leases: GC sees X.
// An upload that checks after the move finds X absent and writes it again. A GC killed
// between moving and deciding leaves trash/ behind; the next run puts all of it back
// first and decides again.
import { randomBytes } from 'node:crypto';
import { componentLogger } from '../log.js';
import type { BackupRepository } from './repository.js';
import { chunkHashOf, keys } from './format.js';

const log = componentLogger('repository-gc');

export interface GcOptions {
  /** Report what would be removed, remove nothing. */
  dryRun?: boolean;
  /** Temporary files younger than this are left alone: a writer may still own them (default 1 h). */
  temporaryGraceMs?: number;
  onProgress?: (phase: string, done: number, total?: number) => void;
}

export interface GcResult {
  dryRun: boolean;
  chunksScanned: number;
  chunksReferenced: number;
  /** Chunks unreferenced at the first look, before the safe second look. */
  candidates: number;
  chunksDeleted: number;
  bytesDeleted: number;
  /** Candidates put back because a lease or a new manifest named them in the second look. */
  chunksKeptForUploads: number;
  trashRecovered: number;
  expiredUploadsRemoved: number;
  temporariesRemoved: number;
}

export async function collectGarbage(repo: BackupRepository, options: GcOptions = {}): Promise<GcResult> {
  const store = repo.store;
  const dryRun = options.dryRun ?? false;
  const progress = options.onProgress ?? (() => undefined);
  const result: GcResult = {
    dryRun,
    chunksScanned: 0,
    chunksReferenced: 0,
    candidates: 0,
    chunksDeleted: 0,
    bytesDeleted: 0,
    chunksKeptForUploads: 0,
    trashRecovered: 0,
    expiredUploadsRemoved: 0,
    temporariesRemoved: 0,
  };

  if (!dryRun) result.trashRecovered = await restoreTrash(repo);

  const first = await repo.referencedChunks();
  const candidates: { hash: string; size: number }[] = [];
  for await (const key of store.list(keys.chunkFolder)) {
    const hash = chunkHashOf(key);
    if (!hash) continue;
    result.chunksScanned++;
    if (result.chunksScanned % 1000 === 0) progress('scan', result.chunksScanned);
    if (first.referenced.has(hash)) {
      result.chunksReferenced++;
      continue;
    }
    candidates.push({ hash, size: (await store.stat(key))?.size ?? 0 });
  }
  result.candidates = candidates.length;
  if (dryRun) {
    result.chunksDeleted = candidates.length;
    result.bytesDeleted = candidates.reduce((n, c) => n + c.size, 0);
    return result;
  }

  const run = `${repo.now().toISOString().replace(/[:.]/g, '-')}-${randomBytes(4).toString('hex')}`;
  const moved: typeof candidates = [];
  for (const [i, c] of candidates.entries()) {
    if (await store.move(keys.chunk(c.hash), keys.trashed(run, c.hash))) moved.push(c);
    if ((i + 1) % 1000 === 0) progress('move', i + 1, candidates.length);
  }

  const second = await repo.referencedChunks();
  for (const [i, c] of moved.entries()) {
    const trashed = keys.trashed(run, c.hash);
    if (second.referenced.has(c.hash)) {
      await putBack(repo, c.hash, trashed);
      result.chunksKeptForUploads++;
    } else {
      await store.delete(trashed);
      result.chunksDeleted++;
      result.bytesDeleted += c.size;
    }
    if ((i + 1) % 1000 === 0) progress('decide', i + 1, moved.length);
  }
  await store.pruneEmptyFolders?.(keys.trash);

  for (const upload of await repo.listUploads()) {
    if (upload.active) continue;
    await repo.removeUpload(upload.job, upload.volume);
    result.expiredUploadsRemoved++;
  }
  const graceMs = options.temporaryGraceMs ?? 60 * 60_000;
  result.temporariesRemoved = (await store.removeStaleTemporaries?.(new Date(repo.now().getTime() - graceMs))) ?? 0;

  log.info(result, 'garbage collection done');
  return result;
}

/** Puts a trashed chunk back unless an upload has meanwhile written it again. */
async function putBack(repo: BackupRepository, hash: string, trashed: string): Promise<void> {
  const key = keys.chunk(hash);
  if (await repo.store.has(key)) await repo.store.delete(trashed);
  else await repo.store.move(trashed, key);
}

/** Puts back every chunk a killed GC run left in the trash. */
async function restoreTrash(repo: BackupRepository): Promise<number> {
  let restored = 0;
  for await (const key of repo.store.list(keys.trash)) {
    const hash = key.split('/').pop()!;
    if (!/^[0-9a-f]{64}$/.test(hash)) continue;
    await putBack(repo, hash, key);
    restored++;
  }
  await repo.store.pruneEmptyFolders?.(keys.trash);
  return restored;
}
