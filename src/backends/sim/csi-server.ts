// The simulated array as a CSI controller plugin: Identity, Controller and GroupController
// (csi.proto v1.12.0) over @grpc/grpc-js on a unix socket, backed by the same ArrayState as
// the HTTP API, so both see one set of volumes, one concurrency limit, one latency model.
// Guarantees, as the CSI spec asks, at least as strictly as real plugins:
// - REQUIRED fields are enforced: INVALID_ARGUMENT names the missing field. That includes
//   `snapshot_ids` of GetVolumeGroupSnapshot and DeleteVolumeGroupSnapshot for a group that
//   exists (a missing group is NOT_FOUND, resp. deleted already), and they must be its members.
// - A member of a group snapshot cannot be deleted on its own (FAILED_PRECONDITION).
// - Names are idempotency keys: the same name with compatible arguments (size range,
//   parameters, source) returns the same object; with incompatible ones ALREADY_EXISTS.
// - VOLUME_CONDITION: ControllerGetVolume and ListVolumes report each volume's condition.
// - With `topology`, VOLUME_ACCESSIBILITY_CONSTRAINTS: volumes are accessible from that one
//   segment, and a request whose requisite topology excludes it is refused.
// - `quirks` make it answer like some real plugins do (see SimCsiQuirks), so a client can be
//   tested against them.
// - Array refusals map to codes a CO retries: busy -> RESOURCE_EXHAUSTED, an operation
//   pending on the volume -> ABORTED, injected faults -> UNAVAILABLE; missing objects are
//   NOT_FOUND, out of space RESOURCE_EXHAUSTED, bad sizes OUT_OF_RANGE.
// - Deleting what is gone succeeds.
// The Node service is a stub: NodeGetInfo names the host volumes are mapped to (for
// ControllerPublishVolume); it has no capabilities, and NodeUnpublishVolume answers
// NOT_FOUND, so a conformance run with its Node tests skipped can still clean up.
import { rm } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { componentLogger } from '../../log.js';
import { loadCsi, timestamp } from '../csi/proto.js';
import { SimError, type GroupRecord, type SimErrorCode, type SnapshotRecord, type VolumeRecord } from './records.js';
import type { ArrayState } from './state.js';

const log = componentLogger('sim-csi');

export const pluginName = 'sim.trellis.dev';
const pluginVersion = '0.1.0';
const defaultVolumeBytes = 1024 ** 3;

const codeOf: Record<SimErrorCode, grpc.status> = {
  busy: grpc.status.RESOURCE_EXHAUSTED,
  pending: grpc.status.ABORTED,
  unavailable: grpc.status.UNAVAILABLE,
  invalid: grpc.status.INVALID_ARGUMENT,
  outOfRange: grpc.status.OUT_OF_RANGE,
  unsupported: grpc.status.UNIMPLEMENTED,
  notFound: grpc.status.NOT_FOUND,
  noSpace: grpc.status.RESOURCE_EXHAUSTED,
  alreadyExists: grpc.status.ALREADY_EXISTS,
  inUse: grpc.status.FAILED_PRECONDITION,
  // The spec's ControllerPublishVolume table asks for RESOURCE_EXHAUSTED ("max volumes
  // attached"); Trellis's csi driver never publishes, so nothing retries it as busy.
  hostLimit: grpc.status.RESOURCE_EXHAUSTED,
};

class CsiError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

const invalid = (message: string) => new CsiError(grpc.status.INVALID_ARGUMENT, message);

// Requests as proto-loader decodes them (keepCase, defaults): only the fields used here.
type Req = Record<string, unknown>;
interface CapacityRange {
  required_bytes?: number;
  limit_bytes?: number;
}
interface ContentSource {
  type?: 'snapshot' | 'volume';
  snapshot?: { snapshot_id?: string };
  volume?: { volume_id?: string };
}

/** Wraps a handler: resolves its value, or fails the call with the mapped status code. */
function unary(name: string, fn: (req: Req) => unknown): grpc.UntypedHandleCall {
  return (async (call: grpc.ServerUnaryCall<Req, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    try {
      callback(null, await fn(call.request));
    } catch (err) {
      let code: grpc.status = grpc.status.INTERNAL;
      if (err instanceof CsiError) code = err.code;
      else if (err instanceof SimError) code = codeOf[err.code];
      else log.error({ err, rpc: name }, 'CSI handler failed');
      callback({ code, details: err instanceof Error ? err.message : String(err) });
    }
  }) as grpc.UntypedHandleCall;
}

