// Queue keys of Trellis objects: the Kubernetes naming rules on top of the core's
// HierarchyPath. Guarantees:
// - every object has exactly one key, and `refOfKey` gives its kind, namespace and name
//   back, so a reconciler is handed the object, never a path to parse by position;
// - `<namespace>.<name>` segments split unambiguously at the first dot: namespaces are DNS
//   labels (no dots), names may hold dots;
// - keys are HierarchyPath strings, so the locks order and nest them as the DESIGN's table says.
import { HierarchyPath } from '../core/path.js';
import type { KindName, ObjectRef } from './resources.js';

/** `backends/<backend>`. */
export function backendPath(backend: string): HierarchyPath {
  return HierarchyPath.of('backends', backend);
}

/** `backends/<backend>/volumes/<namespace>.<name>`. */
export function volumePath(backend: string, namespace: string, name: string): HierarchyPath {
  return backendPath(backend).child('volumes', namespacedSegment(namespace, name));
}

/** `backends/<backend>/volumes/<namespace>.<volume>/snapshots/<snapshot>`. */
export function snapshotPath(backend: string, namespace: string, volume: string, snapshot: string): HierarchyPath {
  return volumePath(backend, namespace, volume).child('snapshots', snapshot);
}

/** `groups/<namespace>.<name>`: a VolumeGroupSnapshot. */
export function groupPath(namespace: string, name: string): HierarchyPath {
  return HierarchyPath.of('groups', namespacedSegment(namespace, name));
}

/** `jobs/backup/<namespace>.<name>`. */
export function backupJobPath(namespace: string, name: string): HierarchyPath {
  return HierarchyPath.of('jobs', 'backup', namespacedSegment(namespace, name));
}

/** `jobs/restore/<namespace>.<name>`. */
export function restoreJobPath(namespace: string, name: string): HierarchyPath {
  return HierarchyPath.of('jobs', 'restore', namespacedSegment(namespace, name));
}

/** The minimum an object must carry for its key: a Volume's key also needs `spec.backend`. */
export interface KeyedObject {
  metadata: { name: string; namespace?: string };
  spec?: unknown;
}

/** The queue key of an object of `kind`. Throws a TypeError when the object lacks what its key needs. */
export function keyOf(kind: KindName, object: KeyedObject): string {
  const { name, namespace } = object.metadata;
  const ns = () => {
    if (!namespace) throw new TypeError(`${kind} ${name} has no namespace`);
    return namespace;
  };
  switch (kind) {
    case 'Backend':
      return backendPath(name).toString();
    case 'Volume': {
      const backend = (object.spec as { backend?: unknown } | undefined)?.backend;
      if (typeof backend !== 'string' || backend === '') throw new TypeError(`Volume ${ns()}/${name} has no spec.backend`);
      return volumePath(backend, ns(), name).toString();
    }
    case 'VolumeGroupSnapshot':
      return groupPath(ns(), name).toString();
    case 'BackupJob':
      return backupJobPath(ns(), name).toString();
    case 'RestoreJob':
      return restoreJobPath(ns(), name).toString();
  }
}

/** The object a key names; undefined for a string that is no object key (a snapshot path, say). */
export function refOfKey(key: string): ObjectRef | undefined {
  let segments: readonly string[];
  try {
    segments = HierarchyPath.parse(key).segments;
  } catch {
    return undefined;
  }
  const [first, second, third, fourth] = segments;
  if (first === 'backends' && segments.length === 2) return { kind: 'Backend', name: second };
  if (first === 'backends' && segments.length === 4 && third === 'volumes') return namespaced('Volume', fourth);
  if (first === 'groups' && segments.length === 2) return namespaced('VolumeGroupSnapshot', second);
  if (first === 'jobs' && segments.length === 3 && second === 'backup') return namespaced('BackupJob', third);
  if (first === 'jobs' && segments.length === 3 && second === 'restore') return namespaced('RestoreJob', third);
  return undefined;
}

/** The backend a Volume key (or a key below one) lives on. */
export function backendOfKey(key: string): string | undefined {
  const [first, second] = HierarchyPath.parse(key).segments;
  return first === 'backends' ? second : undefined;
}

function namespacedSegment(namespace: string, name: string): string {
  if (namespace === '' || namespace.includes('.')) throw new TypeError(`namespace ${JSON.stringify(namespace)} must be a non-empty DNS label (no dot)`);
  return `${namespace}.${name}`;
}

function namespaced(kind: KindName, segment: string): ObjectRef | undefined {
  const dot = segment.indexOf('.');
  if (dot <= 0 || dot === segment.length - 1) return undefined;
  return { kind, namespace: segment.slice(0, dot), name: segment.slice(dot + 1) };
}
