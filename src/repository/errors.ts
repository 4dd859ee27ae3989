// Integrity errors. Each names the backup, the volume and (where one is at fault) the
// chunk, its position in the volume and its byte offset, so an operator can find it on disk.

export type IntegrityProblem = 'missing' | 'corrupt' | 'size' | 'checksum';

export class RepositoryIntegrityError extends Error {
  constructor(
    readonly problem: IntegrityProblem,
    readonly job: string,
    readonly volume: string,
    detail: string,
    readonly chunk?: { hash: string; index: number; offset: number; key: string },
  ) {
    const where = chunk ? ` chunk ${chunk.index} (${chunk.key}, volume offset ${chunk.offset})` : '';
    super(`backup ${job} volume ${volume}:${where} ${detail}`);
    this.name = 'RepositoryIntegrityError';
  }
}
