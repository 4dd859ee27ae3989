// The simulated storage array's HTTP API (node:http), in the style of arrays whose REST
// APIs run slow work as jobs. Guarantees:
// - Mutations (create, delete, resize of volumes, snapshots and group snapshots) answer
//   202 with a job id at once; GET /api/jobs/:id reports running, succeeded (with the
//   result) or failed (with the error). With `?waitMs=N` (a long-poll, as many arrays'
//   task APIs offer) a running job's answer is held until it ends or N ms (at most
//   `maxJobWaitMs`) have passed, so a client sees the end within one round trip. A repeated request for a running job's object gets
//   that job again, not a second one; the same name with other parameters while that job
//   runs is refused with 409 `alreadyExists`, as it would be once the job is done.
// - Beyond the array's concurrency limit a request is refused with 429 (or 503, as
//   configured) and Retry-After
//   (seconds, the standard header) plus `retryAfterMs` in the body; a conflicting request
//   on a busy object gets 409 `pending`. Job polls and /admin are never limited.
// - Errors are JSON `{"error": {"code", "message", "retryAfterMs"?}}` with the SimErrorCode.
// - A `crash` fault drops every connection and stops the server, as a dying array would;
//   the state file lets a new server pick up where it stopped.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { realClock, sleep, type Clock } from '../../core/clock.js';
import { componentLogger } from '../../log.js';
import type { FaultSpec } from './faults.js';
import { operations, type OpName, type SimArrayOptions } from './options.js';
import { SimError, type SimErrorCode } from './records.js';
import { ArrayState } from './state.js';

const log = componentLogger('sim-array');

const statusOf: Record<SimErrorCode, number> = {
  busy: 429,
  pending: 409,
  unavailable: 503,
  invalid: 400,
  outOfRange: 400,
  unsupported: 501,
  notFound: 404,
  noSpace: 507,
  alreadyExists: 409,
  inUse: 409,
  hostLimit: 409,
};

export interface JobView {
  id: string;
  op: OpName;
  target: string;
  state: 'running' | 'succeeded' | 'failed';
  result?: unknown;
  error?: { code: SimErrorCode | 'internal'; message: string };
}

interface Job extends JobView {
  /** The idempotency key while running: a repeat of the same request joins this job. */
  key: string;
  /** The request's parameters, canonical: a repeat with others must not join. */
  params: string;
  finishedAt?: number;
  /** Settles once the job has ended (state set). */
  done: Promise<void>;
}

/** The longest a job poll is held open, whatever the client asks. */
export const maxJobWaitMs = 30_000;

export interface SimArrayServerOptions extends Partial<SimArrayOptions> {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** When set, API requests must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** Finished jobs are kept this long for polling, in ms. */
  jobRetentionMs?: number;
  /** Runs after a crash fault stopped the server (the CLI exits the process). */
  onCrash?: () => void;
  /** The clock the array waits on (latency, stalls, long-polls); default realClock. */
  clock?: Clock;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class SimArrayServer {
  private readonly jobs = new Map<string, Job>();
  private readonly runningByKey = new Map<string, string>();
  private crashed = false;

  private constructor(
    readonly state: ArrayState,
    private readonly server: Server,
    private readonly options: SimArrayServerOptions,
  ) {}

  /** Starts an array (reloading its state file, if any) and listens. */
  static async start(options: SimArrayServerOptions = {}): Promise<SimArrayServer> {
    const state = await ArrayState.open(options, options.clock ?? realClock);
    const server = createServer();
    const array = new SimArrayServer(state, server, options);
    server.on('request', (req, res) => void array.handle(req, res));
    state.onCrash = () => array.crash();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      // A port already taken must not leave the opened state (and its temp dir) behind.
      await state.close();
      throw err;
    }
    log.debug({ url: array.url, statePath: options.statePath }, 'sim array listening');
    return array;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    const addr = this.server.address() as AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `http://${host}:${addr.port}`;
  }

  get isCrashed(): boolean {
    return this.crashed;
  }

  /** Drops every connection at once and stops serving, without a reply to anyone. */
  crash(): void {
    if (this.crashed) return;
    this.crashed = true;
    log.warn('sim array crashing (injected fault)');
    this.server.close();
    this.server.closeAllConnections();
    void this.state.close();
    this.options.onCrash?.();
  }

