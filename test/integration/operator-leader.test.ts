// Two `trellis operator` replicas on one kube-apiserver: leader election, fencing and a
// graceful handover. The replicas run test/support/operator-child.ts (the real operator
// command with a test Volume controller that logs every status write it makes).
import { expect } from 'chai';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { OperatorProcesses, httpStatus, leads, when } from '../support/operator-process.js';
import { group, version, volumeClient, type VolumeObject } from '../support/volumes.js';

describe('trellis operator: two replicas on one apiserver @integration', function () {
  this.timeout(240_000);
  const controlPlane = useSharedControlPlane();
  const processes = new OperatorProcesses();
  afterEach(() => processes.stopAll());

  const setup = async (prefix: string, extraFlags: string[] = []) => {
    const namespace = await testNamespace(prefix);
    const flags = [`--namespaces=${namespace}`, `--leader-election-id=trellis-${namespace}`, `--leader-election-namespace=${namespace}`, ...extraFlags];
    const volumes = volumeClient(controlPlane().kubeConfig);
    const custom = controlPlane().kubeConfig.makeApiClient(CustomObjectsApi);
    const list = async () => ((await custom.listNamespacedCustomObject({ group, version, namespace, plural: 'volumes' })) as { items: VolumeObject[] }).items;
    const available = async (names: string[]) => {
      const items = await list();
      return names.every((n) => items.find((v) => v.metadata.name === n)?.status?.phase === 'Available');
    };
    const start = () => processes.start(controlPlane().kubeconfigPath, flags);
    return { namespace, volumes, custom, list, available, start };
  };

  it('exactly one replica reconciles; killing it hands over within the lease duration; no object is written by both', async () => {
    const { namespace, volumes, list, available, start } = await setup('leader');
    const a = await start();
    await when('replica a to lead', () => leads(a));
    const b = await start();
    await when('replica b to sync its caches (/readyz)', async () => (await httpStatus(`${b.probesUrl}/readyz`)) === 200);
    const first = Array.from({ length: 10 }, (_, i) => `first-${i}`);
    for (const name of first) await volumes.create(namespace, name);
    // Wait for the writers' log lines (each comes just after its write), then check the server.
    const written = (names: string[]) => () => names.every((n) => processes.allWrites().some((w) => w.name === n && w.resourceVersion));
    await when('the first volumes to be written', written(first));
    expect(await available(first)).to.equal(true);
    expect(await leads(b)).to.equal(false);
    expect(b.writes()).to.deep.equal([]);
    expect(new Set(a.writes().map((w) => w.name))).to.deep.equal(new Set(first));

    a.child.kill('SIGKILL');
    await a.exited;
    const killedAt = a.exitedAt()!;
    const tookOverAt = await when('replica b to lead', () => leads(b), 30_000);
    const takeoverMs = tookOverAt - killedAt;
    process.stderr.write(`      takeover after SIGKILL of the leader: ${takeoverMs} ms\n`);
    // b watches the Lease and tries when the 15 s since a's last renewal (before the kill) run
    // out; 500 ms for the attempt and the 100 ms polling of b's metric.
    expect(takeoverMs).to.be.at.most(15_000 + 500);

    const second = Array.from({ length: 5 }, (_, i) => `second-${i}`);
    for (const name of second) await volumes.create(namespace, name);
    await when('the second volumes to be written', written(second));
    expect(await available(second)).to.equal(true);

    const byA = a.writes();
    const byB = b.writes();
    // b re-reconciled every object when it started leading but wrote none of a's: their status was settled.
    expect(new Set(byB.map((w) => w.name))).to.deep.equal(new Set(second));
    expect(byA.every((w) => w.at < killedAt)).to.equal(true);
    expect(byB.every((w) => w.at > killedAt)).to.equal(true);
    // The server's own record: only Trellis's field manager ever wrote a status.
    for (const volume of await list()) {
      const managers = ((volume.metadata as { managedFields?: Array<{ manager: string; subresource?: string }> }).managedFields ?? []).filter((m) => m.subresource === 'status').map((m) => m.manager);
      expect(managers, volume.metadata.name).to.deep.equal(['trellis']);
    }
  });

  it('SIGTERM during slow reconciles: the short one finishes, the long one is aborted past the grace, exit 0, and the lease goes to the other replica at once', async () => {
    const { namespace, custom, available, start } = await setup('sigterm', ['--shutdown-grace-seconds=3']);
    const a = await start();
    await when('replica a to lead', () => leads(a));
    const b = await start();
    await when('replica b to sync its caches', async () => (await httpStatus(`${b.probesUrl}/readyz`)) === 200);
    const create = (name: string, sleepMs: number) =>
      custom.createNamespacedCustomObject({
        group,
        version,
        namespace,
        plural: 'volumes',
        body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name, annotations: { 'test.trellis.dev/sleep-ms': String(sleepMs) } }, spec: { backend: 'array-a', capacity: '1Gi' } },
      });
    await create('short', 1_500);
    await create('long', 120_000);
    await when('both reconciles to start on a', () => a.writes().filter((w) => w.started).length === 2);
    const termAt = Date.now();
    a.child.kill('SIGTERM');
    const exit = await a.exited;
    const exitMs = a.exitedAt()! - termAt;
    const tookOverAt = await when('replica b to lead', () => leads(b), 20_000);
    process.stderr.write(`      SIGTERM to exit: ${exitMs} ms; exit to takeover: ${tookOverAt - a.exitedAt()!} ms\n`);
    expect(exit).to.deep.equal({ code: 0, signal: null });
    const byA = a.writes();
    expect(byA.some((w) => w.name === 'short' && w.resourceVersion), 'short finished within the grace').to.equal(true);
    expect(byA.some((w) => w.name === 'long' && w.aborted), 'long aborted past the grace').to.equal(true);
    expect(byA.some((w) => w.name === 'long' && w.resourceVersion), 'long never written by a').to.equal(false);
    expect(exitMs).to.be.below(3_000 + 5_000);
    // Released, not expired: b leads at its next try, far sooner than the 15 s lease.
    expect(tookOverAt - a.exitedAt()!).to.be.below(5_000);
    expect(await available(['short'])).to.equal(true);
  });

  it('a leader frozen past its renew deadline writes nothing once it wakes, stops its workers and exits 1, while the other leads', async () => {
    const { namespace, custom, available, start } = await setup('fence');
    const a = await start();
    await when('replica a to lead', () => leads(a));
    const b = await start();
    await when('replica b to sync its caches', async () => (await httpStatus(`${b.probesUrl}/readyz`)) === 200);
    await custom.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural: 'volumes',
      body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name: 'slow', annotations: { 'test.trellis.dev/sleep-ms': '20000' } }, spec: { backend: 'array-a', capacity: '1Gi' } },
    });
    await when('a to start reconciling slow', () => a.writes().some((w) => w.name === 'slow' && w.started));
    // Frozen (a GC pause, a stalled node): a cannot renew, but believes it leads.
    a.child.kill('SIGSTOP');
    await when('b to lead', () => leads(b), 30_000);
    a.child.kill('SIGCONT');
    const exit = await a.exited;
    expect(exit).to.deep.equal({ code: 1, signal: null });
    expect(a.writes().filter((w) => w.name === 'slow').map((w) => (w.started ? 'started' : w.aborted ? 'aborted' : 'written'))).to.deep.equal(['started', 'aborted']);
    // Its write log line comes just after the write: wait for the line, not the status.
    await when('b to finish slow', () => b.writes().some((w) => w.name === 'slow' && w.resourceVersion), 60_000);
    expect(await available(['slow'])).to.equal(true);
  });
});
