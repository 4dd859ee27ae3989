// hack/build-tools.sh: builds into a versioned cache, answers from it when warm, and a build
// that is interrupted leaves no binary (whole or half-written) behind.
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../src/testing/control-plane.js';
import { eventually } from '../support/eventually.js';

const script = join(repoRoot, 'hack', 'build-tools.sh');

// csi-sanity is the quickest tool to build, and its Go build cache is warm after the first run.
describe('hack/build-tools.sh @integration', function () {
  this.timeout(10 * 60_000);
  let toolsDir: string;
  beforeEach(() => {
    toolsDir = mkdtempSync(join(tmpdir(), 'trellis-tools-'));
  });
  afterEach(() => rmSync(toolsDir, { recursive: true, force: true }));

  const build = (...names: string[]) =>
    spawnSync('bash', [script, ...names], { env: { ...process.env, TRELLIS_TOOLS_DIR: toolsDir }, encoding: 'utf8' });

  it('builds into <dir>/<name>-<version>/<name>, prints the path, and reuses it when warm', () => {
    const cold = build('csi-sanity');
    expect(cold.status, cold.stderr).to.equal(0);
    const path = join(toolsDir, 'csi-sanity-v5.6.0', 'csi-sanity');
    expect(cold.stdout).to.equal(`${path}\n`);
    expect(cold.stderr).to.include('building csi-sanity v5.6.0');
    expect(statSync(path).mode & 0o111).to.not.equal(0);

    const warm = build('csi-sanity');
    expect(warm.status).to.equal(0);
    expect(warm.stdout).to.equal(`${path}\n`);
    expect(warm.stderr).to.not.include('building');
  });

  it('rejects an unknown tool name', () => {
    const answer = build('kube-scheduler');
    expect(answer.status).to.not.equal(0);
    expect(answer.stderr).to.include("unknown tool 'kube-scheduler'");
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`leaves no binary behind when the build gets ${signal}`, async () => {
      const child = spawn('bash', [script, 'csi-sanity'], {
        env: { ...process.env, TRELLIS_TOOLS_DIR: toolsDir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      await new Promise<void>((resolveStarted) => {
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
          if (chunk.includes('building csi-sanity')) resolveStarted();
        });
      });
      child.kill(signal);
      const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
      expect(code).to.not.equal(0);
      expect(existsSync(join(toolsDir, 'csi-sanity-v5.6.0'))).to.equal(false);
      if (signal === 'SIGTERM') {
        expect(readdirSync(toolsDir).filter((f) => f.startsWith('.building'))).to.deep.equal([]);
      }
      // The next run builds it whole (and clears what a SIGKILLed build left).
      const again = build('csi-sanity');
      expect(again.status, again.stderr).to.equal(0);
      expect(readdirSync(toolsDir).filter((f) => f.startsWith('.building'))).to.deep.equal([]);
    });
  }

  it('stops the build and leaves nothing when the Node process running the harness is SIGKILLed', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test', 'support', 'ensure-tools-child.ts'), 'csi-sanity'], {
      env: { ...process.env, TRELLIS_TOOLS_DIR: toolsDir },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolveStarted) => {
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        if (chunk.includes('building csi-sanity')) resolveStarted();
      });
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    // The script gets SIGTERM from the kernel (pdeathsig) and its trap removes the partial build.
    await eventually('the orphaned build to clean up', () => readdirSync(toolsDir).every((f) => !f.startsWith('.building')), 30_000);
    expect(existsSync(join(toolsDir, 'csi-sanity-v5.6.0'))).to.equal(false);
  });
});
