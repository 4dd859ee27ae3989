import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { prng } from '../../src/backends/sim/random.js';
import { keys } from '../../src/repository/format.js';
import {
  BackupRepository,
  collectGarbage,
  FilesystemBlobStore,
  openFilesystemRepository,
  verifyRepository,
  type UploadResult,
} from '../../src/repository/index.js';
import { sha256Of, volumeBytes } from './data.js';
import { backUp, removeTempDirs, smallChunks, smallPacks, storedChunk, tempDir } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/upload.ts', import.meta.url));
const size = 24 * 1024 * 1024;
// About 24 MiB / 64 KiB average chunks.
const expectedChunks = 384;

type ChildResult = Omit<UploadResult, 'manifest'> & { storeWrites: number };

/**
 * Runs the upload child. With `killAfter`, SIGKILLs it once that many chunks are durable;
 * with `killAt` (see the fixture), the child kills itself just before that store write.
 */
function runUpload(dir: string, seed: number, kill: { killAfter?: number; killAt?: string } = {}): Promise<{ killed: boolean; result?: ChildResult }> {
  const { killAfter, killAt } = kill;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir, String(seed), String(size), ...(killAt ? [killAt] : [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, TRELLIS_LOG_LEVEL: 'silent' },
    });
    let buffered = '';
    let result: ChildResult | undefined;
    child.stdout.on('data', (data: Buffer) => {
      buffered += data.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith('result ')) result = JSON.parse(line.slice(7));
        else if (killAfter !== undefined && Number(line.split(' ')[1]) >= killAfter) child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve({ killed: true });
      else if (code === 0) resolve({ killed: false, result });
      else reject(new Error(`upload child exited with ${code}`));
    });
  });
}

/**
 * What must hold after any crash: the volume has no manifest, or one that reads back
 * whole; everything referenced verifies; GC takes none of the dead upload's chunks.
 */
async function expectConsistentAfterCrash(dir: string, seed: number, what: string): Promise<void> {
  const repo = await openFilesystemRepository(dir);
  const volumes = await repo.listVolumes('crash-job');
  expect([[], ['ns.vol']], what).to.deep.include(volumes);
  if (volumes.length > 0) {
    expect(await sha256Of(repo.restoreStream('crash-job', 'ns.vol')), what).to.deep.equal(await sha256Of(volumeBytes({ seed, size, kind: 'random' })));
  }
  expect((await verifyRepository(repo)).problems, what).to.deep.equal([]);
  expect((await collectGarbage(repo)).chunksDeleted, what).to.equal(0);
}

/** The restarted upload finishes, leaves no upload state behind, and reads back whole. */
async function expectCompletes(dir: string, seed: number, what: string): Promise<ChildResult> {
  const { killed, result } = await runUpload(dir, seed);
  expect(killed, what).to.equal(false);
  const repo = await openFilesystemRepository(dir);
  expect((await verifyRepository(repo)).problems, what).to.deep.equal([]);
  expect(await repo.listUploads(), what).to.deep.equal([]);
  expect(await sha256Of(repo.restoreStream('crash-job', 'ns.vol')), what).to.deep.equal(await sha256Of(volumeBytes({ seed, size, kind: 'random' })));
  return result!;
}

