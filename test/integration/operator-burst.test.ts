// The operator as a process (`trellis operator`, real control plane, simulated arrays in this
// process) under load and faults:
// - 1,200 Volumes over 4 arrays (Backend limit 20 each; the arrays themselves accept 64, so
//   the limit seen is Trellis's own; latency scaled down: median 10 ms per operation, 20 ms
//   per create), applied at once, with the operator SIGKILLed at 3 seeded points and
//   restarted: all Available, each array's peak in flight within its limit, the arrays hold
//   exactly 1,200 volumes, and their operation logs show each created once;
// - an array stopped mid-burst: its Backend goes Offline with the array's message, its
//   Volumes wait with a condition naming it, the other Backend's Volumes all become
//   Available meanwhile; restarted, everything converges without a duplicate;
// - resizes while a create or another resize of the same volume is in flight are
//   serialized (no overlap in the array's operation log); a shrink is refused and changes nothing.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import type { OplogEntry } from '../../src/backends/sim/oplog.js';
import { createBurst, listVolumes, startOperator, startSimArray, waitAvailable, type ListedVolume, type OperatorChild, type SimArray } from '../../src/cli/operator-burst.js';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { when } from '../support/operator-process.js';

const LIMIT = 20;
const api = (kubeConfig: KubeConfig) => kubeConfig.makeApiClient(CustomObjectsApi);
const gv = { group: 'trellis.dev', version: 'v1alpha1' };

async function applyBackend(kubeConfig: KubeConfig, name: string, endpoint: string): Promise<void> {
  await api(kubeConfig).createClusterCustomObject({
    ...gv,
    plural: 'backends',
    body: { apiVersion: 'trellis.dev/v1alpha1', kind: 'Backend', metadata: { name }, spec: { driver: 'sim', config: { endpoint }, limits: { maxConcurrentOperations: LIMIT } } },
  });
}

async function backendStatus(kubeConfig: KubeConfig, name: string): Promise<{ phase?: string; conditions?: Array<{ type: string; reason: string; message: string }> }> {
  return ((await api(kubeConfig).getClusterCustomObject({ ...gv, plural: 'backends', name })) as { status?: Record<string, never> }).status ?? {};
}

/** Creates per name on one array: the distinct volume ids its successful creates made or found. */
function createsByName(oplog: readonly OplogEntry[]): Map<string, Set<string>> {
  const byName = new Map<string, Set<string>>();
  for (const e of oplog) {
    if (e.op !== 'createVolume' || e.outcome !== 'ok') continue;
    const ids = byName.get(e.target) ?? new Set<string>();
    for (const id of e.writes) if (id.startsWith('vol-')) ids.add(id);
    byName.set(e.target, ids);
  }
  return byName;
}

/** Every storage volume on the array is one Volume's (tvol-<uid>), once; returns how many. */
async function expectOnePerVolume(array: SimArray, volumes: readonly ListedVolume[]): Promise<number> {
  const records = await array.server!.state.listVolumes();
  const names = records.map((r) => r.name);
  expect(new Set(names).size, `${array.name}: no name twice`).to.equal(names.length);
  expect(names.sort()).to.deep.equal(volumes.map((v) => `tvol-${v.metadata.uid}`).sort());
  for (const v of volumes) expect(v.status?.handle, `${v.metadata.name}'s handle`).to.equal(records.find((r) => r.name === `tvol-${v.metadata.uid}`)!.id);
  return records.length;
}

