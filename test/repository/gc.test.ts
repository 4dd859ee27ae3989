import { expect } from 'chai';
import {
  BackupRepository,
  collectGarbage,
  FilesystemBlobStore,
  LostLeaseError,
  repositoryStats,
  verifyRepository,
} from '../../src/repository/index.js';
import { FakeClock } from '../../src/core/testing.js';
import { keys } from '../../src/repository/format.js';
import { sha256Of, volumeBytes, type VolumeShape } from './data.js';
import { backUp, expected, removeTempDirs, smallChunks, smallPacks, storedChunk, tempDir, tempRepository } from './helpers.js';

const shared: VolumeShape = { seed: 1, size: 2 * 1024 * 1024, kind: 'random' };
const onlyOld: VolumeShape = { seed: 2, size: 1024 * 1024, kind: 'random' };

/** Chunks stored, every copy counted (read from the pack indexes, not the manifests). */
async function chunkCount(repo: BackupRepository): Promise<number> {
  const index = await repo.chunkIndex(true);
  return [...index.packIndexes()].reduce((n, r) => n + r.entries.length, 0) + [...index.looseChunks()].length;
}

/** A store that runs `hook` once, just before GC moves its first victim to the trash. */
class RacingStore extends FilesystemBlobStore {
  hook?: () => Promise<unknown>;
  override async move(from: string, to: string): Promise<boolean> {
    const hook = this.hook;
    this.hook = undefined;
    if (hook && to.startsWith('trash/')) await hook();
    return super.move(from, to);
  }
}

/** A volume that stops before each of `stops` (byte offsets) until its release is called. */
function gatedAt(shape: VolumeShape, stops: number[]) {
  const gates = stops.map(() => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  });
  async function* bytes() {
    let sent = 0;
    for await (const piece of volumeBytes(shape, 1)) {
      for (const [i, stop] of stops.entries()) if (sent >= stop) await gates[i]!.promise;
      sent += piece.length;
      yield piece;
    }
  }
  return { bytes: bytes(), releases: gates.map((g) => () => g.resolve()) };
}

/** A volume that stops after `first` bytes until `release` is called. */
function gated(shape: VolumeShape, first: number) {
  const { bytes, releases } = gatedAt(shape, [first]);
  return { bytes, release: releases[0]! };
}

/** Resolves once the upload reports `n` chunks done. */
function afterChunks(n: number) {
  let reached!: () => void;
  const done = new Promise<void>((resolve) => (reached = resolve));
  return { done, onProgress: (p: { chunksDone: number }) => p.chunksDone >= n && reached() };
}

