// Credentials Secrets, read with least privilege. Guarantees:
// - only a Secret asked for by namespace and name is read (a GET; never a list or a watch
//   of Secrets), so the operator's RBAC can be limited to `get` on Secrets;
// - an answer is cached for `ttlMs` (default 30 s) and a cache of at most 64 Secrets, so
//   reconciles of many volumes on one backend cost one read per interval;
// - the values never reach a log line, an Event, a status, a metric or an error message:
//   errors name the Secret and the HTTP status only; values are Buffers (a stray
//   `JSON.stringify` of the result prints bytes, not the text).
import { realClock, type Clock } from '../core/clock.js';
import { ApiError, type KubeApi } from './api.js';
import { resourcePath, secretResource } from './resources.js';

export interface SecretReaderOptions {
  api: KubeApi;
  clock?: Clock;
  ttlMs?: number;
}

const CAPACITY = 64;

export class SecretNotReadable extends Error {
  override readonly name = 'SecretNotReadable';
  constructor(
    readonly namespace: string,
    readonly secretName: string,
    readonly status: number | undefined,
  ) {
    super(`Secret ${namespace}/${secretName} could not be read${status ? ` (HTTP ${status})` : ''}`);
  }
}

export class SecretReader {
  private readonly api: KubeApi;
  private readonly clock: Clock;
  private readonly ttlMs: number;
  // `ns/name` -> values and when they were read; insertion order is age order.
  private readonly cache = new Map<string, { at: number; data: ReadonlyMap<string, Buffer> }>();

  constructor(options: SecretReaderOptions) {
    this.api = options.api;
    this.clock = options.clock ?? realClock;
    this.ttlMs = options.ttlMs ?? 30_000;
  }

  /** The Secret's data, key by key. Throws a SecretNotReadable (404: missing; 403: RBAC). */
  async read(namespace: string, name: string, signal?: AbortSignal): Promise<ReadonlyMap<string, Buffer>> {
    const id = `${namespace}/${name}`;
    const cached = this.cache.get(id);
    if (cached && this.clock.now() - cached.at < this.ttlMs) return cached.data;
    let secret: { data?: Record<string, string> };
    try {
      secret = await this.api.get(resourcePath(secretResource, { namespace, name }), { signal });
    } catch (error) {
      throw new SecretNotReadable(namespace, name, error instanceof ApiError ? error.status : undefined);
    }
    const data = new Map(Object.entries(secret.data ?? {}).map(([key, value]) => [key, Buffer.from(value, 'base64')]));
    this.cache.delete(id);
    this.cache.set(id, { at: this.clock.now(), data });
    if (this.cache.size > CAPACITY) this.cache.delete(this.cache.keys().next().value!);
    return data;
  }

  /** Drops a cached Secret, e.g. after the storage system refused its credentials. */
  forget(namespace: string, name: string): void {
    this.cache.delete(`${namespace}/${name}`);
  }
}
