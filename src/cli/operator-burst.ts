// What the demo, the operator bench and the end-to-end tests share: simulated arrays in this
// process, `trellis operator` as a child process, and a burst of Volume objects applied at
// once and watched until every one is Available. Guarantees:
// - arrays listen on loopback; an array with a state file can be stopped and started again
//   on the same port with its volumes;
// - an operator child runs on this Node (Node 24 under npm) from the sources, without leader
//   election, its probes on a free port; `ready` waits for /readyz; `kill` is SIGKILL,
//   `stop` SIGTERM (then SIGKILL past a grace); its output is kept for inspection;
// - a burst is created through the API with bounded parallelism, and `waitAvailable`
//   polls one list call at a time.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { SimArrayServer, type SimArrayServerOptions } from '../backends/sim/array.js';
import { freePorts, repoRoot } from './local-cluster.js';

export type ConcurrencyMode = 'hierarchical' | 'serial';

/** Latency of the simulated arrays in demos and benches: scaled down from real arrays' seconds. */
export const SCALED_LATENCY = { medianMs: 10, sigma: 0.5, maxMs: 2_000, factors: { createVolume: 2 } };

export interface SimArray {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  /** The running server; undefined while stopped. */
  server?: SimArrayServer;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Starts a simulated array on `port` (0: a free one), keeping its volumes in a state file so it can restart. */
export async function startSimArray(name: string, options: SimArrayServerOptions & { persistent?: boolean } = {}): Promise<SimArray> {
  const dir = options.persistent ? mkdtempSync(join(tmpdir(), `trellis-${name}-`)) : undefined;
  const settings: SimArrayServerOptions = {
    maxConcurrentOperations: 64,
    latency: SCALED_LATENCY,
    initialDataBytes: 0,
    ...options,
    ...(dir ? { statePath: join(dir, 'state.json') } : {}),
  };
  let server: SimArrayServer | undefined = await SimArrayServer.start(settings);
  const port = server.port;
  const array: SimArray = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    server,
    async stop() {
      const running = server;
      server = undefined;
      array.server = undefined;
      await running?.close();
    },
    async start() {
      if (server) return;
      server = await SimArrayServer.start({ ...settings, port });
      array.server = server;
    },
  };
  if (dir) process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return array;
}

export interface OperatorChild {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly probesUrl: string;
  /** Every line it printed (JSON logs), stdout and stderr. */
  readonly output: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once /readyz answers 200 (caches synced). */
  ready(timeoutMs?: number): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL: no drain, no cleanup. */
  kill(): Promise<void>;
}

export interface OperatorChildOptions {
  kubeconfigPath: string;
  concurrency?: ConcurrencyMode;
  /** Concurrent reconciles per controller. */
  workers?: number;
  logLevel?: string;
  extraFlags?: string[];
}

/** Starts `trellis operator` from the sources as a child of this process. */
export async function startOperator(options: OperatorChildOptions): Promise<OperatorChild> {
  const [probesPort] = await freePorts(1);
  const args = [
    '--import',
    'tsx',
    join(repoRoot, 'src', 'cli', 'main.ts'),
    'operator',
    `--kubeconfig=${options.kubeconfigPath}`,
    `--concurrency=${options.concurrency ?? 'hierarchical'}`,
    `--workers=${options.workers ?? 10}`,
    '--leader-elect=false',
    '--metrics-bind-address=0',
    `--health-probe-bind-address=127.0.0.1:${probesPort}`,
    `--log-level=${options.logLevel ?? 'info'}`,
    '--shutdown-grace-seconds=5',
    ...(options.extraFlags ?? []),
  ];
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KUBECONFIG: '', TRELLIS_LOG_LEVEL: options.logLevel ?? 'info' } });
  const output: string[] = [];
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => output.push(line));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  // Never outlive this process.
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);
  void exited.then(() => process.off('exit', onExit));
  const probesUrl = `http://127.0.0.1:${probesPort}`;
  return {
    child,
    pid: child.pid!,
    probesUrl,
    output,
    exited,
    async ready(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (done) throw new Error(`the operator exited before it was ready:\n${output.slice(-20).join('\n')}`);
        const status = await fetch(`${probesUrl}/readyz`).then((r) => r.status, () => 0);
        if (status === 200) return;
        if (Date.now() > deadline) throw new Error(`the operator was not ready within ${timeoutMs} ms:\n${output.slice(-20).join('\n')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop(graceMs = 10_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (done) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

const group = 'trellis.dev';
const version = 'v1alpha1';

export interface BurstOptions {
  namespace: string;
  /** Volumes per backend. */
  perBackend: number;
  backends: readonly string[];
  capacity?: string;
  /** Creates in flight at once. */
  parallelism?: number;
  /** Name prefix, default `vol`. */
  prefix?: string;
}

/** The Volume objects of a burst, spread round-robin over the backends. */
export function burstVolumes(options: BurstOptions): Array<{ name: string; backend: string }> {
  const volumes: Array<{ name: string; backend: string }> = [];
  for (let i = 0; i < options.perBackend; i++) {
    for (const backend of options.backends) volumes.push({ name: `${options.prefix ?? 'vol'}-${backend}-${i}`, backend });
  }
  return volumes;
}

/** Creates the burst's Volumes through the API, `parallelism` at a time. */
export async function createBurst(kubeConfig: KubeConfig, options: BurstOptions): Promise<void> {
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  const volumes = burstVolumes(options);
  let next = 0;
  const worker = async () => {
    while (next < volumes.length) {
      const { name, backend } = volumes[next++]!;
      await api.createNamespacedCustomObject({
        group,
        version,
        namespace: options.namespace,
        plural: 'volumes',
        body: { apiVersion: `${group}/${version}`, kind: 'Volume', metadata: { name }, spec: { backend, capacity: options.capacity ?? '1Gi' } },
      });
    }
  };
  await Promise.all(Array.from({ length: options.parallelism ?? 32 }, worker));
}

export interface ListedVolume {
  metadata: { name: string; namespace: string; uid: string };
  spec: { backend: string; capacity: string | number };
  status?: { phase?: string; handle?: string; capacityBytes?: number; conditions?: Array<{ type: string; status: string; reason: string; message: string }> };
}

/** Every Volume of the namespace. */
export async function listVolumes(kubeConfig: KubeConfig, namespace: string): Promise<ListedVolume[]> {
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  return ((await api.listNamespacedCustomObject({ group, version, namespace, plural: 'volumes' })) as { items: ListedVolume[] }).items;
}

/** Polls until `count` Volumes of the namespace are Available; `progress` hears the count about once a second. */
export async function waitAvailable(kubeConfig: KubeConfig, namespace: string, count: number, options: { timeoutMs?: number; progress?: (available: number) => void } = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  let lastReport = 0;
  for (;;) {
    const available = (await listVolumes(kubeConfig, namespace)).filter((v) => v.status?.phase === 'Available').length;
    if (Date.now() - lastReport >= 1000 || available >= count) {
      lastReport = Date.now();
      options.progress?.(available);
    }
    if (available >= count) return;
    if (Date.now() > deadline) throw new Error(`${available} of ${count} volumes in ${namespace} Available after ${options.timeoutMs ?? 600_000} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
