// The sim driver: a StorageDriver that speaks the simulated array's HTTP API.
// Guarantees beyond the StorageDriver contract:
// - One try per request: a busy answer (429, 503 with Retry-After, 409 pending) is thrown
//   at once as a `busy` DriverError carrying the array's Retry-After (else a short jittered
//   default); the caller waits, outside its concurrency slot. Every other failure is
//   thrown at once, typed.
// - A job is awaited with the array's long-poll (`GET /api/jobs/:id?waitMs=`), so its end
//   is seen within one round trip of the array finishing it, not a poll interval later.
//   A poll that cannot reach the array is repeated until the caller's signal fires, and a
//   job the array lost (it restarted) is re-submitted, which is safe because every
//   mutation is idempotent by name or id.
// - All waiting (request timeouts, pauses between unreachable polls) runs on the injected Clock.
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Type, type Static } from 'typebox';
import { realClock, sleep, type Clock } from '../../core/clock.js';
import { abortReason, DriverError, type DriverErrorReason } from '../errors.js';
import { throwIfAborted } from '../driver.js';
import type { CreateSnapshotRequest, CreateVolumeRequest, DriverOptions, GroupSnapshotInfo, ProbeResult, SnapshotInfo, StorageDriver, VolumeInfo } from '../driver.js';
import type { GroupRecord, SnapshotRecord, VolumeRecord } from './records.js';
import type { JobView } from './array.js';

export const SimConfig = Type.Object(
  {
    endpoint: Type.String({ pattern: '^https?://', description: 'Base URL of the array, e.g. http://127.0.0.1:8080' }),
    requestTimeoutMs: Type.Optional(Type.Integer({ minimum: 1, default: 30_000, description: 'Timeout of one HTTP request.' })),
    jobWaitMs: Type.Optional(
      Type.Integer({ minimum: 1, default: 5_000, description: 'Longest the array holds one job poll open (long-poll); a job that ends sooner answers at once.' }),
    ),
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

/** Pause between job polls while the array cannot be reached. */
const unreachablePollMs = 25;

interface ErrorBody {
  error?: { code?: string; message?: string; retryAfterMs?: number };
}

function toVolume(v: VolumeRecord): VolumeInfo {
  const info: VolumeInfo = { handle: v.id, name: v.name, capacityBytes: v.capacityBytes, params: v.params, dataBytes: v.content.bytes };
  if (v.sourceSnapshotId) info.sourceSnapshot = v.sourceSnapshotId;
  if (v.abnormal !== undefined) info.condition = { abnormal: true, message: v.abnormal };
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

  private readonly clock: Clock;

  constructor(
    config: SimConfig,
    private readonly credentials: SimCredentials = {},
    options: DriverOptions = {},
  ) {
    this.cfg = { requestTimeoutMs: 30_000, jobWaitMs: 5_000, ...config };
    this.base = config.endpoint.replace(/\/+$/, '');
    this.clock = options.clock ?? realClock;
  }

  /**
   * One HTTP exchange, one try; failures are thrown typed, busy with its retry-after.
   * `extraWaitMs` lengthens the header timeout for a request the array may hold (a long-poll).
   */
  private async request(
    method: string,
    path: string,
    signal: AbortSignal,
    init: { json?: unknown; body?: Readable; extraWaitMs?: number } = {},
  ): Promise<Response> {
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
    const timeoutMs = this.cfg.requestTimeoutMs + (init.extraWaitMs ?? 0);
    const timer = init.body ? undefined : this.clock.setTimeout(() => timeout.abort(), timeoutMs);
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
      if (timeout.signal.aborted) throw new DriverError('timeout', `sim array ${method} ${path}: no answer within ${timeoutMs} ms`, { cause: err });
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new DriverError('unavailable', `sim array ${method} ${path}: ${cause?.code ?? cause?.message ?? String(err)}`, { cause: err });
    } finally {
      if (timer !== undefined) this.clock.clearTimeout(timer);
    }
    if (res.ok) return res;
    const parsed = (await res.json().catch(() => ({}))) as ErrorBody;
    const code = parsed.error?.code ?? (res.status === 429 ? 'busy' : res.status === 503 ? 'unavailable' : 'invalid');
    const message = parsed.error?.message ?? `HTTP ${res.status}`;
    const retryAfterMs = parsed.error?.retryAfterMs ?? retryAfterHeader(res.headers.get('retry-after'));
    // 503 with Retry-After is how many arrays say "overloaded, come back later".
    const busy = res.status === 429 || code === 'busy' || code === 'pending' || (res.status === 503 && retryAfterMs !== undefined);
    const reason = busy ? 'busy' : (reasonOf[code] ?? (res.status >= 500 ? 'unavailable' : 'invalid'));
    throw new DriverError(reason, `sim array: ${message}`, retryAfterMs !== undefined ? { retryAfterMs } : {});
  }

  private async json<T>(method: string, path: string, signal: AbortSignal, payload?: unknown): Promise<T> {
    const res = await this.request(method, path, signal, payload === undefined ? {} : { json: payload });
    return (await res.json()) as T;
  }

  /**
   * Submits a job and long-polls it to the end; re-submits if the array lost it. A poll that
   * cannot reach the array (restarting, say) is repeated every `unreachablePollMs` until
   * the signal fires: the job may well be running, and the array's answer decides.
   */
  private async job<T>(method: string, path: string, signal: AbortSignal, payload?: unknown): Promise<T> {
    const waitMs = this.cfg.jobWaitMs;
    for (;;) {
      const { jobId } = await this.json<{ jobId: string }>(method, path, signal, payload);
      for (;;) {
        let job: JobView;
        try {
          const res = await this.request('GET', `/api/jobs/${encodeURIComponent(jobId)}?waitMs=${waitMs}`, signal, { extraWaitMs: waitMs });
          job = (await res.json()) as JobView;
        } catch (err) {
          if (err instanceof DriverError && err.reason === 'notFound') break;
          if (err instanceof DriverError && (err.reason === 'unavailable' || err.reason === 'timeout')) {
            await sleep(this.clock, unreachablePollMs, signal);
            continue;
          }
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
      capabilities: { nativeGroupSnapshot: a.nativeConsistencyGroups, snapshotData: true, volumeData: true, resize: true, topology: false },
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
