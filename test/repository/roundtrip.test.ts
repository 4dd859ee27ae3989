import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { BackupRepository, defaultChunkerOptions, FilesystemBlobStore, FileTarget, RepositoryIntegrityError, repositoryStats, type BlobWriter } from '../../src/repository/index.js';
import { chunkListSha256 } from '../../src/repository/format.js';
import { blockSize, sha256Of, volumeBytes, type VolumeShape } from './data.js';
import { backUp, corruptStoredChunk, expected, removeTempDirs, smallChunks, smallPacks, tempDir, tempRepository } from './helpers.js';

/** Bytes of every file under `dir`. */
async function diskUsage(dir: string): Promise<number> {
  let bytes = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) if (entry.isFile()) bytes += (await stat(join(entry.parentPath, entry.name))).size;
  return bytes;
}

describe('repository round trip', function () {
  this.timeout(120_000);
  after(removeTempDirs);

  const sizes = [0, 1, 4095, 65_536, 1_000_003, 6 * 1024 * 1024 + 17];
  for (const kind of ['random', 'structured'] as const) {
    for (const size of sizes) {
      it(`restores ${size} bytes of ${kind} data byte-identical`, async () => {
        const repo = await tempRepository();
        const shape: VolumeShape = { seed: size + 7, size, kind };
        const up = await backUp(repo, 'job-a', 'ns.vol', shape);
        const want = await expected(shape);
        expect(up.manifest.size).to.equal(size);
        expect(up.manifest.chunksSha256).to.equal(chunkListSha256(up.manifest.chunks));
        expect(await sha256Of(repo.restoreStream('job-a', 'ns.vol'))).to.deep.equal(want);
      });
    }
  }

  it('restores a 300 MB volume streamed through default-sized chunks byte-identical', async () => {
    const repo = await tempRepository({ chunking: defaultChunkerOptions });
    const shape: VolumeShape = { seed: 300, size: 300 * 1024 * 1024 + 12_345, kind: 'random' };
    const up = await backUp(repo, 'big', 'ns.big', shape);
    const want = await expected(shape);
    expect(up.manifest.chunksSha256).to.equal(chunkListSha256(up.manifest.chunks));
    const sizes = up.manifest.chunks.map(([, s]) => s);
    expect(Math.max(...sizes)).to.be.at.most(defaultChunkerOptions.maxSize);
    expect(Math.min(...sizes.slice(0, -1))).to.be.at.least(defaultChunkerOptions.minSize);
    const mean = shape.size / sizes.length;
    expect(mean).to.be.within(defaultChunkerOptions.avgSize / 2, defaultChunkerOptions.avgSize * 2);
    expect(await sha256Of(repo.restoreStream('big', 'ns.big'))).to.deep.equal(want);
  });

  for (const kind of ['random', 'structured'] as const) {
    it(`stores under 1% new bytes when the same ${kind} data is backed up again`, async () => {
      const repo = await tempRepository();
      const shape: VolumeShape = { seed: 11, size: 8 * 1024 * 1024, kind };
      await backUp(repo, 'monday', 'ns.db', shape);
      const second = await backUp(repo, 'tuesday', 'ns.db', shape);
      expect(second.bytesRead).to.equal(shape.size);
      expect(second.bytesUploaded / shape.size).to.be.below(0.01);
      const stats = await repositoryStats(repo);
      expect(stats.logicalBytes).to.equal(2 * shape.size);
      expect(stats.dedupRatio).to.be.at.least(1.98);
      expect(await sha256Of(repo.restoreStream('tuesday', 'ns.db'))).to.deep.equal(await expected(shape));
    });
  }

  it('stores roughly the changed region’s chunks when one region changes', async () => {
    const repo = await tempRepository();
    const size = 16 * 1024 * 1024;
    const base: VolumeShape = { seed: 5, size, kind: 'random' };
    await backUp(repo, 'before', 'ns.db', base);
    const before = await diskUsage((repo.store as FilesystemBlobStore).root);
    // 256 KiB changed in the middle of 16 MiB.
    const changed: VolumeShape = { ...base, changed: { fromBlock: 120, toBlock: 124, seed: 99 } };
    const second = await backUp(repo, 'after', 'ns.db', changed);
    const region = 4 * blockSize;
    // The region itself plus at most a couple of neighbouring chunks (max 64 KiB each).
    expect(second.bytesUploaded).to.be.at.least(region);
    expect(second.bytesUploaded).to.be.at.most(region + 4 * 64 * 1024);
    // Everything the second backup added to the disk (its packs, their indexes, the
    // manifest and the backup's records) is under 1 MB: packs keep chunk-level dedup.
    const added = (await diskUsage((repo.store as FilesystemBlobStore).root)) - before;
    expect(added).to.be.below(1e6);
    expect(await sha256Of(repo.restoreStream('after', 'ns.db'))).to.deep.equal(await expected(changed));
    expect(await sha256Of(repo.restoreStream('before', 'ns.db'))).to.deep.equal(await expected(base));
  });

  it('deduplicates across volumes and returns at once for a volume already backed up', async () => {
    const repo = await tempRepository();
    const shape: VolumeShape = { seed: 3, size: 2 * 1024 * 1024, kind: 'structured' };
    const first = await backUp(repo, 'job', 'ns.a', shape);
    const other = await backUp(repo, 'job', 'ns.b', shape);
    expect(other.bytesUploaded).to.equal(0);
    const again = await backUp(repo, 'job', 'ns.a', shape);
    expect(again.alreadyComplete).to.equal(true);
    expect(again.bytesRead).to.equal(0);
    expect(again.manifest.chunksSha256).to.equal(first.manifest.chunksSha256);
  });

  it('restoreInto hands out every chunk uncopied, and reuses its memory only after the write settles', async () => {
    const repo = await tempRepository({ chunking: defaultChunkerOptions });
    const shape: VolumeShape = { seed: 77, size: 40 * 1024 * 1024 + 3, kind: 'random' };
    await backUp(repo, 'job', 'ns.big', shape);
    const hash = createHash('sha256');
    let writes = 0;
    // A slow writer: the read-ahead fills other buffers meanwhile, and reusing this one
    // before its write settles would change the bytes read here.
    const bytes = await repo.restoreInto('job', 'ns.big', async (chunk) => {
      await new Promise((r) => setTimeout(r, 2));
      hash.update(chunk);
      writes++;
    });
    expect(bytes).to.equal(shape.size);
    expect(writes).to.be.above(20);
    expect({ sha256: hash.digest('hex'), size: bytes }).to.deep.equal(await expected(shape));
  });

  it('restores the first chunk after reading it alone, and keeps at most three reads going', async () => {
    const repo = await tempRepository({ chunking: defaultChunkerOptions });
    const shape: VolumeShape = { seed: 78, size: 48 * 1024 * 1024, kind: 'random' };
    await backUp(repo, 'job', 'ns.big', shape);
    const reads: number[] = [];
    let reading = 0;
    let mostReading = 0;
    class CountingDisk extends FilesystemBlobStore {
      override async getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
        reads.push(length);
        mostReading = Math.max(mostReading, ++reading);
        try {
          await new Promise((r) => setTimeout(r, 2)); // a slow disk: reads pile up unless held back
          return await super.getRange(key, offset, length, into);
        } finally {
          reading--;
        }
      }
    }
    const counted = await BackupRepository.open(new CountingDisk((repo.store as FilesystemBlobStore).root));
    const hash = createHash('sha256');
    const bytes = await counted.restoreInto('job', 'ns.big', async (chunk) => void hash.update(chunk));
    expect({ sha256: hash.digest('hex'), size: bytes }).to.deep.equal(await expected(shape));
    const manifest = await counted.getManifest('job', 'ns.big');
    expect(reads[0]).to.equal(manifest.chunks[0]![1] + 1); // the first chunk alone (its codec byte 0, then its bytes)
    expect(Math.max(...reads)).to.be.above(4 * 1024 * 1024); // later reads span several chunks
    expect(mostReading).to.equal(3);
  });

  it('lays a volume’s new chunks out in its packs in the volume’s order, though batches are stored two at a time', async () => {
    const repo = await tempRepository({ chunking: smallChunks });
    const shape: VolumeShape = { seed: 80, size: 6 * 1024 * 1024, kind: 'random' };
    // Batches of two chunks: many batches in flight one after another, each racing the next.
    const up = await repo.backupVolume('job', { volume: 'ns.v' }, volumeBytes(shape), { intentBatch: 2 });
    const index = await repo.chunkIndex(true);
    let breaks = 0;
    let previous: { pack: string; end: number } | undefined;
    for (const [hash] of up.manifest.chunks) {
      const location = index.lookup(hash);
      if (location?.kind !== 'pack') throw new Error(`chunk ${hash} is not in a pack`);
      const follows = previous?.pack === location.pack ? location.offset === previous.end : location.offset === 0;
      if (!follows) breaks++;
      previous = { pack: location.pack, end: location.offset + location.length };
    }
    expect(up.manifest.chunks.length).to.be.above(300);
    expect(breaks).to.equal(0);
  });

  it('restoreToFile writes a run of chunks per write, and on a bad chunk leaves exactly the verified bytes before it', async () => {
    const repo = await tempRepository({ chunking: defaultChunkerOptions });
    const shape: VolumeShape = { seed: 79, size: 24 * 1024 * 1024 + 9, kind: 'random' };
    const up = await backUp(repo, 'job', 'ns.big', shape);
    const to = join(await tempDir(), 'restored.img');
    const write = FileTarget.prototype.write;
    let writes = 0;
    FileTarget.prototype.write = function (this: FileTarget, bytes) {
      writes++;
      return write.call(this, bytes);
    };
    try {
      expect(await repo.restoreToFile('job', 'ns.big', to)).to.equal(shape.size);
    } finally {
      FileTarget.prototype.write = write;
    }
    expect(await sha256Of(createReadStream(to))).to.deep.equal(await expected(shape));
    expect(writes).to.be.below(up.manifest.chunks.length / 2);

    // A bad chunk in the middle: everything before it is on the disk, nothing after.
    const bad = Math.floor(up.manifest.chunks.length / 2);
    await corruptStoredChunk(repo, up.manifest.chunks[bad]![0]);
    let error: Error | undefined;
    await repo.restoreToFile('job', 'ns.big', to).catch((e: Error) => (error = e));
    expect(error).to.be.instanceOf(RepositoryIntegrityError);
    const before = up.manifest.chunks.slice(0, bad).reduce((n, [, size]) => n + size, 0);
    const want = createHash('sha256');
    let at = 0;
    for await (const piece of volumeBytes(shape)) {
      want.update(piece.subarray(0, Math.max(0, Math.min(piece.length, before - at))));
      at += piece.length;
    }
    expect(await sha256Of(createReadStream(to))).to.deep.equal({ sha256: want.digest('hex'), size: before });
  });

  it('fails an upload whose source fails with the source’s error, and writes no manifest', async () => {
    const repo = await tempRepository();
    const shape: VolumeShape = { seed: 6, size: 1024 * 1024, kind: 'random' };
    await backUp(repo, 'job', 'ns.a', shape);
    async function* failing() {
      yield* volumeBytes({ ...shape, size: 256 * 1024 });
      throw new Error('source device went away');
    }
    let error: Error | undefined;
    await repo.backupVolume('job', { volume: 'ns.b' }, failing()).catch((e: Error) => (error = e));
    expect(error?.message).to.equal('source device went away');
    expect(await repo.listVolumes('job')).to.deep.equal(['ns.a']);
  });

  it('logs every pack write that fails, not only the first, and fails the upload', async () => {
    const lines: { msg: string; pack?: string; err?: { message: string } }[] = [];
    const logger = pino(
      { level: 'info' },
      new Writable({
        write(line, _encoding, callback) {
          lines.push(JSON.parse(String(line)));
          callback();
        },
      }),
    );
    const attempted: string[] = [];
    class FailingDisk extends FilesystemBlobStore {
      override async createWriter(key: string): Promise<BlobWriter> {
        const writer = await super.createWriter(key);
        return {
          ...writer,
          commit: async () => {
            attempted.push(key);
            await new Promise((r) => setTimeout(r, 50)); // several pack commits are in flight at once
            throw new Error(`EIO writing ${key}`);
          },
        };
      }
    }
    const repo = await BackupRepository.create(new FailingDisk(await tempDir()), { chunking: smallChunks, packing: smallPacks }, { logger });
    let error: Error | undefined;
    await backUp(repo, 'job', 'ns.a', { seed: 12, size: 1024 * 1024, kind: 'random' }).catch((err: Error) => (error = err));
    expect(error?.message).to.equal(`EIO writing ${attempted[0]}`);
    expect(attempted.length).to.be.at.least(1);
    const logged = lines.filter((l) => l.msg === 'pack write failed');
    expect(logged.map((l) => l.pack).sort()).to.deep.equal([...attempted].sort());
    expect(logged.map((l) => l.err?.message).sort()).to.deep.equal(attempted.map((k) => `EIO writing ${k}`).sort());
    expect(await repo.listVolumes('job')).to.deep.equal([]);
  });
});