function csiVolume(v: VolumeRecord, topology?: Record<string, string>): Req {
  const vol: Req = { volume_id: v.id, capacity_bytes: v.capacityBytes, volume_context: v.params };
  if (topology) vol.accessible_topology = [{ segments: topology }];
  if (v.sourceSnapshotId) vol.content_source = { snapshot: { snapshot_id: v.sourceSnapshotId } };
  else if (v.sourceVolumeId) vol.content_source = { volume: { volume_id: v.sourceVolumeId } };
  return vol;
}

function csiSnapshot(s: SnapshotRecord): Req {
  return {
    snapshot_id: s.id,
    source_volume_id: s.volumeId,
    size_bytes: s.sizeBytes,
    creation_time: timestamp(s.createdAt),
    ready_to_use: true,
    group_snapshot_id: s.groupId ?? '',
  };
}

function csiGroup(g: { group: GroupRecord; snapshots: SnapshotRecord[] }): Req {
  return {
    group_snapshot_id: g.group.id,
    snapshots: g.snapshots.map(csiSnapshot),
    creation_time: timestamp(g.group.createdAt),
    ready_to_use: true,
  };
}

/** One page of `items` from `token` (an offset); a token that is not one is ABORTED. */
function page<T>(items: T[], token: unknown, maxEntries: unknown): { page: T[]; next: string } {
  let start = 0;
  if (typeof token === 'string' && token !== '') {
    if (!/^\d+$/.test(token) || Number(token) > items.length) throw new CsiError(grpc.status.ABORTED, `invalid starting_token "${token}"`);
    start = Number(token);
  }
  const max = Number(maxEntries ?? 0);
  if (max < 0) throw invalid('max_entries must not be negative');
  const end = max > 0 ? Math.min(items.length, start + max) : items.length;
  return { page: items.slice(start, end), next: end < items.length ? String(end) : '' };
}

function requireId(req: Req, field: string): string {
  const v = req[field];
  if (typeof v !== 'string' || v === '') throw invalid(`${field} is required`);
  return v;
}

function checkCapabilities(caps: unknown): void {
  if (!Array.isArray(caps) || caps.length === 0) throw invalid('volume_capabilities are required');
  for (const cap of caps as Req[]) {
    const mode = (cap.access_mode as { mode?: string } | null)?.mode;
    if (!mode || mode === 'UNKNOWN') throw invalid('every volume capability needs an access_mode');
    if (!cap.mount && !cap.block) throw invalid('every volume capability needs an access type (mount or block)');
  }
}

function volumeCondition(v: VolumeRecord): { abnormal: boolean; message: string } {
  return v.abnormal === undefined ? { abnormal: false, message: 'volume is healthy' } : { abnormal: true, message: v.abnormal };
}

/** Behaviours seen in real plugins that the spec allows or tolerates; all off by default. */
export interface SimCsiQuirks {
  /** ControllerGetVolume of an unknown id answers OK with an abnormal "not found" condition. */
  unknownVolumeAbnormal?: boolean;
  /** CreateVolume of an existing name returns that volume whatever the size and parameters. */
  ignoreParametersOnNameMatch?: boolean;
  /** CreateVolume beyond the free capacity is OUT_OF_RANGE instead of RESOURCE_EXHAUSTED. */
  oversizeOutOfRange?: boolean;
}

export interface SimCsiServerOptions {
  /** Filesystem path of the unix socket; a stale socket file there is replaced. */
  socketPath: string;
  /** The node id NodeGetInfo reports; one of the array's hosts (default: the first). */
  nodeId?: string;
  /** The one topology segment the array's volumes are accessible from, e.g. {zone: "z1"}. */
  topology?: Record<string, string>;
  quirks?: SimCsiQuirks;
}

/** Whether `requirement` (a CSI TopologyRequirement) admits `segment`; no requisite admits all. */
function topologyAdmits(requirement: unknown, segment: Record<string, string>): boolean {
  const requisite = (requirement as { requisite?: { segments?: Record<string, string> }[] } | null | undefined)?.requisite ?? [];
  if (requisite.length === 0) return true;
  return requisite.some((t) => Object.entries(t.segments ?? {}).every(([k, v]) => segment[k] === v));
}

