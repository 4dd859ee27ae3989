// What only a real kube-apiserver can tell: Trellis's CRDs install and become Established,
// their OpenAPI schemas and CEL rules reject bad objects with the schema's own messages,
// and status writes go through the status subresource without bumping the generation.
import { expect } from 'chai';
import { ApiextensionsV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from '../../src/cli/local-cluster.js';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { group, version, volumeClient } from '../support/volumes.js';

/** The status code and body of a rejected request, for asserting on the server's message. */
async function rejection(request: Promise<unknown>): Promise<{ code: number; body: string }> {
  try {
    await request;
  } catch (err) {
    const e = err as { code?: number; body?: unknown };
    return { code: e.code ?? 0, body: typeof e.body === 'string' ? e.body : JSON.stringify(e.body) };
  }
  throw new Error('the server accepted a request it should have rejected');
}

describe('kube-apiserver with the Trellis CRDs @integration', () => {
  const controlPlane = useSharedControlPlane();
  const volumes = () => volumeClient(controlPlane().kubeConfig);

  it('installs every CRD in crds/ and reports it Established', async () => {
    const files = readdirSync(join(repoRoot, 'crds')).filter((f) => f.endsWith('.yaml'));
    expect(files).to.have.length.greaterThan(0);
    const api = controlPlane().kubeConfig.makeApiClient(ApiextensionsV1Api);
    for (const file of files) {
      const { metadata } = parse(readFileSync(join(repoRoot, 'crds', file), 'utf8')) as { metadata: { name: string } };
      const crd = await api.readCustomResourceDefinition({ name: metadata.name });
      const established = crd.status?.conditions?.find((c) => c.type === 'Established');
      expect(established?.status, `${metadata.name} Established`).to.equal('True');
    }
  });

  it('rejects an invalid Backend with the schema message', async () => {
    const answer = await rejection(
      controlPlane().kubeConfig.makeApiClient(CustomObjectsApi).createClusterCustomObject({
        group,
        version,
        plural: 'backends',
        body: {
          apiVersion: `${group}/${version}`,
          kind: 'Backend',
          metadata: { name: `invalid-${Date.now()}` },
          spec: { driver: 'nfs', limits: { maxConcurrentOperations: 0 } },
        },
      }),
    );
    expect(answer.code).to.equal(422);
    expect(answer.body).to.include('spec.driver: Unsupported value: \\"nfs\\"');
    expect(answer.body).to.include('spec.limits.maxConcurrentOperations');
    expect(answer.body).to.include('should be greater than or equal to 1');
  });

  it("rejects a change of a Volume's spec.backend with the CEL rule's message", async () => {
    const namespace = await testNamespace('cel');
    const created = await volumes().create(namespace, 'data');

    const answer = await rejection(volumes().replace(namespace, { ...created, spec: { ...created.spec, backend: 'array-b' } }));
    expect(answer.code).to.equal(422);
    expect(answer.body).to.include('spec.backend');
    expect(answer.body).to.include('backend is immutable');

    // The same replace that keeps the backend and grows the volume is accepted.
    const grown = await volumes().replace(namespace, { ...created, spec: { ...created.spec, capacity: '2Gi' } });
    expect(grown.spec.capacity).to.equal('2Gi');
  });

  it('writes status through the subresource without bumping metadata.generation', async () => {
    const namespace = await testNamespace('status');
    const created = await volumes().create(namespace, 'data');
    expect(created.metadata.generation).to.equal(1);

    const withStatus = await volumes().replaceStatus(namespace, { ...created, status: { phase: 'Pending', observedGeneration: 1 } });
    expect(withStatus.status?.phase).to.equal('Pending');
    expect(withStatus.metadata.generation).to.equal(1);
    expect(withStatus.metadata.resourceVersion).to.not.equal(created.metadata.resourceVersion);

    // A status written through the main resource is ignored: the subresource owns it.
    const ignored = await volumes().replace(namespace, { ...withStatus, status: { phase: 'Failed' } });
    expect(ignored.status?.phase).to.equal('Pending');
    expect(ignored.metadata.generation).to.equal(1);
  });
});
