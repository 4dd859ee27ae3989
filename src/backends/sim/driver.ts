// The sim driver: a StorageDriver that speaks the simulated array's HTTP API.
// Guarantees beyond the StorageDriver contract:
// - Busy answers (429, 503 with Retry-After, 409 pending) are retried after the array's Retry-After hint, or
//   with capped exponential backoff and jitter, for as long as the caller's signal allows;
//   every other failure is returned at once as a typed DriverError.
// - Jobs are polled until they finish; a poll that cannot reach the array is repeated until
//   the caller's signal fires, and a job the array lost (it restarted) is re-submitted,
//   which is safe because every mutation is idempotent by name or id.
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Type, type Static } from 'typebox';
import { abortReason, DriverError, type DriverErrorReason } from '../errors.js';
import {
  sleep,
  throwIfAborted,
  type CreateSnapshotRequest,
  type CreateVolumeRequest,
  type GroupSnapshotInfo,
  type ProbeResult,
  type SnapshotInfo,
  type StorageDriver,
  type VolumeInfo,
} from '../driver.js';
import type { GroupRecord, SnapshotRecord, VolumeRecord } from './state.js';
import type { JobView } from './array.js';

export const SimConfig = Type.Object(
  {
    endpoint: Type.String({ pattern: '^https?://', description: 'Base URL of the array, e.g. http://127.0.0.1:8080' }),
    requestTimeoutMs: Type.Optional(Type.Integer({ minimum: 1, default: 30_000, description: 'Timeout of one HTTP request.' })),
    pollIntervalMs: Type.Optional(Type.Integer({ minimum: 1, default: 10, description: 'First wait between job polls; grows 1.5x per poll.' })),
    maxPollIntervalMs: Type.Optional(Type.Integer({ minimum: 1, default: 500, description: 'Longest wait between job polls.' })),
    busyBackoffMs: Type.Optional(Type.Integer({ minimum: 1, default: 20, description: 'First backoff after a busy answer without Retry-After.' })),
    maxBusyBackoffMs: Type.Optional(Type.Integer({ minimum: 1, default: 2_000, description: 'Longest backoff after busy answers.' })),
  },
  { additionalProperties: false },
);
export type SimConfig = Static<typeof SimConfig>;

export const SimCredentials = Type.Object({ token: Type.Optional(Type.String({ minLength: 1 })) }, { additionalProperties: false });
export type SimCredentials = Static<typeof SimCredentials>;

const reasonOf: Record<string, DriverErrorReason> = {
  busy: 'busy',
  pending: 'busy',
  unavailable: 'unavailable',
  invalid: 'invalid',
  outOfRange: 'invalid',
  unsupported: 'invalid',
  notFound: 'notFound',
  noSpace: 'noSpace',
  alreadyExists: 'alreadyExists',
  inUse: 'invalid',
  hostLimit: 'invalid',
};

interface ErrorBody {
  error?: { code?: string; message?: string; retryAfterMs?: number };
}

function toVolume(v: VolumeRecord): VolumeInfo {
  const info: VolumeInfo = { handle: v.id, name: v.name, capacityBytes: v.capacityBytes, params: v.params, dataBytes: v.content.bytes };
  if (v.sourceSnapshotId) info.sourceSnapshot = v.sourceSnapshotId;
  return info;
}

function toSnapshot(s: SnapshotRecord): SnapshotInfo {
  const info: SnapshotInfo = { handle: s.id, name: s.name, sourceVolume: s.volumeId, sizeBytes: s.sizeBytes, readyToUse: true, createdAt: s.createdAt };
  if (s.groupId) info.groupHandle = s.groupId;
  return info;
}

function toGroup(g: { group: GroupRecord; snapshots: SnapshotRecord[] }): GroupSnapshotInfo {
  const byVolume = new Map(g.snapshots.map((s) => [s.volumeId, toSnapshot(s)]));
  const snapshots = g.group.volumeIds.map((v) => byVolume.get(v)).filter((s): s is SnapshotInfo => !!s);
  return { handle: g.group.id, name: g.group.name, snapshots, native: true, createdAt: g.group.createdAt };
}

export class SimDriver implements StorageDriver {
  readonly kind = 'sim';
  private readonly base: string;
  private readonly cfg: Required<SimConfig>;

