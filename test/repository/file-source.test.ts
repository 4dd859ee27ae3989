import { expect } from 'chai';
import { readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { blockPool, poolBlockSize } from '../../src/repository/block-pool.js';
import { BackupRepository, fileBytes, FilesystemBlobStore, RepositoryInputError, type BlobWriter } from '../../src/repository/index.js';
import { sha256Of, volumeBytes } from './data.js';
import { blobPath, removeTempDirs, tempDir, tempRepository } from './helpers.js';

async function openFiles(path: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) === path) n++;
  return n;
}

describe('file bytes (a file or block device as a volume source)', () => {
  after(removeTempDirs);

  it('reads the file, or the range asked for, through one reused buffer', async () => {
    const path = join(await tempDir(), 'disk.img');
    const data = Buffer.from(Array.from({ length: 10_000 }, (_, i) => i % 251));
    await writeFile(path, data);
    const pieces: Uint8Array[] = [];
    const copies: Buffer[] = [];
    for await (const piece of fileBytes(path, { bufferSize: 4096 })) {
      pieces.push(piece);
      copies.push(Buffer.from(piece));
    }
    expect(Buffer.concat(copies)).to.deep.equal(data);
    expect(copies.map((c) => c.length)).to.deep.equal([4096, 4096, 1808]);
    expect(new Set(pieces.map((p) => p.buffer)).size).to.equal(1);
    const range: Buffer[] = [];
    for await (const piece of fileBytes(path, { bufferSize: 4096, start: 100, length: 5000 })) range.push(Buffer.from(piece));
    expect(Buffer.concat(range)).to.deep.equal(data.subarray(100, 5100));
  });

  it('refuses a buffer, start or length that is not a whole number of bytes, naming it', () => {
    for (const [options, name] of [
      [{ bufferSize: 0 }, 'bufferSize'],
      [{ bufferSize: 1.5 }, 'bufferSize'],
      [{ start: -1 }, 'start'],
      [{ length: -4096 }, 'length'],
      [{ length: Number.NaN }, 'length'],
    ] as const) {
      expect(() => fileBytes('/dev/null', options), name).to.throw(RepositoryInputError, new RegExp(`fileBytes ${name} must be`));
    }
  });

  it('closes the file when the reader stops early', async () => {
    const path = join(await tempDir(), 'disk.img');
    await writeFile(path, Buffer.alloc(64 * 1024, 7));
    for await (const piece of fileBytes(path, { bufferSize: 1024 })) {
      expect(piece.length).to.equal(1024);
      expect(await openFiles(path)).to.equal(1);
      break;
    }
    expect(await openFiles(path)).to.equal(0);
  });

  it('is read straight into the backup’s blocks, and closed at the end and when the upload fails', async () => {
    const path = join(await tempDir(), 'disk.img');
    const size = 5 * 1024 * 1024 + 3;
    const parts: Uint8Array[] = [];
    for await (const p of volumeBytes({ seed: 12, size, kind: 'random' })) parts.push(Buffer.from(p));
    await writeFile(path, Buffer.concat(parts));
    const source = fileBytes(path);
    const iterated = { count: 0 };
    const original = source[Symbol.asyncIterator].bind(source);
    source[Symbol.asyncIterator] = () => {
      iterated.count++;
      return original();
    };
    const repo = await tempRepository();
    await repo.backupVolume('job', { volume: 'ns.v' }, source);
    expect(iterated.count).to.equal(0); // read in place, not through its own buffer
    expect(await sha256Of(repo.restoreStream('job', 'ns.v'))).to.deep.equal(await sha256Of(volumeBytes({ seed: 12, size, kind: 'random' })));
    expect(await openFiles(path)).to.equal(0);

    class FullDisk extends FilesystemBlobStore {
      override async createWriter(key: string): Promise<BlobWriter> {
        const writer = await super.createWriter(key);
        return { ...writer, write: async () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })) };
      }
    }
    const empty = await tempRepository(); // nothing stored yet: every chunk goes to a pack
    const full = await BackupRepository.open(new FullDisk((empty.store as FilesystemBlobStore).root));
    let error: Error | undefined;
    await full.backupVolume('job', { volume: 'ns.w' }, fileBytes(path)).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/ENOSPC/);
    for (let i = 0; i < 50 && (await openFiles(path)) > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await openFiles(path)).to.equal(0);

    // The source is read while the lease is taken: a lease that cannot be written fails the
    // backup with its own error, and the source, already open, is closed.
    class NoLease extends FilesystemBlobStore {
      override async put(key: string, data: Buffer): Promise<void> {
        if (key.endsWith('/lease.json')) throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
        return super.put(key, data);
      }
    }
    // Default chunks (1 MiB on average): the pipeline reads several blocks before its first cut.
    const plain = await tempRepository({});
    const stuck = await BackupRepository.open(new NoLease((plain.store as FilesystemBlobStore).root));
    const pool = blockPool();
    const before = { size: pool.size, free: pool.freeBlocks };
    let leaseError: Error | undefined;
    const opened = fileBytes(path);
    let reads = 0;
    const readInto = opened.readInto.bind(opened);
    // The first read is slow (a device waking up): it is still under way when the lease fails.
    opened.readInto = async (target) => {
      const read = readInto(target);
      if (reads++ === 0) await new Promise((r) => setTimeout(r, 100));
      return read;
    };
    await stuck.backupVolume('job', { volume: 'ns.x' }, opened).catch((e: Error) => (leaseError = e));
    expect(leaseError?.message).to.match(/EIO/);
    expect(reads).to.be.above(0);
    for (let i = 0; i < 50 && (await openFiles(path)) > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await openFiles(path)).to.equal(0);
    // And every block the backup took is back in the pool.
    const outstanding = () => (pool.size - before.size) / poolBlockSize + before.free - pool.freeBlocks;
    for (let i = 0; i < 50 && outstanding() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(outstanding()).to.equal(0);
  });

  it('backs up a source that overwrites its buffer as soon as the next piece is asked for', async () => {
    const repo = await tempRepository();
    const size = 3 * 1024 * 1024 + 5;
    const want = await sha256Of(volumeBytes({ seed: 8, size, kind: 'random' }));
    // Each piece is copied into one buffer that is scribbled over the moment the next piece is
    // asked for: a backup that kept a piece past that would store the scribble.
    async function* reusing(): AsyncGenerator<Uint8Array> {
      const buffer = Buffer.alloc(100_000);
      for await (const piece of volumeBytes({ seed: 8, size, kind: 'random' })) {
        for (let at = 0; at < piece.length; at += buffer.length) {
          const n = Math.min(buffer.length, piece.length - at);
          buffer.set(piece.subarray(at, at + n));
          yield buffer.subarray(0, n);
          buffer.fill(0xee);
        }
      }
    }
    await repo.backupVolume('job', { volume: 'ns.v' }, reusing());
    expect(await sha256Of(repo.restoreStream('job', 'ns.v'))).to.deep.equal(want);
    // The pack writer opens the next pack ahead: none is left behind half-made.
    const leftovers: string[] = [];
    for (const entry of await readdir(blobPath(repo, 'packs'), { recursive: true })) if (entry.split('/').at(-1)!.startsWith('.tmp-')) leftovers.push(entry);
    expect(leftovers).to.deep.equal([]);
  });
});
