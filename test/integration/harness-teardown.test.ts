// The harness leaves nothing behind: after stop(), SIGTERM or SIGINT no process it started
// is alive and its temp dir is gone; after SIGKILL its processes die with it and the next
// start removes its files. Uses private control planes so the shared one keeps serving.
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_START_TIMEOUT_MS, repoRoot, startControlPlane } from '../../src/cli/local-cluster.js';
import { leftoverProcesses } from '../support/control-plane-hooks.js';
import { eventually } from '../support/eventually.js';

/** Starts a control plane in a child Node process; resolves with what it reports. */
async function controlPlaneInChild() {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test', 'support', 'control-plane-child.ts')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolveLine, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('\n')) resolveLine(out.split('\n')[0]);
    });
    child.once('exit', (code) => reject(new Error(`control plane child exited ${code} before it was up`)));
  });
  // The exit code, or the signal's conventional one (128 + number) when it died of it.
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, exited, ...(JSON.parse(line) as { dataDir: string; pids: number[] }) };
}

describe('control plane harness teardown @integration', function () {
  this.timeout(CONTROL_PLANE_START_TIMEOUT_MS);

  it('stops every process it started and removes its temp dir', async () => {
    const controlPlane = await startControlPlane({ crdsDir: false, progress: () => {} });
    const pids = controlPlane.pids();
    expect(pids).to.have.length(3); // etcd, kube-apiserver, kube-controller-manager
    expect(leftoverProcesses(pids, controlPlane.dataDir)).to.deep.equal([...pids].sort((a, b) => a - b));

    // A restart replaces the apiserver process; the old one must be gone too.
    await controlPlane.restartApiserver();
    const afterRestart = controlPlane.pids();
    expect(afterRestart).to.have.length(4);

    await controlPlane.stop();
    expect(leftoverProcesses(afterRestart, controlPlane.dataDir)).to.deep.equal([]);
    expect(existsSync(controlPlane.dataDir)).to.equal(false);
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`stops everything and removes its temp dir when the Node process gets ${signal}`, async () => {
      const started = await controlPlaneInChild();
      expect(leftoverProcesses(started.pids, started.dataDir)).to.have.length(2);
      started.child.kill(signal);
      await started.exited;
      expect(leftoverProcesses(started.pids, started.dataDir)).to.deep.equal([]);
      expect(existsSync(started.dataDir)).to.equal(false);
    });
  }

  it('exits with the signal\'s code and stops everything even when its temp dir cannot be removed', async function () {
    const started = await controlPlaneInChild();
    // An immutable dir (chattr +i: not even root may remove what is in it) stands for any
    // removal that fails in the exit hook, such as ENOTEMPTY while a killed etcd still writes.
    const pinned = join(started.dataDir, 'pinned');
    mkdirSync(pinned);
    writeFileSync(join(pinned, 'file'), '');
    if (spawnSync('chattr', ['+i', pinned]).status !== 0) {
      started.child.kill('SIGKILL');
      await started.exited;
      rmSync(started.dataDir, { recursive: true, force: true });
      this.skip();
    }
    try {
      started.child.kill('SIGTERM');
      expect(await started.exited).to.equal(143);
      expect(leftoverProcesses(started.pids, started.dataDir)).to.deep.equal([]);
    } finally {
      spawnSync('chattr', ['-i', pinned]);
      rmSync(started.dataDir, { recursive: true, force: true });
    }
  });

  it('leaves no process when the Node process is SIGKILLed, and the next start removes its files', async () => {
    const started = await controlPlaneInChild();
    started.child.kill('SIGKILL');
    await started.exited;
    // The kernel delivers the parent-death signal (setpriv --pdeathsig) to every component.
    await eventually('components to die with their parent', () => leftoverProcesses(started.pids, started.dataDir).length === 0, 10_000);
    expect(existsSync(started.dataDir)).to.equal(true);

    const next = await startControlPlane({ crdsDir: false, controllerManager: false, progress: () => {} });
    try {
      expect(existsSync(started.dataDir)).to.equal(false);
    } finally {
      await next.stop();
    }
  });
});
