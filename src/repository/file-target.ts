// A file or block device to restore a volume into. Guarantees:
// - Bytes are written in order, each write whole (a short write is continued); a run of
//   chunks goes down with one writev.
// - Write-behind: every `flushBytes` written (default 32 MiB), a datasync starts in the
//   background, one at a time, so the disk writes while the restore goes on and the last
//   fsync has little left to do; dirty pages stay bounded too (in a pod they count against
//   its memory limit).
// - finish() resolves only once every byte is durable (a final fsync); a background sync
//   that failed fails the next write or finish(), never silently.
// - A block device is written in place; a file is created or replaced.
import { open, stat, type FileHandle } from 'node:fs/promises';
import { RepositoryInputError } from './errors.js';
import { WriteBehind } from './write-all.js';

export interface FileTargetOptions {
  /** Bytes between background syncs (default 32 MiB; 0: only the final fsync). */
  flushBytes?: number;
}

export class FileTarget {
  private readonly behind: WriteBehind;

  private constructor(
    private readonly file: FileHandle,
    flushBytes: number,
  ) {
    this.behind = new WriteBehind(file, flushBytes);
  }

  static async open(path: string, options: FileTargetOptions = {}): Promise<FileTarget> {
    const { flushBytes = 32 * 1024 * 1024 } = options;
    if (!(Number.isSafeInteger(flushBytes) && flushBytes >= 0)) throw new RepositoryInputError(`FileTarget flushBytes must be a whole number of bytes, 0 or more: ${flushBytes}`);
    const device = await stat(path).then(
      (s) => s.isBlockDevice(),
      () => false,
    );
    return new FileTarget(await open(path, device ? 'r+' : 'w'), flushBytes);
  }

  get bytesWritten(): number {
    return this.behind.written;
  }

  /** Writes the bytes, or the pieces one after another (one writev), after what was written. */
  async write(bytes: Uint8Array | readonly Uint8Array[]): Promise<void> {
    await this.behind.append(bytes instanceof Uint8Array ? [bytes] : bytes);
  }

  /** Makes every byte durable and closes the file. */
  async finish(): Promise<void> {
    try {
      await this.behind.settle();
      await this.file.sync();
    } finally {
      await this.file.close();
    }
  }

  /** Closes the file without waiting for it to be durable (after a failure). */
  async abort(): Promise<void> {
    await this.behind.settle().catch(() => undefined);
    await this.file.close().catch(() => undefined);
  }
}
