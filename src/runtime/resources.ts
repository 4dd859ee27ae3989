// The Kubernetes resources the runtime reads and writes, and how their URLs are built.
// Guarantees: one table names every Trellis kind's plural and scope (taken from src/api,
// never restated), so a URL for an object is built in one place.
import { apiVersion, kindByName } from '../api/kinds.js';
import type { Backend } from '../api/backend.js';
import type { BackupJob } from '../api/backup-job.js';
import type { RestoreJob } from '../api/restore-job.js';
import type { KubeObject } from '../api/schema.js';
import type { Volume } from '../api/volume.js';
import type { VolumeGroupSnapshot } from '../api/volume-group-snapshot.js';

/** The object type of each Trellis kind. */
export interface KindMap {
  Backend: Backend;
  Volume: Volume;
  VolumeGroupSnapshot: VolumeGroupSnapshot;
  BackupJob: BackupJob;
  RestoreJob: RestoreJob;
}

export type KindName = keyof KindMap;

export const kindNames: readonly KindName[] = ['Backend', 'Volume', 'VolumeGroupSnapshot', 'BackupJob', 'RestoreJob'];

/** Any Trellis object, as the cache holds it. */
export type AnyObject = KubeObject<unknown, unknown>;

/** An object by kind, namespace (absent for cluster-scoped kinds) and name. */
export interface ObjectRef {
  kind: KindName;
  namespace?: string;
  name: string;
}

export function refOf(kind: KindName, object: { metadata: { name: string; namespace?: string } }): ObjectRef {
  return object.metadata.namespace ? { kind, namespace: object.metadata.namespace, name: object.metadata.name } : { kind, name: object.metadata.name };
}

/** `ns/name`, or `name` for a cluster-scoped object: for logs and Events, never for metric labels. */
export function describeRef(ref: { namespace?: string; name: string }): string {
  return ref.namespace ? `${ref.namespace}/${ref.name}` : ref.name;
}

export interface ResourceInfo {
  apiVersion: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export function resourceOf(kind: KindName): ResourceInfo {
  const definition = kindByName(kind);
  return { apiVersion, kind, plural: definition.plural, namespaced: definition.scope === 'Namespaced' };
}

export const leaseResource: ResourceInfo = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', plural: 'leases', namespaced: true };
export const eventResource: ResourceInfo = { apiVersion: 'events.k8s.io/v1', kind: 'Event', plural: 'events', namespaced: true };
export const secretResource: ResourceInfo = { apiVersion: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true };

/**
 * The URL path of a collection (`name` absent) or of one object, optionally a subresource.
 * A namespaced resource without a namespace gives the cluster-wide collection.
 */
export function resourcePath(resource: ResourceInfo, options: { namespace?: string; name?: string; subresource?: string } = {}): string {
  const prefix = resource.apiVersion.includes('/') ? `/apis/${resource.apiVersion}` : `/api/${resource.apiVersion}`;
  const ns = resource.namespaced && options.namespace ? `/namespaces/${encodeURIComponent(options.namespace)}` : '';
  const name = options.name === undefined ? '' : `/${encodeURIComponent(options.name)}`;
  const sub = options.subresource && options.name !== undefined ? `/${options.subresource}` : '';
  return `${prefix}${ns}/${resource.plural}${name}${sub}`;
}

export function objectPath(ref: ObjectRef, subresource?: string): string {
  return resourcePath(resourceOf(ref.kind), { namespace: ref.namespace, name: ref.name, subresource });
}
