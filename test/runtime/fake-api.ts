// An in-memory stand-in for KubeApi in unit tests: objects by URL path with
// resourceVersions, 409 on a stale resourceVersion, and a switch that makes every request
// of one client fail (a partitioned replica).
import { ApiError, type KubeApi } from '../../src/runtime/api.js';

interface Stored {
  metadata: { name: string; resourceVersion?: string };
}

export class FakeApiServer {
  readonly objects = new Map<string, Stored>();
  readonly requests: Array<{ client: string; verb: string; path: string; body?: unknown }> = [];
  private version = 1;
  /** Hear every object stored (a watch). */
  readonly listeners = new Set<(path: string, object: unknown) => void>();

  /** A client; `down()` makes its requests fail with a 503, `up()` heals it. */
  client(name = 'client'): KubeApi & { down(): void; up(): void } {
    let down = false;
    const check = (verb: string, path: string, body?: unknown) => {
      this.requests.push({ client: name, verb, path, body });
      if (down) throw new ApiError(503, 'ServiceUnavailable', `${verb} ${path}: 503 (partitioned)`);
    };
    const api = {
      down: () => (down = true),
      up: () => (down = false),
      get: async (path: string) => {
        check('get', path);
        const found = this.objects.get(path);
        if (!found) throw new ApiError(404, 'NotFound', `${path} not found`);
        return structuredClone(found);
      },
      create: async (path: string, body: Stored) => {
        check('create', path, body);
        const at = `${path}/${body.metadata.name}`;
        if (this.objects.has(at)) throw new ApiError(409, 'AlreadyExists', `${at} exists`);
        return this.store(at, body);
      },
      update: async (path: string, body: Stored) => {
        check('update', path, body);
        const found = this.objects.get(path);
        if (!found) throw new ApiError(404, 'NotFound', `${path} not found`);
        if (body.metadata.resourceVersion !== found.metadata.resourceVersion) throw new ApiError(409, 'Conflict', `${path}: stale resourceVersion`);
        return this.store(path, body);
      },
      patch: async (path: string, type: string, body: unknown) => {
        check(`patch:${type}`, path, body);
        const target = path.replace(/\/status$/, '');
        const found = this.objects.get(target);
        if (!found) throw new ApiError(404, 'NotFound', `${target} not found`);
        const rv = (body as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
        if (rv !== undefined && rv !== found.metadata.resourceVersion) throw new ApiError(409, 'Conflict', `${target}: stale resourceVersion`);
        const status = (body as { status?: unknown }).status;
        return this.store(target, { ...found, ...(status === undefined ? {} : { status: mergeInto((found as { status?: unknown }).status, status) }) });
      },
    };
    return api as unknown as KubeApi & { down(): void; up(): void };
  }

  /** Stores `object` at `path` with a new resourceVersion (as another writer would). */
  store<T extends Stored>(path: string, object: T): T {
    const stored = structuredClone({ ...object, metadata: { ...object.metadata, resourceVersion: String(++this.version) } });
    this.objects.set(path, stored);
    for (const listener of this.listeners) listener(path, structuredClone(stored));
    return structuredClone(stored);
  }
}

function mergeInto(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergeInto(result[key], value);
  }
  return result;
}
