// The operator as a process on the shared control plane, with examples/01 and 02 applied as
// a newcomer would: Backends Online with capacity and capabilities, Volumes Available with a
// handle, `kubectl wait --for=condition=Ready` working on both; a Backend with Volumes is held
// by its finalizer with the count, and goes once they are deleted (Delete removes the storage
// volume, Retain keeps it and says so in an Event).
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { repoRoot } from '../../src/cli/local-cluster.js';
import { listVolumes, startOperator, startSimArray, type OperatorChild, type SimArray } from '../../src/cli/operator-burst.js';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { when } from '../support/operator-process.js';

describe('trellis operator: examples/01 and 02 end to end @integration', function () {
  this.timeout(300_000);
  const controlPlane = useSharedControlPlane();
  let array: SimArray | undefined;
  let operator: OperatorChild | undefined;
  let hostpathRoot: string | undefined;

  after(async () => {
    await operator?.kill();
    await array?.stop();
    if (hostpathRoot) rmSync(hostpathRoot, { recursive: true, force: true });
  });

  it('makes the examples Online and Available, kubectl wait works, and deletion is held while volumes remain', async () => {
    const cp = controlPlane();
    array = await startSimArray('array-a');
    hostpathRoot = mkdtempSync(join(tmpdir(), 'trellis-hostpath-'));
    const backendsYaml = readFileSync(join(repoRoot, 'examples', '01-backends.yaml'), 'utf8').replace('http://127.0.0.1:7101', array.url).replace('/var/lib/trellis/volumes', hostpathRoot);
    operator = await startOperator({ kubeconfigPath: cp.kubeconfigPath, extraFlags: ['--namespaces=team-a'] });
    await operator.ready();
    await cp.kubectl(['apply', '-f', '-'], { input: backendsYaml });
    await cp.kubectl(['apply', '-f', join(repoRoot, 'examples', '02-volumes.yaml')]);

    await cp.kubectl(['wait', '--for=condition=Ready', '--timeout=60s', 'backend/array-a', 'backend/local']);
    await cp.kubectl(['wait', '--for=condition=Ready', '--timeout=60s', '-n', 'team-a', 'volume/db-0', 'volume/db-1', 'volume/media']);

    const backends = await cp.kubectl(['get', 'tbe', 'array-a', 'local', '-o', 'wide']);
    expect(backends.stdout).to.match(/array-a\s+sim\s+Online\s+\d+\s+\d+\s+\d+/);
    expect(backends.stdout).to.match(/local\s+hostpath\s+Online/);
    const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
    const arrayA = (await custom.getClusterCustomObject({ group: 'trellis.dev', version: 'v1alpha1', plural: 'backends', name: 'array-a' })) as { status: Record<string, unknown> };
    expect(arrayA.status).to.include({ phase: 'Online', capacityBytes: 1024 ** 4 });
    expect(arrayA.status.capabilities).to.deep.equal({ nativeGroupSnapshots: true, snapshotData: true, volumeData: true, resize: true, topology: false });

    const volumes = await cp.kubectl(['get', 'tvol', '-n', 'team-a', '-o', 'wide']);
    expect(volumes.stdout).to.match(/db-0\s+array-a\s+10Gi\s+Available\s+vol-\S+/);
    expect(volumes.stdout).to.match(/media\s+array-a\s+50Gi\s+Available\s+vol-\S+/);
    const listed = await listVolumes(cp.kubeConfig, 'team-a');
    const onArray = array.server!.state.stats().volumes;
    expect(onArray).to.equal(3);
    for (const v of listed) expect(v.status?.capacityBytes).to.equal(v.metadata.name === 'media' ? 50 * 2 ** 30 : 10 * 2 ** 30);
    await when('volumeCount 3 on array-a', async () => {
      const b = (await custom.getClusterCustomObject({ group: 'trellis.dev', version: 'v1alpha1', plural: 'backends', name: 'array-a' })) as { status: { volumeCount?: number } };
      return b.status.volumeCount === 3;
    }, 60_000);

    // Deleting the Backend first: held, with the count and names.
    await cp.kubectl(['delete', 'backend', 'array-a', '--wait=false']);
    let seen = '';
    await when('the Backend to say why its deletion waits', async () => {
      const b = (await custom.getClusterCustomObject({ group: 'trellis.dev', version: 'v1alpha1', plural: 'backends', name: 'array-a' })) as { status: { phase?: string; conditions?: Array<{ type: string; message: string }> } };
      seen = JSON.stringify(b.status);
      const ready = b.status.conditions?.find((c) => c.type === 'Ready');
      return b.status.phase === 'Deleting' && /^deletion waits: 3 Volumes still on this backend \(team-a\/(db-0|db-1|media), team-a\/(db-0|db-1|media), team-a\/(db-0|db-1|media)\); delete them first$/.test(ready?.message ?? '');
    }, 30_000).catch((error: Error) => {
      throw new Error(`${error.message}; status: ${seen}; operator: ${operator!.output.slice(-10).join('\n')}`);
    });
    // The Volumes go first (db-0, db-1 Delete; media Retain), then the Backend follows.
    await cp.kubectl(['delete', '-n', 'team-a', 'volume', 'db-0', 'db-1', 'media', '--timeout=60s']);
    await cp.kubectl(['wait', '--for=delete', '--timeout=60s', 'backend/array-a']);
    const left = array.server!.state.stats().volumes;
    expect(left, 'only the Retain volume stays on the array').to.equal(1);
    const events = await cp.kubeConfig.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'team-a' });
    expect(events.items.some((e) => e.reason === 'Retained' && /stays on backend array-a/.test(e.message ?? ''))).to.equal(true);
    await cp.kubectl(['delete', 'backend', 'local', '--timeout=60s']);
    await operator.kill();
  });

  it('reads credentials from the Secret, names a bad option or a missing Secret, and never shows a credential value', async () => {
    const cp = controlPlane();
    const namespace = await testNamespace('creds');
    const token = `tok-${Math.random().toString(36).slice(2)}-value`;
    const secured = await startSimArray(`secured-${namespace}`, { token });
    try {
      await cp.kubectl(['create', 'secret', 'generic', 'array-creds', '-n', namespace, `--from-literal=token=${token}`]);
      const backends = [
        { name: `${namespace}-good`, config: { endpoint: secured.url }, secret: 'array-creds' },
        { name: `${namespace}-typo`, config: { endpont: secured.url }, secret: 'array-creds' },
        { name: `${namespace}-nosecret`, config: { endpoint: secured.url }, secret: 'not-there' },
      ];
      const yaml = backends
        .map((b) => JSON.stringify({ apiVersion: 'trellis.dev/v1alpha1', kind: 'Backend', metadata: { name: b.name }, spec: { driver: 'sim', config: b.config, credentialsSecretRef: { namespace, name: b.secret } } }))
        .join('\n---\n');
      const volume = { apiVersion: 'trellis.dev/v1alpha1', kind: 'Volume', metadata: { name: 'secured', namespace }, spec: { backend: `${namespace}-good`, capacity: '1Gi' } };
      operator = await startOperator({ kubeconfigPath: cp.kubeconfigPath, logLevel: 'debug', extraFlags: [`--namespaces=${namespace}`] });
      await operator.ready();
      await cp.kubectl(['apply', '-f', '-'], { input: yaml });
      await cp.kubectl(['apply', '-f', '-'], { input: JSON.stringify(volume) });
      await cp.kubectl(['wait', '--for=condition=Ready', '--timeout=60s', '-n', namespace, 'volume/secured']);

      const ready = async (name: string) => {
        const b = await cp.kubectl(['get', 'backend', name, '-o', 'jsonpath={.status.phase} {.status.conditions[?(@.type=="Ready")].message}']);
        return b.stdout;
      };
      await when('the typo named', async () => (await ready(`${namespace}-typo`)) === 'Offline sim driver config: unknown option "endpont"', 30_000);
      await when('the missing Secret named', async () => (await ready(`${namespace}-nosecret`)) === `Offline credentials Secret ${namespace}/not-there does not exist`, 30_000);

      // Nothing the run left readable holds the token: statuses, Events (all namespaces), log lines.
      const everything = [
        (await cp.kubectl(['get', 'backends,volumes', '-A', '-o', 'json'])).stdout,
        (await cp.kubectl(['get', 'events', '-A', '-o', 'json'])).stdout,
        operator.output.join('\n'),
      ];
      expect(operator.output.length, 'the operator logged').to.be.greaterThan(0);
      for (const text of everything) expect(text.includes(token)).to.equal(false);
      for (const b of backends) await cp.kubectl(['delete', 'backend', b.name, '--wait=false']);
      await cp.kubectl(['delete', '-n', namespace, 'volume/secured', '--timeout=60s']);
    } finally {
      await operator?.kill();
      await secured.stop();
    }
  });
});
