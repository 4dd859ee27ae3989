// The repository's errors, typed so a controller can classify them without reading
// messages. Every one carries `terminal` (the duck-typed contract across layers: true =
// retrying cannot help, e.g. corrupt data, a bad name, an unknown format; false = a
// retry may succeed, e.g. a lost lease). Errors of the medium itself (EIO, ENOSPC,
// a network error of an object store) come through unwrapped and are not terminal.
//
// Integrity errors name the backup, the volume and (where one is at fault) the chunk,
// its position in the volume and its byte offset, so an operator can find it on disk.

export type IntegrityProblem = 'missing' | 'corrupt' | 'size' | 'checksum';

export class RepositoryIntegrityError extends Error {
  /** Stored data is wrong or gone: reading it again gives the same answer. */
  readonly terminal = true;

  constructor(
    readonly problem: IntegrityProblem,
    readonly job: string,
    readonly volume: string,
    detail: string,
    readonly chunk?: { hash: string; index: number; offset: number; key: string },
  ) {
    const where = chunk ? ` chunk ${chunk.index} ${chunk.hash} (${chunk.key}, volume offset ${chunk.offset})` : '';
    super(`backup ${job} volume ${volume}:${where} ${detail}`);
    this.name = 'RepositoryIntegrityError';
  }
}

/** An error retrying cannot cure: the same call fails the same way. */
abstract class TerminalError extends Error {
  readonly terminal = true;
}

/** No repository where one was expected, or one this code cannot read or write. */
export class RepositoryFormatError extends TerminalError {
  override name = 'RepositoryFormatError';
}

/** A bad argument: an invalid job or volume name, impossible sizes. */
export class RepositoryInputError extends TerminalError {
  override name = 'RepositoryInputError';
}

/** The backup or volume asked for does not exist. */
export class BackupNotFoundError extends TerminalError {
  override name = 'BackupNotFoundError';
}

/** Two uploads of one volume read different data: the snapshot is not what it was. */
export class UploadConflictError extends TerminalError {
  override name = 'UploadConflictError';
}

/** The upload's lease lapsed or was taken over; retrying the upload resumes it. */
export class LostLeaseError extends Error {
  readonly terminal = false;
  override name = 'LostLeaseError';
}
