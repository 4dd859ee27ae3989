// A file or block device as the bytes of a volume to back up. Guarantees:
// - One buffer for the whole read, reused for every piece: no allocation per read, so
//   reading a terabyte leaves no garbage behind (a stream's fresh buffer per read costs
//   page faults and collections that a backup at disk speed cannot afford).
// - A piece is valid until the next one is asked for. backupVolume copies each piece
//   before it asks for the next, which is what makes the reuse safe.
// - The file is closed when the iteration ends, early or not.
import { open } from 'node:fs/promises';

export interface FileBytesOptions {
  /** Bytes per read (default 4 MiB: fewer reads, each a round trip through the thread pool). */
  bufferSize?: number;
  /** The first byte to read (default 0). */
  start?: number;
  /** Bytes to read from `start` (default: to the end of the file). */
  length?: number;
}

export async function* fileBytes(path: string, options: FileBytesOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const { bufferSize = 4 * 1024 * 1024, start = 0, length = Number.POSITIVE_INFINITY } = options;
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafeSlow(bufferSize);
    for (let done = 0; done < length; ) {
      const want = Math.min(buffer.length, length - done);
      const { bytesRead } = await file.read(buffer, 0, want, start + done);
      if (bytesRead === 0) return;
      done += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await file.close();
  }
}
