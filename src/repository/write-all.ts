// Writing pieces of memory to a file at a position, whole, and flushing behind the writes.
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

/**
 * Background datasyncs of a file being written: one each time `flushBytes` more were
 * written (0: none), one at a time. The disk then writes while the writer goes on, and the
 * final fsync has little left, so it is short, and so are the fsyncs of small files that
 * queue behind it in the filesystem's journal. A failed sync is kept and thrown by the next
 * check() or settle(), never dropped.
 */
export class WriteBehind {
  private sinceFlush = 0;
  private flushing?: Promise<void>;
  private failure: unknown;

  constructor(
    private readonly file: FileHandle,
    private readonly flushBytes: number,
  ) {}

  /** Throws the failure of a background sync, if one failed. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Counts bytes written; starts a background datasync when one is due and none is running. */
  wrote(bytes: number): void {
    this.sinceFlush += bytes;
    if (this.flushBytes === 0 || this.sinceFlush < this.flushBytes || this.flushing) return;
    this.sinceFlush = 0;
    this.flushing = this.file.datasync().then(
      () => (this.flushing = undefined),
      (err: unknown) => {
        this.flushing = undefined;
        this.failure ??= err;
      },
    );
  }

  /** Waits for the background sync in flight (before the final fsync, or a close); throws if one failed. */
  async settle(): Promise<void> {
    await this.flushing;
    this.check();
  }
}
