// Volume objects for integration tests, through client-node's CustomObjectsApi, so each
// test states only what differs (namespace, name, capacity).
import { CustomObjectsApi, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';

export const group = 'trellis.dev';
export const version = 'v1alpha1';

export interface VolumeObject extends KubernetesObject {
  metadata: { name: string; namespace: string; generation: number; resourceVersion: string };
  spec: { backend: string; capacity: string | number };
  status?: { phase?: string; observedGeneration?: number };
}

/**
 * Calls `request` again while the apiserver answers 429, after the Retry-After it sends (as
 * client-go does): a restarted kube-apiserver answers "storage is (re)initializing" for a
 * while after /readyz, and again each time it rebuilds a CRD's storage.
 */
export async function retryingThrottled<T>(request: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await request();
    } catch (err) {
      const { code, headers } = err as { code?: number; headers?: Record<string, string> };
      if (code !== 429 || Date.now() > deadline) throw err;
      const seconds = Number(headers?.['retry-after']);
      await new Promise((r) => setTimeout(r, Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 5) * 1000 : 1000));
    }
  }
}

export function volumeClient(kubeConfig: KubeConfig) {
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const at = (namespace: string) => ({ group, version, namespace, plural: 'volumes' });
  const list = (namespace: string) =>
    retryingThrottled(() => custom.listNamespacedCustomObject(at(namespace))) as Promise<{ metadata: { resourceVersion: string }; items: VolumeObject[] }>;
  return {
    custom,
    create: (namespace: string, name: string, capacity: string | number = '1Gi') =>
      retryingThrottled(() =>
        custom.createNamespacedCustomObject({
          ...at(namespace),
          body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name }, spec: { backend: 'array-a', capacity } },
        }),
      ) as Promise<VolumeObject>,
    list,
    names: async (namespace: string) => (await list(namespace)).items.map((v) => v.metadata.name).sort(),
    replace: (namespace: string, body: VolumeObject) =>
      retryingThrottled(() => custom.replaceNamespacedCustomObject({ ...at(namespace), name: body.metadata.name, body })) as Promise<VolumeObject>,
    replaceStatus: (namespace: string, body: VolumeObject) =>
      retryingThrottled(() => custom.replaceNamespacedCustomObjectStatus({ ...at(namespace), name: body.metadata.name, body })) as Promise<VolumeObject>,
  };
}
