// `trellis operator` against a control plane that fails under it: readiness before the
// caches sync, watches that recover from kube-apiserver and etcd restarts without a process
// restart, and the metrics a dashboard reads.
import { expect } from 'chai';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { OperatorProcesses, httpStatus, leads, metricValue, when } from '../support/operator-process.js';
import { volumeClient } from '../support/volumes.js';

describe('trellis operator: readiness, watch recovery and metrics @integration', function () {
  this.timeout(240_000);
  const controlPlane = useSharedControlPlane();
  const processes = new OperatorProcesses();
  afterEach(async () => {
    await processes.stopAll();
    // A failed test must not leave the shared control plane down for the next one.
    await controlPlane().startApiserver();
  });

  it('/readyz fails until the caches sync; watches recover from apiserver and etcd restarts; /metrics shows real values', async () => {
    const namespace = await testNamespace('recovery');
    const volumes = volumeClient(controlPlane().kubeConfig);
    const available = async (name: string) => {
      const { items } = await volumes.list(namespace);
      return items.find((v) => v.metadata.name === name)?.status?.phase === 'Available';
    };

    // Started while the apiserver is down: serving probes, not ready.
    await controlPlane().stopApiserver();
    const operator = await processes.start(controlPlane().kubeconfigPath, [`--namespaces=${namespace}`, `--leader-election-id=trellis-${namespace}`, `--leader-election-namespace=${namespace}`]);
    await when('the probes to answer', async () => (await httpStatus(`${operator.probesUrl}/healthz`)) === 200, 30_000);
    expect(await httpStatus(`${operator.probesUrl}/readyz`)).to.equal(503);
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await httpStatus(`${operator.probesUrl}/readyz`)).to.equal(503);
    await controlPlane().startApiserver();
    const readyAfterMs = (await when('/readyz', async () => (await httpStatus(`${operator.probesUrl}/readyz`)) === 200, 60_000)) - Date.now();
    await when('the operator to lead', () => leads(operator), 30_000);
    await volumes.create(namespace, 'before');
    await when('before to be Available', () => available('before'));
    void readyAfterMs;

    const restarts = async () => (await operator.metric('trellis_informer_restarts_total')) ?? 0;
    const beforeRestart = await restarts();
    await controlPlane().restartApiserver();
    const apiserverBack = Date.now();
    await volumes.create(namespace, 'after-apiserver');
    const apiserverRecovered = await when('after-apiserver to be Available', () => available('after-apiserver'), 90_000);
    const afterApiserver = await restarts();

    await controlPlane().restartEtcd();
    const etcdBack = Date.now();
    await volumes.create(namespace, 'after-etcd');
    const etcdRecovered = await when('after-etcd to be Available', () => available('after-etcd'), 90_000);
    process.stderr.write(
      `      reconciling again ${apiserverRecovered - apiserverBack} ms after the apiserver restart, ${etcdRecovered - etcdBack} ms after the etcd restart; informer restarts ${beforeRestart} -> ${afterApiserver} -> ${await restarts()}\n`,
    );
    expect(operator.exitedAt(), 'the operator process kept running').to.equal(undefined);
    expect(afterApiserver).to.be.greaterThan(beforeRestart);

    const text = await (await fetch(operator.metricsUrl)).text();
    const value = (name: string, labels: Record<string, string> = {}) => metricValue(text, name, labels) ?? 0;
    expect(value('controller_runtime_reconcile_total', { controller: 'test-volume', result: 'success' })).to.be.at.least(3);
    expect(value('controller_runtime_reconcile_time_seconds_count', { controller: 'test-volume' })).to.be.at.least(3);
    expect(value('controller_runtime_max_concurrent_reconciles', { controller: 'test-volume' })).to.equal(10);
    expect(value('workqueue_adds_total', { name: 'test-volume' })).to.be.at.least(3);
    expect(metricValue(text, 'controller_runtime_active_workers', { controller: 'test-volume' })).to.be.a('number');
    expect(value('leader_election_master_status')).to.equal(1);
    expect(value('trellis_informer_synced', { kind: 'Volume' })).to.equal(1);
    expect(metricValue(text, 'trellis_informer_last_sync_age_seconds', { kind: 'Volume' })).to.be.a('number');
    expect(value('trellis_kube_api_writes_total', { resource: 'volumes/status' })).to.be.at.least(3);
    expect(value('process_cpu_seconds_total')).to.be.greaterThan(0);
  });
});