/** `snapshot_ids` of a group request: REQUIRED, and exactly the group's members. */
function checkMemberIds(req: Req, group: GroupRecord): void {
  const ids = req.snapshot_ids;
  if (!Array.isArray(ids) || ids.length === 0) throw invalid(`snapshot_ids is required (group snapshot ${group.id} has ${group.snapshotIds.length} members)`);
  const given = new Set(ids as string[]);
  if (given.size !== group.snapshotIds.length || !group.snapshotIds.every((id) => given.has(id))) {
    throw invalid(`snapshot_ids [${[...given].join(', ')}] are not the members of group snapshot ${group.id}`);
  }
}

export class SimCsiServer {
  private constructor(
    private readonly server: grpc.Server,
    readonly socketPath: string,
    private readonly clock: Clock,
  ) {}

  static async start(state: ArrayState, options: SimCsiServerOptions): Promise<SimCsiServer> {
    const csi = await loadCsi();
    const server = new grpc.Server();
    const cgEnabled = () => state.options.nativeConsistencyGroups;
    const nodeId = options.nodeId ?? state.options.hosts[0] ?? 'sim-node-1';
    const { topology, quirks = {} } = options;
    const toVolume = (v: VolumeRecord) => csiVolume(v, topology);

    server.addService(csi.Identity.service, {
      GetPluginInfo: unary('GetPluginInfo', () => ({ name: pluginName, vendor_version: pluginVersion, manifest: {} })),
      GetPluginCapabilities: unary('GetPluginCapabilities', () => ({
        capabilities: [
          { service: { type: 'CONTROLLER_SERVICE' } },
          ...(cgEnabled() ? [{ service: { type: 'GROUP_CONTROLLER_SERVICE' } }] : []),
          ...(topology ? [{ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } }] : []),
        ],
      })),
      Probe: unary('Probe', () => ({ ready: { value: true } })),
    });

    const controllerCaps = ['CREATE_DELETE_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS', 'CLONE_VOLUME', 'EXPAND_VOLUME', 'GET_VOLUME', 'GET_SNAPSHOT', 'MODIFY_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME', 'PUBLISH_READONLY', 'VOLUME_CONDITION'];
    const unimplemented = (rpc: string) => unary(rpc, () => {
      throw new CsiError(grpc.status.UNIMPLEMENTED, `${rpc} is not supported by ${pluginName}`);
    });

