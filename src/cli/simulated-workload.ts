// The demo's workload until the operator exists: the real engine (controller runner,
// hierarchical locks, per-backend limiter) drives real simulated arrays over HTTP through
// the sim driver, once hierarchically and once under the serial global lock, so a newcomer
// sees the design's speed-up and that no array ever saw more than its Backend's limit.
import { pino } from 'pino';
import { createDriver } from '../backends/registry.js';
import { SimArrayServer } from '../backends/sim/array.js';
import type { StorageDriver } from '../backends/driver.js';
import { BackendLimiter, Controller, HierarchicalLocks, HierarchyPath, serialized, type Reconciler } from '../core/index.js';

export type ConcurrencyMode = 'hierarchical' | 'serial';

export interface WorkloadOptions {
  /** Volumes created on each array, per mode. */
  volumesPerArray: number;
  /** The Backend's maxConcurrentOperations the limiter enforces. */
  limit: number;
  /** Median latency of one array operation, in ms (creates take about twice that). */
  latencyMedianMs: number;
  say: (line: string) => void;
}

export interface ModeResult {
  mode: ConcurrencyMode;
  volumes: number;
  ms: number;
  /** Highest in-flight count each array saw itself, by array name. */
  peakInFlight: Record<string, number>;
}

export interface RunningArrays {
  names: string[];
  servers: SimArrayServer[];
  close(): Promise<void>;
}

/** Starts one simulated array per port, falling back to a free port when one is taken. */
export async function startArrays(options: { ports: number[]; latencyMedianMs: number }): Promise<RunningArrays> {
  const servers: SimArrayServer[] = [];
  const names: string[] = [];
  const settings = {
    maxConcurrentOperations: 64,
    latency: { medianMs: options.latencyMedianMs, sigma: 0.5, maxMs: 2_000, factors: { createVolume: 2 } },
    initialDataBytes: 0,
  };
  for (const [i, port] of options.ports.entries()) {
    const server = await SimArrayServer.start({ ...settings, port, seed: i + 1 }).catch(() => SimArrayServer.start({ ...settings, port: 0, seed: i + 1 }));
    servers.push(server);
    names.push(`array-${String.fromCharCode(97 + i)}`);
  }
  return { names, servers, close: async () => void (await Promise.all(servers.map((s) => s.close()))) };
}

/** Creates `volumesPerArray` volumes on every array through the engine in `mode`. */
export async function createVolumes(arrays: RunningArrays, mode: ConcurrencyMode, options: WorkloadOptions): Promise<ModeResult> {
  const drivers = new Map<string, StorageDriver>(arrays.names.map((name, i) => [name, createDriver('sim', { endpoint: arrays.servers[i]!.url })]));
  const limiter = new BackendLimiter({ defaults: { maxConcurrent: options.limit } });
  for (const server of arrays.servers) server.state.resetStats();
  const keys = arrays.names.flatMap((backend) =>
    Array.from({ length: options.volumesPerArray }, (_, i) => HierarchyPath.of('backends', backend, 'volumes', `demo.${mode}-vol-${i}`).toString()),
  );
  let done = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const reconciler: Reconciler = {
    plan: (key) => ({ locks: [{ path: HierarchyPath.parse(key), mode: 'write' }], backend: HierarchyPath.parse(key).segments[1] }),
    reconcile: async (key, { signal, backend }) => {
      const name = HierarchyPath.parse(key).segments[3]!;
      await backend!.run('createVolume', () => drivers.get(backend!.backend)!.createVolume({ name, capacityBytes: 2 ** 30 }, signal));
      if (++done === keys.length) finish();
    },
  };
  const controller = new Controller({
    name: `demo-${mode}`,
    locks: new HierarchicalLocks(),
    limiter,
    maxConcurrentReconciles: arrays.names.length * options.limit,
    logger: pino({ level: 'silent' }),
    reconciler: mode === 'serial' ? serialized(reconciler) : reconciler,
  });
  const start = performance.now();
  const ticker = setInterval(() => options.say(`  ${mode}: ${done}/${keys.length} volumes created`), 1_000);
  try {
    for (const key of keys) controller.enqueue(key);
    controller.start();
    await finished;
  } finally {
    clearInterval(ticker);
    await controller.stop();
    await Promise.all([...drivers.values()].map((d) => d.close()));
  }
  const ms = performance.now() - start;
  const peakInFlight = Object.fromEntries(arrays.names.map((name, i) => [name, arrays.servers[i]!.state.stats().peakInFlight]));
  return { mode, volumes: keys.length, ms, peakInFlight };
}

/** Runs both modes side by side and prints what happened. */
export async function runSimulatedWorkload(arrays: RunningArrays, options: WorkloadOptions): Promise<{ hierarchical: ModeResult; serial: ModeResult }> {
  const { say } = options;
  say(`engine workload: ${options.volumesPerArray} volume creations on each of ${arrays.names.length} simulated arrays, Backend limit ${options.limit} in flight each`);
  const hierarchical = await createVolumes(arrays, 'hierarchical', options);
  say(`  hierarchical: ${hierarchical.volumes} volumes in ${(hierarchical.ms / 1000).toFixed(2)} s; peak in flight per array ${JSON.stringify(hierarchical.peakInFlight)} (limit ${options.limit})`);
  const serial = await createVolumes(arrays, 'serial', options);
  say(`  serial (one global lock): ${serial.volumes} volumes in ${(serial.ms / 1000).toFixed(2)} s; peak in flight per array ${JSON.stringify(serial.peakInFlight)}`);
  say(`  hierarchical locking was ${(serial.ms / hierarchical.ms).toFixed(1)}x faster than the serial mode on the same arrays`);
  return { hierarchical, serial };
}
