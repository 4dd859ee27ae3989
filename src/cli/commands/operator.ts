// `trellis operator`: the Kubernetes operator process. Parses flags (each with an
// environment variable fallback), builds the manager with the controllers of
// src/controllers, and runs until SIGTERM/SIGINT (exit 0 after a graceful stop) or until
// it loses the lease (exit 1, so that it restarts as a follower). A bad flag or value
// exits 2 naming it.
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { rootLogger } from '../../log.js';
import { parseAddress } from '../../runtime/http.js';
import { Manager, type ConcurrencyMode, type LeaderElectionSettings } from '../../runtime/manager.js';
import type { ControllerDefinition } from '../../runtime/controller.js';

const usage = `usage: trellis operator [options]

Every option also reads the environment variable shown; a flag wins over it.

  --kubeconfig PATH                 kubeconfig file (KUBECONFIG); default: in-cluster config
                                    when run in a pod, else ~/.kube/config
  --namespaces NS[,NS...]           namespaces to watch (TRELLIS_NAMESPACES); default: all
  --workers N                       concurrent reconciles per controller (TRELLIS_WORKERS; default 10)
  --concurrency hierarchical|serial hierarchical locks, or one global lock (TRELLIS_CONCURRENCY;
                                    default hierarchical)
  --metrics-bind-address ADDR       host:port of /metrics, 0 disables (TRELLIS_METRICS_BIND_ADDRESS; default :8080)
  --health-probe-bind-address ADDR  host:port of /healthz and /readyz, 0 disables
                                    (TRELLIS_HEALTH_PROBE_BIND_ADDRESS; default :8081)
  --leader-elect true|false         elect a leader among replicas on a Lease (TRELLIS_LEADER_ELECT; default true)
  --leader-election-id NAME         the Lease's name (TRELLIS_LEADER_ELECTION_ID; default trellis-operator)
  --leader-election-namespace NS    the Lease's namespace (TRELLIS_LEADER_ELECTION_NAMESPACE; default:
                                    the pod's namespace in a cluster, else default)
  --shutdown-grace-seconds N        how long running reconciles may finish after SIGTERM
                                    (TRELLIS_SHUTDOWN_GRACE_SECONDS; default 30)
  --log-level LEVEL                 fatal|error|warn|info|debug|trace|silent (TRELLIS_LOG_LEVEL; default info)
  -h, --help                        this text
`;

const SERVICE_ACCOUNT_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface OperatorSettings {
  kubeconfig?: string;
  namespaces: string[];
  workers: number;
  concurrency: ConcurrencyMode;
  metricsAddress: string;
  probeAddress: string;
  leaderElect: boolean;
  leaseName: string;
  leaseNamespace?: string;
  shutdownGraceMs: number;
  logLevel: string;
}