    server.addService(csi.Controller.service, {
      ControllerGetCapabilities: unary('ControllerGetCapabilities', () => ({ capabilities: controllerCaps.map((type) => ({ rpc: { type } })) })),

      CreateVolume: unary('CreateVolume', async (req) => {
        const name = req.name;
        if (typeof name !== 'string' || name === '') throw invalid('name is required');
        checkCapabilities(req.volume_capabilities);
        const range = (req.capacity_range ?? {}) as CapacityRange;
        const required = Number(range.required_bytes ?? 0);
        const limit = Number(range.limit_bytes ?? 0);
        if (required < 0 || limit < 0) throw new CsiError(grpc.status.OUT_OF_RANGE, 'capacity_range must not be negative');
        if (limit > 0 && required > limit) throw new CsiError(grpc.status.OUT_OF_RANGE, `required_bytes ${required} exceed limit_bytes ${limit}`);
        const size = required > 0 ? required : limit > 0 ? Math.min(limit, defaultVolumeBytes) : defaultVolumeBytes;
        if (topology && !topologyAdmits(req.accessibility_requirements, topology)) {
          throw new CsiError(grpc.status.RESOURCE_EXHAUSTED, `no capacity in the requisite topology: this array serves only ${JSON.stringify(topology)}`);
        }
        const existing = quirks.ignoreParametersOnNameMatch ? state.findVolumeByName(name) : undefined;
        if (existing) return { volume: toVolume(existing) };
        const source = (req.volume_content_source ?? undefined) as ContentSource | undefined;
        const spec = {
          name,
          capacityBytes: size,
          params: (req.parameters ?? {}) as Record<string, string>,
          mutableParams: (req.mutable_parameters ?? {}) as Record<string, string>,
          minBytes: required,
          maxBytes: limit,
          ...(source?.snapshot ? { sourceSnapshotId: requireId(source.snapshot as Req, 'snapshot_id') } : {}),
          ...(source?.volume ? { sourceVolumeId: requireId(source.volume as Req, 'volume_id') } : {}),
        };
        try {
          return { volume: toVolume(await state.createVolume(spec)) };
        } catch (err) {
          if (quirks.oversizeOutOfRange && err instanceof SimError && err.code === 'noSpace') throw new CsiError(grpc.status.OUT_OF_RANGE, err.message);
          throw err;
        }
      }),

      DeleteVolume: unary('DeleteVolume', async (req) => {
        await state.deleteVolume(requireId(req, 'volume_id'));
        return {};
      }),

      ValidateVolumeCapabilities: unary('ValidateVolumeCapabilities', async (req) => {
        const id = requireId(req, 'volume_id');
        checkCapabilities(req.volume_capabilities);
        const vol = await state.getVolume(id);
        return {
          confirmed: { volume_context: req.volume_context ?? vol.params, volume_capabilities: req.volume_capabilities, parameters: req.parameters ?? {} },
          message: '',
        };
      }),

      ListVolumes: unary('ListVolumes', async (req) => {
        const { page: items, next } = page(await state.listVolumes(), req.starting_token, req.max_entries);
        return { entries: items.map((v) => ({ volume: toVolume(v), status: { published_node_ids: [], volume_condition: volumeCondition(v) } })), next_token: next };
      }),

      GetCapacity: unary('GetCapacity', async () => {
        const a = await state.getArray();
        return { available_capacity: a.capacityBytes - a.usedBytes, maximum_volume_size: { value: a.capacityBytes }, minimum_volume_size: { value: 1 } };
      }),

      ControllerGetVolume: unary('ControllerGetVolume', async (req) => {
        const id = requireId(req, 'volume_id');
        let vol: VolumeRecord;
        try {
          vol = await state.getVolume(id);
        } catch (err) {
          if (!(quirks.unknownVolumeAbnormal && err instanceof SimError && err.code === 'notFound')) throw err;
          return { volume: { volume_id: id, capacity_bytes: 0 }, status: { published_node_ids: [], volume_condition: { abnormal: true, message: `volume ${id} not found` } } };
        }
        return { volume: toVolume(vol), status: { published_node_ids: Object.keys(vol.publishedTo ?? {}), volume_condition: volumeCondition(vol) } };
      }),

      ControllerExpandVolume: unary('ControllerExpandVolume', async (req) => {
        const id = requireId(req, 'volume_id');
        const range = req.capacity_range as CapacityRange | null | undefined;
        if (!range) throw invalid('capacity_range is required');
        const required = Number(range.required_bytes ?? 0);
        const limit = Number(range.limit_bytes ?? 0);
        if (required <= 0) throw invalid('capacity_range.required_bytes must be positive');
        if (limit > 0 && required > limit) throw new CsiError(grpc.status.OUT_OF_RANGE, `required_bytes ${required} exceed limit_bytes ${limit}`);
        const vol = await state.resizeVolume(id, required, { atLeast: true });
        return { capacity_bytes: vol.capacityBytes, node_expansion_required: false };
      }),

      CreateSnapshot: unary('CreateSnapshot', async (req) => {
        const name = req.name;
        if (typeof name !== 'string' || name === '') throw invalid('name is required');
        const source = requireId(req, 'source_volume_id');
        return { snapshot: csiSnapshot(await state.createSnapshot(name, source)) };
      }),

      DeleteSnapshot: unary('DeleteSnapshot', async (req) => {
        const id = requireId(req, 'snapshot_id');
        const groupId = state.peekSnapshot(id)?.groupId;
        if (groupId && state.peekGroup(groupId)) {
          throw new CsiError(grpc.status.FAILED_PRECONDITION, `snapshot ${id} is part of group snapshot ${groupId}; delete the group snapshot instead`);
        }
        await state.deleteSnapshot(id);
        return {};
      }),

      ListSnapshots: unary('ListSnapshots', async (req) => {
        let items = await state.listSnapshots();
        if (req.snapshot_id) items = items.filter((s) => s.id === req.snapshot_id);
        if (req.source_volume_id) items = items.filter((s) => s.volumeId === req.source_volume_id);
        const { page: slice, next } = page(items, req.starting_token, req.max_entries);
        return { entries: slice.map((s) => ({ snapshot: csiSnapshot(s) })), next_token: next };
      }),

      GetSnapshot: unary('GetSnapshot', async (req) => ({ snapshot: csiSnapshot(await state.getSnapshot(requireId(req, 'snapshot_id'))) })),

      // Publishing maps the volume to a host, as an array's LUN masking does.
      ControllerPublishVolume: unary('ControllerPublishVolume', async (req) => {
        const id = requireId(req, 'volume_id');
        const node = requireId(req, 'node_id');
        if (!req.volume_capability) throw invalid('volume_capability is required');
        checkCapabilities([req.volume_capability]);
        const { lun } = await state.publishVolume(id, node, req.readonly === true);
        return { publish_context: { lun: String(lun) } };
      }),
      ControllerUnpublishVolume: unary('ControllerUnpublishVolume', async (req) => {
        const node = typeof req.node_id === 'string' && req.node_id !== '' ? req.node_id : undefined;
        await state.unpublishVolume(requireId(req, 'volume_id'), node);
        return {};
      }),
      ControllerModifyVolume: unary('ControllerModifyVolume', async (req) => {
        await state.modifyVolume(requireId(req, 'volume_id'), (req.mutable_parameters ?? {}) as Record<string, string>);
        return {};
      }),
    });