/** A seeded PRNG (mulberry32), so the kill points are the same on every run. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('trellis operator: provisioning at scale @integration', function () {
  this.timeout(900_000);
  const controlPlane = useSharedControlPlane();
  const arrays: SimArray[] = [];
  const operators: OperatorChild[] = [];
  const start = async (kubeConfigPath: string, namespace: string, workers = 100) => {
    const operator = await startOperator({ kubeconfigPath: kubeConfigPath, workers, logLevel: 'warn', extraFlags: [`--namespaces=${namespace}`] });
    operators.push(operator);
    await operator.ready();
    return operator;
  };
  afterEach(async () => {
    for (const operator of operators.splice(0)) await operator.kill();
    for (const array of arrays.splice(0)) await array.stop();
  });

  it('makes 1,200 Volumes over 4 arrays Available within each limit, each created once, through 3 SIGKILLs', async () => {
    const cp = controlPlane();
    const namespace = await testNamespace('burst');
    const suffix = randomBytes(3).toString('hex');
    const names = ['a', 'b', 'c', 'd'].map((x) => `burst-${suffix}-${x}`);
    for (const [i, name] of names.entries()) arrays.push(await startSimArray(name, { seed: i + 1 }));
    for (const [i, name] of names.entries()) await applyBackend(cp.kubeConfig, name, arrays[i]!.url);
    let operator = await start(cp.kubeconfigPath, namespace);
    for (const name of names) await when(`${name} Online`, async () => (await backendStatus(cp.kubeConfig, name)).phase === 'Online', 60_000);

    const total = 1200;
    const random = seeded(20);
    const killAt = [random(), random(), random()].map((r) => Math.floor(total * (0.1 + 0.7 * r))).sort((x, y) => x - y);
    const started = Date.now();
    const creating = createBurst(cp.kubeConfig, { namespace, perBackend: total / names.length, backends: names });
    const kills: string[] = [];
    for (const threshold of killAt) {
      await waitAvailable(cp.kubeConfig, namespace, threshold, { timeoutMs: 600_000 });
      await operator.kill();
      kills.push(`SIGKILL at >= ${threshold} Available (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      operator = await start(cp.kubeconfigPath, namespace);
    }
    await creating;
    await waitAvailable(cp.kubeConfig, namespace, total, { timeoutMs: 600_000 });
    const seconds = (Date.now() - started) / 1000;

    const peaks = arrays.map((a) => a.server!.state.stats().peakInFlight);
    process.stderr.write(`      ${total} volumes Available in ${seconds.toFixed(1)} s through ${kills.join(', ')}; array peaks in flight ${JSON.stringify(peaks)} (limit ${LIMIT})\n`);
    for (const peak of peaks) expect(peak).to.be.within(1, LIMIT);
    const volumes = await listVolumes(cp.kubeConfig, namespace);
    let onArrays = 0;
    for (const array of arrays) {
      onArrays += await expectOnePerVolume(array, volumes.filter((v) => v.spec.backend === array.name));
      for (const [name, ids] of createsByName(array.server!.state.oplog())) expect(ids.size, `${array.name} ${name}: one volume made or found`).to.equal(1);
    }
    expect(onArrays).to.equal(total);
  });

  it('a stopped array takes its Backend Offline and its Volumes wait, the other backend goes on; restarted, all converge', async () => {
    const cp = controlPlane();
    const namespace = await testNamespace('offline');
    const suffix = randomBytes(3).toString('hex');
    const [up, down] = [`steady-${suffix}`, `flaky-${suffix}`];
    arrays.push(await startSimArray(up, { seed: 1 }), await startSimArray(down, { seed: 2, persistent: true }));
    const [steady, flaky] = arrays as [SimArray, SimArray];
    // Slow enough that the burst is still running on both arrays when one stops.
    for (const array of arrays) array.server!.state.configure({ latency: { medianMs: 40, sigma: 0.3, maxMs: 2_000, factors: { createVolume: 2 } } });
    await applyBackend(cp.kubeConfig, up, steady.url);
    await applyBackend(cp.kubeConfig, down, flaky.url);
    await start(cp.kubeconfigPath, namespace);
    for (const name of [up, down]) await when(`${name} Online`, async () => (await backendStatus(cp.kubeConfig, name)).phase === 'Online', 60_000);

    const perBackend = 150;
    await createBurst(cp.kubeConfig, { namespace, perBackend, backends: [up, down] });
    await when('some volumes on the flaky array Available', async () => (await listVolumes(cp.kubeConfig, namespace)).filter((v) => v.spec.backend === down && v.status?.phase === 'Available').length >= 10, 120_000);
    await flaky.stop();
    await when(`${down} Offline with the array's message`, async () => {
      const status = await backendStatus(cp.kubeConfig, down);
      return status.phase === 'Offline' && /ECONNREFUSED/.test(status.conditions?.find((c) => c.type === 'Ready')?.message ?? '');
    }, 60_000);
    // The steady backend's volumes all become Available while the flaky array is down.
    await waitAvailable(cp.kubeConfig, namespace, perBackend + 10, { timeoutMs: 300_000 });
    await when(`every ${up} volume Available`, async () => (await listVolumes(cp.kubeConfig, namespace)).filter((v) => v.spec.backend === up && v.status?.phase === 'Available').length === perBackend, 300_000);
    const waiting = (await listVolumes(cp.kubeConfig, namespace)).filter((v) => v.spec.backend === down && v.status?.phase !== 'Available');
    expect(waiting.length).to.be.greaterThan(0);
    await when('the waiting volumes to name their backend', async () => {
      const now = (await listVolumes(cp.kubeConfig, namespace)).filter((v) => v.spec.backend === down && v.status?.phase !== 'Available');
      const pending = now.filter((v) => v.status?.phase === 'Pending');
      const named = pending.filter((v) => v.status?.conditions?.some((c) => c.reason === 'BackendNotReady' && c.message.includes(`backend ${down} is Offline`)));
      // Those whose create was in flight when the array stopped stay Creating until it answers again.
      return pending.length > 0 && named.length === pending.length && now.every((v) => v.status?.phase === 'Pending' || v.status?.phase === 'Creating');
    }, 120_000);

    await flaky.start();
    await waitAvailable(cp.kubeConfig, namespace, 2 * perBackend, { timeoutMs: 300_000 });
    expect((await backendStatus(cp.kubeConfig, down)).phase).to.equal('Online');
    const volumes = await listVolumes(cp.kubeConfig, namespace);
    expect(await expectOnePerVolume(steady, volumes.filter((v) => v.spec.backend === up))).to.equal(perBackend);
    expect(await expectOnePerVolume(flaky, volumes.filter((v) => v.spec.backend === down))).to.equal(perBackend);
  });

  it('serializes resizes with a create and with each other on one volume, and refuses a shrink', async () => {
    const cp = controlPlane();
    const namespace = await testNamespace('resize');
    const backend = `resize-${randomBytes(3).toString('hex')}`;
    const array = await startSimArray(backend, { seed: 3 });
    arrays.push(array);
    await applyBackend(cp.kubeConfig, backend, array.url);
    await start(cp.kubeconfigPath, namespace, 10);
    await when(`${backend} Online`, async () => (await backendStatus(cp.kubeConfig, backend)).phase === 'Online', 60_000);
    const custom = api(cp.kubeConfig);
    const at = { ...gv, namespace, plural: 'volumes', name: 'grow' };
    const capacity = (value: string) => cp.kubectl(['patch', '-n', namespace, 'volume', 'grow', '--type=merge', '-p', JSON.stringify({ spec: { capacity: value } })]);
    const phase = async () => ((await custom.getNamespacedCustomObject(at)) as ListedVolume).status?.phase;

    // Creates and resizes each hold the array for 1.5 s, so the next spec change lands while one runs.
    array.server!.state.setFault('createVolume', { stallMs: 1_500 });
    array.server!.state.setFault('resizeVolume', { stallMs: 1_500 });
    await custom.createNamespacedCustomObject({ ...gv, namespace, plural: 'volumes', body: { apiVersion: 'trellis.dev/v1alpha1', kind: 'Volume', metadata: { name: 'grow' }, spec: { backend, capacity: '1Gi' } } });
    await when('the create in flight', async () => (await phase()) === 'Creating', 30_000);
    await capacity('2Gi');
    await when('a resize in flight', async () => (await phase()) === 'Resizing', 30_000);
    await capacity('3Gi');
    await when('3Gi Available', async () => {
      const v = (await custom.getNamespacedCustomObject(at)) as ListedVolume;
      return v.status?.phase === 'Available' && v.status.capacityBytes === 3 * 2 ** 30;
    }, 60_000);
    const volume = (await custom.getNamespacedCustomObject(at)) as ListedVolume;
    const ops = array.server!.state.oplog().filter((e) => e.target === volume.status!.handle || e.target === `name:tvol-${volume.metadata.uid}`).filter((e) => e.outcome === 'ok' && e.op !== 'getVolume');
    expect(ops.map((e) => e.op)).to.deep.equal(['createVolume', 'resizeVolume', 'resizeVolume']);
    for (let i = 1; i < ops.length; i++) expect(ops[i]!.start, `${ops[i]!.op} starts after ${ops[i - 1]!.op} ended`).to.be.at.least(ops[i - 1]!.end);
    expect(array.server!.state.stats().conflicts, 'no request met another on the volume').to.equal(0);

    // A shrink: refused with a message, nothing changes on the array.
    array.server!.state.setFault('resizeVolume', {});
    const before = array.server!.state.oplog().length;
    await capacity('1Gi');
    await when('the shrink refused', async () => {
      const v = (await custom.getNamespacedCustomObject(at)) as ListedVolume;
      return !!v.status?.conditions?.some((c) => c.reason === 'ShrinkRefused' && /below the provisioned 3Gi: volumes can grow, never shrink; nothing was changed/.test(c.message));
    }, 30_000);
    const after = (await custom.getNamespacedCustomObject(at)) as ListedVolume;
    expect(after.status).to.include({ phase: 'Available', capacityBytes: 3 * 2 ** 30 });
    expect(array.server!.state.oplog().slice(before).filter((e) => e.op === 'resizeVolume')).to.deep.equal([]);
  });
});
