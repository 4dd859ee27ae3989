import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { cp, readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import {
  BackupRepository,
  collectGarbage,
  FilesystemBlobStore,
  openFilesystemRepository,
  RepositoryFormatError,
  repositoryFormat,
  repositoryStats,
  verifyRepository,
} from '../../src/repository/index.js';
import { chunkHasher } from '../../src/repository/chunk-hash.js';
import { chunkListSha256, type RepositoryConfig } from '../../src/repository/format.js';
import { chunkStream, type RollingHashName } from '../../src/repository/chunker.js';
import { startVolumeHash, volumeHashesInProgress } from '../../src/repository/volume-hash.js';
import { sha256Of, volumeBytes, type VolumeShape } from './data.js';
import { removeTempDirs, smallChunks, smallPacks, tempDir, tempRepository } from './helpers.js';

// The golden repositories under fixtures/ were written by Trellis itself: format 1 by the
// code before packs (see fixtures/README.md), format 2 by the code that introduced
// them, format 3 by the code whose manifests checksum their chunk list, format 4 by the code
// that names chunks by BLAKE3, format 5 by the code that cuts them with gear-mul. Each must
// restore and verify with today's code, byte for byte.
const a: VolumeShape = { seed: 1001, size: 96 * 1024 + 17, kind: 'random' };
const b: VolumeShape = { seed: 1002, size: 320 * 1024, kind: 'structured' };
const shaA = { sha256: 'b55e90ad9801527ead949c8ade5a604379be3c9e2e0037aad2da77676b490f07', size: 98321 };
const shaB = { sha256: '02c6ab21e3b2806ae3b1901c54434829f4a0050f8b403540e717ca06550edc7c', size: 327680 };

function blake3Of(bytes: Uint8Array): string {
  const h = chunkHasher('blake3');
  h.update(bytes);
  return h.digest('hex');
}

async function expectRejection(promise: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error).to.be.instanceOf(RepositoryFormatError);
  expect((error as Error).message).to.match(message);
}

/** A writable copy of a golden repository. */
async function golden(name: string): Promise<string> {
  const dir = await tempDir();
  await cp(fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)), dir, { recursive: true });
  return dir;
}

