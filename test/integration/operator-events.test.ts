// Events and finalizers of `trellis operator` on a real apiserver: a phase change records
// one Event; a reconcile failing on every retry records one Event (a series), not one per
// retry; a finalizer is added before the first reconcile (a JSON patch guarded by a `test`
// of the absent list) and removed after cleanup, so the object then goes away; a change of a
// related kind (a Backend) re-enqueues exactly the objects the cache's index maps it to.
import { expect } from 'chai';
import { CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { OperatorProcesses, leads, when } from '../support/operator-process.js';
import { group, version, type VolumeObject } from '../support/volumes.js';

describe('trellis operator: Events, finalizers and related watches @integration', function () {
  this.timeout(180_000);
  const controlPlane = useSharedControlPlane();
  const processes = new OperatorProcesses();
  afterEach(() => processes.stopAll());

  it('records one Event per phase change and one series per repeated failure; adds and removes its finalizer', async () => {
    const namespace = await testNamespace('events');
    const finalizer = 'test.trellis.dev/cleanup';
    const custom = controlPlane().kubeConfig.makeApiClient(CustomObjectsApi);
    const eventsApi = controlPlane().kubeConfig.makeApiClient(EventsV1Api);
    const at = { group, version, namespace, plural: 'volumes' };
    const create = (name: string, annotations: Record<string, string> = {}) =>
      custom.createNamespacedCustomObject({ ...at, body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name, annotations }, spec: { backend: 'array-a', capacity: '1Gi' } } });
    const get = async (name: string) => (await custom.getNamespacedCustomObject({ ...at, name }).catch(() => undefined)) as (VolumeObject & { metadata: { finalizers?: string[] } }) | undefined;
    const operator = await processes.start(controlPlane().kubeconfigPath, [`--namespaces=${namespace}`, '--leader-elect=false'], { TEST_FINALIZER: finalizer });
    await when('the operator to run', () => leads(operator).then((l) => l || operator.output.some((line) => line.includes('leading: controllers started'))), 60_000);
    await create('good');
    await create('bad', { 'test.trellis.dev/fail': 'backend array-a refused: quota exceeded' });
    await when('good to be Available', async () => (await get('good'))?.status?.phase === 'Available');
    expect((await get('good'))?.metadata.finalizers).to.deep.equal([finalizer]);
    // Retries back off from 1 s: a few seconds give several failures.
    await when('three failed reconciles of bad', async () => ((await operator.metric('controller_runtime_reconcile_errors_total', { controller: 'test-volume' })) ?? 0) >= 3, 60_000);
    await new Promise((r) => setTimeout(r, 500));
    const events = (await eventsApi.listNamespacedEvent({ namespace })).items;
    const about = (name: string) => events.filter((e) => e.regarding?.name === name);
    expect(about('good').map((e) => [e.type, e.reason, e.action])).to.deep.equal([['Normal', 'Available', 'PhaseChange']]);
    expect(about('bad').map((e) => [e.type, e.reason, e.note])).to.deep.equal([['Warning', 'ReconcileFailed', 'backend array-a refused: quota exceeded']]);
    expect(about('good')[0].reportingController).to.equal('trellis.dev/operator');

    await custom.deleteNamespacedCustomObject({ ...at, name: 'good' });
    await when('good to be gone after its cleanup', async () => (await get('good')) === undefined, 30_000);
    expect(operator.writes().some((w) => w.name === 'good' && w.cleaned)).to.equal(true);
  });

  it('a Backend change re-enqueues exactly the Volumes on that Backend', async () => {
    const namespace = await testNamespace('related');
    const custom = controlPlane().kubeConfig.makeApiClient(CustomObjectsApi);
    const at = { group, version, namespace, plural: 'volumes' };
    const [x, y] = [`be-x-${namespace}`, `be-y-${namespace}`];
    const create = (name: string, backend: string) =>
      custom.createNamespacedCustomObject({ ...at, body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name, annotations: { 'test.trellis.dev/needs-backend': '' } }, spec: { backend, capacity: '1Gi' } } });
    const phase = async (name: string) => ((await custom.getNamespacedCustomObject({ ...at, name })) as VolumeObject).status?.phase;
    const operator = await processes.start(controlPlane().kubeconfigPath, [`--namespaces=${namespace}`, '--leader-elect=false']);
    await when('the operator to run', () => operator.output.some((line) => line.includes('leading: controllers started')), 60_000);
    await create('on-x', x);
    await create('on-y', y);
    await when('both to be Pending', async () => (await phase('on-x')) === 'Pending' && (await phase('on-y')) === 'Pending');
    await new Promise((r) => setTimeout(r, 1_000));
    const reconciles = (name: string) => operator.writes().filter((w) => w.name === name && w.reconciled).length;
    const onYBefore = reconciles('on-y');
    await custom.createClusterCustomObject({ group, version, plural: 'backends', body: { apiVersion: `${group}/${version}`, kind: 'Backend', metadata: { name: x }, spec: { driver: 'sim' } } });
    try {
      await when('on-x to be Available once its Backend exists', async () => (await phase('on-x')) === 'Available', 30_000);
      await new Promise((r) => setTimeout(r, 1_000));
      expect(reconciles('on-y'), 'the Volume on another Backend was not re-enqueued').to.equal(onYBefore);
      expect(await phase('on-y')).to.equal('Pending');
    } finally {
      await custom.deleteClusterCustomObject({ group, version, plural: 'backends', name: x });
    }
  });
});
