import { expect } from 'chai';
import { open, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FileTarget } from '../../src/repository/index.js';
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

  async function patchDatasync(replacement: (original: () => Promise<void>) => Promise<void>): Promise<void> {
    const proto = await fileHandlePrototype();
    const original = proto.datasync;
    proto.datasync = function (this: FileHandle) {
      return replacement(() => original.call(this));
    };
    restores.push(() => (proto.datasync = original));
  }

  it('replaces a file with the bytes written, syncing in the background every flushBytes', async () => {
    const path = join(await tempDir(), 'restored.img');
    await writeFile(path, Buffer.alloc(100_000, 9)); // longer than what comes: replaced, not overwritten
    let syncs = 0;
    await patchDatasync((original) => {
      syncs++;
      return original();
    });
    const target = await FileTarget.open(path, { flushBytes: 10_000 });
    const pieces = Array.from({ length: 8 }, (_, i) => Buffer.alloc(5_000, i));
    for (const piece of pieces) await target.write(piece);
    await target.finish();
    expect(await readFile(path)).to.deep.equal(Buffer.concat(pieces));
    expect(target.bytesWritten).to.equal(40_000);
    expect(syncs).to.be.within(2, 4); // every 10,000 bytes, one at a time
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
