import { expect } from 'chai';
import { open, readdir, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FileTarget, RepositoryInputError } from '../../src/repository/index.js';
import { removeTempDirs, tempDir } from './helpers.js';

/** FileHandle's prototype, whose datasync the tests watch or fail. */
async function fileHandlePrototype(): Promise<FileHandle> {
  const handle = await open(process.execPath, 'r');
  await handle.close();
  return Object.getPrototypeOf(handle) as FileHandle;
}

describe('file target (a file or block device to restore into)', () => {
  const restores: (() => void)[] = [];
  afterEach(() => restores.splice(0).forEach((restore) => restore()));
  after(removeTempDirs);

  /** Replaces FileHandle's datasync (the background syncs) until the test ends. */
  async function patchDatasync(replacement: () => Promise<void>): Promise<void> {
    const proto = await fileHandlePrototype();
    const original = proto.datasync;
    proto.datasync = replacement;
    restores.push(() => (proto.datasync = original));
  }

  it('replaces a file with the bytes written, syncing in the background every flushBytes, one sync at a time', async () => {
    const path = join(await tempDir(), 'restored.img');
    await writeFile(path, Buffer.alloc(100_000, 9)); // longer than what comes: replaced, not overwritten
    // Each background sync waits until the test lets it finish (and then does nothing more:
    // the final fsync of finish() is the real one).
    const held: (() => void)[] = [];
    await patchDatasync(() => new Promise<void>((resolve) => held.push(resolve)));
    const target = await FileTarget.open(path, { flushBytes: 10_000 });
    const pieces = Array.from({ length: 8 }, (_, i) => Buffer.alloc(5_000, i));
    await target.write(pieces[0]!);
    expect(held).to.have.length(0);
    await target.write(pieces[1]!); // 10,000 bytes: a sync starts
    expect(held).to.have.length(1);
    for (const piece of pieces.slice(2, 5)) await target.write(piece);
    expect(held).to.have.length(1); // the first is still running: no second one beside it
    held[0]!();
    await new Promise((r) => setImmediate(r));
    await target.write(pieces[5]!); // 20,000 bytes since the first began: the next starts
    expect(held).to.have.length(2);
    held[1]!();
    for (const piece of pieces.slice(6)) await target.write([piece.subarray(0, 1_000), piece.subarray(1_000)]);
    for (const release of held) release();
    await target.finish();
    expect(await readFile(path)).to.deep.equal(Buffer.concat(pieces));
    expect(target.bytesWritten).to.equal(40_000);
  });

  it('refuses a flushBytes that is not a whole number of bytes, and creates nothing', async () => {
    const dir = await tempDir();
    for (const flushBytes of [-1, 0.5, Number.NaN]) {
      let error: Error | undefined;
      await FileTarget.open(join(dir, 'restored.img'), { flushBytes }).catch((e: Error) => (error = e));
      expect(error, String(flushBytes)).to.be.instanceOf(RepositoryInputError);
      expect(error?.message).to.match(/FileTarget flushBytes must be a whole number of bytes/);
    }
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('fails the next write when a background sync failed, and never finishes as if durable', async () => {
    const path = join(await tempDir(), 'restored.img');
    await patchDatasync(() => Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })));
    const target = await FileTarget.open(path, { flushBytes: 1_000 });
    await target.write(Buffer.alloc(1_000, 1)); // starts the sync that fails
    await new Promise((r) => setImmediate(r));
    let error: Error | undefined;
    await target.write(Buffer.alloc(1_000, 2)).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/EIO/);
    let finished: Error | undefined;
    await target.finish().catch((e: Error) => (finished = e));
    expect(finished?.message).to.match(/EIO/);
  });
});
