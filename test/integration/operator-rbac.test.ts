// `trellis operator` with least privilege: run as a ServiceAccount bound to exactly the
// rules src/runtime/README.md lists (Secrets: get only, no list or watch), it syncs,
// leads, reconciles, records Events and reads a Backend-style credentials Secret by name;
// the Secret's value appears nowhere in its output.
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api, type V1PolicyRule } from '@kubernetes/client-node';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { OperatorProcesses, leads, when } from '../support/operator-process.js';
import { group, version, type VolumeObject } from '../support/volumes.js';

/** The operator's rules, as src/runtime/README.md states them. */
const rules: V1PolicyRule[] = [
  { apiGroups: ['trellis.dev'], resources: ['backends', 'volumes', 'volumegroupsnapshots', 'backupjobs', 'restorejobs'], verbs: ['get', 'list', 'watch', 'patch'] },
  { apiGroups: ['trellis.dev'], resources: ['backends/status', 'volumes/status', 'volumegroupsnapshots/status', 'backupjobs/status', 'restorejobs/status'], verbs: ['patch'] },
  { apiGroups: ['trellis.dev'], resources: ['backends/finalizers', 'volumes/finalizers', 'volumegroupsnapshots/finalizers', 'backupjobs/finalizers', 'restorejobs/finalizers'], verbs: ['update'] },
  { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'list', 'watch', 'create', 'update'] },
  { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
  { apiGroups: [''], resources: ['secrets'], verbs: ['get'] },
];

describe('trellis operator: least privilege @integration', function () {
  this.timeout(180_000);
  const controlPlane = useSharedControlPlane();
  const processes = new OperatorProcesses();
  afterEach(() => processes.stopAll());

  it('runs on the documented RBAC rules alone, reading a credentials Secret by name and never showing its value', async () => {
    const namespace = await testNamespace('rbac');
    const admin = controlPlane().kubeConfig;
    const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
    const name = `trellis-${namespace}`;
    await rbac.createClusterRole({ body: { metadata: { name, labels: { 'trellis.dev/test': 'true' } }, rules } });
    await rbac.createClusterRoleBinding({
      body: { metadata: { name }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name }, subjects: [{ kind: 'ServiceAccount', name: 'trellis', namespace }] },
    });
    try {
      const serviceAccount = await controlPlane().serviceAccountKubeConfig(namespace, 'trellis');
      const kubeconfigPath = join(processes.writeLog, '..', 'trellis-sa.kubeconfig');
      writeFileSync(kubeconfigPath, serviceAccount.exportConfig(), { mode: 0o600 });
      const value = `do-not-show-${namespace}`;
      await admin.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace, body: { metadata: { name: 'array-credentials' }, stringData: { token: value } } });
      const custom = admin.makeApiClient(CustomObjectsApi);
      await custom.createNamespacedCustomObject({
        group,
        version,
        namespace,
        plural: 'volumes',
        body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name: 'v', annotations: { 'test.trellis.dev/secret': `${namespace}/array-credentials` } }, spec: { backend: 'array-a', capacity: '1Gi' } },
      });

      const operator = await processes.start(kubeconfigPath, [`--namespaces=${namespace}`, `--leader-election-id=trellis`, `--leader-election-namespace=${namespace}`, '--log-level=debug']);
      await when('the operator to lead', () => leads(operator), 60_000);
      await when('v to be written', () => operator.writes().some((w) => w.name === 'v' && w.resourceVersion), 60_000);
      const volume = (await custom.getNamespacedCustomObject({ group, version, namespace, plural: 'volumes', name: 'v' })) as VolumeObject;
      expect(volume.status?.phase).to.equal('Available');
      expect(operator.writes().find((w) => w.secretKeys !== undefined)?.secretKeys).to.equal(1);
      // Let a few reconnects and the phase Event happen, then look for the value everywhere it could leak.
      await new Promise((r) => setTimeout(r, 1_000));
      const metrics = await (await fetch(operator.metricsUrl)).text();
      const forbidden = operator.output.filter((line) => /forbidden|403/i.test(line));
      expect(forbidden, 'no request was refused').to.deep.equal([]);
      for (const [where, text] of [['logs', operator.output.join('\n')], ['metrics', metrics], ['status', JSON.stringify(volume)]] as const) {
        expect(text.includes(value), `the Secret's value in the ${where}`).to.equal(false);
        expect(text.includes(Buffer.from(value).toString('base64')), `the Secret's base64 value in the ${where}`).to.equal(false);
      }
    } finally {
      await rbac.deleteClusterRoleBinding({ name });
      await rbac.deleteClusterRole({ name });
    }
  });
});