  async close(): Promise<void> {
    if (!this.crashed) {
      await new Promise<void>((resolve) => {
        this.server.close(() => resolve());
        this.server.closeAllConnections();
      });
    }
    await this.state.close();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://array');
      if (url.pathname.startsWith('/api/') && this.options.token && req.headers.authorization !== `Bearer ${this.options.token}`) {
        throw new HttpError(401, 'missing or wrong bearer token');
      }
      await this.route(req, res, url);
    } catch (err) {
      this.fail(req, res, err);
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    if (res.headersSent || this.crashed) {
      res.destroy();
      return;
    }
    let status = 500;
    let code: string = 'internal';
    let retryAfterMs: number | undefined;
    if (err instanceof SimError) {
      status = err.code === 'busy' ? this.state.options.busyStatus : statusOf[err.code];
      code = err.code;
      retryAfterMs = err.retryAfterMs;
    } else if (err instanceof HttpError) {
      status = err.status;
      code = status === 404 ? 'notFound' : 'invalid';
    } else {
      log.error({ err, method: req.method, url: req.url }, 'sim array internal error');
    }
    const message = err instanceof Error ? err.message : String(err);
    const headers: Record<string, string> = {};
    if (retryAfterMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
    // A refused upload is not read; closing stops the client from sending the rest.
    if (!req.readableEnded && req.method === 'PUT') headers.connection = 'close';
    this.send(res, status, { error: { code, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) } }, headers);
  }

  private send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  private async body(req: IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (chunks.length === 0) return {};
    try {
      const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      return parsed as Record<string, unknown>;
    } catch {
      throw new HttpError(400, 'request body must be a JSON object');
    }
  }

  /**
   * Accepts `start` as a job (202) unless one for `key` is running, in which case that job
   * is returned. `start` throws synchronously when the array refuses the operation.
   */
  private startJob(res: ServerResponse, op: OpName, target: string, key: string, start: () => Promise<unknown>, params: unknown = {}): void {
    const canonical = canonicalJson(params);
    const runningId = this.runningByKey.get(key);
    if (runningId) {
      if (this.jobs.get(runningId)?.params !== canonical) {
        throw new SimError('alreadyExists', `${op} of ${target} is running with other parameters (job ${runningId})`);
      }
      this.send(res, 202, { jobId: runningId });
      return;
    }
    const promise = start();
    const job: Job = { id: `job-${randomUUID()}`, op, target, state: 'running', key, params: canonical, done: Promise.resolve() };
    this.pruneJobs();
    this.jobs.set(job.id, job);
    this.runningByKey.set(key, job.id);
    job.done = promise.then(
      (result) => {
        job.state = 'succeeded';
        if (result !== undefined) job.result = result;
      },
      (err: unknown) => {
        job.state = 'failed';
        job.error = err instanceof SimError ? { code: err.code, message: err.message } : { code: 'internal', message: String(err) };
      },
    ).finally(() => {
      job.finishedAt = this.state.clock.now();
      this.runningByKey.delete(key);
    });
    this.send(res, 202, { jobId: job.id });
  }

  private pruneJobs(): void {
    const horizon = this.state.clock.now() - (this.options.jobRetentionMs ?? 10 * 60_000);
    for (const [id, job] of this.jobs) {
      if (job.finishedAt !== undefined && job.finishedAt < horizon) this.jobs.delete(id);
    }
  }

  private jobView(job: Job): JobView {
    const { key: _key, params: _params, finishedAt: _finishedAt, done: _done, ...view } = job;
    return view;
  }

