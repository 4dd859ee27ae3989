// Loads the CSI spec (csi.proto v1.12.0) for @grpc/grpc-js. Guarantees:
// - The proto is found without any toolchain: first the file TRELLIS_CSI_PROTO names (what a
//   container image sets), else the tools cache
//   `${TRELLIS_TOOLS_DIR:-~/.cache/trellis/bin}/csi-spec-v1.12.0/csi.proto`.
// - Where neither exists, loading fails with a terminal `invalid` DriverError that names both
//   places and the command that fills the cache (`npm run csi-proto`); nothing is fetched at
//   run time. The proto is upstream code and is never committed.
// - Loaded once per process (a failure is not remembered, so a later fetch is picked up);
//   field names stay snake_case as in the spec, int64 values become JS numbers.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { componentLogger } from '../../log.js';
import { DriverError } from '../errors.js';

const log = componentLogger('csi-proto');

export const csiSpecVersion = 'v1.12.0';

/** Where hack/tools/csi-spec/fetch-proto.sh puts csi.proto. */
export function cachedCsiProtoPath(env: NodeJS.ProcessEnv = process.env): string {
  const tools = env.TRELLIS_TOOLS_DIR || join(homedir(), '.cache', 'trellis', 'bin');
  return join(tools, `csi-spec-${csiSpecVersion}`, 'csi.proto');
}

async function readable(path: string): Promise<boolean> {
  return access(path, constants.R_OK).then(
    () => true,
    () => false,
  );
}

/** The path of csi.proto: TRELLIS_CSI_PROTO, else the tools cache; never fetched here. */
export async function resolveCsiProto(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const override = env.TRELLIS_CSI_PROTO;
  if (override && (await readable(override))) return override;
  const cached = cachedCsiProtoPath(env);
  if (await readable(cached)) {
    if (override) log.warn({ TRELLIS_CSI_PROTO: override, using: cached }, 'TRELLIS_CSI_PROTO names no readable file; using the tools cache');
    return cached;
  }
  const tried = override ? `TRELLIS_CSI_PROTO=${override} (not readable) nor ${cached}` : `TRELLIS_CSI_PROTO (unset) nor ${cached}`;
  throw new DriverError(
    'invalid',
    `csi.proto ${csiSpecVersion} not found: neither ${tried} exists. ` +
      'Set TRELLIS_CSI_PROTO to a copy of the CSI spec\'s csi.proto, or fetch it into the cache with `npm run csi-proto` (bash hack/tools/csi-spec/fetch-proto.sh).',
    { option: 'TRELLIS_CSI_PROTO' },
  );
}

/** grpc-js service constructors of package csi.v1. */
export interface CsiPackage {
  Identity: grpc.ServiceClientConstructor;
  Controller: grpc.ServiceClientConstructor;
  GroupController: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
}

let loaded: Promise<CsiPackage> | undefined;

export function loadCsi(): Promise<CsiPackage> {
  loaded ??= (async () => {
    const def = await protoLoader.load(await resolveCsiProto(), {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const root = grpc.loadPackageDefinition(def) as unknown as { csi: { v1: CsiPackage } };
    return root.csi.v1;
  })().catch((err: unknown) => {
    loaded = undefined;
    throw err;
  });
  return loaded;
}

/** A protobuf Timestamp for an ISO date. */
export function timestamp(iso: string): { seconds: number; nanos: number } {
  const ms = Date.parse(iso);
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/** An ISO date for a protobuf Timestamp. */
export function fromTimestamp(ts: { seconds?: number | string; nanos?: number } | null | undefined): string {
  if (!ts) return new Date(0).toISOString();
  return new Date(Number(ts.seconds ?? 0) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6)).toISOString();
}
