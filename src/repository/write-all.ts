// Writing pieces of memory to a file at a position, whole.
import type { FileHandle } from 'node:fs/promises';

/**
 * Writes the pieces one after another from `position` with one writev (one round trip
 * through the thread pool), then whatever the kernel did not take; resolves with the
 * position after them.
 */
export async function writeAllAt(handle: FileHandle, pieces: readonly Uint8Array[], position: number): Promise<number> {
  let at = position;
  let skip = (await handle.writev(pieces as Uint8Array[], at)).bytesWritten;
  for (const piece of pieces) {
    for (let done = skip; done < piece.length; ) done += (await handle.write(piece, done, piece.length - done, at + done)).bytesWritten;
    skip = Math.max(0, skip - piece.length);
    at += piece.length;
  }
  return at;
}