  /** Holds a poll of a running job until it ends, `waitMs` pass, or the client goes away. */
  private async awaitJob(job: Job, waitMs: number, res: ServerResponse): Promise<void> {
    const gone = new AbortController();
    const onClose = () => gone.abort();
    res.once('close', onClose);
    try {
      await Promise.race([job.done, sleep(this.state.clock, waitMs, gone.signal)]);
    } catch {
      // The client went away: nobody to answer.
    } finally {
      res.off('close', onClose);
      gone.abort();
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const method = req.method ?? 'GET';
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const s = this.state;
    const [root, kind, id, sub] = parts;
    const is = (m: string, n: number) => method === m && parts.length === n;

    if (root === 'admin') return this.admin(req, res, method, kind);
    if (root !== 'api') throw new HttpError(404, `no route ${method} ${url.pathname}`);

    switch (kind) {
      case 'array':
        if (is('GET', 2)) return this.send(res, 200, await s.getArray());
        break;
      case 'jobs':
        if (is('GET', 3)) {
          const job = this.jobs.get(id!);
          if (!job) throw new SimError('notFound', `job ${id} not found`);
          const waitMs = Math.min(maxJobWaitMs, Math.max(0, Number(url.searchParams.get('waitMs')) || 0));
          if (job.state === 'running' && waitMs > 0) await this.awaitJob(job, waitMs, res);
          return this.send(res, 200, this.jobView(job));
        }
        break;
      case 'volumes':
        if (is('GET', 2)) return this.send(res, 200, { items: await s.listVolumes() });
        if (is('POST', 2)) {
          const b = await this.body(req);
          const name = str(b.name, 'name');
          const spec = {
            name,
            capacityBytes: num(b.capacityBytes, 'capacityBytes'),
            params: strMap(b.params, 'params'),
            ...(b.sourceSnapshotId !== undefined ? { sourceSnapshotId: str(b.sourceSnapshotId, 'sourceSnapshotId') } : {}),
          };
          return this.startJob(res, 'createVolume', `name:${name}`, `volume-name:${name}`, () => s.createVolume(spec), spec);
        }
        if (is('GET', 3)) return this.send(res, 200, await s.getVolume(id!));
        if (is('DELETE', 3)) return this.startJob(res, 'deleteVolume', id!, `delete:${id}`, () => s.deleteVolume(id!));
        if (is('PATCH', 3)) {
          const capacityBytes = num((await this.body(req)).capacityBytes, 'capacityBytes');
          return this.startJob(res, 'resizeVolume', id!, `resize:${id}:${capacityBytes}`, () => s.resizeVolume(id!, capacityBytes));
        }
        if (sub === 'data' && is('PUT', 4)) return this.send(res, 200, await s.writeVolume(id!, req));
        break;
      case 'snapshots':
        if (is('GET', 2)) return this.send(res, 200, { items: await s.listSnapshots() });
        if (is('POST', 2)) {
          const b = await this.body(req);
          const name = str(b.name, 'name');
          const volumeId = str(b.volumeId, 'volumeId');
          return this.startJob(res, 'createSnapshot', `name:${name}`, `snapshot-name:${name}`, () => s.createSnapshot(name, volumeId), { volumeId });
        }
        if (is('GET', 3)) return this.send(res, 200, await s.getSnapshot(id!));
        if (is('DELETE', 3)) return this.startJob(res, 'deleteSnapshot', id!, `delete:${id}`, () => s.deleteSnapshot(id!));
        if (sub === 'data' && is('GET', 4)) return this.stream(res, await s.readSnapshot(id!));
        break;
      case 'group-snapshots':
        if (is('POST', 2)) {
          const b = await this.body(req);
          const name = str(b.name, 'name');
          if (!Array.isArray(b.volumeIds)) throw new SimError('invalid', 'volumeIds must be an array of volume ids');
          const volumeIds = b.volumeIds.map((v, i) => str(v, `volumeIds[${i}]`));
          return this.startJob(res, 'createGroupSnapshot', `name:${name}`, `group-name:${name}`, () => s.createGroupSnapshot(name, volumeIds), {
            volumeIds: [...volumeIds].sort(),
          });
        }
        if (is('GET', 3)) return this.send(res, 200, await s.getGroupSnapshot(id!));
        if (is('DELETE', 3)) return this.startJob(res, 'deleteGroupSnapshot', id!, `delete:${id}`, () => s.deleteGroupSnapshot(id!));
        break;
    }
    throw new HttpError(404, `no route ${method} ${url.pathname}`);
  }

  private async stream(res: ServerResponse, data: Readable): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    try {
      await pipeline(data, res);
    } catch {
      data.destroy();
    }
  }

  private async admin(req: IncomingMessage, res: ServerResponse, method: string, what: string | undefined): Promise<void> {
    const s = this.state;
    if (method === 'GET' && what === 'stats') return this.send(res, 200, s.stats());
    if (method === 'GET' && what === 'oplog') {
      const since = Number(new URL(req.url ?? '/', 'http://array').searchParams.get('since') ?? 0);
      return this.send(res, 200, { entries: s.oplog(since) });
    }
    if (method === 'POST' && what === 'reset-stats') {
      s.resetStats();
      return this.send(res, 200, s.stats());
    }
    if (method === 'POST' && what === 'release-stalls') {
      s.abortStalls();
      return this.send(res, 200, {});
    }
    if (method === 'GET' && what === 'faults') return this.send(res, 200, s.listFaults());
    if (method === 'POST' && what === 'faults') {
      // { "<op>": { errorRate?, stallMs?, crash? }, ... }; an empty spec clears that op.
      const b = await this.body(req);
      for (const [op, spec] of Object.entries(b)) {
        if (!operations.includes(op as OpName)) throw new SimError('invalid', `unknown operation "${op}"`);
        s.setFault(op as OpName, (spec ?? {}) as FaultSpec);
      }
      return this.send(res, 200, s.listFaults());
    }
    if (method === 'PATCH' && what === 'config') {
      s.configure((await this.body(req)) as Partial<SimArrayOptions>);
      const { statePath: _statePath, ...view } = s.options;
      return this.send(res, 200, view);
    }
    throw new HttpError(404, `no admin route ${method} ${what ?? ''}`);
  }
}

/** JSON with object keys sorted, so equal parameters compare equal as strings. */
function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new SimError('invalid', `${field} must be a non-empty string`);
  return v;
}

function num(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new SimError('invalid', `${field} must be an integer`);
  return v;
}

function strMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw new SimError('invalid', `${field} must map strings to strings`);
  }
  return v as Record<string, string>;
}
