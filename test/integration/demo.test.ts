// `npm run demo -- --once` on its own control plane: it installs the CRDs and examples,
// shows them by short name, says the operator is not there yet, runs the engine on simulated
// arrays in both concurrency modes, and leaves nothing running.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_START_TIMEOUT_MS, repoRoot } from '../../src/cli/local-cluster.js';
import { leftoverProcesses } from '../support/control-plane-hooks.js';

describe('npm run demo -- --once @integration', function () {
  this.timeout(CONTROL_PLANE_START_TIMEOUT_MS);

  it('starts a control plane, shows the examples and tears everything down', async () => {
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
    expect(out).to.include('the Trellis operator is not written yet');
    expect(out).to.match(/team-a\s+volume\.trellis\.dev\/db-0\s+array-a\s+10Gi/);
    expect(out).to.match(/backend\.trellis\.dev\/local\s+hostpath/);
    expect(out).to.include('restorejob.trellis.dev/shop-restore');
    // The engine ran on the simulated arrays, both modes, and no array saw more than the limit.
    expect(out).to.match(/hierarchical: 200 volumes in/);
    expect(out).to.match(/serial \(one global lock\): 200 volumes in/);
    const peaks = /hierarchical: .*peak in flight per array (\{[^}]*\}) \(limit (\d+)\)/.exec(out);
    expect(peaks, 'the demo prints the arrays\' peak in-flight').to.not.equal(null);
    for (const peak of Object.values(JSON.parse(peaks![1]!) as Record<string, number>)) expect(peak).to.be.within(1, Number(peaks![2]));

    const dataDir = /KUBECONFIG=(\/\S+)\/kubeconfig/.exec(out)?.[1];
    expect(dataDir, 'the demo names its kubeconfig').to.be.a('string');
    expect(existsSync(dataDir as string)).to.equal(false);
    expect(leftoverProcesses([], dataDir as string)).to.deep.equal([]);
  });
});
