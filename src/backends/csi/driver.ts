// The csi driver: drives any CSI plugin's controller over gRPC on a unix socket
// (csi.proto v1.12.0). Guarantees beyond the StorageDriver contract:
// - gRPC codes become typed errors: UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED and
//   DEADLINE_EXCEEDED are retryable; INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS and
//   OUT_OF_RANGE terminal. RESOURCE_EXHAUSTED that speaks of capacity or space is the
//   terminal noSpace, since retrying cannot create room.
// - One try per call: a busy answer (RESOURCE_EXHAUSTED without a capacity message, ABORTED
//   for a pending operation) is thrown at once as a `busy` DriverError with a short
//   jittered `retryAfterMs` (CSI carries no hint); the caller waits, outside its slot.
// - Group snapshots go through GroupController.CreateVolumeGroupSnapshot when the plugin
//   advertises it; otherwise createGroupSnapshot resolves undefined (the caller fans out).
//   Deleting one sends its members' ids (REQUIRED by the spec), found by listing snapshots.
// - A volume is what the plugin says: its parameters are the volume context the plugin
//   returns, and a create whose answer contradicts the request (a smaller size, an echoed
//   parameter with another value: a plugin that ignored them on a name match) is a
//   terminal alreadyExists. An oversize create is noSpace whether the plugin says
//   RESOURCE_EXHAUSTED or OUT_OF_RANGE.
// - With VOLUME_CONDITION, a volume carries its condition; an abnormal "not found" (how some
//   plugins answer ControllerGetVolume for an unknown id) is notFound.
// - VOLUME_ACCESSIBILITY_CONSTRAINTS shows as the `topology` capability; configured
//   accessibility requirements go with every CreateVolume.
// - Every call has a deadline, timed on the injected Clock, and is cancelled when the
//   caller's signal fires; a call or the shared capability discovery past its deadline is
//   a retryable `timeout`.
// CSI has no data path, so readSnapshot and writeVolume fail with a terminal error.
import * as grpc from '@grpc/grpc-js';
import type { Readable } from 'node:stream';
import { Type, type Static } from 'typebox';
import { realClock, type Clock } from '../../core/clock.js';
import { abortReason, DriverError, type DriverErrorReason } from '../errors.js';
import { throwIfAborted } from '../driver.js';
import type { CreateSnapshotRequest, CreateVolumeRequest, DriverOptions, GroupSnapshotInfo, ProbeResult, SnapshotInfo, StorageDriver, VolumeInfo } from '../driver.js';
import { fromTimestamp, loadCsi } from './proto.js';

export const accessModes = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
] as const;

export const CsiConfig = Type.Object(
  {
    endpoint: Type.String({ pattern: '^unix:///.+', description: 'The plugin controller socket, e.g. unix:///run/csi/controller.sock' }),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, default: 60_000, description: 'Deadline of one gRPC call.' })),
    accessMode: Type.Optional(Type.Unsafe<(typeof accessModes)[number]>({ type: 'string', enum: [...accessModes], default: 'SINGLE_NODE_WRITER' })),
    volumeMode: Type.Optional(Type.Union([Type.Literal('mount'), Type.Literal('block')], { default: 'mount' })),
    fsType: Type.Optional(Type.String({ minLength: 1, description: 'Filesystem for mount volumes, e.g. ext4.' })),
    accessibilityRequirements: Type.Optional(
      Type.Object(
        {
          requisite: Type.Optional(Type.Array(Type.Record(Type.String(), Type.String()), { description: 'Segments a new volume must be accessible from (one of them).' })),
          preferred: Type.Optional(Type.Array(Type.Record(Type.String(), Type.String()), { description: 'Segments to prefer, in order.' })),
        },
        { additionalProperties: false, description: 'Passed as CreateVolume accessibility_requirements to a plugin with VOLUME_ACCESSIBILITY_CONSTRAINTS.' },
      ),
    ),
  },
  { additionalProperties: false },
);
export type CsiConfig = Static<typeof CsiConfig>;

/** Secrets passed to every CSI call that takes them (the Backend's credentials Secret). */
export const CsiCredentials = Type.Record(Type.String(), Type.String());
export type CsiCredentials = Static<typeof CsiCredentials>;

