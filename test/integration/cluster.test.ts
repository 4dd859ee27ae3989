// The rest of a real cluster that Trellis relies on: kube-controller-manager finishes
// namespace deletion, the built kubectl applies the examples and explains the schema, and
// RBAC holds for a ServiceAccount with no permissions.
import { expect } from 'chai';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { join } from 'node:path';
import { repoRoot } from '../../src/cli/local-cluster.js';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';

describe('a cluster with kube-controller-manager, kubectl and RBAC @integration', function () {
  this.timeout(120_000);
  const controlPlane = useSharedControlPlane();

  it('completes namespace deletion (kube-controller-manager is up)', async () => {
    const namespace = await testNamespace('delete');
    const core = controlPlane().kubeConfig.makeApiClient(CoreV1Api);
    await controlPlane().kubectl(['create', 'configmap', 'some-data', '-n', namespace, '--from-literal=a=b']);
    await core.deleteNamespace({ name: namespace });
    // Without the namespace controller the namespace stays Terminating forever.
    const { code, stderr } = await controlPlane().kubectl(
      ['wait', '--for=delete', `namespace/${namespace}`, '--timeout=90s'],
      { check: false },
    );
    expect(code, stderr).to.equal(0);
    const names = (await core.listNamespace()).items.map((n) => n.metadata?.name);
    expect(names).to.not.include(namespace);
  });

  it('applies examples/ with the built kubectl and lists them by short name', async () => {
    const { stdout } = await controlPlane().kubectl(['apply', '-f', join(repoRoot, 'examples')]);
    expect(stdout).to.match(/backend\.trellis\.dev\/array-a (created|unchanged|configured)/);
    expect(stdout).to.match(/volume\.trellis\.dev\/db-0 (created|unchanged|configured)/);
    const listed = await controlPlane().kubectl(['get', 'tbe,tvol,tvgs,tbj,trj', '-A', '-o', 'name']);
    expect(listed.stdout.split('\n').filter(Boolean)).to.include.members([
      'backend.trellis.dev/array-a',
      'backend.trellis.dev/local',
      'volume.trellis.dev/db-0',
      'volume.trellis.dev/db-1',
      'volume.trellis.dev/media',
      'volumegroupsnapshot.trellis.dev/shop-nightly',
      'backupjob.trellis.dev/shop-backup',
      'restorejob.trellis.dev/shop-restore',
    ]);
  });

  it('explains volume.spec.capacity from the published schema', async () => {
    const { stdout } = await controlPlane().kubectl(['explain', 'volume.spec.capacity']);
    expect(stdout).to.include('KIND:       Volume');
    expect(stdout).to.include('FIELD: capacity');
    expect(stdout).to.include('Size of the volume');
  });

  it('forbids a ServiceAccount without permissions to list Volumes, and allows it once bound', async () => {
    const namespace = await testNamespace('rbac');
    const asRobot = await controlPlane().serviceAccountKubeConfig(namespace, 'robot');
    const robot = asRobot.makeApiClient(CustomObjectsApi);
    const list = () => robot.listNamespacedCustomObject({ group: 'trellis.dev', version: 'v1alpha1', namespace, plural: 'volumes' });

    let status = 0;
    let message = '';
    try {
      await list();
    } catch (err) {
      status = (err as { code: number }).code;
      message = (JSON.parse(String((err as { body: unknown }).body)) as { message: string }).message;
    }
    expect(status).to.equal(403);
    expect(message).to.include(`"system:serviceaccount:${namespace}:robot" cannot list resource "volumes"`);

    // The same token works once RBAC allows it, so the 403 was RBAC and not a bad token.
    await controlPlane().kubectl(['create', 'role', 'volume-reader', '-n', namespace, '--verb=list', '--resource=volumes.trellis.dev']);
    await controlPlane().kubectl(['create', 'rolebinding', 'robot-reads', '-n', namespace, '--role=volume-reader', `--serviceaccount=${namespace}:robot`]);
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await list();
        break;
      } catch (err) {
        // RBAC changes reach the authorizer's cache within moments.
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
});
