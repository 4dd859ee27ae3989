// Backup repository throughput, measured side by side with a plain file copy of the same
// bytes on the same disk (the ratio is the figure), and the dedup of a second backup. The
// restore goes into a file as `trellis repo restore` does (restoreToFile: no copy, and a
// datasync in the background every 32 MiB); a copy with that same write-behind is measured too,
// so the share of the read ratio that is the writing's, not the repository's, shows. Both the
// copies and the backups read the source with fileBytes (one reused buffer), as the operator
// reads a block device.
//
//   npm run bench:repository -- [--size MB[,MB...]] [--kind random|structured] [--codec zstd|gzip|none] [--dir DIR] [--runs N]
//
// MB here is 10^6 bytes; several sizes (e.g. --size 256,2000) are measured one after the
// other in one run, with a summary table at the end. Peak RSS is the kernel's count for
// this whole process so far (runtime and worker threads included). Every writer fsyncs what it wrote before its clock stops. The
// page cache is not dropped (that needs root), so reads of just-written data are mostly
// served from memory for both sides alike.
import { execFileSync } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { isCodecName } from '../src/repository/codec.js';
import { fileBytes, FileTarget, openFilesystemRepository, repositoryStats, type BackupRepository, type ChunkerOptions, type UploadResult } from '../src/repository/index.js';
import { volumeBytes } from '../test/repository/data.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '512' },
    kind: { type: 'string', default: 'random' },
    codec: { type: 'string', default: 'zstd' },
    dir: { type: 'string', default: tmpdir() },
    runs: { type: 'string', default: '3' },
  },
});
const runCount = Math.max(1, Number(values.runs) || 1);
const sizes = values.size.split(',').map((mb) => Math.round(Number(mb) * 1e6));
const kind = values.kind === 'structured' ? 'structured' : 'random';
if (!sizes.every((n) => n >= 0) || !isCodecName(values.codec)) {
  process.stderr.write('usage: bench/repository.ts [--size MB[,MB...]] [--kind random|structured] [--codec zstd|gzip|none] [--dir DIR]\n');
  process.exit(2);
}
const codec = values.codec;

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  await handle.sync();
  await handle.close();
}

/** Wall time, and CPU time of this process (all its threads), which other load on a shared machine disturbs less. */
async function timed<T>(work: () => Promise<T>): Promise<{ seconds: number; cpu: number; value: T }> {
  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  const value = await work();
  const cpu = process.cpuUsage(cpuStart);
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, cpu: (cpu.user + cpu.system) / 1e6, value };
}

/**
 * A copy, read as the backup reads (fileBytes: one reused 4 MiB buffer) and written as the
 * restore writes (FileTarget): plain, with one fsync at the end as cp and sync do, or with
 * the restore's write-behind.
 */
async function copyFile(from: string, to: string, writeBehind = false): Promise<void> {
  const target = await FileTarget.open(to, writeBehind ? {} : { flushBytes: 0 });
  for await (const piece of fileBytes(from)) await target.write(piece);
  await target.finish();
}

const mbps = (bytes: number, seconds: number) => bytes / 1e6 / seconds;
/** This program's peak RSS: /proc's VmHWM (getrusage's maxrss starts at the parent's on Linux). */
const peakRss = () => {
  const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return `${(Number(kb ?? process.resourceUsage().maxRSS) / 1024).toFixed(0)} MiB`;
};

/** Bytes a backup of 16 MiB with 256 KiB changed stores after a backup of the original. */
async function changedRegion(work: string, chunking?: ChunkerOptions): Promise<number> {
  const repo = await openFilesystemRepository(join(work, `repo-changed-${chunking?.avgSize ?? 'default'}`), { create: { codec, chunking } });
  const base = { seed: 5, size: 16 * 1024 * 1024, kind: 'random' as const };
  await repo.backupVolume('before', { volume: 'bench.volume' }, volumeBytes(base));
  const after = await repo.backupVolume('after', { volume: 'bench.volume' }, volumeBytes({ ...base, changed: { fromBlock: 120, toBlock: 124, seed: 99 } }));
  return after.storedBytesUploaded;
}

