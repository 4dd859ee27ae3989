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

export function volumeClient(kubeConfig: KubeConfig) {
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const at = (namespace: string) => ({ group, version, namespace, plural: 'volumes' });
  return {
    custom,
    create: (namespace: string, name: string, capacity: string | number = '1Gi') =>
      custom.createNamespacedCustomObject({
        ...at(namespace),
        body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name }, spec: { backend: 'array-a', capacity } },
      }) as Promise<VolumeObject>,
    list: (namespace: string) =>
      custom.listNamespacedCustomObject(at(namespace)) as Promise<{ metadata: { resourceVersion: string }; items: VolumeObject[] }>,
    names: async (namespace: string) =>
      ((await custom.listNamespacedCustomObject(at(namespace))) as { items: VolumeObject[] }).items.map((v) => v.metadata.name).sort(),
    replace: (namespace: string, body: VolumeObject) =>
      custom.replaceNamespacedCustomObject({ ...at(namespace), name: body.metadata.name, body }) as Promise<VolumeObject>,
    replaceStatus: (namespace: string, body: VolumeObject) =>
      custom.replaceNamespacedCustomObjectStatus({ ...at(namespace), name: body.metadata.name, body }) as Promise<VolumeObject>,
  };
}
