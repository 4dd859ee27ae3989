// hack/build-tools.sh: builds into a cache keyed by version and by a hash of the pins and
// flags, answers from it when warm, and a build that is interrupted leaves no binary (whole
// or half-written) and no process behind.
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../src/cli/local-cluster.js';
import { eventually } from '../support/eventually.js';

const script = join(repoRoot, 'hack', 'build-tools.sh');
const cacheDir = /^csi-sanity-v5\.6\.0-[0-9a-f]{8}$/;
/**
 * The script waits this long between go build and the rename, and says so on stderr: a signal
 * sent then lands mid-build, with the whole binary in the temp dir, however warm the Go cache.
 */
const midBuild = { TRELLIS_BUILD_TEST_DELAY_S: '600' };

/** Whether any process of the group `pgid` (a detached child and what it started) still runs. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes of a build under `dir`: the script, its go build, and its test delay. */
function buildProcesses(): string[] {
  const ps = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).stdout.split('\n');
  return ps.filter((line) => /hack\/build-tools\.sh csi-sanity|sleep 600|go build .*csi-sanity/.test(line));
}

// csi-sanity is the quickest tool to build, and its Go build cache is warm after the first run.
describe('hack/build-tools.sh @integration', function () {
  this.timeout(10 * 60_000);
  let toolsDir: string;
  beforeEach(() => {
    toolsDir = mkdtempSync(join(tmpdir(), 'trellis-tools-'));
  });
  afterEach(() => rmSync(toolsDir, { recursive: true, force: true }));

  const build = (...names: string[]) => buildWith(script, ...names);
  const buildWith = (scriptPath: string, ...names: string[]) =>
    spawnSync('bash', [scriptPath, ...names], { env: { ...process.env, TRELLIS_TOOLS_DIR: toolsDir }, encoding: 'utf8' });
  const cacheDirs = () => readdirSync(toolsDir).filter((f) => f.startsWith('csi-sanity-'));

  it('builds into <dir>/<name>-<version>-<key>/<name>, prints the path, and reuses it when warm', () => {
    const cold = build('csi-sanity');
    expect(cold.status, cold.stderr).to.equal(0);
    expect(cacheDirs()).to.have.length(1);
    expect(cacheDirs()[0]).to.match(cacheDir);
    const path = join(toolsDir, cacheDirs()[0], 'csi-sanity');
    expect(cold.stdout).to.equal(`${path}\n`);
    expect(cold.stderr).to.include('building csi-sanity v5.6.0');
    expect(statSync(path).mode & 0o111).to.not.equal(0);

    const warm = build('csi-sanity');
    expect(warm.status).to.equal(0);
    expect(warm.stdout).to.equal(`${path}\n`);
    expect(warm.stderr).to.not.include('building');
  });

  it('builds anew when the wrapper module changes, instead of reusing the binary of the old pins', () => {
    // A copy of hack/ whose go.mod can change without touching the checkout.
    const copy = mkdtempSync(join(tmpdir(), 'trellis-hack-'));
    try {
      mkdirSync(join(copy, 'hack', 'tools'), { recursive: true });
      cpSync(script, join(copy, 'hack', 'build-tools.sh'));
      cpSync(join(repoRoot, 'hack', 'tools', 'csi-sanity'), join(copy, 'hack', 'tools', 'csi-sanity'), { recursive: true });
      const copiedScript = join(copy, 'hack', 'build-tools.sh');
      const before = buildWith(copiedScript, 'csi-sanity');
      expect(before.status, before.stderr).to.equal(0);

      appendFileSync(join(copy, 'hack', 'tools', 'csi-sanity', 'go.mod'), '// any change to the pins\n');
      const after = buildWith(copiedScript, 'csi-sanity');
      expect(after.status, after.stderr).to.equal(0);
      expect(after.stderr).to.include('building csi-sanity v5.6.0');
      expect(after.stdout).to.not.equal(before.stdout);
      expect(cacheDirs()).to.have.length(2);
      for (const dir of cacheDirs()) expect(dir).to.match(cacheDir);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('rejects an unknown tool name', () => {
    const answer = build('kube-scheduler');
    expect(answer.status).to.not.equal(0);
    expect(answer.stderr).to.include("unknown tool 'kube-scheduler'");
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`leaves no binary and no process behind when the build gets ${signal}`, async () => {
      // Detached: the script leads a process group of its own, which holds all it started.
      const child = spawn('bash', [script, 'csi-sanity'], {
        env: { ...process.env, TRELLIS_TOOLS_DIR: toolsDir, ...midBuild },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      const group = child.pid as number;
      try {
        await new Promise<void>((resolveStarted) => {
          child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
            if (chunk.includes('test delay')) resolveStarted();
          });
        });
        const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
        child.kill(signal);
        expect(await exited).to.not.equal(0);
        // A SIGKILLed script runs no trap: its children die by pdeathsig or on their own at once
        // (the ticker at EOF of its pipe), long before the test's delay would end.
        await eventually(`every process of the build to end after ${signal}`, () => !groupAlive(group), 10_000);
        expect(cacheDirs()).to.deep.equal([]);
        if (signal === 'SIGTERM') {
          expect(readdirSync(toolsDir).filter((f) => f.startsWith('.building'))).to.deep.equal([]);
        }
      } finally {
        if (groupAlive(group)) process.kill(-group, 'SIGKILL');
      }
      // The next run builds it whole (and clears what a SIGKILLed build left).
      const again = build('csi-sanity');
      expect(again.status, again.stderr).to.equal(0);
      expect(readdirSync(toolsDir).filter((f) => f.startsWith('.building'))).to.deep.equal([]);
    });
  }

  it('stops the build and leaves nothing when the Node process running the harness is SIGKILLed', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test', 'support', 'ensure-tools-child.ts'), 'csi-sanity'], {
      env: { ...process.env, TRELLIS_TOOLS_DIR: toolsDir, ...midBuild },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolveStarted) => {
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        if (chunk.includes('test delay')) resolveStarted();
      });
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    // The script gets SIGTERM from the kernel (pdeathsig; sometimes twice) and its trap stops
    // the build and removes the partial one.
    await eventually('every process of the orphaned build to end', () => buildProcesses().length === 0, 30_000);
    await eventually('the orphaned build to clean up', () => readdirSync(toolsDir).every((f) => !f.startsWith('.building')), 10_000);
    expect(cacheDirs()).to.deep.equal([]);
  });
});
