// `npm run demo -- --once` on its own control plane: what a newcomer sees. The operator runs,
// examples/01 and 02 become Online and Available (kubectl's printer columns), a burst of 200
// Volumes over two arrays becomes Available in both concurrency modes with each array's peak
// in flight within its Backend's limit, the speed-up is printed, and nothing is left running.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_START_TIMEOUT_MS, repoRoot } from '../../src/cli/local-cluster.js';
import { leftoverProcesses } from '../support/control-plane-hooks.js';

describe('npm run demo -- --once @integration', function () {
  this.timeout(CONTROL_PLANE_START_TIMEOUT_MS);

  it('runs the operator: examples Online and Available, a 200-volume burst in both modes with the speed-up, and nothing left running', async () => {
    const env = { ...process.env };
    delete env.KUBECONFIG;
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'src', 'cli', 'demo.ts'), '--once'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
    const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    expect(code, out).to.equal(0);

    expect(out).to.match(/kube-apiserver ready on https:\/\/127\.0\.0\.1:\d+/);
    expect(out).to.match(/trellis operator running \(pid \d+, --concurrency hierarchical/);
    // kubectl get with the printer columns: Backends Online with capacity, Volumes Available with a handle.
    expect(out).to.match(/NAME\s+DRIVER\s+PHASE\s+VOLUMES\s+CAPACITY\s+USED\s+AGE/);
    expect(out).to.match(/array-a\s+sim\s+Online\s+\d+\s+1099511627776\s+\d+/);
    expect(out).to.match(/local\s+hostpath\s+Online/);
    expect(out).to.match(/db-0\s+array-a\s+10Gi\s+Available\s+vol-\d+/);
    expect(out).to.match(/media\s+array-a\s+50Gi\s+Available\s+vol-\d+/);
    // The burst, both modes, progress on screen, each array within its Backend's limit.
    expect(out).to.match(/hierarchical: \d+\/200 Available/);
    for (const mode of ['hierarchical', 'serial']) {
      const line = new RegExp(`${mode}: 200 volumes Available in [\\d.]+ s; peak in flight per array (\\{[^}]*\\}) \\(Backend limit (\\d+)\\)`).exec(out);
      expect(line, `the demo prints the ${mode} burst`).to.not.equal(null);
      for (const peak of Object.values(JSON.parse(line![1]!) as Record<string, number>)) expect(peak).to.be.within(1, Number(line![2]));
    }
    expect(out).to.match(/serial: .*peak in flight per array \{"array-a":1,"array-b":1\}/);
    expect(out).to.match(/speed-up: hierarchical locking made 200 volumes Available \d+\.\dx faster than the serial mode/);

    const dataDir = /KUBECONFIG=(\/\S+)\/kubeconfig/.exec(out)?.[1];
    expect(dataDir, 'the demo names its kubeconfig').to.be.a('string');
    expect(existsSync(dataDir as string)).to.equal(false);
    expect(leftoverProcesses([], dataDir as string)).to.deep.equal([]);
  });
});