interface CsiVolume {
  volume_id: string;
  capacity_bytes: number;
  volume_context?: Record<string, string>;
  content_source?: { snapshot?: { snapshot_id: string } | null } | null;
  accessible_topology?: { segments?: Record<string, string> }[];
}

interface CsiVolumeStatus {
  volume_condition?: { abnormal: boolean; message: string } | null;
}

/** How plugins word an abnormal condition that means the volume is not there at all. */
const notFoundCondition = /not found|does not exist|no such volume|unknown volume/i;

interface CsiSnapshot {
  snapshot_id: string;
  source_volume_id: string;
  size_bytes: number;
  creation_time?: { seconds?: number; nanos?: number } | null;
  ready_to_use: boolean;
  group_snapshot_id?: string;
}

interface CsiGroupSnapshot {
  group_snapshot_id: string;
  snapshots: CsiSnapshot[];
  creation_time?: { seconds?: number; nanos?: number } | null;
}

const reasonOf: Partial<Record<grpc.status, DriverErrorReason>> = {
  [grpc.status.UNAVAILABLE]: 'unavailable',
  [grpc.status.RESOURCE_EXHAUSTED]: 'busy',
  [grpc.status.ABORTED]: 'busy',
  [grpc.status.DEADLINE_EXCEEDED]: 'timeout',
  [grpc.status.INVALID_ARGUMENT]: 'invalid',
  [grpc.status.OUT_OF_RANGE]: 'invalid',
  [grpc.status.FAILED_PRECONDITION]: 'invalid',
  [grpc.status.UNIMPLEMENTED]: 'invalid',
  [grpc.status.NOT_FOUND]: 'notFound',
  [grpc.status.ALREADY_EXISTS]: 'alreadyExists',
};

/** The typed error for a failed CSI call, keeping the plugin's message. */
export function csiError(err: grpc.ServiceError, rpc: string): DriverError {
  let reason = reasonOf[err.code] ?? 'unavailable';
  if (err.code === grpc.status.RESOURCE_EXHAUSTED && /capacity|space/i.test(err.details)) reason = 'noSpace';
  return new DriverError(reason, `csi ${rpc}: ${grpc.status[err.code]}: ${err.details}`, { cause: err });
}

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;

interface Clients {
  identity: grpc.Client;
  controller: grpc.Client;
  group: grpc.Client;
  controllerCaps: Set<string>;
  groupSnapshots: boolean;
  topology: boolean;
}

export class CsiDriver implements StorageDriver {
  readonly kind = 'csi';
  private clients: Promise<Clients> | undefined;
  private readonly cfg: CsiConfig & Required<Pick<CsiConfig, 'timeoutMs'>>;
  private readonly clock: Clock;

  constructor(
    config: CsiConfig,
    private readonly secrets: CsiCredentials = {},
    options: DriverOptions = {},
  ) {
    this.cfg = { timeoutMs: 60_000, ...config };
    this.clock = options.clock ?? realClock;
  }

  /** A signal that fires `timeoutMs` from now on the clock; `cancel` stops its timer. */
  private deadline(): { signal: AbortSignal; cancel: () => void } {
    const ctl = new AbortController();
    const timer = this.clock.setTimeout(() => ctl.abort(), this.cfg.timeoutMs);
    return { signal: ctl.signal, cancel: () => this.clock.clearTimeout(timer) };
  }

