// The simulated array itself: its volumes, snapshots and group snapshots, and the operations
// on them that the HTTP API (array.ts) and the CSI server (csi-server.ts) both call. Each
// operation passes admission (admission.ts: limit and per-object safety), then injected
// faults (faults.ts) and its latency, then runs, is logged (oplog.ts) and, if it changed
// anything, saved (persistence.ts) before it completes. Guarantees:
// - Idempotency: creating an existing name with the same parameters returns the existing
//   object; with other parameters it fails with `alreadyExists`. Deleting what is gone
//   succeeds.
// - Durability: a mutation is in the state file before its operation completes, so a
//   restarted array has every acknowledged change.
// - Determinism: latencies and injected faults come from a PRNG seeded by `seed`; a
//   snapshot's data is a byte stream seeded per volume, identical on every read.
// - Argument checks and admission throw synchronously, so the HTTP API can refuse a
//   request before it accepts it as a job.
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { realClock, sleep, type Clock } from '../../core/clock.js';
import { sameParams } from '../driver.js';
import { Admission, type ObjectLocks } from './admission.js';
import { Faults, type FaultSpec } from './faults.js';
import { defaultOptions, type OpName, type SimArrayOptions } from './options.js';
import { Oplog, type OplogEntry } from './oplog.js';
import { StateFile, type PersistedState } from './persistence.js';
import { defaultLatency, deriveSeed, drawLatency, prng, seededStream } from './random.js';
import {
  checkMutableParams,
  SimError,
  type Content,
  type CreateVolumeSpec,
  type GroupRecord,
  type SnapshotRecord,
  type VolumeRecord,
} from './records.js';

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

  private readonly random: () => number;
  /** Aborted on close: running stalls and latencies fail, uploads stop. */
  private readonly closing = new AbortController();
  private readonly log: Oplog;
  private readonly admission: Admission;
  private readonly faults: Faults;
  private readonly file: StateFile | undefined;

  private constructor(
    readonly options: SimArrayOptions,
    readonly clock: Clock,
    private readonly blobDir: string,
    private readonly ownsBlobDir: boolean,
  ) {
    this.random = prng(options.seed);
    this.log = new Oplog(() => this.options.oplogLimit);
    this.admission = new Admission(options, this.log);
    this.faults = new Faults(clock, this.random, () => this.onCrash());
    if (options.statePath) this.file = new StateFile(options.statePath, () => this.persisted());
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
    const saved = await state.file?.load();
    if (saved) state.restore(saved);
    return state;
  }

  private restore(saved: PersistedState): void {
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

  private persisted(): PersistedState {
    return { version: 1, nextId: this.nextId, volumes: [...this.volumes.values()], snapshots: [...this.snapshots.values()], groups: [...this.groups.values()] };
  }

  /** Resolves once every mutation so far is on disk (at once without a state file). */
  private async persist(): Promise<void> {
    await this.file?.save();
  }

  async close(): Promise<void> {
    this.closing.abort(new SimError('unavailable', 'array shutting down'));
    await this.file?.settled();
    if (this.ownsBlobDir) await rm(this.blobDir, { recursive: true, force: true });
  }

  /** Faults, then latency; the operation's slot is held throughout. */
  private async delay(op: OpName): Promise<void> {
    await this.faults.apply(op, this.closing.signal);
    const ms = drawLatency(this.options.latency, op, this.random);
    if (ms > 0) await sleep(this.clock, ms, this.closing.signal);
  }

  /**
   * Runs one operation. Admission (busy, pending) and argument checks throw synchronously,
   * so the HTTP API can refuse a request before it accepts it as a job.
   */
  private run<T>(op: OpName, target: string, locks: ObjectLocks, fn: () => T | Promise<T>): Promise<T> {
    const end = this.admission.begin(op, target, locks);
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

  // Administration: what a test or benchmark reads and changes at run time.

  stats(): ArrayStats {
    return {
      ...this.admission.stats(),
      maxConcurrentOperations: this.options.maxConcurrentOperations,
      faultsInjected: this.faults.injected,
      volumes: this.volumes.size,
      snapshots: this.snapshots.size,
      groupSnapshots: this.groups.size,
      capacityBytes: this.options.capacityBytes,
      usedBytes: this.usedBytes(),
    };
  }

  /** Clears counters, the peak (to the current in-flight) and the log. */
  resetStats(): void {
    this.admission.reset();
    this.faults.resetCount();
    this.log.clear();
  }

  oplog(sinceSeq = 0): OplogEntry[] {
    return this.log.since(sinceSeq);
  }

  /** Sets (or, with an empty spec, clears) the faults injected into `op`. */
  setFault(op: OpName, spec: FaultSpec): void {
    this.faults.set(op, spec);
  }

  /** Ends every stall now; the stalled operations go on as if their stall had run out. */
  abortStalls(): void {
    this.faults.releaseStalls();
  }

  listFaults(): Partial<Record<OpName, FaultSpec>> {
    return this.faults.list();
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

  // The array's API.

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
    const locks: ObjectLocks = { write: [`name:volume:${spec.name}`], read: [spec.sourceSnapshotId, spec.sourceVolumeId].filter((x): x is string => !!x) };
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
    const end = this.admission.begin('readSnapshot', id, { read: [id] });
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
    const locks: ObjectLocks = { write: [`name:group:${name}`], read: [...volumeIds] };
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
