import { expect } from 'chai';
import { unlink } from 'node:fs/promises';
import { RepositoryIntegrityError, verifyRepository, type BackupRepository, type Manifest, type PackIndex } from '../../src/repository/index.js';
import type { VolumeShape } from './data.js';
import { backUp, blobPath, corruptStoredChunk, removeTempDirs, storedChunk, tempRepository } from './helpers.js';

/** Reads the volume to the end; returns the bytes emitted and the error it failed with. */
async function drain(repo: BackupRepository, job: string, volume: string): Promise<{ bytes: number; error?: Error }> {
  let bytes = 0;
  try {
    for await (const piece of repo.restoreStream(job, volume)) bytes += (piece as Buffer).length;
  } catch (err) {
    return { bytes, error: err as Error };
  }
  return { bytes };
}

describe('repository integrity', function () {
  this.timeout(30_000);
  after(removeTempDirs);

  for (const kind of ['random', 'structured'] as const) {
    it(`names the chunk when one byte of a stored ${kind} chunk is flipped, in verify and in restore`, async () => {
      const repo = await tempRepository();
      const shape: VolumeShape = { seed: 21, size: 3 * 1024 * 1024, kind };
      const { manifest } = await backUp(repo, 'job', 'team.db', shape);
      const victim = 7;
      const [hash] = manifest.chunks[victim]!;
      await corruptStoredChunk(repo, hash);

      const v = await verifyRepository(repo);
      expect(v.problems).to.have.length(1);
      expect(v.problems[0]!.problem).to.equal('corrupt');
      expect(v.problems[0]!.chunk).to.deep.include({ hash, index: victim });
      expect(v.problems[0]!.message).to.include(hash).and.include('team.db');

      const offset = manifest.chunks.slice(0, victim).reduce((n, [, s]) => n + s, 0);
      const { bytes, error } = await drain(repo, 'job', 'team.db');
      expect(error).to.be.instanceOf(RepositoryIntegrityError);
      expect(error!.message).to.include(hash).and.include('team.db').and.include(`chunk ${victim}`);
      // Nothing of the bad chunk (nor after it) was handed out.
      expect(bytes).to.equal(offset);
    });
  }

  it('reports a chunk its pack index lost by name in verify and in restore', async () => {
    const repo = await tempRepository();
    const { manifest } = await backUp(repo, 'job', 'team.db', { seed: 4, size: 1024 * 1024, kind: 'random' });
    const [hash] = manifest.chunks[2]!;
    const { key } = await storedChunk(repo, hash);
    const indexKey = key.replace(/^packs\/(..)\/(.*)$/, 'index/$1/$2.json');
    const record = JSON.parse((await repo.store.get(indexKey)).toString()) as PackIndex;
    record.entries = record.entries.filter(([h]) => h !== hash);
    await repo.store.put(indexKey, Buffer.from(JSON.stringify(record)));
    const v = await verifyRepository(repo);
    expect(v.problems.map((p) => [p.problem, p.chunk?.hash])).to.deep.equal([['missing', hash]]);
    const { error } = await drain(repo, 'job', 'team.db');
    expect((error as RepositoryIntegrityError).problem).to.equal('missing');
    expect(error!.message).to.include(hash).and.include('chunk 2');
  });

  it('reports every chunk of a pack that is gone, naming the pack', async () => {
    const repo = await tempRepository();
    const { manifest } = await backUp(repo, 'job', 'team.db', { seed: 4, size: 1024 * 1024, kind: 'random' });
    const [hash] = manifest.chunks[0]!;
    const { key } = await storedChunk(repo, hash);
    await unlink(blobPath(repo, key));
    const v = await verifyRepository(repo);
    expect(v.problems.length).to.be.above(1);
    expect(v.problems.every((p) => p.problem === 'missing' && p.message.includes(key))).to.equal(true);
    expect(v.problems[0]!.chunk?.hash).to.equal(hash);
    const { bytes, error } = await drain(repo, 'job', 'team.db');
    expect((error as RepositoryIntegrityError).problem).to.equal('missing');
    expect(error!.message).to.include(hash).and.include('chunk 0');
    expect(bytes).to.equal(0);
  });

  it('refuses, before its first byte, a manifest whose chunk list does not match its checksum (altered, reordered or resized), and verify names it', async () => {
    const repo = await tempRepository();
    await backUp(repo, 'job', 'team.db', { seed: 4, size: 512 * 1024, kind: 'random' });
    const key = 'backups/job/volumes/team.db.json';
    const original = (await repo.store.get(key)).toString();
    const alterations: Record<string, (m: Manifest) => void> = {
      checksum: (m) => (m.chunksSha256 = '0'.repeat(64)),
      order: (m) => m.chunks.reverse(),
      size: (m) => (m.size += 1),
    };
    for (const [what, alter] of Object.entries(alterations)) {
      const m = JSON.parse(original) as Manifest;
      expect(m.chunks.length, 'chunks to reorder').to.be.above(2);
      alter(m);
      await repo.store.put(key, Buffer.from(JSON.stringify(m)));
      const { bytes, error } = await drain(repo, 'job', 'team.db');
      expect((error as RepositoryIntegrityError).problem, what).to.equal('checksum');
      expect(error!.message, what).to.include('team.db').and.include('chunk list');
      expect(bytes, what).to.equal(0);
      const v = await verifyRepository(repo);
      expect(v.problems.map((p) => p.problem), what).to.deep.equal(['manifest']);
      expect(v.problems[0]!.message, what).to.include(key);
    }
  });

  it('reports a complete backup whose index lists a volume that has no manifest', async () => {
    const repo = await tempRepository();
    await backUp(repo, 'job', 'ns.a', { seed: 4, size: 256 * 1024, kind: 'random' });
    await backUp(repo, 'job', 'ns.b', { seed: 5, size: 256 * 1024, kind: 'random' });
    await repo.finishBackup('job');
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    await repo.store.delete('backups/job/volumes/ns.b.json');
    const v = await verifyRepository(repo);
    expect(v.problems.map((p) => [p.problem, p.volume])).to.deep.equal([['manifest', 'ns.b']]);
    expect(v.problems[0]!.message).to.include('no such manifest');
  });

  it('verifies a clean repository with shared chunks, reading each chunk once', async () => {
    const repo = await tempRepository();
    const shape: VolumeShape = { seed: 8, size: 2 * 1024 * 1024, kind: 'random' };
    const a = await backUp(repo, 'one', 'ns.a', shape);
    await backUp(repo, 'two', 'ns.a', shape);
    const v = await verifyRepository(repo);
    expect(v.problems).to.deep.equal([]);
    expect(v.manifests).to.equal(2);
    expect(v.chunksChecked).to.equal(new Set(a.manifest.chunks.map(([h]) => h)).size);
  });
});