  /**
   * Discovers the plugin's capabilities once. The discovery is shared by all callers, so it
   * runs under its own deadline; a caller whose signal fires stops waiting for it.
   */
  private connect(signal: AbortSignal): Promise<Clients> {
    throwIfAborted(signal);
    if (!this.clients) {
      const discovery = (async () => {
        const { signal: deadline, cancel } = this.deadline();
        const csi = await loadCsi();
        const creds = grpc.credentials.createInsecure();
        const identity = new csi.Identity(this.cfg.endpoint, creds);
        const controller = new csi.Controller(this.cfg.endpoint, creds);
        const group = new csi.GroupController(this.cfg.endpoint, creds);
        const base = { identity, controller, group, controllerCaps: new Set<string>(), groupSnapshots: false, topology: false };
        try {
          const plugin = await this.once<{ capabilities: { service?: { type: string } | null }[] }>(identity, 'GetPluginCapabilities', {}, deadline);
          const caps = await this.once<{ capabilities: { rpc?: { type: string } | null }[] }>(controller, 'ControllerGetCapabilities', {}, deadline);
          for (const c of caps.capabilities) if (c.rpc) base.controllerCaps.add(c.rpc.type);
          base.topology = plugin.capabilities.some((c) => c.service?.type === 'VOLUME_ACCESSIBILITY_CONSTRAINTS');
          if (plugin.capabilities.some((c) => c.service?.type === 'GROUP_CONTROLLER_SERVICE')) {
            const g = await this.once<{ capabilities: { rpc?: { type: string } | null }[] }>(group, 'GroupControllerGetCapabilities', {}, deadline);
            base.groupSnapshots = g.capabilities.some((c) => c.rpc?.type === 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT');
          }
        } catch (err) {
          identity.close();
          controller.close();
          group.close();
          // The shared deadline may fire before gRPC's own: it is the same timeout, typed alike.
          if (deadline.aborted) {
            throw new DriverError('timeout', `csi: plugin discovery at ${this.cfg.endpoint}: no answer within ${this.cfg.timeoutMs} ms`, { cause: err });
          }
          throw err;
        } finally {
          cancel();
        }
        return base;
      })();
      this.clients = discovery;
      // A failed discovery is retried on the next call.
      discovery.catch(() => {
        if (this.clients === discovery) this.clients = undefined;
      });
    }
    const clients = this.clients;
    return new Promise<Clients>((resolve, reject) => {
      const onAbort = () => reject(abortReason(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      clients.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** One gRPC call, cancelled by `signal` or past its deadline (a retryable `timeout`). */
  private once<T>(client: grpc.Client, rpc: string, req: object, signal: AbortSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal.aborted) return reject(abortReason(signal));
      const method = (client as unknown as Record<string, Unary>)[rpc]!.bind(client);
      const deadline = this.deadline();
      const onAbort = () => call.cancel();
      const call = method(req, new grpc.Metadata(), {}, (err, res) => {
        signal.removeEventListener('abort', onAbort);
        deadline.signal.removeEventListener('abort', onAbort);
        deadline.cancel();
        if (signal.aborted) return reject(abortReason(signal));
        if (deadline.signal.aborted) return reject(new DriverError('timeout', `csi ${rpc}: no answer within ${this.cfg.timeoutMs} ms`, { cause: err }));
        if (err) return reject(csiError(err, rpc));
        resolve(res as T);
      });
      signal.addEventListener('abort', onAbort, { once: true });
      deadline.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** One try of `rpc` on the discovered plugin; a busy answer is thrown, not waited out. */
  private async call<T>(which: 'identity' | 'controller' | 'group', rpc: string, req: object, signal: AbortSignal): Promise<T> {
    const clients = await this.connect(signal);
    return this.once<T>(clients[which], rpc, req, signal);
  }

  private volumeCapability(): object {
    const access = this.cfg.volumeMode === 'block' ? { block: {} } : { mount: { fs_type: this.cfg.fsType ?? '', mount_flags: [] } };
    return { access_mode: { mode: this.cfg.accessMode ?? 'SINGLE_NODE_WRITER' }, ...access };
  }

  private toVolume(v: CsiVolume, name = '', status?: CsiVolumeStatus | null): VolumeInfo {
    const info: VolumeInfo = { handle: v.volume_id, name, capacityBytes: Number(v.capacity_bytes), params: v.volume_context ?? {} };
    const snap = v.content_source?.snapshot?.snapshot_id;
    if (snap) info.sourceSnapshot = snap;
    const condition = status?.volume_condition;
    if (condition) info.condition = { abnormal: condition.abnormal, message: condition.message };
    const topology = (v.accessible_topology ?? []).map((t) => t.segments ?? {});
    if (topology.length > 0) info.accessibleTopology = topology;
    return info;
  }

  private toSnapshot(s: CsiSnapshot, name = ''): SnapshotInfo {
    const info: SnapshotInfo = {
      handle: s.snapshot_id,
      name,
      sourceVolume: s.source_volume_id,
      sizeBytes: Number(s.size_bytes),
      readyToUse: s.ready_to_use,
      createdAt: fromTimestamp(s.creation_time),
    };
    if (s.group_snapshot_id) info.groupHandle = s.group_snapshot_id;
    return info;
  }

  async probe(signal: AbortSignal): Promise<ProbeResult> {
    const capabilities = { nativeGroupSnapshot: false, snapshotData: false, volumeData: false, resize: false, topology: false };
    try {
      const clients = await this.connect(signal);
      capabilities.nativeGroupSnapshot = clients.groupSnapshots;
      capabilities.topology = clients.topology;
      capabilities.resize = clients.controllerCaps.has('EXPAND_VOLUME');
      const probe = await this.call<{ ready?: { value: boolean } | null }>('identity', 'Probe', {}, signal);
      let capacityBytes = 0;
      if (clients.controllerCaps.has('GET_CAPACITY')) {
        // CSI reports only what is still available, not a total.
        const cap = await this.call<{ available_capacity: number }>('controller', 'GetCapacity', { volume_capabilities: [this.volumeCapability()], parameters: {} }, signal);
        capacityBytes = Number(cap.available_capacity);
      }
      const ready = probe.ready?.value ?? true;
      return { healthy: ready, capacityBytes, usedBytes: 0, capabilities, ...(ready ? {} : { message: 'plugin reports not ready' }) };
    } catch (err) {
      if (signal.aborted) throw abortReason(signal);
      return { healthy: false, capacityBytes: 0, usedBytes: 0, capabilities, message: (err as Error).message };
    }
  }

  async createVolume(req: CreateVolumeRequest, signal: AbortSignal): Promise<VolumeInfo> {
    const request: Record<string, unknown> = {
      name: req.name,
      capacity_range: { required_bytes: req.capacityBytes, limit_bytes: 0 },
      volume_capabilities: [this.volumeCapability()],
      parameters: req.params ?? {},
      secrets: this.secrets,
    };
    if (req.sourceSnapshot) request.volume_content_source = { snapshot: { snapshot_id: req.sourceSnapshot } };
    const wanted = this.cfg.accessibilityRequirements;
    if (wanted) {
      const topologies = (segments: Record<string, string>[] = []) => segments.map((s) => ({ segments: s }));
      request.accessibility_requirements = { requisite: topologies(wanted.requisite), preferred: topologies(wanted.preferred) };
    }
    let res: { volume: CsiVolume };
    try {
      res = await this.call<{ volume: CsiVolume }>('controller', 'CreateVolume', request, signal);
    } catch (err) {
      // Plugins differ: an oversize request is RESOURCE_EXHAUSTED on some, OUT_OF_RANGE on
      // others. Without a source to be smaller than, both mean there is no room for it.
      const code = err instanceof DriverError ? (err.cause as grpc.ServiceError | undefined)?.code : undefined;
      if (code === grpc.status.OUT_OF_RANGE && !req.sourceSnapshot) {
        throw new DriverError('noSpace', `csi CreateVolume: no capacity for ${req.capacityBytes} bytes (${(err as DriverError).message})`, { cause: err });
      }
      throw err;
    }
    const vol = this.toVolume(res.volume, req.name);
    checkMatches(req, vol);
    return vol;
  }

  async deleteVolume(handle: string, signal: AbortSignal): Promise<void> {
    try {
      await this.call('controller', 'DeleteVolume', { volume_id: handle, secrets: this.secrets }, signal);
    } catch (err) {
      // The spec says deleting a missing volume succeeds; some plugins say NOT_FOUND anyway.
      if (!(err instanceof DriverError && err.reason === 'notFound')) throw err;
    }
  }

  async resizeVolume(handle: string, capacityBytes: number, signal: AbortSignal): Promise<VolumeInfo> {
    const clients = await this.connect(signal);
    if (!clients.controllerCaps.has('EXPAND_VOLUME')) throw new DriverError('invalid', 'csi: the plugin cannot expand volumes (no EXPAND_VOLUME)');
    const current = await this.getVolume(handle, signal);
    if (capacityBytes < current.capacityBytes) {
      throw new DriverError('invalid', `csi: cannot shrink volume ${handle} from ${current.capacityBytes} to ${capacityBytes} bytes`);
    }
    const res = await this.call<{ capacity_bytes: number }>(
      'controller',
      'ControllerExpandVolume',
      { volume_id: handle, capacity_range: { required_bytes: capacityBytes, limit_bytes: 0 }, secrets: this.secrets, volume_capability: this.volumeCapability() },
      signal,
    );
    return { ...current, capacityBytes: Number(res.capacity_bytes) };
  }

  async getVolume(handle: string, signal: AbortSignal): Promise<VolumeInfo> {
    const clients = await this.connect(signal);
    if (clients.controllerCaps.has('GET_VOLUME')) {
      const res = await this.call<{ volume: CsiVolume; status?: CsiVolumeStatus | null }>('controller', 'ControllerGetVolume', { volume_id: handle }, signal);
      const vol = this.toVolume(res.volume, '', res.status);
      if (vol.condition?.abnormal && notFoundCondition.test(vol.condition.message)) {
        throw new DriverError('notFound', `csi ControllerGetVolume: volume ${handle}: ${vol.condition.message} (abnormal condition)`);
      }
      return vol;
    }
    const found = (await this.listVolumes(signal)).find((v) => v.handle === handle);
    if (!found) throw new DriverError('notFound', `csi: volume ${handle} not found`);
    return found;
  }

  /** All pages of a paginated list RPC. */
  private async all<T>(rpc: string, req: object, signal: AbortSignal): Promise<T[]> {
    const out: T[] = [];
    let token = '';
    do {
      const res = await this.call<{ entries: T[]; next_token: string }>('controller', rpc, { ...req, starting_token: token }, signal);
      out.push(...res.entries);
      token = res.next_token;
    } while (token);
    return out;
  }

  async listVolumes(signal: AbortSignal): Promise<VolumeInfo[]> {
    const clients = await this.connect(signal);
    if (!clients.controllerCaps.has('LIST_VOLUMES')) throw new DriverError('invalid', 'csi: the plugin cannot list volumes (no LIST_VOLUMES)');
    return (await this.all<{ volume: CsiVolume; status?: CsiVolumeStatus | null }>('ListVolumes', {}, signal)).map((e) => this.toVolume(e.volume, '', e.status));
  }

  async createSnapshot(req: CreateSnapshotRequest, signal: AbortSignal): Promise<SnapshotInfo> {
    const res = await this.call<{ snapshot: CsiSnapshot }>(
      'controller',
      'CreateSnapshot',
      { name: req.name, source_volume_id: req.sourceVolume, secrets: this.secrets, parameters: {} },
      signal,
    );
    return this.toSnapshot(res.snapshot, req.name);
  }

  async deleteSnapshot(handle: string, signal: AbortSignal): Promise<void> {
    try {
      await this.call('controller', 'DeleteSnapshot', { snapshot_id: handle, secrets: this.secrets }, signal);
    } catch (err) {
      if (!(err instanceof DriverError && err.reason === 'notFound')) throw err;
    }
  }

  async getSnapshot(handle: string, signal: AbortSignal): Promise<SnapshotInfo> {
    const clients = await this.connect(signal);
    if (clients.controllerCaps.has('GET_SNAPSHOT')) {
      const res = await this.call<{ snapshot: CsiSnapshot }>('controller', 'GetSnapshot', { snapshot_id: handle, secrets: this.secrets }, signal);
      return this.toSnapshot(res.snapshot);
    }
    const [found] = await this.all<{ snapshot: CsiSnapshot }>('ListSnapshots', { snapshot_id: handle, secrets: this.secrets }, signal);
    if (!found) throw new DriverError('notFound', `csi: snapshot ${handle} not found`);
    return this.toSnapshot(found.snapshot);
  }

  async listSnapshots(signal: AbortSignal): Promise<SnapshotInfo[]> {
    return (await this.all<{ snapshot: CsiSnapshot }>('ListSnapshots', { secrets: this.secrets }, signal)).map((e) => this.toSnapshot(e.snapshot));
  }

  async createGroupSnapshot(name: string, volumeHandles: string[], signal: AbortSignal): Promise<GroupSnapshotInfo | undefined> {
    const clients = await this.connect(signal);
    if (!clients.groupSnapshots) return undefined;
    const res = await this.call<{ group_snapshot: CsiGroupSnapshot }>(
      'group',
      'CreateVolumeGroupSnapshot',
      { name, source_volume_ids: volumeHandles, secrets: this.secrets, parameters: {} },
      signal,
    );
    const g = res.group_snapshot;
    const byVolume = new Map(g.snapshots.map((s) => [s.source_volume_id, this.toSnapshot(s)]));
    const snapshots = volumeHandles.map((v) => byVolume.get(v)).filter((s): s is SnapshotInfo => !!s);
    return { handle: g.group_snapshot_id, name, snapshots, native: true, createdAt: fromTimestamp(g.creation_time) };
  }

  async deleteGroupSnapshot(handle: string, signal: AbortSignal): Promise<void> {
    const clients = await this.connect(signal);
    if (!clients.groupSnapshots) return;
    // snapshot_ids is REQUIRED: the members are the snapshots that name this group.
    let snapshotIds = clients.controllerCaps.has('LIST_SNAPSHOTS')
      ? (await this.listSnapshots(signal)).filter((s) => s.groupHandle === handle).map((s) => s.handle)
      : [];
    if (snapshotIds.length === 0) {
      // No member listed: the group is gone, or the plugin cannot list. Ask it; a plugin that
      // needs the ids answers NOT_FOUND for a group it does not have.
      try {
        const res = await this.call<{ group_snapshot: CsiGroupSnapshot }>('group', 'GetVolumeGroupSnapshot', { group_snapshot_id: handle, secrets: this.secrets }, signal);
        snapshotIds = res.group_snapshot.snapshots.map((s) => s.snapshot_id);
      } catch (err) {
        if (err instanceof DriverError && err.reason === 'notFound') return;
        throw err;
      }
    }
    try {
      await this.call('group', 'DeleteVolumeGroupSnapshot', { group_snapshot_id: handle, snapshot_ids: snapshotIds, secrets: this.secrets }, signal);
    } catch (err) {
      if (!(err instanceof DriverError && err.reason === 'notFound')) throw err;
    }
  }

  async readSnapshot(_handle: string, signal: AbortSignal): Promise<Readable> {
    throwIfAborted(signal);
    throw new DriverError('invalid', 'csi: CSI has no data path; snapshot data cannot be read through a CSI controller');
  }

  async writeVolume(_handle: string, _data: Readable, signal: AbortSignal): Promise<{ bytes: number }> {
    throwIfAborted(signal);
    throw new DriverError('invalid', 'csi: CSI has no data path; volume data cannot be written through a CSI controller');
  }

  async close(): Promise<void> {
    const clients = this.clients;
    this.clients = undefined;
    if (!clients) return;
    const c = await clients.catch(() => undefined);
    c?.identity.close();
    c?.controller.close();
    c?.group.close();
  }
}

/**
 * Throws alreadyExists when a created volume contradicts its request: a plugin that ignored
 * size or parameters on a name match returned someone else's volume. Only what the plugin
 * reports can be compared: the size, and parameters it echoes in the volume context.
 */
function checkMatches(req: CreateVolumeRequest, vol: VolumeInfo): void {
  const clash: string[] = [];
  if (vol.capacityBytes > 0 && vol.capacityBytes < req.capacityBytes) clash.push(`${vol.capacityBytes} bytes, not ${req.capacityBytes}`);
  for (const [key, value] of Object.entries(req.params ?? {})) {
    const reported = vol.params[key];
    if (reported !== undefined && reported !== value) clash.push(`${key}=${reported}, not ${value}`);
  }
  if (clash.length > 0) {
    throw new DriverError('alreadyExists', `csi CreateVolume: volume "${req.name}" exists (${vol.handle}) with other parameters: ${clash.join(', ')}`);
  }
}
