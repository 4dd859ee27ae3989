// Finalizers, added and removed with guarded JSON patches (the approach of kube-rs's
// finalizer helper). Guarantees:
// - an add tests the whole list it saw (or its absence) before appending, and a removal
//   tests the entry at the index it saw before removing it, so a concurrent change by
//   anyone else fails the patch instead of being overwritten or duplicated;
// - a failed guard (409, or 422 from a failed `test`) re-reads the object and tries again
//   (up to 5 times); adding a present finalizer or removing an absent one writes nothing.
import { ApiError, type JsonPatchOperation, type KubeApi } from './api.js';
import { objectPath, refOf, type KindMap, type KindName } from './resources.js';

const ATTEMPTS = 5;

export function hasFinalizer(object: { metadata: { finalizers?: string[] } }, finalizer: string): boolean {
  return object.metadata.finalizers?.includes(finalizer) ?? false;
}

/** The JSON patch that appends `finalizer` to the list `object` carries; undefined when present. */
export function addFinalizerPatch(object: { metadata: { finalizers?: string[] } }, finalizer: string): JsonPatchOperation[] | undefined {
  const list = object.metadata.finalizers;
  if (list?.includes(finalizer)) return undefined;
  if (!list || list.length === 0) {
    // Absent and empty both read as "no finalizers": test for the absence the server sees.
    return list ? [{ op: 'test', path: '/metadata/finalizers', value: [] }, { op: 'replace', path: '/metadata/finalizers', value: [finalizer] }] : [{ op: 'test', path: '/metadata/finalizers', value: null }, { op: 'add', path: '/metadata/finalizers', value: [finalizer] }];
  }
  return [{ op: 'test', path: '/metadata/finalizers', value: list }, { op: 'add', path: '/metadata/finalizers/-', value: finalizer }];
}

/** The JSON patch that removes `finalizer` from the list `object` carries; undefined when absent. */
export function removeFinalizerPatch(object: { metadata: { finalizers?: string[] } }, finalizer: string): JsonPatchOperation[] | undefined {
  const at = object.metadata.finalizers?.indexOf(finalizer) ?? -1;
  if (at < 0) return undefined;
  return [{ op: 'test', path: `/metadata/finalizers/${at}`, value: finalizer }, { op: 'remove', path: `/metadata/finalizers/${at}` }];
}

/** Adds `finalizer` to the object; resolves with the object as the server now has it. */
export function addFinalizer<K extends KindName>(api: KubeApi, kind: K, object: KindMap[K], finalizer: string, signal?: AbortSignal): Promise<KindMap[K]> {
  return guardedPatch(api, kind, object, (o) => addFinalizerPatch(o, finalizer), signal);
}

/** Removes `finalizer` from the object; resolves with the object as the server now has it (it may be gone). */
export function removeFinalizer<K extends KindName>(api: KubeApi, kind: K, object: KindMap[K], finalizer: string, signal?: AbortSignal): Promise<KindMap[K]> {
  return guardedPatch(api, kind, object, (o) => removeFinalizerPatch(o, finalizer), signal);
}

async function guardedPatch<K extends KindName>(api: KubeApi, kind: K, object: KindMap[K], patchOf: (o: KindMap[K]) => JsonPatchOperation[] | undefined, signal?: AbortSignal): Promise<KindMap[K]> {
  let current = object;
  for (let attempt = 1; ; attempt++) {
    const patch = patchOf(current);
    if (!patch) return current;
    try {
      return await api.patch<KindMap[K]>(objectPath(refOf(kind, current)), 'json', patch, { signal });
    } catch (error) {
      const guardFailed = error instanceof ApiError && (error.status === 409 || error.status === 422);
      if (!guardFailed || attempt >= ATTEMPTS) throw error;
      current = await api.get<KindMap[K]>(objectPath(refOf(kind, current)), { signal });
    }
  }
}
