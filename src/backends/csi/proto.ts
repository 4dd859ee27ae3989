// Loads the CSI spec (csi.proto v1.12.0) for @grpc/grpc-js. The proto is upstream code and
// is not committed: hack/tools/csi-spec/fetch-proto.sh fetches it from the Go module proxy
// into the tools cache once; TRELLIS_CSI_PROTO points at another copy. Loaded once per
// process; field names stay snake_case as in the spec, int64 values become JS numbers.
import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const fetchScript = fileURLToPath(new URL('../../../hack/tools/csi-spec/fetch-proto.sh', import.meta.url));

let resolved: Promise<string> | undefined;

/** The path of csi.proto, fetching it (once per process) if needed. */
export function resolveCsiProto(): Promise<string> {
  resolved ??= (async () => {
    const override = process.env.TRELLIS_CSI_PROTO;
    if (override) {
      await access(override);
      return override;
    }
    const { stdout } = await promisify(execFile)('bash', [fetchScript], { timeout: 120_000 });
    const path = stdout.trim().split('\n').pop() ?? '';
    await access(path);
    return path;
  })().catch((err: unknown) => {
    resolved = undefined;
    throw new Error(`cannot get csi.proto (run hack/tools/csi-spec/fetch-proto.sh): ${(err as Error).message}`, { cause: err });
  });
  return resolved;
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
