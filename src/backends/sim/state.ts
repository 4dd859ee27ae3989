// The simulated array's state and rules, shared by its HTTP API and its CSI server.
// Guarantees:
// - Admission: at most `maxConcurrentOperations` operations run at once; one more is
//   refused with `busy` (and a retry-after hint), never queued. `peakInFlight` is the
//   highest number ever admitted at once, so a test can prove a client kept the limit.
// - Safety on one object: an operation that writes a volume (resize, delete, data write)
//   never overlaps any other operation on that volume, and two operations never create one
//   name at once; the loser is refused with `pending` and counted as a conflict.
// - Idempotency: creating an existing name with the same parameters returns the existing
//   object; with other parameters it fails with `alreadyExists`. Deleting what is gone
//   succeeds.
// - Durability: a mutation is in the state file (written atomically: temp file + rename)
//   before its operation completes, so a restarted array has every acknowledged change.
// - Determinism: latencies and injected faults come from a PRNG seeded by `seed`; a
//   snapshot's data is a byte stream seeded per volume, identical on every read.
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { realClock, sleep, type Clock } from '../../core/clock.js';
import { sameParams } from '../driver.js';
import { defaultLatency, deriveSeed, drawLatency, prng, seededStream, type LatencyOptions } from './random.js';

export type SimErrorCode =
  | 'busy'
  | 'pending'
  | 'unavailable'
  | 'invalid'
  | 'outOfRange'
  | 'unsupported'
  | 'notFound'
  | 'noSpace'
  | 'alreadyExists'
  | 'inUse'
  | 'hostLimit';

