import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { removeTempDirs, tempDir } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/sparse-backup.ts', import.meta.url));

/** The bound this test holds the repository to: peak RSS of the whole process (runtime, tsx, workers included). */
const rssBound = 256 * 1024 * 1024;

function backUpSparse(dir: string, size: number): Promise<{ maxRssBefore: number; maxRssAfter: number; seconds: number; size: number; bytesRead: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir, String(size)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, TRELLIS_LOG_LEVEL: 'silent' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('result '));
      if (code !== 0 || !line) reject(new Error(`sparse backup child exited with ${code}: ${out}`));
      else resolve(JSON.parse(line.slice(7)));
    });
  });
}

describe('repository memory', function () {
  // 2 GiB through the chunk workers: about 10 s on two idle cores; more on a loaded machine.
  this.timeout(120_000);
  after(removeTempDirs);

  it('backs up a 2 GiB sparse stream within a peak RSS of 256 MiB', async () => {
    const size = 2 * 1024 * 1024 * 1024;
    const r = await backUpSparse(await tempDir(), size);
    console.log(`      2 GiB in ${r.seconds.toFixed(1)} s; peak RSS ${(r.maxRssBefore / 2 ** 20).toFixed(0)} MiB before the backup, ${(r.maxRssAfter / 2 ** 20).toFixed(0)} MiB after`);
    expect(r.size).to.equal(size);
    expect(r.bytesRead).to.equal(size);
    expect(r.maxRssAfter).to.be.below(rssBound);
  });
});
