// An idle operator writes nothing: with 100 settled Volumes, a minute passes without one
// status write (counted from the server's side by a watch of the namespace's Volumes, and
// from the operator's side by its write log and its API write counter).
import { expect } from 'chai';
import { Watch } from '@kubernetes/client-node';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { OperatorProcesses, leads, when } from '../support/operator-process.js';
import { group, version, volumeClient } from '../support/volumes.js';

const IDLE_MS = 60_000;

describe('trellis operator: an idle operator @integration', function () {
  this.timeout(IDLE_MS + 180_000);
  const controlPlane = useSharedControlPlane();
  const processes = new OperatorProcesses();
  afterEach(() => processes.stopAll());

  it('makes zero writes in 60 s with 100 settled objects', async () => {
    const namespace = await testNamespace('idle');
    const volumes = volumeClient(controlPlane().kubeConfig);
    const names = Array.from({ length: 100 }, (_, i) => `v-${i}`);
    await Promise.all(names.map((name) => volumes.create(namespace, name)));
    const operator = await processes.start(controlPlane().kubeconfigPath, [`--namespaces=${namespace}`, `--leader-election-id=trellis-${namespace}`, `--leader-election-namespace=${namespace}`]);
    await when('the operator to lead', () => leads(operator), 60_000);
    await when('100 volumes written', () => new Set(operator.writes().map((w) => w.name)).size === 100, 120_000);
    // Settled: our own writes' watch events have come back and been reconciled (to no write).
    await new Promise((r) => setTimeout(r, 3_000));

    const list = await volumes.list(namespace);
    expect(list.items.filter((v) => v.status?.phase === 'Available')).to.have.length(100);
    const writesBefore = operator.writes().length;
    const apiWrites = async () => (await operator.metric('trellis_kube_api_writes_total', { resource: 'volumes/status' })) ?? 0;
    const eventWrites = async () => (await operator.metric('trellis_kube_api_writes_total', { resource: 'events' })) ?? 0;
    const [apiBefore, eventsBefore] = [await apiWrites(), await eventWrites()];
    const seen: string[] = [];
    const watch = await new Watch(controlPlane().kubeConfig).watch(
      `/apis/${group}/${version}/namespaces/${namespace}/volumes`,
      { resourceVersion: list.metadata.resourceVersion },
      (type, object: { metadata?: { name?: string } }) => seen.push(`${type} ${object.metadata?.name}`),
      () => {},
    );
    try {
      await new Promise((r) => setTimeout(r, IDLE_MS));
    } finally {
      watch.abort();
    }
    const report = { watchEvents: seen.length, logged: operator.writes().length - writesBefore, statusWrites: (await apiWrites()) - apiBefore, eventWrites: (await eventWrites()) - eventsBefore };
    process.stderr.write(`      writes in ${IDLE_MS / 1000} s idle with 100 settled volumes: ${JSON.stringify(report)}\n`);
    expect(seen, 'watch events on the Volumes').to.deep.equal([]);
    expect(report).to.deep.equal({ watchEvents: 0, logged: 0, statusWrites: 0, eventWrites: 0 });
    expect(operator.exitedAt()).to.equal(undefined);
  });
});