  constructor(config: SimConfig, private readonly credentials: SimCredentials = {}) {
    this.cfg = {
      requestTimeoutMs: 30_000,
      pollIntervalMs: 10,
      maxPollIntervalMs: 500,
      busyBackoffMs: 20,
      maxBusyBackoffMs: 2_000,
      ...config,
    };
    this.base = config.endpoint.replace(/\/+$/, '');
  }

  /** One HTTP exchange; busy answers are retried here, other failures thrown typed. */
  private async request(method: string, path: string, signal: AbortSignal, init: { json?: unknown; body?: Readable } = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(signal);
      const headers: Record<string, string> = {};
      if (this.credentials.token) headers.authorization = `Bearer ${this.credentials.token}`;
      let body: string | ReadableStream | undefined;
      if (init.json !== undefined) {
        headers['content-type'] = 'application/json';
        body = JSON.stringify(init.json);
      } else if (init.body) {
        headers['content-type'] = 'application/octet-stream';
        body = Readable.toWeb(init.body) as ReadableStream;
      }
      // The timeout bounds the wait for the answer's headers only: a data stream may take as
      // long as it takes (the caller's signal still ends it), and so may an upload.
      const timeout = new AbortController();
      const timer = init.body ? undefined : setTimeout(() => timeout.abort(), this.cfg.requestTimeoutMs);
      let res: Response;
      try {
        res = await fetch(`${this.base}${path}`, {
          method,
          headers,
          body,
          signal: AbortSignal.any([signal, timeout.signal]),
          ...(init.body ? { duplex: 'half' } : {}),
        } as RequestInit);
      } catch (err) {
        if (signal.aborted) throw abortReason(signal);
        if (timeout.signal.aborted) throw new DriverError('timeout', `sim array ${method} ${path}: no answer within ${this.cfg.requestTimeoutMs} ms`, { cause: err });
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw new DriverError('unavailable', `sim array ${method} ${path}: ${cause?.code ?? cause?.message ?? String(err)}`, { cause: err });
      } finally {
        clearTimeout(timer);
      }
      if (res.ok) return res;
      const parsed = (await res.json().catch(() => ({}))) as ErrorBody;
      const code = parsed.error?.code ?? (res.status === 429 ? 'busy' : res.status === 503 ? 'unavailable' : 'invalid');
      const message = parsed.error?.message ?? `HTTP ${res.status}`;
      const retryAfterMs = parsed.error?.retryAfterMs ?? retryAfterHeader(res.headers.get('retry-after'));
      // 503 with Retry-After is how many arrays say "overloaded, come back later".
      const busy = res.status === 429 || code === 'busy' || code === 'pending' || (res.status === 503 && retryAfterMs !== undefined);
      if (busy && !init.body) {
        const backoff = Math.min(this.cfg.maxBusyBackoffMs, this.cfg.busyBackoffMs * 2 ** Math.min(attempt, 20));
        const wait = retryAfterMs ?? backoff;
        // Jitter spreads the retries of many refused clients over the wait.
        await sleep(wait * (0.5 + Math.random()), signal);
        continue;
      }
      throw new DriverError(reasonOf[code] ?? (res.status >= 500 ? 'unavailable' : 'invalid'), `sim array: ${message}`, {
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      });
    }
  }

  private async json<T>(method: string, path: string, signal: AbortSignal, payload?: unknown): Promise<T> {
    const res = await this.request(method, path, signal, payload === undefined ? {} : { json: payload });
    return (await res.json()) as T;
  }

  /**
   * Submits a job and polls it to the end; re-submits if the array lost it. A poll that
   * cannot reach the array (restarting, say) is repeated until the signal fires: the job may
   * well be running, and the array's answer decides.
   */
  private async job<T>(method: string, path: string, signal: AbortSignal, payload?: unknown): Promise<T> {
    for (;;) {
      const { jobId } = await this.json<{ jobId: string }>(method, path, signal, payload);
      let wait = this.cfg.pollIntervalMs;
      for (;;) {
        await sleep(wait, signal);
        wait = Math.min(this.cfg.maxPollIntervalMs, wait * 1.5);
        let job: JobView;
        try {
          job = await this.json<JobView>('GET', `/api/jobs/${encodeURIComponent(jobId)}`, signal);
        } catch (err) {
          if (err instanceof DriverError && err.reason === 'notFound') break;
          if (err instanceof DriverError && (err.reason === 'unavailable' || err.reason === 'timeout')) continue;
          throw err;
        }
        if (job.state === 'running') continue;
        if (job.state === 'succeeded') return job.result as T;
        const code = job.error?.code ?? 'invalid';
        throw new DriverError(reasonOf[code] ?? 'unavailable', `sim array: ${job.error?.message ?? 'job failed'}`);
      }
    }
  }

  async probe(signal: AbortSignal): Promise<ProbeResult> {
    const a = await this.json<{ capacityBytes: number; usedBytes: number; nativeConsistencyGroups: boolean }>('GET', '/api/array', signal);
    return {
      healthy: true,
      capacityBytes: a.capacityBytes,
      usedBytes: a.usedBytes,
      capabilities: { nativeGroupSnapshot: a.nativeConsistencyGroups, snapshotData: true, volumeData: true, resize: true },
    };
  }

  async createVolume(req: CreateVolumeRequest, signal: AbortSignal): Promise<VolumeInfo> {
    const payload = { name: req.name, capacityBytes: req.capacityBytes, params: req.params ?? {}, ...(req.sourceSnapshot ? { sourceSnapshotId: req.sourceSnapshot } : {}) };
    return toVolume(await this.job<VolumeRecord>('POST', '/api/volumes', signal, payload));
  }

  async deleteVolume(handle: string, signal: AbortSignal): Promise<void> {
    await this.job('DELETE', `/api/volumes/${encodeURIComponent(handle)}`, signal);
  }

  async resizeVolume(handle: string, capacityBytes: number, signal: AbortSignal): Promise<VolumeInfo> {
    return toVolume(await this.job<VolumeRecord>('PATCH', `/api/volumes/${encodeURIComponent(handle)}`, signal, { capacityBytes }));
  }

  async getVolume(handle: string, signal: AbortSignal): Promise<VolumeInfo> {
    return toVolume(await this.json<VolumeRecord>('GET', `/api/volumes/${encodeURIComponent(handle)}`, signal));
  }

  async listVolumes(signal: AbortSignal): Promise<VolumeInfo[]> {
    return (await this.json<{ items: VolumeRecord[] }>('GET', '/api/volumes', signal)).items.map(toVolume);
  }

  async createSnapshot(req: CreateSnapshotRequest, signal: AbortSignal): Promise<SnapshotInfo> {
    return toSnapshot(await this.job<SnapshotRecord>('POST', '/api/snapshots', signal, { name: req.name, volumeId: req.sourceVolume }));
  }

  async deleteSnapshot(handle: string, signal: AbortSignal): Promise<void> {
    await this.job('DELETE', `/api/snapshots/${encodeURIComponent(handle)}`, signal);
  }

  async getSnapshot(handle: string, signal: AbortSignal): Promise<SnapshotInfo> {
    return toSnapshot(await this.json<SnapshotRecord>('GET', `/api/snapshots/${encodeURIComponent(handle)}`, signal));
  }

  async listSnapshots(signal: AbortSignal): Promise<SnapshotInfo[]> {
    return (await this.json<{ items: SnapshotRecord[] }>('GET', '/api/snapshots', signal)).items.map(toSnapshot);
  }

  async createGroupSnapshot(name: string, volumeHandles: string[], signal: AbortSignal): Promise<GroupSnapshotInfo | undefined> {
    const { capabilities } = await this.probe(signal);
    if (!capabilities.nativeGroupSnapshot) return undefined;
    return toGroup(await this.job('POST', '/api/group-snapshots', signal, { name, volumeIds: volumeHandles }));
  }

  async deleteGroupSnapshot(handle: string, signal: AbortSignal): Promise<void> {
    await this.job('DELETE', `/api/group-snapshots/${encodeURIComponent(handle)}`, signal);
  }

  async readSnapshot(handle: string, signal: AbortSignal): Promise<Readable> {
    const res = await this.request('GET', `/api/snapshots/${encodeURIComponent(handle)}/data`, signal);
    if (!res.body) throw new DriverError('unavailable', `sim array: snapshot ${handle} data has no body`);
    return Readable.fromWeb(res.body as WebReadableStream, { signal });
  }

  /** Uploads are not retried on busy (the stream is spent): busy comes back as a retryable error. */
  async writeVolume(handle: string, data: Readable, signal: AbortSignal): Promise<{ bytes: number }> {
    const res = await this.request('PUT', `/api/volumes/${encodeURIComponent(handle)}/data`, signal, { body: data });
    const { bytes } = (await res.json()) as { bytes: number };
    return { bytes };
  }

  async close(): Promise<void> {}
}

function retryAfterHeader(value: string | null): number | undefined {
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
