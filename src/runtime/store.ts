// The in-memory cache of one kind, fed by its watch, read by reconcilers. Guarantees:
// - `get`/`list` answer from memory, never from the API server; objects are the server's
//   last word as seen by the watch (treat them as read-only);
// - an update carrying a resourceVersion the store already holds changes nothing and
//   notifies nobody (a relist after a reconnect causes no work);
// - indexes are kept in step with every change: `byIndex(name, value)` is exact at all
//   times, so an event can re-enqueue exactly the objects it affects;
// - `replace` (after a list) removes what the list no longer holds and notifies those deletes.
export interface StoredObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
}

/** Values an object is found under in one index (e.g. a Volume's backend name). */
export type IndexFunction<T> = (object: T) => readonly string[];

export type ChangeType = 'added' | 'updated' | 'deleted';

/** A change the store applied; `old` is the object it replaced or removed. */
export interface StoreChange<T> {
  type: ChangeType;
  object: T;
  old?: T;
}

export type StoreListener<T> = (change: StoreChange<T>) => void;

export function objectId(object: { metadata: { name: string; namespace?: string } }): string {
  return object.metadata.namespace ? `${object.metadata.namespace}/${object.metadata.name}` : object.metadata.name;
}

export class Store<T extends StoredObject> {
  // By objectId (`ns/name` or `name`).
  private readonly objects = new Map<string, T>();
  // index name -> value -> ids; every id in it is in `objects`, and appears under exactly
  // the values its index function gives for the stored object.
  private readonly indexes = new Map<string, { fn: IndexFunction<T>; values: Map<string, Set<string>> }>();
  private readonly listeners = new Set<StoreListener<T>>();

  /** Adds an index; existing objects are indexed at once. Throws if the name is taken. */
  addIndex(name: string, fn: IndexFunction<T>): void {
    if (this.indexes.has(name)) throw new Error(`index ${name} already exists`);
    const index = { fn, values: new Map<string, Set<string>>() };
    this.indexes.set(name, index);
    for (const [id, object] of this.objects) this.indexOne(index, id, object);
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.objects.get(namespace ? `${namespace}/${name}` : name);
  }

  list(namespace?: string): T[] {
    const all = [...this.objects.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  get size(): number {
    return this.objects.size;
  }

  /** Objects found under `value` in index `name`. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`no index ${name}`);
    return [...(index.values.get(value) ?? [])].map((id) => this.objects.get(id)!);
  }

  /** Hears every change the store applies, after it is applied. Returns an unsubscribe function. */
  subscribe(listener: StoreListener<T>): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Adds or replaces; a no-op when the same resourceVersion is held already. */
  upsert(object: T): void {
    const id = objectId(object);
    const old = this.objects.get(id);
    if (old && old.metadata.resourceVersion !== undefined && old.metadata.resourceVersion === object.metadata.resourceVersion) return;
    if (old) this.unindex(id, old);
    this.objects.set(id, object);
    for (const index of this.indexes.values()) this.indexOne(index, id, object);
    this.notify({ type: old ? 'updated' : 'added', object, old });
  }

  /**
   * Upserts an object this process just wrote, unless the store has moved past the version
   * the write started from (the watch delivered a newer one first): a write's answer never
   * puts an older version back.
   */
  upsertWritten(object: T, writtenFrom: string | undefined): void {
    const held = this.get(object.metadata.namespace, object.metadata.name);
    if (held && held.metadata.resourceVersion !== writtenFrom) return;
    this.upsert(object);
  }

  delete(object: T): void {
    const id = objectId(object);
    const old = this.objects.get(id);
    if (!old) return;
    this.unindex(id, old);
    this.objects.delete(id);
    this.notify({ type: 'deleted', object: old, old });
  }

  /**
   * The store (or its part in `namespace`, for a list of one namespace) becomes exactly
   * `objects`, a fresh list: deletes what is gone, upserts the rest.
   */
  replace(objects: readonly T[], namespace?: string): void {
    const fresh = new Set(objects.map(objectId));
    for (const [id, old] of [...this.objects]) {
      if (namespace !== undefined && old.metadata.namespace !== namespace) continue;
      if (!fresh.has(id)) this.delete(old);
    }
    for (const object of objects) this.upsert(object);
  }

  private notify(change: StoreChange<T>): void {
    for (const listener of this.listeners) listener(change);
  }

  private indexOne(index: { fn: IndexFunction<T>; values: Map<string, Set<string>> }, id: string, object: T): void {
    for (const value of new Set(index.fn(object))) {
      let ids = index.values.get(value);
      if (!ids) index.values.set(value, (ids = new Set()));
      ids.add(id);
    }
  }

  private unindex(id: string, object: T): void {
    for (const index of this.indexes.values()) {
      for (const value of new Set(index.fn(object))) {
        const ids = index.values.get(value);
        ids?.delete(id);
        if (ids?.size === 0) index.values.delete(value);
      }
    }
  }
}
