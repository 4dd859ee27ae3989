// The backup repository's public surface: open one on a filesystem path (or any
// BlobStore), back volumes up into it, restore them verified, and keep it tidy.
import { FilesystemBlobStore } from './filesystem-blob-store.js';
import { BackupRepository, type CreateOptions, type RepositoryOptions } from './repository.js';

export type { BackupVolumeOptions, UploadProgress, UploadResult } from './backup.js';
export { BlobNotFoundError, type BlobStat, type BlobStore, type BlobWriter } from './blob-store.js';
export type { BackupSummary } from './catalog.js';
export { chunkStream, defaultChunkerOptions, type ChunkerOptions } from './chunker.js';
export { defaultCodec, type CodecName } from './codec.js';
export {
  BackupNotFoundError,
  LostLeaseError,
  RepositoryFormatError,
  RepositoryInputError,
  RepositoryIntegrityError,
  UploadConflictError,
  type IntegrityProblem,
} from './errors.js';
export { FilesystemBlobStore } from './filesystem-blob-store.js';
export { fileBytes, FileBytes, type FileBytesOptions, type VolumeReader } from './file-source.js';
export { FileTarget, type FileTargetOptions } from './file-target.js';
export { defaultPacking, repositoryFormat, type BackupIndex, type JobRecord, type Manifest, type PackIndex, type PackingOptions, type VolumeSource } from './format.js';
export { collectGarbage, type GcOptions, type GcResult } from './gc.js';
export { repositoryStats, verifyRepository, type RepositoryStats, type VerifyProblem, type VerifyResult } from './inspect.js';
export { BackupRepository, type CreateOptions, type RepositoryOptions } from './repository.js';
export type { RestoreOptions } from './restore.js';
export type { UploadState } from './uploads.js';

/** Opens the repository at `path`; with `create`, makes one there first if there is none. */
export async function openFilesystemRepository(
  path: string,
  options: RepositoryOptions & { create?: boolean | CreateOptions } = {},
): Promise<BackupRepository> {
  const store = new FilesystemBlobStore(path);
  if (options.create) return BackupRepository.create(store, options.create === true ? {} : options.create, options);
  return BackupRepository.open(store, options);
}
