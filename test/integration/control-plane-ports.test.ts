// The harness survives losing a port race: a port it picked can be taken by another process
// before etcd or kube-apiserver binds it, and the start then goes on with new ports.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CONTROL_PLANE_START_TIMEOUT_MS, freePorts, startControlPlane } from '../../src/cli/local-cluster.js';

describe('control plane harness ports @integration', function () {
  this.timeout(CONTROL_PLANE_START_TIMEOUT_MS);

  // choosePorts answers [etcd client, etcd peer, kube-apiserver].
  for (const [component, index] of [
    ['etcd', 0],
    ['kube-apiserver', 2],
  ] as const) {
    it(`starts again on new ports when ${component}'s port is taken before it binds`, async () => {
      // Another process's listener on the port the harness picked first.
      const squatter = createServer((socket) => socket.destroy());
      await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
      const taken = (squatter.address() as AddressInfo).port;
      const answers: number[][] = [];
      const choosePorts = async (count: number) => {
        const ports = await freePorts(count);
        if (answers.length === 0) ports[index] = taken;
        answers.push(ports);
        return ports;
      };
      try {
        const controlPlane = await startControlPlane({ crdsDir: false, controllerManager: false, progress: () => {}, choosePorts });
        try {
          expect(answers).to.have.length(2);
          expect(answers[1]).to.not.include(taken);
          expect(controlPlane.server).to.equal(`https://127.0.0.1:${answers[1][2]}`);
          const namespaces = await controlPlane.kubectl(['get', 'namespace', 'default', '-o', 'name']);
          expect(namespaces.stdout.trim()).to.equal('namespace/default');
          // The lost attempt's log is kept beside the running one's.
          expect(existsSync(join(controlPlane.dataDir, 'logs', `${component}.attempt-1.log`))).to.equal(true);
        } finally {
          await controlPlane.stop();
        }
      } finally {
        await new Promise((r) => squatter.close(r));
      }
    });
  }
});
