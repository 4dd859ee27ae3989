import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { removeTempDirs, tempDir } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/sparse-backup.ts', import.meta.url));

// The bounds are on the peak RSS of the whole child process: Node, tsx and the four worker
// threads take about 126 MiB before any data flows; the repository's own buffers are
// bounded at 32 MiB of blocks (packs go to their files chunk by chunk, never held whole);
// the rest is the allocator's and the source's slack. Measured on two loaded cores:
// 200-237 MiB (sparse) and 260-325 MiB (unique data).
const rssBound = 256 * 1024 * 1024;
/** With full packs going to disk (incompressible data that does not deduplicate). */
const rssBoundWritingPacks = 352 * 1024 * 1024;

type Child = { maxRssBefore: number; maxRssAfter: number; seconds: number; size: number; bytesRead: number; bytesUploaded: number; packs: number };

function backUpInChild(dir: string, size: number, kind: 'sparse' | 'unique'): Promise<Child> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir, String(size), kind], {
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

  const report = (r: Child) =>
    console.log(`      ${(r.size / 2 ** 30).toFixed(0)} GiB in ${r.seconds.toFixed(1)} s, ${r.packs} packs; peak RSS ${(r.maxRssBefore / 2 ** 20).toFixed(0)} MiB before the backup, ${(r.maxRssAfter / 2 ** 20).toFixed(0)} MiB after`);

  it('backs up a 2 GiB sparse stream within a peak RSS of 256 MiB', async () => {
    const size = 2 * 1024 * 1024 * 1024;
    const r = await backUpInChild(await tempDir(), size, 'sparse');
    report(r);
    expect(r.size).to.equal(size);
    expect(r.bytesRead).to.equal(size);
    expect(r.maxRssAfter).to.be.below(rssBound);
  });

  it('backs up 1 GiB of unique incompressible data (full packs to disk) within a peak RSS of 352 MiB', async () => {
    const size = 1024 * 1024 * 1024;
    const r = await backUpInChild(await tempDir(), size, 'unique');
    report(r);
    expect(r.bytesUploaded).to.equal(size);
    expect(r.packs).to.be.at.least(size / (17 * 1024 * 1024));
    expect(r.maxRssAfter).to.be.below(rssBoundWritingPacks);
  });
});