/** A flag or variable with a bad value; its message names it. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const flags = {
  kubeconfig: { env: 'KUBECONFIG' },
  namespaces: { env: 'TRELLIS_NAMESPACES' },
  workers: { env: 'TRELLIS_WORKERS' },
  concurrency: { env: 'TRELLIS_CONCURRENCY' },
  'metrics-bind-address': { env: 'TRELLIS_METRICS_BIND_ADDRESS' },
  'health-probe-bind-address': { env: 'TRELLIS_HEALTH_PROBE_BIND_ADDRESS' },
  'leader-elect': { env: 'TRELLIS_LEADER_ELECT' },
  'leader-election-id': { env: 'TRELLIS_LEADER_ELECTION_ID' },
  'leader-election-namespace': { env: 'TRELLIS_LEADER_ELECTION_NAMESPACE' },
  'shutdown-grace-seconds': { env: 'TRELLIS_SHUTDOWN_GRACE_SECONDS' },
  'log-level': { env: 'TRELLIS_LOG_LEVEL' },
} as const;
type Flag = keyof typeof flags;

/** Settings from flags and environment; throws a UsageError naming the first bad one. */
export function parseSettings(argv: string[], env: NodeJS.ProcessEnv = process.env): OperatorSettings | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { ...Object.fromEntries(Object.keys(flags).map((name) => [name, { type: 'string' as const }])), help: { type: 'boolean', short: 'h' } },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return 'help';
  const get = (flag: Flag): { value: string | undefined; name: string } => {
    const fromFlag = values[flag];
    if (typeof fromFlag === 'string') return { value: fromFlag, name: `--${flag}` };
    const fromEnv = env[flags[flag].env];
    return { value: fromEnv === '' ? undefined : fromEnv, name: flags[flag].env };
  };
  const integer = (flag: Flag, fallback: number, min: number): number => {
    const { value, name } = get(flag);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min) throw new UsageError(`${name}: "${value}" must be an integer >= ${min}`);
    return n;
  };
  const oneOf = <T extends string>(flag: Flag, allowed: readonly T[], fallback: T): T => {
    const { value, name } = get(flag);
    if (value === undefined) return fallback;
    if (!allowed.includes(value as T)) throw new UsageError(`${name}: "${value}" must be one of ${allowed.join(', ')}`);
    return value as T;
  };
  const address = (flag: Flag, fallback: string): string => {
    const { value, name } = get(flag);
    if (value === undefined) return fallback;
    try {
      parseAddress(value);
    } catch {
      throw new UsageError(`${name}: "${value}" must be host:port, :port, or 0 to disable`);
    }
    return value;
  };
  const dnsLabel = (flag: Flag): string | undefined => {
    const { value, name } = get(flag);
    if (value !== undefined && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(value)) throw new UsageError(`${name}: "${value}" is not a valid name (a DNS label)`);
    return value;
  };
  const namespacesText = get('namespaces');
  const namespaces = (namespacesText.value ?? '').split(',').map((n) => n.trim()).filter(Boolean);
  for (const ns of namespaces) {
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(ns)) throw new UsageError(`${namespacesText.name}: "${ns}" is not a namespace name`);
  }
  const kubeconfig = get('kubeconfig').value;
  if (kubeconfig !== undefined && values.kubeconfig !== undefined && !existsSync(kubeconfig)) throw new UsageError(`--kubeconfig: "${kubeconfig}" does not exist`);
  return {
    kubeconfig,
    namespaces,
    workers: integer('workers', 10, 1),
    concurrency: oneOf('concurrency', ['hierarchical', 'serial'] as const, 'hierarchical'),
    metricsAddress: address('metrics-bind-address', ':8080'),
    probeAddress: address('health-probe-bind-address', ':8081'),
    leaderElect: oneOf('leader-elect', ['true', 'false'] as const, 'true') === 'true',
    leaseName: dnsLabel('leader-election-id') ?? 'trellis-operator',
    leaseNamespace: dnsLabel('leader-election-namespace'),
    shutdownGraceMs: integer('shutdown-grace-seconds', 30, 0) * 1000,
    logLevel: oneOf('log-level', LOG_LEVELS, 'info'),
  };
}

function loadKubeConfig(settings: OperatorSettings): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (settings.kubeconfig) kubeConfig.loadFromFile(settings.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kubeConfig.loadFromCluster();
  else kubeConfig.loadFromDefault();
  return kubeConfig;
}

function leaseNamespace(settings: OperatorSettings): string {
  if (settings.leaseNamespace) return settings.leaseNamespace;
  if (existsSync(SERVICE_ACCOUNT_NAMESPACE)) return readFileSync(SERVICE_ACCOUNT_NAMESPACE, 'utf8').trim();
  return 'default';
}

/**
 * Runs the operator with `controllers` until a signal or a lost lease; resolves with the
 * exit code. Tests call it with their own controllers.
 */
export async function runOperator(settings: OperatorSettings, controllers: readonly ControllerDefinition[]): Promise<number> {
  rootLogger.level = settings.logLevel;
  const logger = rootLogger.child({ component: 'operator' });
  const leaderElection: LeaderElectionSettings | undefined = settings.leaderElect
    ? { namespace: leaseNamespace(settings), name: settings.leaseName, identity: process.env.POD_NAME ? `${process.env.POD_NAME}-${process.pid}` : undefined }
    : undefined;
  const manager = new Manager({
    kubeConfig: loadKubeConfig(settings),
    namespaces: settings.namespaces,
    concurrency: settings.concurrency,
    workers: settings.workers,
    leaderElection,
    metricsAddress: settings.metricsAddress,
    probeAddress: settings.probeAddress,
  });
  for (const controller of controllers) manager.register(controller);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting at once');
      process.exit(1);
    }
    logger.info({ signal, graceMs: settings.shutdownGraceMs }, 'stopping: no new work; running reconciles get the grace period');
    void manager.stop({ graceMs: settings.shutdownGraceMs });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const addresses = await manager.listen();
    logger.info({ identity: manager.identity, metrics: addresses.metrics?.port, probes: addresses.probes?.port, leaderElection: leaderElection ? `${leaderElection.namespace}/${leaderElection.name}` : false }, 'operator starting');
    const outcome = await manager.run();
    return outcome === 'stopped' ? 0 : 1;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

export async function run(argv: string[]): Promise<number> {
  let settings: OperatorSettings | 'help';
  try {
    settings = parseSettings(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`trellis operator: ${error.message}\n(trellis operator --help lists the options)\n`);
    return 2;
  }
  if (settings === 'help') {
    process.stdout.write(usage);
    return 0;
  }
  const { createControllers } = await import('../../controllers/index.js');
  return runOperator(settings, createControllers());
}
