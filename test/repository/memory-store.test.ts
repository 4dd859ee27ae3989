import { expect } from 'chai';
import { BackupRepository, collectGarbage, RepositoryIntegrityError, verifyRepository } from '../../src/repository/index.js';
import { sha256Of, type VolumeShape } from './data.js';
import { backUp, expected, smallChunks, smallPacks, storedChunk } from './helpers.js';
import { MemoryBlobStore } from './memory-blob-store.js';

// The repository on a store with no folders, no temp files and no rename: what an object
// store offers. Everything the repository guarantees must hold here too.
describe('repository on a non-filesystem BlobStore', () => {
  const shape: VolumeShape = { seed: 12, size: 3 * 1024 * 1024, kind: 'structured' };

  it('round-trips, deduplicates, verifies, detects corruption and collects garbage', async () => {
    const store = new MemoryBlobStore();
    const repo = await BackupRepository.create(store, { chunking: smallChunks, packing: smallPacks });
    const first = await backUp(repo, 'one', 'ns.a', shape);
    const second = await backUp(repo, 'two', 'ns.a', shape);
    expect(second.bytesUploaded).to.equal(0);
    expect(await sha256Of(repo.restoreStream('two', 'ns.a'))).to.deep.equal(await expected(shape));
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);

    await repo.deleteBackup('one');
    expect((await collectGarbage(repo)).chunksDeleted).to.equal(0);
    const other = await backUp(repo, 'three', 'ns.b', { ...shape, seed: 13 });
    await repo.deleteBackup('three');
    expect((await collectGarbage(repo)).chunksDeleted).to.equal(new Set(other.manifest.chunks.map(([h]) => h).filter((h) => !first.manifest.chunks.some(([f]) => f === h))).size);

    const [hash] = first.manifest.chunks[3]!;
    const { key, offset } = await storedChunk(repo, hash);
    store.raw(key)![offset + 5]! ^= 0x40;
    const v = await verifyRepository(repo);
    expect(v.problems.map((p) => p.chunk?.hash)).to.deep.equal([hash]);
    let error: unknown;
    await sha256Of(repo.restoreStream('two', 'ns.a')).catch((e) => (error = e));
    expect(error).to.be.instanceOf(RepositoryIntegrityError);
    expect((error as Error).message).to.include(hash);
  });
});
