// The operator's view of the cluster: one Store per Trellis kind with the indexes the
// reconcilers need, so that an event maps to exactly the objects it affects. Guarantees:
// - Volumes are indexed by backend, by label (`key=value`) and by namespace;
//   VolumeGroupSnapshots and BackupJobs by each member Volume they name (spec list or
//   status members, `ns/name`) and by namespace; RestoreJobs by target backend;
// - `groupsSelecting` / `backupJobsSelecting` find every group or job whose set a Volume
//   is (or was, per status) in: named ones through the member index, selector-based ones
//   by evaluating the selectors of that namespace only;
// - the cache only reads memory; it never calls the API server.
import type { LabelSelector } from '../api/schema.js';
import type { Volume } from '../api/volume.js';
import type { VolumeGroupSnapshot } from '../api/volume-group-snapshot.js';
import type { BackupJob } from '../api/backup-job.js';
import { kindNames, type KindMap, type KindName } from './resources.js';
import { labelIndexValues, selectorMatches } from './selector.js';
import { Store } from './store.js';

/** Index names, for `cache.store(kind).byIndex(name, value)`. */
export const Index = {
  /** Volume -> spec.backend; RestoreJob -> spec.target.backend. */
  backend: 'backend',
  /** Volume -> `labelKey=labelValue` for each label. */
  label: 'label',
  /** Every namespaced kind -> its namespace. */
  namespace: 'namespace',
  /** VolumeGroupSnapshot, BackupJob -> `ns/volume` for each Volume named in spec or status. */
  member: 'member',
} as const;

export class Cache {
  private readonly stores: { [K in KindName]: Store<KindMap[K]> };

  constructor() {
    this.stores = Object.fromEntries(kindNames.map((kind) => [kind, new Store()])) as unknown as { [K in KindName]: Store<KindMap[K]> };
    for (const kind of kindNames) {
      if (kind !== 'Backend') this.stores[kind].addIndex(Index.namespace, (o: { metadata: { namespace?: string } }) => (o.metadata.namespace ? [o.metadata.namespace] : []));
    }
    this.stores.Volume.addIndex(Index.backend, (v) => [v.spec.backend]);
    this.stores.Volume.addIndex(Index.label, (v) => labelIndexValues(v.metadata.labels));
    this.stores.RestoreJob.addIndex(Index.backend, (j) => [j.spec.target.backend]);
    this.stores.VolumeGroupSnapshot.addIndex(Index.member, (g) =>
      members(g.metadata.namespace, [...(g.spec.source.volumes ?? []), ...(g.status?.members ?? []).map((m) => m.volume)]),
    );
    this.stores.BackupJob.addIndex(Index.member, (j) =>
      members(j.metadata.namespace, [...(j.spec.source.volumes ?? []), ...(j.status?.volumes ?? []).map((v) => v.volume)]),
    );
  }

  store<K extends KindName>(kind: K): Store<KindMap[K]> {
    return this.stores[kind];
  }

  get<K extends KindName>(kind: K, namespace: string | undefined, name: string): KindMap[K] | undefined {
    return this.stores[kind].get(namespace, name);
  }

  volumesOnBackend(backend: string): Volume[] {
    return this.stores.Volume.byIndex(Index.backend, backend);
  }

  /** Volumes of `namespace` a selector picks, narrowed through the label index first. */
  volumesSelectedBy(namespace: string, selector: LabelSelector): Volume[] {
    const [first] = Object.entries(selector.matchLabels ?? {});
    const candidates = first ? this.stores.Volume.byIndex(Index.label, `${first[0]}=${first[1]}`) : this.stores.Volume.byIndex(Index.namespace, namespace);
    return candidates.filter((v) => v.metadata.namespace === namespace && selectorMatches(selector, v.metadata.labels));
  }

  /** Groups whose member set holds `volume` (now, by selector or name, or per their status). */
  groupsSelecting(volume: Volume): VolumeGroupSnapshot[] {
    return this.selecting(this.stores.VolumeGroupSnapshot, volume, (g) => g.spec.source.selector);
  }

  /** BackupJobs whose volume set holds `volume` (by selector, by name, or per their status). */
  backupJobsSelecting(volume: Volume): BackupJob[] {
    return this.selecting(this.stores.BackupJob, volume, (j) => j.spec.source.selector);
  }

  private selecting<T extends VolumeGroupSnapshot | BackupJob>(store: Store<T>, volume: Volume, selectorOf: (o: T) => LabelSelector | undefined): T[] {
    const namespace = volume.metadata.namespace ?? '';
    const found = new Map<string, T>();
    for (const o of store.byIndex(Index.member, `${namespace}/${volume.metadata.name}`)) found.set(o.metadata.name, o);
    for (const o of store.byIndex(Index.namespace, namespace)) {
      const selector = selectorOf(o);
      if (selector && selectorMatches(selector, volume.metadata.labels)) found.set(o.metadata.name, o);
    }
    return [...found.values()];
  }
}

function members(namespace: string | undefined, names: readonly string[]): string[] {
  return names.map((name) => `${namespace ?? ''}/${name}`);
}