export class SimError extends Error {
  override readonly name = 'SimError';
  constructor(
    readonly code: SimErrorCode,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export const operations = [
  'getArray',
  'createVolume',
  'deleteVolume',
  'resizeVolume',
  'modifyVolume',
  'publishVolume',
  'unpublishVolume',
  'getVolume',
  'listVolumes',
  'writeVolume',
  'createSnapshot',
  'deleteSnapshot',
  'getSnapshot',
  'listSnapshots',
  'readSnapshot',
  'createGroupSnapshot',
  'deleteGroupSnapshot',
  'getGroupSnapshot',
] as const;
export type OpName = (typeof operations)[number];

export interface FaultSpec {
  /** Probability in [0, 1] that the operation fails with `unavailable`. */
  errorRate?: number;
  /** Extra time the operation holds its slot before it proceeds, in ms. */
  stallMs?: number;
  /** The array crashes (drops every connection and stops) when this operation starts. */
  crash?: boolean;
}

export interface SimArrayOptions {
  capacityBytes: number;
  maxConcurrentOperations: number;
  /** The wait suggested to a refused (busy) client, in ms. */
  retryAfterMs: number;
  /** The HTTP status of a busy answer: 429 (Too Many Requests) or 503 (Service Unavailable). */
  busyStatus: 429 | 503;
  latency: LatencyOptions;
  seed: number;
  nativeConsistencyGroups: boolean;
  /** Seeded data a new, empty volume holds (capped by its size), in bytes. */
  initialDataBytes: number;
  /** Where state persists; none keeps it in memory only. */
  statePath?: string;
  /** Operation log entries kept (the oldest are dropped first). */
  oplogLimit: number;
  /** Hosts (CSI node ids) volumes can be mapped to. */
  hosts: string[];
  /** Volumes one host can have mapped at once (a LUN limit). */
  maxVolumesPerHost: number;
}

export const defaultOptions: SimArrayOptions = {
  capacityBytes: 1024 ** 4,
  maxConcurrentOperations: 16,
  retryAfterMs: 50,
  busyStatus: 429,
  latency: defaultLatency,
  seed: 1,
  nativeConsistencyGroups: true,
  initialDataBytes: 1024 * 1024,
  oplogLimit: 100_000,
  hosts: ['sim-node-1'],
  maxVolumesPerHost: 8,
};

/** What a volume or snapshot holds: seeded bytes, or bytes written into it (a blob by SHA-256). */
export type Content = { kind: 'seeded'; seed: number; bytes: number } | { kind: 'blob'; sha256: string; bytes: number };

export interface VolumeRecord {
  id: string;
  name: string;
  capacityBytes: number;
  params: Record<string, string>;
  /** Tunables that may change after creation (CSI mutable parameters): iops, throughput. */
  mutableParams?: Record<string, string>;
  sourceSnapshotId?: string;
  sourceVolumeId?: string;
  content: Content;
  createdAt: string;
  /** Host -> mapping; a mapped volume cannot be deleted. */
  publishedTo?: Record<string, { readonly: boolean }>;
  /** Set while the volume is abnormal (a failed disk, say); absent means healthy. */
  abnormal?: string;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  volumeId: string;
  sizeBytes: number;
  content: Content;
  createdAt: string;
  groupId?: string;
}

export interface GroupRecord {
  id: string;
  name: string;
  volumeIds: string[];
  snapshotIds: string[];
  createdAt: string;
}

export interface OplogEntry {
  seq: number;
  op: OpName;
  /** The object operated on: a volume/snapshot/group id, or `name:<name>` for creates. */
  target: string;
  /**
   * Ids of the objects the operation read (a snapshot's source volume, a get's target) and
   * wrote (a resize's volume, the object a create made or found), so a checker can pair
   * operations on one object even when a create is logged under its name.
   */
  reads: string[];
  writes: string[];
  /** Epoch milliseconds (fractional). */
  start: number;
  end: number;
  /** `ok`, or the SimErrorCode it failed with (`pending` marks a refused unsafe pair). */
  outcome: string;
}

export interface ArrayStats {
  inFlight: number;
  peakInFlight: number;
  maxConcurrentOperations: number;
  admitted: number;
  rejectedBusy: number;
  conflicts: number;
  faultsInjected: number;
  volumes: number;
  snapshots: number;
  groupSnapshots: number;
  capacityBytes: number;
  usedBytes: number;
}

interface PersistedState {
  version: 1;
  nextId: number;
  volumes: VolumeRecord[];
  snapshots: SnapshotRecord[];
  groups: GroupRecord[];
}

interface Locks {
  read?: string[];
  write?: string[];
}

export interface CreateVolumeSpec {
  name: string;
  capacityBytes: number;
  params?: Record<string, string>;
  mutableParams?: Record<string, string>;
  sourceSnapshotId?: string;
  sourceVolumeId?: string;
  /**
   * An existing volume of this name matches when its size lies in [minBytes, maxBytes]
   * (CSI capacity ranges); without them only the exact size matches.
   */
  minBytes?: number;
  maxBytes?: number;
}

/** The volume tunables the array lets a client change after creation. */
export const mutableParamKeys = ['iops', 'throughput'] as const;

function checkMutableParams(params: Record<string, string>): void {
  for (const [key, value] of Object.entries(params)) {
    if (!(mutableParamKeys as readonly string[]).includes(key)) {
      throw new SimError('invalid', `unsupported mutable parameter "${key}" (supported: ${mutableParamKeys.join(', ')})`);
    }
    if (!/^\d+$/.test(value)) throw new SimError('invalid', `mutable parameter "${key}" must be a whole number, got "${value}"`);
  }
}

const now = () => performance.timeOrigin + performance.now();

const collections = new Set(['array', 'volumes', 'snapshots']);

/** The object ids an operation read and wrote, for its log entry (see OplogEntry). */
function touched(target: string, locks: Locks, made: string[] = []): { reads: string[]; writes: string[] } {
  const writes = [...new Set([...(locks.write ?? []).filter((k) => !k.startsWith('name:')), ...made])];
  const own = target.startsWith('name:') || collections.has(target) || writes.includes(target) ? [] : [target];
  return { reads: [...new Set([...(locks.read ?? []), ...own])], writes };
}

/** The ids of what a create returned: one record, or a group with its members. */
function madeIds(result: unknown): string[] {
  const r = result as { id?: unknown; group?: { id?: unknown }; snapshots?: { id?: unknown }[] } | undefined;
  const ids = [r?.id, r?.group?.id, ...(r?.snapshots ?? []).map((s) => s.id)];
  return ids.filter((id): id is string => typeof id === 'string');
}

export class ArrayState {
  /** Called when a `crash` fault fires; the transport drops connections and stops. */
  onCrash: () => void = () => {};

  private readonly volumes = new Map<string, VolumeRecord>();
  private readonly snapshots = new Map<string, SnapshotRecord>();
  private readonly groups = new Map<string, GroupRecord>();
  /** Name -> id; every record is indexed under its own name. */
  private readonly volumeNames = new Map<string, string>();
  private readonly snapshotNames = new Map<string, string>();
  private readonly groupNames = new Map<string, string>();
  private nextId = 1;

  /** Object key -> holders; a key with `writer` has no readers, and vice versa. */
  private readonly locks = new Map<string, { readers: number; writer: boolean }>();
  private readonly faults = new Map<OpName, FaultSpec>();
  private readonly random: () => number;
  private readonly closing = new AbortController();
  /** Aborted (and replaced) to end every running stall early. */
  private stallRelease = new AbortController();

  private inFlight = 0;
  private peakInFlight = 0;
  private counters = { admitted: 0, rejectedBusy: 0, conflicts: 0, faultsInjected: 0 };
  private oplogEntries: OplogEntry[] = [];
  private oplogSeq = 0;

  /** Generations of state: `dirtyGen` counts mutations, `savedGen` the last one on disk. */
  private dirtyGen = 0;
  private savedGen = 0;
  private saving: Promise<void> | undefined;

  private constructor(
    readonly options: SimArrayOptions,
    readonly clock: Clock,
    private readonly blobDir: string,
    private readonly ownsBlobDir: boolean,
  ) {
    this.random = prng(options.seed);
  }

  /** Opens the array, reloading its state file when there is one. */
  static async open(options: Partial<SimArrayOptions> & { clock?: Clock } = {}, clock: Clock = options.clock ?? realClock): Promise<ArrayState> {
    const { clock: _clock, ...rest } = options;
    const opts: SimArrayOptions = { ...defaultOptions, ...rest, latency: { ...defaultLatency, ...options.latency } };
    let blobDir: string;
    let owns = false;
    if (opts.statePath) {
      blobDir = `${opts.statePath}.blobs`;
      await mkdir(dirname(opts.statePath), { recursive: true });
    } else {
      blobDir = await mkdtemp(join(tmpdir(), 'trellis-sim-blobs-'));
      owns = true;
    }
    await mkdir(blobDir, { recursive: true });
    const state = new ArrayState(opts, clock, blobDir, owns);
    if (opts.statePath) await state.load(opts.statePath);
    return state;
  }

  private async load(path: string): Promise<void> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const saved = JSON.parse(text) as PersistedState;
    if (saved.version !== 1) throw new Error(`sim array: unknown state file version ${String(saved.version)} in ${path}`);
    this.nextId = saved.nextId;
    for (const v of saved.volumes) {
      this.volumes.set(v.id, v);
      this.volumeNames.set(v.name, v.id);
    }
    for (const s of saved.snapshots) {
      this.snapshots.set(s.id, s);
      this.snapshotNames.set(s.name, s.id);
    }
    for (const g of saved.groups) {
      this.groups.set(g.id, g);
      this.groupNames.set(g.name, g.id);
    }
  }

  /** Resolves once every mutation so far is on disk. */
  private async persist(): Promise<void> {
    const path = this.options.statePath;
    if (!path) return;
    const wanted = ++this.dirtyGen;
    while (this.savedGen < wanted) {
      this.saving ??= this.writeState(path).finally(() => {
        this.saving = undefined;
      });
      await this.saving;
    }
  }

  private async writeState(path: string): Promise<void> {
    const gen = this.dirtyGen;
    const state: PersistedState = {
      version: 1,
      nextId: this.nextId,
      volumes: [...this.volumes.values()],
      snapshots: [...this.snapshots.values()],
      groups: [...this.groups.values()],
    };
    const tmp = `${path}.${process.pid}.tmp`;
    // No fsync: the array simulates process crashes, not power loss; rename alone is atomic.
    await writeFile(tmp, JSON.stringify(state));
    await rename(tmp, path);
    this.savedGen = gen;
  }

  async close(): Promise<void> {
    this.closing.abort(new SimError('unavailable', 'array shutting down'));
    await this.saving;
    if (this.ownsBlobDir) await rm(this.blobDir, { recursive: true, force: true });
  }

  // ---- admission, locks, faults, latency, log -------------------------------------------

  /**
   * Admits one operation or throws busy/pending; the returned function ends it. Checks run
   * synchronously, so two operations never both pass the same check.
   */
  private begin(op: OpName, target: string, locks: Locks): (outcome: string, made?: string[]) => void {
    const limit = this.options.maxConcurrentOperations;
    if (this.inFlight >= limit) {
      this.counters.rejectedBusy++;
      throw new SimError('busy', `array busy: ${this.inFlight} operations in flight, limit ${limit}`, this.options.retryAfterMs);
    }
    const writes = locks.write ?? [];
    const reads = locks.read ?? [];
    const blocked = writes.find((k) => this.locks.has(k)) ?? reads.find((k) => this.locks.get(k)?.writer);
    if (blocked !== undefined) {
      this.counters.conflicts++;
      const t = now();
      this.log({ op, target, ...touched(target, locks), start: t, end: t, outcome: 'pending' });
      throw new SimError('pending', `an operation is pending on ${blocked}`, this.options.retryAfterMs);
    }
    for (const k of writes) this.locks.set(k, { readers: 0, writer: true });
    for (const k of reads) {
      const held = this.locks.get(k) ?? { readers: 0, writer: false };
      held.readers++;
      this.locks.set(k, held);
    }
    this.inFlight++;
    this.counters.admitted++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    const start = now();
    let ended = false;
    return (outcome, made) => {
      if (ended) return;
      ended = true;
      for (const k of writes) this.locks.delete(k);
      for (const k of reads) {
        const held = this.locks.get(k)!;
        if (--held.readers === 0) this.locks.delete(k);
      }
      this.inFlight--;
      this.log({ op, target, ...touched(target, locks, made), start, end: now(), outcome });
    };
  }

  private log(entry: Omit<OplogEntry, 'seq'>): void {
    this.oplogEntries.push({ seq: ++this.oplogSeq, ...entry });
    const over = this.oplogEntries.length - this.options.oplogLimit;
    if (over > 0) this.oplogEntries.splice(0, over);
  }

  /** Applies injected faults, then the operation's latency; the slot is held throughout. */
  private async delay(op: OpName): Promise<void> {
    const fault = this.faults.get(op);
    if (fault?.crash) {
      this.counters.faultsInjected++;
      this.onCrash();
      throw new SimError('unavailable', `array crashed during ${op} (injected)`);
    }
    if (fault?.stallMs) {
      const released = this.stallRelease.signal;
      await sleep(this.clock, fault.stallMs, AbortSignal.any([this.closing.signal, released])).catch((err: unknown) => {
        if (!released.aborted || this.closing.signal.aborted) throw err;
      });
    }
    if (fault?.errorRate && this.random() < fault.errorRate) {
      this.counters.faultsInjected++;
      throw new SimError('unavailable', `${op} failed: controller error (injected)`);
    }
    const ms = drawLatency(this.options.latency, op, this.random);
    if (ms > 0) await sleep(this.clock, ms, this.closing.signal);
  }

  /**
   * Runs one operation. Admission (busy, pending) and argument checks throw synchronously,
   * so the HTTP API can refuse a request before it accepts it as a job.
   */
  private run<T>(op: OpName, target: string, locks: Locks, fn: () => T | Promise<T>): Promise<T> {
    const end = this.begin(op, target, locks);
    return (async () => {
      try {
        await this.delay(op);
        const result = await fn();
        end('ok', op.startsWith('create') ? madeIds(result) : undefined);
        return result;
      } catch (err) {
        end(err instanceof SimError ? err.code : 'error');
        throw err;
      }
    })();
  }

  // ---- admin ----------------------------------------------------------------------------

  stats(): ArrayStats {
    return {
      inFlight: this.inFlight,
      peakInFlight: this.peakInFlight,
      maxConcurrentOperations: this.options.maxConcurrentOperations,
      ...this.counters,
      volumes: this.volumes.size,
      snapshots: this.snapshots.size,
      groupSnapshots: this.groups.size,
      capacityBytes: this.options.capacityBytes,
      usedBytes: this.usedBytes(),
    };
  }

  /** Clears counters, the peak (to the current in-flight) and the log. */
  resetStats(): void {
    this.peakInFlight = this.inFlight;
    this.counters = { admitted: 0, rejectedBusy: 0, conflicts: 0, faultsInjected: 0 };
    this.oplogEntries = [];
  }

  oplog(sinceSeq = 0): OplogEntry[] {
    return this.oplogEntries.filter((e) => e.seq > sinceSeq);
  }

  /** Sets (or, with an empty spec, clears) the faults injected into `op`. */
  setFault(op: OpName, spec: FaultSpec): void {
    if (!operations.includes(op)) throw new SimError('invalid', `unknown operation "${op}"`);
    if (spec.errorRate !== undefined && !(spec.errorRate >= 0 && spec.errorRate <= 1)) {
      throw new SimError('invalid', 'errorRate must be within [0, 1]');
    }
    if (spec.stallMs !== undefined && !(spec.stallMs >= 0)) throw new SimError('invalid', 'stallMs must be >= 0');
    if (!spec.errorRate && !spec.stallMs && !spec.crash) this.faults.delete(op);
    else this.faults.set(op, { ...spec });
  }

  /** Ends every stall now; the stalled operations go on as if their stall had run out. */
  abortStalls(): void {
    this.stallRelease.abort();
    this.stallRelease = new AbortController();
  }

  listFaults(): Partial<Record<OpName, FaultSpec>> {
    return Object.fromEntries(this.faults);
  }

  /** Changes limits and behaviour at run time (what a benchmark varies between runs). */
  configure(changes: Partial<Omit<SimArrayOptions, 'statePath' | 'seed'>>): void {
    const { latency, ...rest } = changes;
    if (rest.maxConcurrentOperations !== undefined && !(rest.maxConcurrentOperations >= 1)) {
      throw new SimError('invalid', 'maxConcurrentOperations must be >= 1');
    }
    Object.assign(this.options, rest);
    if (latency) this.options.latency = { ...this.options.latency, ...latency, factors: { ...this.options.latency.factors, ...latency.factors } };
  }

  // ---- the array's API ------------------------------------------------------------------

  private usedBytes(): number {
    let used = 0;
    for (const v of this.volumes.values()) used += v.capacityBytes;
    return used;
  }

  private newId(prefix: string): string {
    return `${prefix}-${String(this.nextId++).padStart(6, '0')}`;
  }

  getArray(): Promise<{ capacityBytes: number; usedBytes: number; nativeConsistencyGroups: boolean; maxConcurrentOperations: number }> {
    return this.run('getArray', 'array', {}, () => ({
      capacityBytes: this.options.capacityBytes,
      usedBytes: this.usedBytes(),
      nativeConsistencyGroups: this.options.nativeConsistencyGroups,
      maxConcurrentOperations: this.options.maxConcurrentOperations,
    }));
  }

  findVolumeByName(name: string): VolumeRecord | undefined {
    const id = this.volumeNames.get(name);
    return id === undefined ? undefined : this.volumes.get(id);
  }

  createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord> {
    if (!spec.name) throw new SimError('invalid', 'volume name is required');
    if (!Number.isSafeInteger(spec.capacityBytes) || spec.capacityBytes <= 0) {
      throw new SimError('invalid', `capacityBytes must be a positive integer, got ${spec.capacityBytes}`);
    }
    const params = spec.params ?? {};
    if (spec.mutableParams) checkMutableParams(spec.mutableParams);
    const locks: Locks = { write: [`name:volume:${spec.name}`], read: [spec.sourceSnapshotId, spec.sourceVolumeId].filter((x): x is string => !!x) };
    return this.run('createVolume', `name:${spec.name}`, locks, async () => {
      const existing = this.findVolumeByName(spec.name);
      if (existing) {
        const min = spec.minBytes ?? spec.capacityBytes;
        const max = spec.maxBytes ?? spec.capacityBytes;
        const sizeOk = existing.capacityBytes >= min && (max <= 0 || existing.capacityBytes <= max);
        if (sizeOk && sameParams(existing.params, params) && existing.sourceSnapshotId === spec.sourceSnapshotId && existing.sourceVolumeId === spec.sourceVolumeId) {
          return existing;
        }
        throw new SimError('alreadyExists', `volume "${spec.name}" exists (${existing.id}, ${existing.capacityBytes} bytes) with other parameters`);
      }
      const free = this.options.capacityBytes - this.usedBytes();
      if (spec.capacityBytes > free) {
        throw new SimError('noSpace', `insufficient capacity: ${spec.capacityBytes} bytes requested, ${free} free`);
      }
      const id = this.newId('vol');
      let content: Content;
      if (spec.sourceSnapshotId) {
        const snap = this.snapshots.get(spec.sourceSnapshotId);
        if (!snap) throw new SimError('notFound', `source snapshot ${spec.sourceSnapshotId} not found`);
        if (snap.sizeBytes > spec.capacityBytes) {
          throw new SimError('outOfRange', `volume of ${spec.capacityBytes} bytes is smaller than snapshot ${snap.id} (${snap.sizeBytes} bytes)`);
        }
        content = snap.content;
      } else if (spec.sourceVolumeId) {
        const src = this.volumes.get(spec.sourceVolumeId);
        if (!src) throw new SimError('notFound', `source volume ${spec.sourceVolumeId} not found`);
        if (src.capacityBytes > spec.capacityBytes) {
          throw new SimError('outOfRange', `volume of ${spec.capacityBytes} bytes is smaller than source volume ${src.id}`);
        }
        content = src.content;
      } else {
        content = { kind: 'seeded', seed: deriveSeed(this.options.seed, id), bytes: Math.min(spec.capacityBytes, this.options.initialDataBytes) };
      }
      const vol: VolumeRecord = { id, name: spec.name, capacityBytes: spec.capacityBytes, params, content, createdAt: new Date().toISOString() };
      if (spec.mutableParams && Object.keys(spec.mutableParams).length > 0) vol.mutableParams = { ...spec.mutableParams };
      if (spec.sourceSnapshotId) vol.sourceSnapshotId = spec.sourceSnapshotId;
      if (spec.sourceVolumeId) vol.sourceVolumeId = spec.sourceVolumeId;
      this.volumes.set(id, vol);
      this.volumeNames.set(vol.name, id);
      await this.persist();
      return vol;
    });
  }

  deleteVolume(id: string): Promise<void> {
    return this.run('deleteVolume', id, { write: [id] }, async () => {
      const vol = this.volumes.get(id);
      if (!vol) return;
      const hosts = Object.keys(vol.publishedTo ?? {});
      if (hosts.length > 0) throw new SimError('inUse', `volume ${id} is mapped to ${hosts.join(', ')}; unmap it first`);
      this.volumes.delete(id);
      this.volumeNames.delete(vol.name);
      await this.persist();
    });
  }

  /** Grows a volume; with `atLeast`, a volume already that big is returned unchanged (CSI expand). */
  resizeVolume(id: string, capacityBytes: number, opts: { atLeast?: boolean } = {}): Promise<VolumeRecord> {
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes <= 0) {
      throw new SimError('invalid', `capacityBytes must be a positive integer, got ${capacityBytes}`);
    }
    return this.run('resizeVolume', id, { write: [id] }, async () => {
      const vol = this.mustVolume(id);
      if (capacityBytes < vol.capacityBytes) {
        if (opts.atLeast) return vol;
        throw new SimError('outOfRange', `cannot shrink volume ${id} from ${vol.capacityBytes} to ${capacityBytes} bytes`);
      }
      const growth = capacityBytes - vol.capacityBytes;
      const free = this.options.capacityBytes - this.usedBytes();
      if (growth > free) throw new SimError('noSpace', `insufficient capacity: ${growth} more bytes requested, ${free} free`);
      if (growth > 0) {
        vol.capacityBytes = capacityBytes;
        await this.persist();
      }
      return vol;
    });
  }

