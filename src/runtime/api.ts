// The one door to the Kubernetes API server. Guarantees:
// - every request carries the kubeconfig's credentials (client-node does the auth) and a
//   timeout; a failure is an ApiError with the HTTP status, the server's reason and
//   message, and Retry-After when the server sent one (429, 503);
// - every write names Trellis's field manager and passes the write fence first: once the
//   fence says no (this replica is not, or may no longer be, the leader), no write leaves
//   the process; the leader election's own Lease writes are the one exception;
// - a request body or a response is never logged here, so a Secret's data cannot leak
//   through this module.
import { IsomorphicFetchHttpLibrary, RequestContext, type HttpMethod, type KubeConfig } from '@kubernetes/client-node';
import type { Dispatcher } from 'undici';

export const FIELD_MANAGER = 'trellis';

export type PatchType = 'merge' | 'json' | 'apply';

const contentTypes: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  apply: 'application/apply-patch+yaml',
};

/** A JSON Patch (RFC 6902) operation. */
export type JsonPatchOperation =
  | { op: 'add' | 'replace' | 'test'; path: string; value: unknown }
  | { op: 'remove'; path: string };

export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    /** From the Retry-After header, when the server asked to come back later. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Thrown instead of a write while the write fence is shut. Never retried by the runtime's writers. */
export class WriteFenced extends Error {
  override readonly name = 'WriteFenced';
}

export function isNotFound(error: unknown): boolean {
  return error instanceof ApiError && error.status === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof ApiError && error.status === 409;
}

/** 429 (throttled, or "storage is (re)initializing" after an apiserver restart), 5xx, or no answer at all. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ApiError) return error.status === 429 || error.status >= 500;
  return !(error instanceof WriteFenced);
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  /** Default 30 s. */
  timeoutMs?: number;
}

export interface WriteObserver {
  /** Called after every write the server accepted; `verb` is create, update, patch or delete. */
  wrote(verb: string, path: string): void;
}

export interface KubeApiOptions {
  /** Throws (a WriteFenced) when writes must not leave the process now. Default: always open. */
  fence?: () => void;
  observer?: WriteObserver;
}

export class KubeApi {
  private readonly http = new IsomorphicFetchHttpLibrary();
  // client-node makes a new undici Agent (so a new TLS connection) for every request it
  // authenticates; the first one is kept and reused, so requests share kept-alive
  // connections. Measured: without it, a burst of Volumes spent most of its time in TLS
  // handshakes with the API server.
  private dispatcher?: Dispatcher;
  private fence: () => void;
  private readonly observer?: WriteObserver;

  constructor(
    readonly kubeConfig: KubeConfig,
    options: KubeApiOptions = {},
  ) {
    this.fence = options.fence ?? (() => {});
    this.observer = options.observer;
  }

  /** Replaces the write fence (the manager sets it to the leader election's). */
  setFence(fence: () => void): void {
    this.fence = fence;
  }

  /** The same connection without the fence: for the Lease the fence itself depends on. */
  unfenced(): KubeApi {
    const api = new KubeApi(this.kubeConfig, { observer: this.observer });
    api.dispatcher = this.dispatcher;
    return api;
  }

  get<T>(path: string, options: RequestOptions = {}): Promise<T> {
    return this.request<T>('GET', path, options);
  }

  create<T>(path: string, body: unknown, options: RequestOptions = {}): Promise<T> {
    return this.write<T>('create', 'POST', path, { ...options, body });
  }

  update<T>(path: string, body: unknown, options: RequestOptions = {}): Promise<T> {
    return this.write<T>('update', 'PUT', path, { ...options, body });
  }

  patch<T>(path: string, type: PatchType, body: unknown, options: RequestOptions = {}): Promise<T> {
    return this.write<T>('patch', 'PATCH', path, { ...options, body, contentType: contentTypes[type] });
  }

  delete<T>(path: string, options: RequestOptions = {}): Promise<T> {
    return this.write<T>('delete', 'DELETE', path, options);
  }

  private async write<T>(verb: string, method: string, path: string, options: RequestOptions): Promise<T> {
    this.fence();
    const result = await this.request<T>(method, path, { ...options, query: { fieldManager: verb === 'delete' ? undefined : FIELD_MANAGER, ...options.query } });
    this.observer?.wrote(verb, path);
    return result;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [name, value] of Object.entries(options.query ?? {})) if (value !== undefined) url.searchParams.set(name, String(value));
    const context = new RequestContext(url.toString(), method as HttpMethod);
    await this.kubeConfig.applySecurityAuthentication(context);
    const fresh = context.getDispatcher();
    if (fresh) {
      this.dispatcher ??= fresh;
      if (fresh !== this.dispatcher) context.setDispatcher(this.dispatcher);
    }
    context.setHeaderParam('Accept', 'application/json');
    if (options.body !== undefined) {
      context.setHeaderParam('Content-Type', options.contentType ?? 'application/json');
      context.setBody(JSON.stringify(options.body));
    }
    const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
    context.setSignal(options.signal ? AbortSignal.any([options.signal, timeout]) : timeout);
    const response = await this.http.send(context).toPromise();
    const text = await response.body.text();
    if (response.httpStatusCode >= 200 && response.httpStatusCode < 300) return (text ? JSON.parse(text) : undefined) as T;
    let status: { reason?: string; message?: string } = {};
    try {
      status = JSON.parse(text) as typeof status;
    } catch {
      // not a Status object (a proxy's HTML page, say): the HTTP status says enough
    }
    const retryAfter = Number(response.headers['retry-after']);
    throw new ApiError(
      response.httpStatusCode,
      status.reason ?? '',
      `${method} ${path}: ${response.httpStatusCode} ${status.message ?? status.reason ?? ''}`.trim(),
      Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter * 1000 : undefined,
    );
  }
}