    server.addService(csi.GroupController.service, {
      GroupControllerGetCapabilities: unary('GroupControllerGetCapabilities', () => ({
        capabilities: cgEnabled() ? [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' } }] : [],
      })),
      CreateVolumeGroupSnapshot: unary('CreateVolumeGroupSnapshot', async (req) => {
        const name = req.name;
        if (typeof name !== 'string' || name === '') throw invalid('name is required');
        const ids = req.source_volume_ids;
        if (!Array.isArray(ids) || ids.length === 0) throw invalid('source_volume_ids are required');
        return { group_snapshot: csiGroup(await state.createGroupSnapshot(name, ids as string[])) };
      }),
      DeleteVolumeGroupSnapshot: unary('DeleteVolumeGroupSnapshot', async (req) => {
        const id = requireId(req, 'group_snapshot_id');
        const group = state.peekGroup(id);
        if (group) checkMemberIds(req, group);
        await state.deleteGroupSnapshot(id);
        return {};
      }),
      GetVolumeGroupSnapshot: unary('GetVolumeGroupSnapshot', async (req) => {
        const view = await state.getGroupSnapshot(requireId(req, 'group_snapshot_id'));
        checkMemberIds(req, view.group);
        return { group_snapshot: csiGroup(view) };
      }),
    });

    server.addService(csi.Node.service, {
      NodeGetCapabilities: unary('NodeGetCapabilities', () => ({ capabilities: [] })),
      NodeUnpublishVolume: unary('NodeUnpublishVolume', () => {
        throw new CsiError(grpc.status.NOT_FOUND, `${pluginName} is controller-only: no volume is published on a node`);
      }),
      NodeUnstageVolume: unary('NodeUnstageVolume', () => {
        throw new CsiError(grpc.status.NOT_FOUND, `${pluginName} is controller-only: no volume is staged on a node`);
      }),
      NodeStageVolume: unimplemented('NodeStageVolume'),
      NodePublishVolume: unimplemented('NodePublishVolume'),
      NodeGetVolumeStats: unimplemented('NodeGetVolumeStats'),
      NodeExpandVolume: unimplemented('NodeExpandVolume'),
      // The identity of the host this plugin runs for; the array knows it as a mapping target.
      NodeGetInfo: unary('NodeGetInfo', () => ({
        node_id: nodeId,
        max_volumes_per_node: state.options.maxVolumesPerHost,
        ...(topology ? { accessible_topology: { segments: topology } } : {}),
      })),
    });

    await rm(options.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${options.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
    });
    log.debug({ socket: options.socketPath }, 'sim array CSI server listening');
    return new SimCsiServer(server, options.socketPath, state.clock);
  }

  /** Drops every call at once (an array crash). */
  crash(): void {
    this.server.forceShutdown();
  }

  /** Lets running calls finish for up to `graceMs`, then cuts the rest off. */
  async close(graceMs = 5_000): Promise<void> {
    let timer: TimerHandle | undefined;
    await new Promise<void>((resolve) => {
      timer = this.clock.setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => resolve());
    });
    if (timer !== undefined) this.clock.clearTimeout(timer);
    await rm(this.socketPath, { force: true });
  }
}
