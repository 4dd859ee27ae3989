// `trellis repo verify|stats|gc|checksum|restore|upgrade --path DIR`: operate a backup repository by hand.
// Results go to stdout (text, or JSON with --json); progress of long work goes to stderr,
// at most once a second, so a pipe of stdout stays clean. Exit codes: 0 fine, 1 the
// repository has problems (verify) or the command failed, 2 bad usage.
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { collectGarbage, openFilesystemRepository, repositoryStats, verifyRepository, type BackupRepository } from '../../repository/index.js';

const usage = `usage: trellis repo <command> --path DIR [options]

commands:
  verify   check that every manifest's chunks exist and hash right (exit 1 if not)
  stats    backups, manifests, chunks, logical vs stored bytes, dedup ratio
  gc       delete backups whose ttl has passed, then chunks no manifest references
  checksum JOB VOLUME   read one backed-up volume (verifying it) and print the SHA-256
           of its bytes, to compare with sha256sum of a disk
  restore JOB VOLUME --to FILE   write one backed-up volume, verified, into FILE
           (created or replaced; a block device is written in place), then fsync it
  upgrade  let a repository of format 1 or 2 take new backups (formats 3 and 4 take
           them as they are); older Trellis versions then refuse it

options:
  --path DIR    the repository (required)
  --json        print the result as JSON
  --dry-run     gc: report what would be deleted, delete nothing
  --to FILE     restore: where the volume's bytes go
  --quiet       no progress on stderr
`;

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function progressPrinter(quiet: boolean): (text: string) => void {
  // The first line comes after a second of work: quick runs print no progress at all.
  let last = Date.now();
  return (text) => {
    if (quiet) return;
    const now = Date.now();
    if (now - last < 1000) return;
    last = now;
    process.stderr.write(`${text}\n`);
  };
}

const commands = ['verify', 'stats', 'gc', 'checksum', 'restore', 'upgrade'];

/** What is wrong with the command line, if anything. */
function usageProblem(command: string | undefined, operands: number, path: string | undefined, to: string | undefined): string | undefined {
  if (!command || !commands.includes(command)) return `expected one of ${commands.join(', ')}`;
  if (!path) return '--path is required';
  const wanted = command === 'checksum' || command === 'restore' ? 2 : 0;
  if (operands !== wanted) return wanted ? `${command} takes JOB and VOLUME` : `${command} takes no operands`;
  if (command === 'restore' && !to) return 'restore needs --to FILE';
  return undefined;
}

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        path: { type: 'string' },
        json: { type: 'boolean', default: false },
        'dry-run': { type: 'boolean', default: false },
        to: { type: 'string' },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    process.stderr.write(`trellis repo: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const command = positionals[0];
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  const why = usageProblem(command, positionals.length - 1, values.path, values.to);
  if (why !== undefined || values.path === undefined) {
    process.stderr.write(`trellis repo: ${why ?? '--path is required'}\n\n${usage}`);
    return 2;
  }
  const print = (json: unknown, text: string): void => {
    process.stdout.write(values.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  };
  const progress = progressPrinter(values.quiet);

  let repo: BackupRepository;
  try {
    repo = await openFilesystemRepository(values.path);
  } catch (err) {
    process.stderr.write(`trellis repo: ${(err as Error).message}\n`);
    return 1;
  }

  try {
    if (command === 'verify') {
      const r = await verifyRepository(repo, { onProgress: (chunks, bytes) => progress(`verify: ${chunks} chunks, ${mib(bytes)} checked`) });
      const lines = r.problems.map((p) => `PROBLEM ${p.problem}: ${p.message}\n`).join('');
      print(r, `${lines}verified ${r.manifests} manifests, ${r.chunksChecked} chunks, ${mib(r.bytesChecked)}: ${r.problems.length === 0 ? 'clean' : `${r.problems.length} problems`}\n`);
      return r.problems.length === 0 ? 0 : 1;
    }
    if (command === 'stats') {
      const s = await repositoryStats(repo, (chunks) => progress(`stats: ${chunks} chunks listed`));
      print(
        s,
        [
          `format               ${s.format} (chunks cut by ${s.rollingHash}, named by ${s.chunkHash})`,
          `backups              ${s.backups} (${s.completeBackups} complete)`,
          `manifests            ${s.manifests}`,
          `chunks               ${s.chunks} (${s.referencedChunks} referenced, ${s.unreferencedChunks} unreferenced)`,
          `logical bytes        ${s.logicalBytes} (${mib(s.logicalBytes)})`,
          `unique bytes         ${s.uniqueBytes} (${mib(s.uniqueBytes)})`,
          `stored bytes         ${s.storedBytes} (${mib(s.storedBytes)})`,
          `dedup ratio          ${s.dedupRatio.toFixed(2)}`,
          `compression ratio    ${s.compressionRatio.toFixed(2)}`,
          `uploads in progress  ${s.uploadsInProgress}`,
          '',
        ].join('\n'),
      );
      return 0;
    }
    if (command === 'checksum') {
      const [job, volume] = positionals.slice(1) as [string, string];
      const hash = createHash('sha256');
      let bytes = 0;
      // Hashed where it was read: no copy of each chunk.
      await repo.restoreInto(job, volume, async (chunk) => {
        hash.update(chunk);
        bytes += chunk.length;
        progress(`checksum: ${mib(bytes)} read`);
      });
      const sha256 = hash.digest('hex');
      print({ job, volume, bytes, sha256 }, `${sha256}  ${job}/${volume} (${bytes} bytes)\n`);
      return 0;
    }
    if (command === 'restore') {
      const [job, volume] = positionals.slice(1) as [string, string];
      const to = values.to!;
      const bytes = await repo.restoreToFile(job, volume, to, { onProgress: (written) => progress(`restore: ${mib(written)} written`) });
      print({ job, volume, to, bytes }, `restored ${job}/${volume} to ${to} (${bytes} bytes, verified)\n`);
      return 0;
    }
    if (command === 'upgrade') {
      const from = repo.config.format;
      const upgraded = await repo.upgradeFormat();
      const to = upgraded.config.format;
      print({ from, to }, from === to ? `already format ${to}\n` : `upgraded from format ${from} to ${to}\n`);
      return 0;
    }
    const dryRun = values['dry-run'];
    const expired = await repo.expireBackups({ dryRun });
    const g = await collectGarbage(repo, { dryRun, onProgress: (phase, done, total) => progress(`gc ${phase}: ${done}${total ? `/${total}` : ''} chunks`) });
    const verb = dryRun ? 'would delete' : 'deleted';
    print(
      { expiredBackups: expired, ...g },
      `${expired.length ? `${dryRun ? 'would expire (their chunks are not counted below)' : 'expired'} backups: ${expired.join(', ')}\n` : ''}scanned ${g.chunksScanned} chunks, ${g.chunksReferenced} referenced; ${verb} ${g.chunksDeleted} chunks (${mib(g.bytesDeleted)})` +
        `${g.chunksKeptForUploads ? `; kept ${g.chunksKeptForUploads} a concurrent upload relies on` : ''}` +
        `${g.expiredUploadsRemoved ? `; removed ${g.expiredUploadsRemoved} abandoned uploads` : ''}\n`,
    );
    return 0;
  } catch (err) {
    process.stderr.write(`trellis repo ${command}: ${(err as Error).message}\n`);
    return 1;
  }
}
