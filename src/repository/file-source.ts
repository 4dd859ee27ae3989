// A file or block device as the bytes of a volume to back up. Guarantees:
// - No allocation per read: a backup reads straight into its own blocks (readInto), and
//   iterating reads through one reused buffer, so reading a terabyte leaves no garbage
//   behind (a stream's fresh buffer per read costs page faults and collections that a
//   backup at disk speed cannot afford).
// - Iterating, a piece is valid until the next one is asked for. backupVolume copies each
//   piece of any source before it asks for the next, which is what makes the reuse safe.
// - The file is opened at the first read and closed at the end, when iteration stops
//   early, or on close().
import { open, type FileHandle } from 'node:fs/promises';
import { RepositoryInputError } from './errors.js';

export interface FileBytesOptions {
  /** Bytes per read when iterated (default 4 MiB: a read is a round trip through the thread pool, so fewer is cheaper). */
  bufferSize?: number;
  /** The first byte to read (default 0). */
  start?: number;
  /** Bytes to read from `start` (default: to the end of the file). */
  length?: number;
}

/** A source that reads into memory it is given: backupVolume reads such a source into its blocks without a copy. */
export interface VolumeReader {
  /** Reads the next bytes into `target`; resolves with how many (0: the end). */
  readInto(target: Uint8Array): Promise<number>;
  /** Stops reading (closes what it holds); safe to call more than once. */
  close(): Promise<void>;
}

export function isVolumeReader(data: unknown): data is VolumeReader {
  return typeof (data as Partial<VolumeReader> | undefined)?.readInto === 'function';
}

export class FileBytes implements AsyncIterable<Uint8Array>, VolumeReader {
  private file?: Promise<FileHandle>;
  private done = 0;
  private closed = false;

  constructor(
    readonly path: string,
    private readonly options: FileBytesOptions = {},
  ) {
    // A buffer of 0 bytes would read as an empty volume: say so instead.
    const { bufferSize = 1, start = 0, length = 0 } = options;
    if (!(Number.isSafeInteger(bufferSize) && bufferSize > 0)) throw new RepositoryInputError(`fileBytes bufferSize must be a positive whole number of bytes: ${bufferSize}`);
    if (!(Number.isSafeInteger(start) && start >= 0)) throw new RepositoryInputError(`fileBytes start must be a whole number of bytes, 0 or more: ${start}`);
    if (!((Number.isSafeInteger(length) && length >= 0) || length === Number.POSITIVE_INFINITY)) {
      throw new RepositoryInputError(`fileBytes length must be a whole number of bytes, 0 or more: ${length}`);
    }
  }

  async readInto(target: Uint8Array): Promise<number> {
    const { start = 0, length = Number.POSITIVE_INFINITY } = this.options;
    if (this.closed) throw new Error(`reading ${this.path} after it was closed`);
    const want = Math.min(target.length, length - this.done);
    if (want <= 0) return 0;
    this.file ??= open(this.path, 'r');
    const { bytesRead } = await (await this.file).read(target, 0, want, start + this.done);
    this.done += bytesRead;
    return bytesRead;
  }

  async close(): Promise<void> {
    this.closed = true;
    const file = this.file;
    this.file = undefined;
    await (await file?.catch(() => undefined))?.close();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    try {
      const buffer = Buffer.allocUnsafeSlow(this.options.bufferSize ?? 4 * 1024 * 1024);
      for (let n = await this.readInto(buffer); n > 0; n = await this.readInto(buffer)) yield buffer.subarray(0, n);
    } finally {
      await this.close();
    }
  }
}

export function fileBytes(path: string, options: FileBytesOptions = {}): FileBytes {
  return new FileBytes(path, options);
}