describe('repository format', () => {
  after(removeTempDirs);

  it('writes format 5 (chunks cut by gear-mul and named by BLAKE3; manifests checksum their chunk list), and a new repository says so in its config', async () => {
    expect(repositoryFormat).to.equal(5);
    const repo = await tempRepository({ chunking: smallChunks });
    expect(repo.config.format).to.equal(5);
    const config = JSON.parse((await repo.store.get('config.json')).toString()) as RepositoryConfig;
    expect(config).to.include({ format: 5, chunkHash: 'blake3' });
    expect(config.chunking).to.deep.equal({ ...smallChunks, rollingHash: 'gear-mul' });
    const up = await repo.backupVolume('job', { volume: 'ns.a' }, volumeBytes(a));
    expect(up.manifest.format).to.equal(5);
    expect(up.manifest.chunking).to.deep.equal(config.chunking);
    // Cut where the reference chunker cuts with gear-mul, and not where gear would.
    const cuts = async (rollingHash: RollingHashName) => {
      const sizes: number[] = [];
      for await (const chunk of chunkStream(volumeBytes(a), { ...smallChunks, rollingHash })) sizes.push(chunk.length);
      return sizes;
    };
    expect(up.manifest.chunks.map(([, size]) => size)).to.deep.equal(await cuts('gear-mul'));
    expect(up.manifest.chunks.map(([, size]) => size)).to.not.deep.equal(await cuts('gear'));
    expect(up.manifest.sha256).to.equal(undefined);
    expect(up.manifest.chunksSha256).to.equal(chunkListSha256(up.manifest.chunks));
    // Each chunk is named by the BLAKE3 of its bytes.
    const names: string[] = [];
    for await (const chunk of repo.restoredChunks('job', 'ns.a')) names.push(blake3Of(chunk));
    expect(names).to.deep.equal(up.manifest.chunks.map(([hash]) => hash));
  });

  it('names chunks by SHA-256 in a new repository when asked to, and refuses a config naming a hash it does not know', async () => {
    const repo = await tempRepository({ chunkHash: 'sha256', chunking: smallChunks, packing: smallPacks });
    expect(repo.config).to.include({ format: 5, chunkHash: 'sha256' });
    const up = await repo.backupVolume('job', { volume: 'ns.a' }, volumeBytes(a));
    const names: string[] = [];
    for await (const chunk of repo.restoredChunks('job', 'ns.a')) names.push(createHash('sha256').update(chunk).digest('hex'));
    expect(names).to.deep.equal(up.manifest.chunks.map(([hash]) => hash));

    const config = JSON.parse((await repo.store.get('config.json')).toString()) as Record<string, unknown>;
    await repo.store.put('config.json', Buffer.from(JSON.stringify({ ...config, chunkHash: 'md5' })));
    await expectRejection(BackupRepository.open(repo.store), /names unknown chunk hash md5/);
    await repo.store.put('config.json', Buffer.from(JSON.stringify({ ...config, chunkHash: undefined })));
    await expectRejection(BackupRepository.open(repo.store), /format 5 but names no chunkHash/);
    // Nor is a repository created with one.
    const dir = await tempDir();
    await expectRejection(BackupRepository.create(new FilesystemBlobStore(dir), { chunkHash: 'md5' as 'sha256' }), /names unknown chunk hash md5/);
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('takes new backups into a format-3 repository as it is: format-3 records, SHA-256 chunks, deduplicated against the old', async () => {
    const repo = await openFilesystemRepository(await golden('repository-v3'));
    const again = await repo.backupVolume('wednesday', { volume: 'ns.b' }, volumeBytes(b));
    expect(again.bytesUploaded).to.equal(0);
    expect(again.manifest.format).to.equal(3);
    expect(again.manifest.chunks).to.deep.equal((await repo.getManifest('monday', 'ns.b')).chunks);
    const c: VolumeShape = { seed: 1005, size: 150 * 1024, kind: 'random' };
    const fresh = await repo.backupVolume('wednesday', { volume: 'ns.c' }, volumeBytes(c));
    expect(fresh.packs).to.be.above(0);
    const names: string[] = [];
    for await (const chunk of repo.restoredChunks('wednesday', 'ns.c')) names.push(createHash('sha256').update(chunk).digest('hex'));
    expect(names).to.deep.equal(fresh.manifest.chunks.map(([hash]) => hash));
    await repo.finishBackup('wednesday');
    expect((await repo.getIndex('wednesday'))?.format).to.equal(3);
    expect(JSON.parse((await repo.store.get('config.json')).toString())).to.deep.include({ format: 3 });
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    // A format-3 config that names another hash is not a format-3 repository.
    const config = JSON.parse((await repo.store.get('config.json')).toString()) as Record<string, unknown>;
    await repo.store.put('config.json', Buffer.from(JSON.stringify({ ...config, chunkHash: 'blake3' })));
    await expectRejection(BackupRepository.open(repo.store), /format 3, whose chunks are SHA-256, but names chunkHash blake3/);
  });

  it('upgrades a format-3 repository keeping SHA-256 chunk names and gear cut points: a new backup of the same data stores nothing', async () => {
    const repo = await (await openFilesystemRepository(await golden('repository-v3'))).upgradeFormat();
    expect(repo.config).to.include({ format: 5, chunkHash: 'sha256' });
    expect(repo.config.chunking.rollingHash).to.equal('gear');
    const again = await repo.backupVolume('wednesday', { volume: 'ns.b' }, volumeBytes(b));
    expect(again.bytesUploaded).to.equal(0);
    expect(again.manifest.chunks).to.deep.equal((await repo.getManifest('monday', 'ns.b')).chunks);
    expect(await sha256Of(repo.restoreStream('wednesday', 'ns.b'))).to.deep.equal(shaB);
  });

  it('takes new backups into a format-4 repository as it is, cutting with gear: the same data stores nothing', async () => {
    const repo = await openFilesystemRepository(await golden('repository-v4'));
    expect(repo.config.chunking.rollingHash).to.equal(undefined);
    const again = await repo.backupVolume('wednesday', { volume: 'ns.b' }, volumeBytes(b));
    expect(again.bytesUploaded).to.equal(0);
    expect(again.manifest.format).to.equal(4);
    expect(again.manifest.chunks).to.deep.equal((await repo.getManifest('monday', 'ns.b')).chunks);
    expect(JSON.parse((await repo.store.get('config.json')).toString())).to.deep.include({ format: 4 });
    // Upgraded, it names gear, and still deduplicates.
    const upgraded = await repo.upgradeFormat();
    expect(upgraded.config).to.deep.include({ format: 5, chunkHash: 'blake3', chunking: { ...smallChunks, rollingHash: 'gear' } });
    expect((await upgraded.backupVolume('thursday', { volume: 'ns.b' }, volumeBytes(b))).bytesUploaded).to.equal(0);
    expect((await verifyRepository(upgraded)).problems).to.deep.equal([]);
  });

  it('takes new backups into a format-5 repository cutting with gear-mul: the same data stores nothing', async () => {
    const repo = await openFilesystemRepository(await golden('repository-v5'));
    expect(repo.config.chunking.rollingHash).to.equal('gear-mul');
    const again = await repo.backupVolume('wednesday', { volume: 'ns.b' }, volumeBytes(b));
    expect(again.bytesUploaded).to.equal(0);
    expect(again.manifest.format).to.equal(5);
    expect(again.manifest.chunks).to.deep.equal((await repo.getManifest('monday', 'ns.b')).chunks);
  });

  it('refuses a config whose rolling hash is missing, unknown, or not its format\'s, naming it; nor creates a repository with one it does not know', async () => {
    const dir = await golden('repository-v5');
    const store = new FilesystemBlobStore(dir);
    const config = JSON.parse((await store.get('config.json')).toString()) as RepositoryConfig;
    const withRolling = (format: number, rollingHash: string | undefined) =>
      store.put('config.json', Buffer.from(JSON.stringify({ ...config, format, chunking: { ...config.chunking, rollingHash } })));
    await withRolling(5, undefined);
    await expectRejection(BackupRepository.open(store), /format 5 but its chunking names no rollingHash/);
    await withRolling(5, 'rabin');
    await expectRejection(BackupRepository.open(store), /names rolling hash "rabin", which this Trellis does not know \(it knows gear, gear-mul\)/);
    await withRolling(4, 'gear-mul');
    await expectRejection(BackupRepository.open(store), /format 4, which cuts with the gear hash, but names rollingHash gear-mul/);
    await withRolling(5, 'gear-mul');
    expect(await sha256Of((await BackupRepository.open(store)).restoreStream('monday', 'ns.b'))).to.deep.equal(shaB);

    const empty = await tempDir();
    const error = await BackupRepository.create(new FilesystemBlobStore(empty), { chunking: { ...smallChunks, rollingHash: 'rabin' as RollingHashName } }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error?.message).to.match(/rollingHash "rabin" is not one of gear, gear-mul/);
    expect(await readdir(empty)).to.deep.equal([]);
  });

  it('keeps the chunk-list checksum of the format: a golden manifest still hashes to what it says', async () => {
    const repo = await openFilesystemRepository(await golden('repository-v3'));
    const m = await repo.getManifest('monday', 'ns.b');
    expect(m.chunksSha256).to.equal('a0c2c9c246c6c2a293343ddcf0c3419cfe74edc5f7b76cfaffd5f60e34334e9b');
    expect(chunkListSha256(m.chunks)).to.equal(m.chunksSha256);
  });

  it('the data generator still makes the golden volumes', async () => {
    expect(await sha256Of(volumeBytes(a))).to.deep.equal(shaA);
    expect(await sha256Of(volumeBytes(b))).to.deep.equal(shaB);
  });

  it('restores, verifies and garbage-collects a format-1 repository written before packs', async () => {
    const repo = await openFilesystemRepository(await golden('repository-v1'));
    expect(repo.config.format).to.equal(1);
    expect((await repo.listBackups()).map((x) => [x.job, x.complete])).to.deep.equal([
      ['monday', true],
      ['tuesday', false],
    ]);
    expect(await sha256Of(repo.restoreStream('monday', 'ns.a'))).to.deep.equal(shaA);
    expect(await sha256Of(repo.restoreStream('monday', 'ns.b'))).to.deep.equal(shaB);
    expect(await sha256Of(repo.restoreStream('tuesday', 'ns.a'))).to.deep.equal(shaA);
    const v = await verifyRepository(repo);
    expect(v.problems).to.deep.equal([]);
    expect(v.manifests).to.equal(3);

    // The deleted backup's chunks are garbage; nothing else is.
    const stats = await repositoryStats(repo);
    expect(stats.unreferencedChunks).to.be.above(0);
    const g = await collectGarbage(repo);
    expect(g.chunksDeleted).to.equal(stats.unreferencedChunks);
    expect((await collectGarbage(repo)).chunksDeleted).to.equal(0);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    expect(await sha256Of(repo.restoreStream('monday', 'ns.b'))).to.deep.equal(shaB);
  });

  it('takes no new backup into a format-1 repository until it is upgraded, then packs beside the old chunks', async () => {
    const dir = await golden('repository-v1');
    const old = await openFilesystemRepository(dir);
    let error: (Error & { terminal?: boolean }) | undefined;
    await old.backupVolume('wednesday', { volume: 'ns.a' }, volumeBytes(a)).catch((err: Error) => (error = err));
    expect(error).to.be.instanceOf(RepositoryFormatError);
    expect(error?.terminal).to.equal(true);
    expect(error?.message).to.match(/upgrade/);

    const repo = await old.upgradeFormat();
    expect(repo.config.format).to.equal(repositoryFormat);
    // The same data deduplicates against the format-1 chunks; new data goes into packs.
    expect((await repo.backupVolume('wednesday', { volume: 'ns.a' }, volumeBytes(a))).bytesUploaded).to.equal(0);
    const c: VolumeShape = { seed: 1004, size: 200 * 1024, kind: 'random' };
    const fresh = await repo.backupVolume('wednesday', { volume: 'ns.c' }, volumeBytes(c));
    expect(fresh.packs).to.be.above(0);
    expect(await sha256Of(repo.restoreStream('wednesday', 'ns.c'))).to.deep.equal(await sha256Of(volumeBytes(c)));
    expect(await sha256Of(repo.restoreStream('monday', 'ns.a'))).to.deep.equal(shaA);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
  });

  it('releases the whole-volume hash of a format-2 backup when its read is abandoned', async () => {
    const repo = await BackupRepository.open(new FilesystemBlobStore(await golden('repository-v2')));
    const before = volumeHashesInProgress();
    for await (const _piece of repo.restoreStream('monday', 'ns.b')) {
      expect(volumeHashesInProgress()).to.equal(before + 1);
      break;
    }
    // The worker answers in order: once a later hash is digested, earlier ones are done.
    // Released once the read in flight when the stream was destroyed has settled: within a
    // second, not when the process exits. The worker answers in order: once a later hash is
    // digested, earlier ones are done.
    for (let waited = 0; volumeHashesInProgress() > 0 && waited < 1000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    await startVolumeHash().digest();
    expect(volumeHashesInProgress()).to.equal(0);
  });

  for (const format of [2, 3, 4, 5]) {
    it(`restores, verifies and garbage-collects a format-${format} repository, packs and all`, async () => {
      const repo = await openFilesystemRepository(await golden(`repository-v${format}`));
      expect(repo.config.format).to.equal(format);
      expect(await sha256Of(repo.restoreStream('monday', 'ns.a'))).to.deep.equal(shaA);
      expect(await sha256Of(repo.restoreStream('monday', 'ns.b'))).to.deep.equal(shaB);
      expect(await sha256Of(repo.restoreStream('tuesday', 'ns.a'))).to.deep.equal(shaA);
      expect((await repo.getManifest('tuesday', 'ns.a')).parent).to.equal('monday');
      const v = await verifyRepository(repo);
      expect(v.problems).to.deep.equal([]);
      expect(v.manifests).to.equal(3);
      const stats = await repositoryStats(repo);
      expect(stats.packs).to.be.above(1);
      expect(stats.unreferencedChunks).to.be.above(0);
      const g = await collectGarbage(repo);
      expect(g.chunksDeleted).to.equal(stats.unreferencedChunks);
      expect((await verifyRepository(repo)).problems).to.deep.equal([]);
      expect(await sha256Of(repo.restoreStream('monday', 'ns.b'))).to.deep.equal(shaB);
    });
  }

  it('takes no new backup into a format-2 repository until it is upgraded, then writes format-5 manifests beside the old ones, still naming chunks by SHA-256', async () => {
    const old = await openFilesystemRepository(await golden('repository-v2'));
    let error: Error | undefined;
    await old.backupVolume('wednesday', { volume: 'ns.a' }, volumeBytes(a)).catch((err: Error) => (error = err));
    expect(error).to.be.instanceOf(RepositoryFormatError);
    expect(error?.message).to.match(/format 2.*upgrade/);

    const repo = await old.upgradeFormat();
    expect(repo.config.format).to.equal(5);
    // SHA-256 names the old chunks, so it names the new ones: the same data deduplicates.
    expect(JSON.parse((await repo.store.get('config.json')).toString())).to.include({ format: 5, chunkHash: 'sha256' });
    const again = await repo.backupVolume('wednesday', { volume: 'ns.a' }, volumeBytes(a));
    expect(again.bytesUploaded).to.equal(0);
    expect(again.manifest.chunksSha256).to.be.a('string');
    expect((await repo.getManifest('monday', 'ns.a')).sha256).to.equal(shaA.sha256);
    expect(await sha256Of(repo.restoreStream('wednesday', 'ns.a'))).to.deep.equal(shaA);
    expect(await sha256Of(repo.restoreStream('monday', 'ns.a'))).to.deep.equal(shaA);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
  });

});
