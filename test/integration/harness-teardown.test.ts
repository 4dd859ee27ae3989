// The harness leaves nothing behind: after stop() no process it started is alive and its
// temp dir is gone. Uses a private control plane so the shared one keeps serving.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { CONTROL_PLANE_START_TIMEOUT_MS, startControlPlane } from '../../src/testing/control-plane.js';
import { leftoverProcesses } from '../support/control-plane-hooks.js';

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
});
