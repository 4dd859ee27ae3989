import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FilesystemBlobStore } from '../../src/repository/index.js';
import { sha256Of, type VolumeShape } from './data.js';
import { backUp, corruptStoredChunk, expected, removeTempDirs, tempDir, tempRepository } from './helpers.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

function trellis(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', main, 'repo', ...args], { env: { ...process.env, TRELLIS_LOG_LEVEL: 'silent' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('trellis repo verify|stats|gc', function () {
  this.timeout(60_000);
  after(removeTempDirs);

  it('reports stats, collects garbage (dry run first) and verifies, naming a corrupt chunk', async () => {
    const repo = await tempRepository();
    const path = (repo.store as FilesystemBlobStore).root;
    const shape = { seed: 9, size: 1024 * 1024, kind: 'random' as const };
    const kept = await backUp(repo, 'monday', 'ns.a', shape);
    await backUp(repo, 'tuesday', 'ns.a', shape);
    const gone = await backUp(repo, 'tuesday', 'ns.b', { ...shape, seed: 10 });
    await repo.finishBackup('monday');
    await repo.deleteBackup('tuesday');

    const stats = await trellis('stats', '--path', path, '--json');
    expect(stats.code).to.equal(0);
    expect(JSON.parse(stats.stdout)).to.include({
      format: 5,
      chunkHash: 'blake3',
      rollingHash: 'gear-mul',
      backups: 1,
      completeBackups: 1,
      manifests: 1,
      logicalBytes: shape.size,
      chunks: kept.manifest.chunks.length + gone.manifest.chunks.length,
      unreferencedChunks: gone.manifest.chunks.length,
    });
    expect((await trellis('stats', '--path', path)).stdout).to.match(/^format +5 \(chunks cut by gear-mul, named by blake3\)$/m);

    const dry = await trellis('gc', '--path', path, '--dry-run');
    expect(dry.code).to.equal(0);
    expect(dry.stdout).to.include(`would delete ${gone.manifest.chunks.length} chunks`);
    const gc = await trellis('gc', '--path', path, '--json');
    expect(JSON.parse(gc.stdout)).to.include({ chunksDeleted: gone.manifest.chunks.length, dryRun: false });

    const clean = await trellis('verify', '--path', path);
    expect(clean.code).to.equal(0);
    expect(clean.stdout).to.match(/verified 1 manifests, \d+ chunks.*: clean/);

    const [hash] = kept.manifest.chunks[1]!;
    await corruptStoredChunk(repo, hash, 10);
    const bad = await trellis('verify', '--path', path);
    expect(bad.code).to.equal(1);
    expect(bad.stdout).to.include(hash).and.include('ns.a').and.include('1 problems');
  });

  it('gc expires backups past their ttl (dry run only names them)', async () => {
    const repo = await tempRepository();
    const path = (repo.store as FilesystemBlobStore).root;
    await repo.beginBackup('hourly', { ttlSeconds: 0 });
    const up = await backUp(repo, 'hourly', 'ns.a', { seed: 31, size: 256 * 1024, kind: 'random' });
    await repo.finishBackup('hourly');

    const dry = await trellis('gc', '--path', path, '--dry-run');
    expect(dry.stdout).to.include('would expire (their chunks are not counted below) backups: hourly');
    expect((await repo.listBackups()).map((b) => b.job)).to.deep.equal(['hourly']);

    const gc = JSON.parse((await trellis('gc', '--path', path, '--json')).stdout);
    expect(gc.expiredBackups).to.deep.equal(['hourly']);
    expect(gc.chunksDeleted).to.equal(up.manifest.chunks.length);
    expect(await repo.listBackups()).to.deep.equal([]);
  });

  it('prints the SHA-256 of a backed-up volume’s bytes, restores it into a file, and upgrades an older repository', async () => {
    const repo = await tempRepository();
    const path = (repo.store as FilesystemBlobStore).root;
    const shape: VolumeShape = { seed: 41, size: 300 * 1024 + 5, kind: 'random' };
    await backUp(repo, 'monday', 'ns.a', shape);
    const want = await expected(shape);
    const sum = await trellis('checksum', 'monday', 'ns.a', '--path', path);
    expect(sum.code).to.equal(0);
    expect(sum.stdout).to.equal(`${want.sha256}  monday/ns.a (${want.size} bytes)\n`);
    expect((await trellis('checksum', 'monday', '--path', path)).code).to.equal(2);
    expect((await trellis('checksum', 'monday', 'ns.nothing', '--path', path)).code).to.equal(1);

    const to = join(await tempDir(), 'ns.a.img');
    await writeFile(to, 'old contents, longer than nothing');
    const restored = await trellis('restore', 'monday', 'ns.a', '--to', to, '--json', '--path', path);
    expect(restored.code).to.equal(0);
    expect(JSON.parse(restored.stdout)).to.deep.equal({ job: 'monday', volume: 'ns.a', to, bytes: want.size });
    expect(await sha256Of(createReadStream(to))).to.deep.equal(want);
    expect((await trellis('restore', 'monday', 'ns.a', '--path', path)).stderr).to.include('--to FILE');

    const old = await tempDir();
    await cp(fileURLToPath(new URL('./fixtures/repository-v2', import.meta.url)), old, { recursive: true });
    const upgraded = await trellis('upgrade', '--json', '--path', old);
    expect(upgraded.code).to.equal(0);
    expect(JSON.parse(upgraded.stdout)).to.deep.equal({ from: 2, to: 5 });
    expect((await trellis('upgrade', '--path', old)).stdout).to.equal('already format 5\n');
  });

  it('fails clearly without a repository and on bad usage', async () => {
    const empty = await trellis('stats', '--path', await tempDir());
    expect(empty.code).to.equal(1);
    expect(empty.stderr).to.include('no backup repository');
    expect((await trellis('stats')).code).to.equal(2);
    expect((await trellis('compact', '--path', '/tmp')).code).to.equal(2);
  });
});