describe('repository retention and garbage collection', function () {
  this.timeout(30_000);
  after(removeTempDirs);

  it('removes the chunks only a deleted backup referenced and keeps shared ones', async () => {
    const repo = await tempRepository();
    const keep = await backUp(repo, 'keep', 'ns.a', shared);
    await backUp(repo, 'old', 'ns.a', shared);
    const old = await backUp(repo, 'old', 'ns.b', onlyOld);
    const before = await chunkCount(repo);
    expect(await repo.deleteBackup('old')).to.equal(2);
    expect((await repo.listBackups()).map((b) => b.job)).to.deep.equal(['keep']);

    const dry = await collectGarbage(repo, { dryRun: true });
    expect(dry.chunksDeleted).to.equal(old.manifest.chunks.length);
    expect(await chunkCount(repo)).to.equal(before);

    const g = await collectGarbage(repo);
    expect(g.chunksDeleted).to.equal(old.manifest.chunks.length);
    expect(await chunkCount(repo)).to.equal(before - old.manifest.chunks.length);
    expect(g.chunksReferenced).to.equal(new Set(keep.manifest.chunks.map(([h]) => h)).size);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    expect(await sha256Of(repo.restoreStream('keep', 'ns.a'))).to.deep.equal(await expected(shared));
    expect((await collectGarbage(repo)).chunksDeleted).to.equal(0);
  });

  it('never collects the chunks of a backup that is being written, new or deduplicated against garbage', async () => {
    const repo = await tempRepository();
    // Yesterday's backup of half of today's data is deleted: its chunks are garbage that
    // today's upload will find present and rely on.
    const today: VolumeShape = { seed: 3, size: 4 * 1024 * 1024, kind: 'random' };
    const yesterday: VolumeShape = { ...today, size: 2 * 1024 * 1024 };
    const old = await backUp(repo, 'yesterday', 'ns.a', yesterday);
    await repo.deleteBackup('yesterday');

    const source = gated(today, 3 * 1024 * 1024);
    const progress = afterChunks(100);
    const upload = repo.backupVolume('today', { volume: 'ns.a' }, source.bytes, { onProgress: progress.onProgress });
    await progress.done;
    const g = await collectGarbage(repo);
    source.release();
    const result = await upload;

    expect(result.bytesDeduplicated).to.be.above(1024 * 1024);
    // Only yesterday's chunks today's data does not contain (its cut-off tail) may go, and
    // only if a whole pack of them can.
    const todays = new Set(result.manifest.chunks.map(([h]) => h));
    expect(g.chunksDeleted).to.be.at.most(old.manifest.chunks.filter(([h]) => !todays.has(h)).length);
    expect(g.chunksDeleted).to.be.at.most(2);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    expect(await sha256Of(repo.restoreStream('today', 'ns.a'))).to.deep.equal(await expected(today));
  });

  it('puts back chunks an upload relied on between its first look and its deletions', async () => {
    // A store that lets a whole backup of the same data run just before GC moves its
    // first victim: that backup deduplicates against every victim and finishes, so only
    // GC's second look (leases, then manifests) can save its chunks.
    const dir = await tempDir();
    const store = new RacingStore(dir);
    const repo = await BackupRepository.create(store, { chunking: smallChunks, packing: smallPacks });
    await backUp(repo, 'old', 'ns.a', shared);
    await repo.deleteBackup('old');
    let racer: Awaited<ReturnType<typeof backUp>> | undefined;
    store.hook = async () => (racer = await backUp(repo, 'new', 'ns.a', shared));

    const g = await collectGarbage(repo);
    expect(racer!.bytesUploaded).to.equal(0);
    expect(g.chunksDeleted).to.equal(0);
    expect(g.chunksKeptForUploads).to.equal(g.candidates);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    expect(await sha256Of(repo.restoreStream('new', 'ns.a'))).to.deep.equal(await expected(shared));
  });

  describe('packs some of whose chunks are still referenced', () => {
    // 'old' is 2 MiB in packs of 256 KiB; 'keep' is its first MiB, so after 'old' goes the
    // packs of its first half are live, those of its second half garbage, and the pack
    // around the 1 MiB mark partly both.
    const firstHalf: VolumeShape = { ...shared, size: 1024 * 1024 };
    async function partlyLive(store?: FilesystemBlobStore) {
      const repo = store ? await BackupRepository.create(store, { chunking: smallChunks, packing: smallPacks }) : await tempRepository();
      await backUp(repo, 'old', 'ns.a', shared);
      await backUp(repo, 'keep', 'ns.a', firstHalf);
      await repo.deleteBackup('old');
      return repo;
    }

    it('keeps a pack with garbage below the repack threshold whole, and frees the packs nothing references', async () => {
      const repo = await partlyLive();
      const g = await collectGarbage(repo, { repackThreshold: 2 }); // never repack
      expect(g.packsDeleted).to.be.above(0);
      expect(g.packsRepacked).to.equal(0);
      // The pack around the 1 MiB mark stays, garbage and all.
      const left = (await repositoryStats(repo)).unreferencedChunks;
      expect(left).to.be.above(0).and.below(smallPacks.maxChunks);
      expect((await verifyRepository(repo)).problems).to.deep.equal([]);
      expect(await sha256Of(repo.restoreStream('keep', 'ns.a'))).to.deep.equal(await expected(firstHalf));
      expect((await collectGarbage(repo, { repackThreshold: 2 })).chunksDeleted).to.equal(0);
    });

    it('repacks the live chunks of a pack past the repack threshold, and then frees it whole', async () => {
      const repo = await partlyLive();
      const g = await collectGarbage(repo, { repackThreshold: 0 });
      expect(g.packsRepacked).to.be.above(0);
      expect(g.chunksRepacked).to.be.above(0);
      const stats = await repositoryStats(repo);
      expect(stats.unreferencedChunks).to.equal(0);
      expect(stats.chunks).to.equal(stats.referencedChunks);
      expect((await verifyRepository(repo)).problems).to.deep.equal([]);
      expect(await sha256Of(repo.restoreStream('keep', 'ns.a'))).to.deep.equal(await expected(firstHalf));
      const again = await collectGarbage(repo, { repackThreshold: 0 });
      expect([again.chunksDeleted, again.packsRepacked]).to.deep.equal([0, 0]);
    });

    it('puts back a repacked pack whose garbage a concurrent upload came to rely on', async () => {
      const store = new RacingStore(await tempDir());
      const repo = await partlyLive(store);
      // Just before GC moves its first victim, all of 'old' is backed up again: it finds
      // every chunk stored (garbage ones too) and relies on them.
      let racer: Awaited<ReturnType<typeof backUp>> | undefined;
      store.hook = async () => (racer = await backUp(repo, 'again', 'ns.a', shared));
      const g = await collectGarbage(repo, { repackThreshold: 0 });
      expect(racer!.bytesUploaded).to.equal(0);
      expect(g.packsRepacked).to.be.above(0);
      expect(g.chunksDeleted).to.equal(0);
      expect((await verifyRepository(repo)).problems).to.deep.equal([]);
      expect(await sha256Of(repo.restoreStream('again', 'ns.a'))).to.deep.equal(await expected(shared));
      expect(await sha256Of(repo.restoreStream('keep', 'ns.a'))).to.deep.equal(await expected(firstHalf));
    });
  });

  it('fails an upload whose backup is deleted under it, leaving no manifest behind', async () => {
    const repo = await tempRepository();
    const source = gated(shared, 1024 * 1024);
    const progress = afterChunks(10);
    const upload = repo.backupVolume('doomed', { volume: 'ns.a' }, source.bytes, { onProgress: progress.onProgress });
    await progress.done;
    await repo.deleteBackup('doomed');
    source.release();
    let failure: Error | undefined;
    await upload.catch((err: Error) => (failure = err));
    expect(failure).to.be.instanceOf(LostLeaseError);
    expect(await repo.listVolumes('doomed')).to.deep.equal([]);
    // Intents it wrote after the deletion went with it: nothing holds chunks back.
    expect(await repo.listUploads()).to.deep.equal([]);
  });

  it("keeps an upload's lease when one of its intents cannot be removed, naming that intent, and cleans up on the next call", async () => {
    class StuckIntent extends FilesystemBlobStore {
      override async delete(key: string): Promise<boolean> {
        if (key.endsWith('/intent-000001-000000002.json')) throw Object.assign(new Error('EIO: i/o error, unlink'), { code: 'EIO' });
        return super.delete(key);
      }
    }
    const dir = await tempDir();
    const repo = await BackupRepository.create(new StuckIntent(dir), { chunking: smallChunks, packing: smallPacks });
    let error: Error | undefined;
    await repo.backupVolume('job', { volume: 'ns.v' }, volumeBytes(shared)).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/1 of \d+ upload records failed: uploads\/job\/ns\.v\/intent-000001-000000002\.json: EIO/);
    // The lease outlives its intents, so the upload is still seen as one.
    expect((await repo.listUploads()).map((u) => [u.job, u.volume, u.lease?.attempt])).to.deep.equal([['job', 'ns.v', 1]]);
    const plain = await BackupRepository.open(new FilesystemBlobStore(dir));
    expect((await plain.backupVolume('job', { volume: 'ns.v' }, volumeBytes(shared))).alreadyComplete).to.equal(true);
    expect(await plain.listUploads()).to.deep.equal([]);
  });

  it('refuses to collect anything while a manifest cannot be read', async () => {
    const repo = await tempRepository();
    await backUp(repo, 'keep', 'ns.a', shared);
    await backUp(repo, 'old', 'ns.b', onlyOld);
    await repo.deleteBackup('old');
    const before = await chunkCount(repo);
    await repo.store.put(keys.manifest('keep', 'ns.a'), Buffer.from('{"torn'));
    let error: Error | undefined;
    await collectGarbage(repo).catch((e: Error) => (error = e));
    expect(error?.message).to.include('backups/keep/volumes/ns.a.json');
    expect(await chunkCount(repo)).to.equal(before);
    expect((await verifyRepository(repo)).problems.map((p) => p.problem)).to.deep.equal(['manifest']);
  });

  it('puts back what a killed GC run left in the trash', async () => {
    const repo = await tempRepository();
    const { manifest } = await backUp(repo, 'keep', 'ns.a', shared);
    const [hash] = manifest.chunks[0]!;
    // A run killed after it moved one pack's index and the pack itself.
    const { key } = await storedChunk(repo, hash);
    const index = key.replace(/^packs\/(..)\/(.*)$/, 'index/$1/$2.json');
    await repo.store.move(index, keys.trashed('killed-run', index));
    await repo.store.move(key, keys.trashed('killed-run', key));
    expect((await verifyRepository(repo)).problems.length).to.be.above(0);
    const g = await collectGarbage(repo);
    expect(g.trashRecovered).to.equal(1);
    expect(g.chunksDeleted).to.equal(0);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
  });

  it('expires a backup once its ttl has passed, and then GC frees its chunks', async () => {
    let now = new Date('2026-01-01T00:00:00Z');
    const repo = await BackupRepository.open((await tempRepository()).store, { now: () => now });
    await repo.beginBackup('nightly', { ttlSeconds: 3600 });
    await backUp(repo, 'nightly', 'ns.a', onlyOld);
    const index = await repo.finishBackup('nightly');
    expect(index.expiresAt).to.equal('2026-01-01T01:00:00.000Z');
    expect(index.volumes.map((v) => v.volume)).to.deep.equal(['ns.a']);
    now = new Date('2026-01-01T00:59:59Z');
    expect(await repo.expireBackups()).to.deep.equal([]);
    now = new Date('2026-01-01T01:00:00Z');
    expect(await repo.expireBackups()).to.deep.equal(['nightly']);
    expect(await repo.listBackups()).to.deep.equal([]);
    await collectGarbage(repo);
    expect(await chunkCount(repo)).to.equal(0);
  });

  it('keeps protecting an upload that outlives its lease ttl by renewing the lease', async () => {
    // One fake clock drives the upload's timers and the wall-clock times in records.
    const clock = new FakeClock();
    const start = Date.parse('2026-01-01T00:00:00Z');
    const now = () => new Date(start + clock.now());
    const repo = await BackupRepository.open((await tempRepository()).store, { clock, now, leaseTtlMs: 60_000, leaseRenewMs: 30_000 });
    const mib = 1024 * 1024;
    const source = gatedAt(shared, [mib / 2, (3 * mib) / 2]);
    const firstPart = afterChunks(10);
    const upload = repo.backupVolume('job', { volume: 'ns.a' }, source.bytes, { onProgress: firstPart.onProgress });
    await firstPart.done;
    const taken = (await repo.listUploads())[0]!.lease!.renewedAt;
    // The source stalls for 40 s: the renewal timer (every 30 s) renews the lease.
    await clock.advanceAndSettle(40_000);
    while ((await repo.listUploads())[0]?.lease?.renewedAt === taken) await new Promise((r) => setImmediate(r));
    source.releases[0]!();
    await clock.advanceAndSettle(40_000); // 80 s after the start, at most 50 s after a renewal
    const g = await collectGarbage(repo);
    expect(g.expiredUploadsRemoved).to.equal(0);
    expect(g.chunksDeleted).to.equal(0);
    source.releases[1]!();
    await upload;
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
  });

  it('stops protecting the chunks of an upload whose lease was not renewed within its ttl', async () => {
    let now = new Date('2026-01-01T00:00:00Z');
    const repo = await BackupRepository.open((await tempRepository()).store, { now: () => now, leaseTtlMs: 60_000 });
    const source = gated(shared, 1024 * 1024);
    const progress = afterChunks(20);
    const abandoned = repo.backupVolume('job', { volume: 'ns.a' }, source.bytes, { onProgress: progress.onProgress });
    await progress.done;
    now = new Date('2026-01-01T00:00:30Z');
    expect((await collectGarbage(repo)).chunksDeleted).to.equal(0);
    expect((await repo.listUploads()).map((u) => u.active)).to.deep.equal([true]);
    now = new Date('2026-01-01T00:01:01Z');
    const g = await collectGarbage(repo);
    expect(g.expiredUploadsRemoved).to.equal(1);
    expect(g.chunksDeleted).to.be.at.least(20);
    expect(await repo.listUploads()).to.deep.equal([]);
    source.release();
    let failure: Error | undefined;
    await abandoned.catch((err: Error) => (failure = err));
    expect(failure?.message).to.match(/lost its lease/);
    expect(await repo.listVolumes('job')).to.deep.equal([]);
  });

  /** A store that runs `hook` once, just before the manifest of `job`/`volume` is written. */
  async function pausingBeforeManifest(job: string, volume: string, now: () => Date) {
    class PausingStore extends FilesystemBlobStore {
      hook?: () => Promise<unknown>;
      override async putIfAbsent(key: string, data: Buffer): Promise<boolean> {
        const hook = this.hook;
        if (hook && key === keys.manifest(job, volume)) {
          this.hook = undefined;
          await hook();
        }
        return super.putIfAbsent(key, data);
      }
    }
    const store = new PausingStore(await tempDir());
    const repo = await BackupRepository.create(store, { chunking: smallChunks, packing: smallPacks }, { now, leaseTtlMs: 60_000 });
    return { store, repo };
  }

  it('withdraws the manifest of an upload that paused past its lease ttl while GC freed its chunks', async () => {
    let now = new Date('2026-01-01T00:00:00Z');
    const { store, repo } = await pausingBeforeManifest('today', 'ns.a', () => now);
    // The upload has passed its last lease check; it stalls for two minutes (its ttl is
    // one) just before its manifest lands, and a GC expires it and frees its chunks.
    store.hook = async () => {
      now = new Date('2026-01-01T00:02:00Z');
      const g = await collectGarbage(repo);
      expect(g.expiredUploadsRemoved).to.equal(1);
      expect(g.chunksDeleted).to.be.above(0);
    };
    let failure: Error | undefined;
    await backUp(repo, 'today', 'ns.a', onlyOld).catch((err: Error) => (failure = err));
    expect(failure).to.be.instanceOf(LostLeaseError);
    expect(failure?.message).to.match(/manifest was withdrawn/);
    expect(await repo.listVolumes('today')).to.deep.equal([]);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
    expect(await repo.listUploads()).to.deep.equal([]);
    // A retry stores what went missing.
    const retry = await backUp(repo, 'today', 'ns.a', onlyOld);
    expect(retry.bytesUploaded).to.equal(onlyOld.size);
    expect(await sha256Of(repo.restoreStream('today', 'ns.a'))).to.deep.equal(await expected(onlyOld));
  });

  it('keeps the manifest of an upload that lost its lease while writing it when no chunk went', async () => {
    let now = new Date('2026-01-01T00:00:00Z');
    const { store, repo } = await pausingBeforeManifest('today', 'ns.a', () => now);
    store.hook = async () => {
      now = new Date('2026-01-01T00:02:00Z');
      await repo.removeUpload('today', 'ns.a');
    };
    const result = await backUp(repo, 'today', 'ns.a', onlyOld);
    expect(await repo.listVolumes('today')).to.deep.equal(['ns.a']);
    expect(result.alreadyComplete).to.equal(false);
    expect(await sha256Of(repo.restoreStream('today', 'ns.a'))).to.deep.equal(await expected(onlyOld));
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
  });

  it('withdraws the manifest of an upload whose backup was deleted between its last lease check and its manifest', async () => {
    const now = () => new Date('2026-01-01T00:00:00Z');
    const { store, repo } = await pausingBeforeManifest('doomed', 'ns.a', now);
    store.hook = () => repo.deleteBackup('doomed');
    let failure: Error | undefined;
    await backUp(repo, 'doomed', 'ns.a', onlyOld).catch((err: Error) => (failure = err));
    expect(failure).to.be.instanceOf(LostLeaseError);
    expect(failure?.message).to.match(/backup doomed was deleted meanwhile/);
    // Nothing is left of the deleted backup to hold its chunks back from GC.
    expect(await repo.listBackups()).to.deep.equal([]);
    expect(await repo.listUploads()).to.deep.equal([]);
    await collectGarbage(repo);
    expect(await chunkCount(repo)).to.equal(0);
  });

  it('never lets two uploads started at once for one volume share an attempt (and so overwrite each other\'s intents)', async () => {
    // Both read "no lease" before either writes one. Were they both attempt 1, their
    // intent records would share keys, each overwriting the other's, and GC would miss
    // chunks one of them relies on.
    const repo = await tempRepository();
    await backUp(repo, 'old', 'ns.a', shared);
    await repo.deleteBackup('old');
    const other: VolumeShape = { seed: 77, size: shared.size, kind: 'random' };
    const a = gated(shared, 1024 * 1024);
    const b = gated(other, 1024 * 1024);
    const aProgress = afterChunks(20);
    const bProgress = afterChunks(20);
    const uploads = [
      repo.backupVolume('job', { volume: 'ns.a' }, a.bytes, { onProgress: aProgress.onProgress }),
      repo.backupVolume('job', { volume: 'ns.a' }, b.bytes, { onProgress: bProgress.onProgress }),
    ];
    await Promise.all([aProgress.done, bProgress.done]);
    await collectGarbage(repo);
    a.release();
    b.release();
    const settled = await Promise.allSettled(uploads);
    const attempts = settled.map((s) => (s.status === 'fulfilled' ? s.value.attempt : undefined));
    expect(new Set(attempts.filter((n) => n !== undefined)).size, 'distinct attempts').to.equal(attempts.filter((n) => n !== undefined).length);
    // One of them wrote the manifest; the other failed; what the manifest lists is there.
    expect(settled.filter((s) => s.status === 'fulfilled')).to.have.length(1);
    expect((await verifyRepository(repo)).problems).to.deep.equal([]);
  });
});