  /** Changes a volume's tunables (CSI ControllerModifyVolume); keys not given keep their value. */
  modifyVolume(id: string, mutableParams: Record<string, string>): Promise<VolumeRecord> {
    checkMutableParams(mutableParams);
    return this.run('modifyVolume', id, { write: [id] }, async () => {
      const vol = this.mustVolume(id);
      if (Object.keys(mutableParams).length > 0) {
        vol.mutableParams = { ...vol.mutableParams, ...mutableParams };
        await this.persist();
      }
      return vol;
    });
  }

  /** Maps a volume to a host (CSI ControllerPublishVolume); mapping it again the same way is a no-op. */
  publishVolume(id: string, host: string, readonly: boolean): Promise<{ lun: number }> {
    return this.run('publishVolume', id, { write: [id] }, async () => {
      const vol = this.mustVolume(id);
      if (!this.options.hosts.includes(host)) throw new SimError('notFound', `host ${host} not found (known: ${this.options.hosts.join(', ')})`);
      const lun = () => Object.keys(vol.publishedTo ?? {}).indexOf(host);
      const existing = vol.publishedTo?.[host];
      if (existing) {
        if (existing.readonly === readonly) return { lun: lun() };
        throw new SimError('alreadyExists', `volume ${id} is mapped to ${host} ${existing.readonly ? 'read-only' : 'read-write'}`);
      }
      let mapped = 0;
      for (const v of this.volumes.values()) if (v.publishedTo?.[host]) mapped++;
      if (mapped >= this.options.maxVolumesPerHost) {
        throw new SimError('hostLimit', `host ${host} has ${mapped} volumes mapped, the most it can take`);
      }
      vol.publishedTo = { ...vol.publishedTo, [host]: { readonly } };
      await this.persist();
      return { lun: lun() };
    });
  }

