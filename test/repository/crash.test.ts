import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { prng } from '../../src/backends/sim/random.js';
import { collectGarbage, openFilesystemRepository, verifyRepository, type UploadResult } from '../../src/repository/index.js';
import { sha256Of, volumeBytes } from './data.js';
import { removeTempDirs, tempDir } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/upload.ts', import.meta.url));
const size = 24 * 1024 * 1024;
// About 24 MiB / 64 KiB average chunks.
const expectedChunks = 384;

/** Runs the upload child; with `killAfter`, SIGKILLs it once that many chunks are durable. */
function runUpload(dir: string, seed: number, killAfter?: number): Promise<{ killed: boolean; result?: Omit<UploadResult, 'manifest'> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir, String(seed), String(size)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, TRELLIS_LOG_LEVEL: 'silent' },
    });
    let buffered = '';
    let result: Omit<UploadResult, 'manifest'> | undefined;
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
        const run = await runUpload(dir, seed, lastKillPoint);
        expect(run.killed, `kill ${k + 1} at chunk ${lastKillPoint}`).to.equal(true);
        // After every kill the repository is consistent: no manifest for the half-done
        // volume, and everything that is referenced verifies.
        const repo = await openFilesystemRepository(dir);
        expect(await repo.listVolumes('crash-job')).to.deep.equal([]);
        expect((await verifyRepository(repo)).problems).to.deep.equal([]);
        // A GC between the kill and the restart must not take the dead upload's chunks.
        expect((await collectGarbage(repo)).chunksDeleted).to.equal(0);
      }

      const { killed, result } = await runUpload(dir, seed);
      expect(killed).to.equal(false);
      expect(result!.attempt).to.equal(kills + 1);
      // Resumed, not restarted: the chunks made durable before the kill were skipped.
      expect(result!.bytesResumed).to.be.above(0);
      expect(result!.bytesUploaded).to.be.below(size);
      expect(result!.bytesUploaded + result!.bytesDeduplicated).to.equal(size);

      const repo = await openFilesystemRepository(dir);
      expect((await verifyRepository(repo)).problems).to.deep.equal([]);
      expect(await repo.listUploads()).to.deep.equal([]);
      const want = await sha256Of(volumeBytes({ seed, size, kind: 'random' }));
      expect(await sha256Of(repo.readVolume('crash-job', 'ns.vol'))).to.deep.equal(want);
      console.log(`      kills ${kills}, last at chunk ${lastKillPoint}: resumed ${result!.bytesResumed} B, re-uploaded ${result!.bytesReuploaded} B, uploaded ${result!.bytesUploaded} of ${size} B`);
    });
  }
});
