// Writing pieces of memory to a file at a position, whole, and flushing behind the writes.
import type { FileHandle } from 'node:fs/promises';

/**
 * Writes the pieces one after another from `position` with one writev (one round trip
 * through the thread pool), then whatever the kernel did not take; resolves with the
 * position after them.
 */
async function writeAllAt(handle: FileHandle, pieces: readonly Uint8Array[], position: number): Promise<number> {
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
 * A file written from its start, piece after piece, with background datasyncs: one each time
 * `flushBytes` more were written (0: none), one at a time. The disk then writes while the
 * writer goes on, and the final fsync has little left, so it is short, and so are the fsyncs
 * of small files that queue behind it in the filesystem's journal. A failed sync is kept and
 * thrown by the next append() or settle(), never dropped.
 */
export class WriteBehind {
  private position = 0;
  private sinceFlush = 0;
  private flushing?: Promise<void>;
  private failure: unknown;

  constructor(
    private readonly file: FileHandle,
    private readonly flushBytes: number,
  ) {}

  /** Bytes written so far. */
  get written(): number {
    return this.position;
  }

  /** Writes the pieces after what was written (one writev; see writeAllAt). */
  async append(pieces: readonly Uint8Array[]): Promise<void> {
    this.check();
    const from = this.position;
    this.position = await writeAllAt(this.file, pieces, from);
    this.wrote(this.position - from);
  }

  /** Throws the failure of a background sync, if one failed. */
  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Counts bytes written; starts a background datasync when one is due and none is running. */
  private wrote(bytes: number): void {
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