// The repository's worker threads start once per process (the operator keeps them): a
// small backup first, so the timed runs measure the data path, not thread start-up.
{
  const warm = await mkdtemp(join(values.dir, 'trellis-bench-repo-warm-'));
  try {
    const repo = await openFilesystemRepository(join(warm, 'repo'), { create: { codec } });
    await repo.backupVolume('warm', { volume: 'bench.volume' }, volumeBytes({ seed: 1, size: 4 * 1024 * 1024, kind }));
    await pipeline(repo.restoreStream('warm', 'bench.volume'), new Writable({ write: (_c, _e, done) => done() }));
  } finally {
    await rm(warm, { recursive: true, force: true });
  }
}

const summary: string[] = [];
for (const size of sizes) {
  const row = (label: string, seconds: number, cpu: number) =>
    `${label.padEnd(34)} ${mbps(size, seconds).toFixed(1).padStart(8)} MB/s  (${seconds.toFixed(2)} s wall, ${((cpu / size) * 1e9).toFixed(2)} CPU s/GB)`;

  const work = await mkdtemp(join(values.dir, 'trellis-bench-repo-'));
  try {
    const source = join(work, 'source.img');
    process.stderr.write(`generating ${(size / 1e6).toFixed(0)} MB of ${kind} data in ${work} ...\n`);
    await pipeline(volumeBytes({ seed: 42, size, kind }), createWriteStream(source));
    await fsyncFile(source);

    // Each run uses a fresh repository; the median of the runs is reported, because other
    // work on a shared machine makes single runs noisy.
    type Step = 'copy' | 'backup' | 'restore' | 'copyBack' | 'copyFlushing' | 'second' | 'verifyRead';
    const runs: Record<Step, { seconds: number; cpu: number }>[] = [];
    let last: { repo: BackupRepository; first: UploadResult; second: UploadResult } | undefined;
    for (let run = 0; run < runCount; run++) {
      process.stderr.write(`run ${run + 1}/${runCount} ...\n`);
      await rm(join(work, 'repo'), { recursive: true, force: true });
      const repo = await openFilesystemRepository(join(work, 'repo'), { create: { codec } });
      // Every output is removed before its clock starts (truncating last run's file inside the
      // clock was timed as part of the copy), and each step starts on a flushed disk: on this
      // disk (mounted with discard) a removal's trim otherwise lands in the next step's fsync.
      for (const file of ['copy.img', 'restored.img', 'copy-back.img', 'copy-flushing.img']) await rm(join(work, file), { force: true });
      const step = <T>(measured: () => Promise<T>) => {
        execFileSync('sync');
        return timed(measured);
      };
      // Which side goes first alternates between runs, so neither always meets the disk and
      // the page cache as the other left them.
      const copyFirst = run % 2 === 0;
      const copyStep = () => step(() => copyFile(source, join(work, 'copy.img')));
      const backupStep = () => step(() => repo.backupVolume('first', { volume: 'bench.volume' }, fileBytes(source)));
      const copy = copyFirst ? await copyStep() : undefined;
      const backup = await backupStep();
      const copied = copy ?? (await copyStep());
      // As `trellis repo restore` does it: each verified chunk written from where it was read
      // (no copy), flushing as it goes.
      const restoreStep = () => step(() => repo.restoreToFile('first', 'bench.volume', join(work, 'restored.img')));
      const restore = copyFirst ? await restoreStep() : undefined;
      const copyBack = await step(() => copyFile(join(work, 'copy.img'), join(work, 'copy-back.img')));
      // The copy with write-behind: what the restore's writing alone can reach.
      const copyFlush = await step(() => copyFile(join(work, 'copy.img'), join(work, 'copy-flushing.img'), true));
      const restored = restore ?? (await restoreStep());
      const second = await step(() => repo.backupVolume('second', { volume: 'bench.volume' }, fileBytes(source)));
      const verifyRead = await step(() => pipeline(repo.restoreStream('second', 'bench.volume'), new Writable({ write: (_c, _e, done) => done() })));
      runs.push({ copy: copied, backup, restore: restored, copyBack, copyFlushing: copyFlush, second, verifyRead });
      last = { repo, first: backup.value, second: second.value };
    }
    const middle = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const median = (step: Step) => middle(runs.map((r) => r[step].seconds));
    const cpu = (step: Step) => middle(runs.map((r) => r[step].cpu));
    const { repo, first, second } = last!;
    const stats = await repositoryStats(repo);

    const lines = [
      `repository bench: ${(size / 1e6).toFixed(0)} MB of ${kind} data, codec ${codec}, chunks avg ${repo.config.chunking.avgSize / 1024} KiB, on ${values.dir}, median of ${runCount} runs`,
      row('plain copy (write+fsync)', median('copy'), cpu('copy')),
      row('backup (chunk+hash+compress+fsync)', median('backup'), cpu('backup')),
      `  write ratio backup/copy          ${(median('copy') / median('backup')).toFixed(2)}`,
      row('plain copy of the copy (read)', median('copyBack'), cpu('copyBack')),
      row('restore into file (verified)', median('restore'), cpu('restore')),
      `  read ratio restore/copy          ${(median('copyBack') / median('restore')).toFixed(2)}`,
      row('copy with write-behind (reference)', median('copyFlushing'), cpu('copyFlushing')),
      `  restore / that copy              ${(median('copyFlushing') / median('restore')).toFixed(2)}`,
      row('restore to nowhere (verified)', median('verifyRead'), cpu('verifyRead')),
      row('second backup, same data', median('second'), cpu('second')),
      `second backup stored ${second.bytesUploaded} new bytes of ${size} (${((100 * second.bytesUploaded) / Math.max(1, size)).toFixed(3)}%)`,
      `dedup ratio (logical/unique) after two backups: ${stats.dedupRatio.toFixed(2)}; compression ratio ${stats.compressionRatio.toFixed(2)}; ` +
        `stored ${(stats.storedBytes / 1e6).toFixed(1)} MB for ${(stats.logicalBytes / 1e6).toFixed(1)} MB logical in ${stats.chunks} chunks`,
      `first backup: ${first.chunks} chunks in ${first.packs} packs, stored ${(first.storedBytesUploaded / 1e6).toFixed(1)} MB; peak RSS ${peakRss()}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n\n`);
    summary.push(
      `${`${(size / 1e6).toFixed(0)} MB`.padStart(8)}  ${(median('copy') / median('backup')).toFixed(2).padStart(11)}  ${(median('copyBack') / median('restore')).toFixed(2).padStart(10)}  ${second.bytesUploaded
        .toString()
        .padStart(16)}  ${stats.dedupRatio.toFixed(2).padStart(5)}  ${peakRss().padStart(13)}`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

const work = await mkdtemp(join(values.dir, 'trellis-bench-repo-'));
try {
  const changed = await changedRegion(work);
  // The chunk sizes the repository tests use (avg 16 KiB): the change costs about itself.
  const changedSmall = await changedRegion(work, { minSize: 4 * 1024, avgSize: 16 * 1024, maxSize: 64 * 1024 });
  process.stdout.write(
    [
      `summary (${kind} data, codec ${codec}; ratios are repository / plain copy of the same bytes on the same disk):`,
      '    size  write ratio  read ratio  2nd backup bytes  dedup  peak RSS so far',
      ...summary,
      `a 256 KiB change in 16 MiB stores ${(changed / 1e6).toFixed(2)} MB with default chunks (avg 1 MiB), ${(changedSmall / 1e6).toFixed(2)} MB with avg 16 KiB chunks`,
      '',
    ].join('\n'),
  );
} finally {
  await rm(work, { recursive: true, force: true });
}
