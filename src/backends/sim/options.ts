// What a simulated array is configured with, and the names of its operations (the unit its
// limits, faults, latencies and log count in).
import { defaultLatency, type LatencyOptions } from './random.js';

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