  /** Unmaps a volume from `host`, or from every host; what is not mapped (or gone) succeeds. */
  unpublishVolume(id: string, host?: string): Promise<void> {
    return this.run('unpublishVolume', id, { write: [id] }, async () => {
      const vol = this.volumes.get(id);
      if (!vol?.publishedTo) return;
      if (host) delete vol.publishedTo[host];
      if (!host || Object.keys(vol.publishedTo).length === 0) delete vol.publishedTo;
      await this.persist();
    });
  }

  private mustVolume(id: string): VolumeRecord {
    const vol = this.volumes.get(id);
    if (!vol) throw new SimError('notFound', `volume ${id} not found`);
    return vol;
  }

  private mustSnapshot(id: string): SnapshotRecord {
    const snap = this.snapshots.get(id);
    if (!snap) throw new SimError('notFound', `snapshot ${id} not found`);
    return snap;
  }

  getVolume(id: string): Promise<VolumeRecord> {
    return this.run('getVolume', id, {}, () => this.mustVolume(id));
  }

  listVolumes(): Promise<VolumeRecord[]> {
    return this.run('listVolumes', 'volumes', {}, () => [...this.volumes.values()]);
  }

  /** Replaces the volume's data with `data` (kept as a blob named by its SHA-256). */
  writeVolume(id: string, data: Readable): Promise<{ bytes: number; sha256: string }> {
    return this.run('writeVolume', id, { write: [id] }, async () => {
      const vol = this.mustVolume(id);
      const tmp = join(this.blobDir, `.${randomUUID()}.tmp`);
      const hash = createHash('sha256');
      let bytes = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length;
          if (bytes > vol.capacityBytes) return cb(new SimError('noSpace', `data exceeds volume ${id} size of ${vol.capacityBytes} bytes`));
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      try {
        await pipeline(data, meter, createWriteStream(tmp), { signal: this.closing.signal });
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      const sha256 = hash.digest('hex');
      await rename(tmp, join(this.blobDir, sha256));
      vol.content = { kind: 'blob', sha256, bytes };
      await this.persist();
      return { bytes, sha256 };
    });
  }

  /** The snapshot record now, outside any operation (no admission, no latency). */
  peekSnapshot(id: string): SnapshotRecord | undefined {
    return this.snapshots.get(id);
  }

  /** The group record now, outside any operation (no admission, no latency). */
  peekGroup(id: string): GroupRecord | undefined {
    return this.groups.get(id);
  }

  /** Marks a volume abnormal with `message` (what its condition will say), or healthy again. */
  async setVolumeCondition(id: string, abnormal: string | undefined): Promise<void> {
    const vol = this.mustVolume(id);
    if (abnormal === undefined) delete vol.abnormal;
    else vol.abnormal = abnormal;
    await this.persist();
  }

  findSnapshotByName(name: string): SnapshotRecord | undefined {
    const id = this.snapshotNames.get(name);
    return id === undefined ? undefined : this.snapshots.get(id);
  }

  createSnapshot(name: string, volumeId: string): Promise<SnapshotRecord> {
    if (!name) throw new SimError('invalid', 'snapshot name is required');
    if (!volumeId) throw new SimError('invalid', 'source volume id is required');
    return this.run('createSnapshot', `name:${name}`, { write: [`name:snapshot:${name}`], read: [volumeId] }, async () => {
      const existing = this.findSnapshotByName(name);
      if (existing) {
        if (existing.volumeId === volumeId) return existing;
        throw new SimError('alreadyExists', `snapshot "${name}" exists (${existing.id}) of another volume, ${existing.volumeId}`);
      }
      const vol = this.mustVolume(volumeId);
      const snap = this.cutSnapshot(name, vol);
      await this.persist();
      return snap;
    });
  }

  private cutSnapshot(name: string, vol: VolumeRecord, groupId?: string): SnapshotRecord {
    const snap: SnapshotRecord = {
      id: this.newId('snap'),
      name,
      volumeId: vol.id,
      sizeBytes: vol.capacityBytes,
      content: vol.content,
      createdAt: new Date().toISOString(),
    };
    if (groupId) snap.groupId = groupId;
    this.snapshots.set(snap.id, snap);
    this.snapshotNames.set(name, snap.id);
    return snap;
  }

  deleteSnapshot(id: string): Promise<void> {
    return this.run('deleteSnapshot', id, { write: [id] }, async () => {
      const snap = this.snapshots.get(id);
      if (!snap) return;
      this.dropSnapshot(snap);
      await this.persist();
    });
  }

  private dropSnapshot(snap: SnapshotRecord): void {
    this.snapshots.delete(snap.id);
    this.snapshotNames.delete(snap.name);
    const group = snap.groupId ? this.groups.get(snap.groupId) : undefined;
    if (group) group.snapshotIds = group.snapshotIds.filter((s) => s !== snap.id);
  }

  getSnapshot(id: string): Promise<SnapshotRecord> {
    return this.run('getSnapshot', id, {}, () => this.mustSnapshot(id));
  }

  listSnapshots(): Promise<SnapshotRecord[]> {
    return this.run('listSnapshots', 'snapshots', {}, () => [...this.snapshots.values()]);
  }

  /** The snapshot's data; the operation (and its slot) lasts until the stream closes. */
  async readSnapshot(id: string): Promise<Readable> {
    const end = this.begin('readSnapshot', id, { read: [id] });
    try {
      await this.delay('readSnapshot');
      const { content } = this.mustSnapshot(id);
      const stream = content.kind === 'seeded' ? seededStream(content.seed, content.bytes) : createReadStream(join(this.blobDir, content.sha256));
      stream.once('close', () => end(stream.readableEnded ? 'ok' : 'aborted'));
      return stream;
    } catch (err) {
      end(err instanceof SimError ? err.code : 'error');
      throw err;
    }
  }

  getGroupSnapshot(id: string): Promise<{ group: GroupRecord; snapshots: SnapshotRecord[] }> {
    return this.run('getGroupSnapshot', id, {}, () => this.groupView(this.mustGroup(id)));
  }

  private mustGroup(id: string): GroupRecord {
    const group = this.groups.get(id);
    if (!group) throw new SimError('notFound', `group snapshot ${id} not found`);
    return group;
  }

  private groupView(group: GroupRecord): { group: GroupRecord; snapshots: SnapshotRecord[] } {
    return { group, snapshots: group.snapshotIds.map((s) => this.snapshots.get(s)).filter((s): s is SnapshotRecord => !!s) };
  }

  findGroupByName(name: string): GroupRecord | undefined {
    const id = this.groupNames.get(name);
    return id === undefined ? undefined : this.groups.get(id);
  }

  /** Cuts one snapshot of every volume at one instant (a consistency group snapshot). */
  createGroupSnapshot(name: string, volumeIds: string[]): Promise<{ group: GroupRecord; snapshots: SnapshotRecord[] }> {
    if (!this.options.nativeConsistencyGroups) throw new SimError('unsupported', 'consistency group snapshots are disabled on this array');
    if (!name) throw new SimError('invalid', 'group snapshot name is required');
    if (volumeIds.length === 0) throw new SimError('invalid', 'at least one source volume is required');
    if (new Set(volumeIds).size !== volumeIds.length) throw new SimError('invalid', 'source volumes must be distinct');
    const locks: Locks = { write: [`name:group:${name}`], read: [...volumeIds] };
    return this.run('createGroupSnapshot', `name:${name}`, locks, async () => {
      const existing = this.findGroupByName(name);
      if (existing) {
        const same = existing.volumeIds.length === volumeIds.length && volumeIds.every((v) => existing.volumeIds.includes(v));
        if (same) return this.groupView(existing);
        throw new SimError('alreadyExists', `group snapshot "${name}" exists (${existing.id}) of other volumes`);
      }
      const vols = volumeIds.map((v) => this.mustVolume(v));
      const group: GroupRecord = { id: this.newId('group'), name, volumeIds: [...volumeIds], snapshotIds: [], createdAt: new Date().toISOString() };
      // One synchronous pass: no other operation can change a member in between.
      const snaps = vols.map((v) => this.cutSnapshot(`${name}/${v.id}`, v, group.id));
      group.snapshotIds = snaps.map((s) => s.id);
      this.groups.set(group.id, group);
      this.groupNames.set(name, group.id);
      await this.persist();
      return { group, snapshots: snaps };
    });
  }

  deleteGroupSnapshot(id: string): Promise<void> {
    return this.run('deleteGroupSnapshot', id, { write: [id] }, async () => {
      const group = this.groups.get(id);
      if (!group) return;
      for (const s of group.snapshotIds) {
        const snap = this.snapshots.get(s);
        if (snap) this.dropSnapshot(snap);
      }
      this.groups.delete(id);
      this.groupNames.delete(group.name);
      await this.persist();
    });
  }
}