describe('repository crash safety', function () {
  this.timeout(60_000);
  after(removeTempDirs);

  for (const seed of [101, 202, 303]) {
    it(`resumes an upload SIGKILLed at seeded random points (seed ${seed}) and verifies clean`, async () => {
      const dir = await tempDir();
      // Seeded kill points, so a failure can be replayed.
      const random = prng(seed);
      const kills = 1 + Math.floor(random() * 2);
      let lastKillPoint = 0;
      for (let k = 0; k < kills; k++) {
        lastKillPoint = Math.max(lastKillPoint + 10, Math.floor(random() * expectedChunks * 0.8));
        const run = await runUpload(dir, seed, { killAfter: lastKillPoint });
        expect(run.killed, `kill ${k + 1} at chunk ${lastKillPoint}`).to.equal(true);
        // After every kill the repository is consistent: no manifest for the half-done
        // volume, and everything that is referenced verifies.
        const repo = await openFilesystemRepository(dir);
        expect(await repo.listVolumes('crash-job')).to.deep.equal([]);
        await expectConsistentAfterCrash(dir, seed, `kill ${k + 1} at chunk ${lastKillPoint}`);
      }

      const result = await expectCompletes(dir, seed, 'restart');
      expect(result.attempt).to.equal(kills + 1);
      // Resumed, not restarted: the chunks made durable before the kill were skipped.
      expect(result.bytesResumed).to.be.above(0);
      expect(result.bytesUploaded).to.be.below(size);
      expect(result.bytesUploaded + result.bytesDeduplicated).to.equal(size);
      console.log(`      kills ${kills}, last at chunk ${lastKillPoint}: resumed ${result.bytesResumed} B, re-uploaded ${result.bytesReuploaded} B, uploaded ${result.bytesUploaded} of ${size} B`);
    });
  }

  // Crash points named after the protocol step they interrupt (the child kills itself
  // just before that write, so the point is exact, not a race with a signal).
  const steps: [string, string][] = [
    ['taking the first lease', 'write:^put uploads/crash-job/ns.vol/lease.json'],
    ['declaring the first intent', 'write:^put uploads/crash-job/ns.vol/intent-'],
    ['writing the first pack', 'write:^putIfAbsent packs/'],
    ['writing the first pack index (its pack is durable)', 'write:^putIfAbsent index/'],
    ['writing the manifest', 'write:^putIfAbsent backups/crash-job/volumes/ns.vol.json'],
    ['cleaning up after the manifest', 'write:^delete uploads/crash-job/ns.vol/intent-'],
    ['removing the lease after the manifest', 'write:^delete uploads/crash-job/ns.vol/lease.json'],
  ];
  for (const [step, killAt] of steps) {
    it(`recovers from a SIGKILL just before ${step}`, async () => {
      const dir = await tempDir();
      expect((await runUpload(dir, 404, { killAt })).killed).to.equal(true);
      await expectConsistentAfterCrash(dir, 404, step);
      await expectCompletes(dir, 404, step);
    });
  }

  it('recovers from SIGKILLs before seeded random store writes, including the last ones', async () => {
    // A whole upload's writes, counted once, bound the seeded kill points.
    const total = (await expectCompletes(await tempDir(), 505, 'calibration')).storeWrites;
    const random = prng(505);
    for (let round = 0; round < 4; round++) {
      const dir = await tempDir();
      const kills = 1 + Math.floor(random() * 3);
      // The last round aims at the final writes (manifest and cleanup).
      const points = Array.from({ length: kills }, () => (round === 3 ? total - Math.floor(random() * 8) : 1 + Math.floor(random() * total)));
      for (const op of points) {
        const what = `round ${round}: kill before store write ${op} of ${total}`;
        const run = await runUpload(dir, 505, { killAt: `op:${op}` });
        // A restart that already finished (a manifest is there) writes less: it may complete.
        if (!run.killed) break;
        await expectConsistentAfterCrash(dir, 505, what);
      }
      await expectCompletes(dir, 505, `round ${round}: restart after kills at ${points.join(', ')}`);
    }
  });

  it('makes the chunks it deduplicated against durable before writing its manifest', async () => {
    // A chunk found present may be another writer's that is linked but whose folder is
    // not yet fsynced (or never will be: that writer was killed). A power loss could then
    // take the chunk and keep this upload's manifest, unless the upload syncs it first.
    const events: string[] = [];
    class RecordingStore extends FilesystemBlobStore {
      override async syncBlobs(found: Iterable<string>): Promise<void> {
        for (const key of found) events.push(`sync ${key}`);
        return super.syncBlobs(found);
      }
      override async putIfAbsent(key: string, data: Buffer): Promise<boolean> {
        if (key.startsWith('backups/') && key.includes('/volumes/')) events.push(`manifest ${key}`);
        return super.putIfAbsent(key, data);
      }
    }
    const repo = await BackupRepository.create(new RecordingStore(await tempDir()), { chunking: smallChunks, packing: smallPacks });
    const shape = { seed: 9, size: 1024 * 1024, kind: 'random' as const };
    await backUp(repo, 'first', 'ns.a', shape);
    events.length = 0;
    const second = await backUp(repo, 'second', 'ns.a', shape);
    expect(second.bytesUploaded).to.equal(0);
    const manifestAt = events.indexOf(`manifest ${keys.manifest('second', 'ns.a')}`);
    expect(manifestAt).to.be.above(-1);
    const synced = new Set(events.slice(0, manifestAt).filter((e) => e.startsWith('sync ')).map((e) => e.slice(5)));
    // Both blobs a packed chunk depends on: its pack and the pack's index.
    for (const [hash] of second.manifest.chunks) {
      const { key } = await storedChunk(repo, hash);
      expect(synced, hash).to.include(key);
      expect(synced, hash).to.include(key.replace(/^packs\/(..)\/(.*)$/, 'index/$1/$2.json'));
    }
  });
});
