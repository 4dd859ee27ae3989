// A local Kubernetes cluster: a real, throwaway control plane (etcd, kube-apiserver,
// kube-controller-manager) built from the pinned Go modules in hack/tools, started by
// `npm run demo` and by the integration tests. Importing this module starts, spawns and
// installs nothing; everything happens in the functions called.
//
// Guarantees:
// - Everything listens on free loopback ports and lives in one temp dir: keys, certs,
//   etcd data, logs and the kubeconfig. Several control planes can run side by side. A port
//   taken by another process before etcd or kube-apiserver binds it costs a new start on
//   new ports (up to 3 attempts), not a failed one.
// - Secure like a real cluster: TLS serving cert signed by a generated CA, token auth with
//   an admin in system:masters, RBAC on, service-account tokens signed by a generated key.
// - start() returns only when /readyz is ok, kube-controller-manager runs, and every CRD
//   in crds/ is Established; when it fails, the error carries the tail of the failing
//   component's log.
// - stop() ends every process and removes the temp dir. If the Node process exits or gets
//   SIGINT/SIGTERM first, the same happens from process hooks, which never throw (a dir
//   they cannot remove is left to the next start); children also get SIGKILL from the
//   kernel if the Node process dies outright (setpriv --pdeathsig).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';

/** The checkout this module runs from (from source or from dist/), found by hack/build-tools.sh. */
export const repoRoot = findRepoRoot(dirname(fileURLToPath(import.meta.url)));

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'hack', 'build-tools.sh'))) return dir;
    if (dirname(dir) === dir) return resolve(from, '..', '..');
  }
}

/** Tools the control plane needs, by the names hack/build-tools.sh knows. */
export const CONTROL_PLANE_TOOLS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl'] as const;
export type ToolName = (typeof CONTROL_PLANE_TOOLS)[number] | 'csi-sanity' | 'helm';

/** Long enough for a cold build of every binary on 2 cores (~13 min) plus startup. */
export const CONTROL_PLANE_START_TIMEOUT_MS = 30 * 60_000;

export interface ControlPlaneOptions {
  /** CRD manifests to install and wait for; default `<repo>/crds`. `false` installs none. */
  crdsDir?: string | false;
  /** Start kube-controller-manager (namespace deletion, garbage collection). Default true. */
  controllerManager?: boolean;
  /** Progress lines (what is built or started, with elapsed time). Default: stderr. */
  progress?: (line: string) => void;
  /** How long to wait for each component to become ready. Default 60 s. */
  readyTimeoutMs?: number;
  /**
   * Picks `count` distinct ports for etcd (client, peer) and kube-apiserver; asked again for
   * new ones when a port is taken before it is bound. Default: free loopback ports. For tests.
   */
  choosePorts?: (count: number) => Promise<number[]>;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (for `-f -`). */
  input?: string;
  /** Reject when kubectl exits non-zero. Default true. */
  check?: boolean;
}

export interface ControlPlane {
  readonly dataDir: string;
  readonly server: string;
  readonly kubeconfigPath: string;
  /** An admin (system:masters) client configuration. */
  readonly kubeConfig: KubeConfig;
  readonly binaries: Readonly<Record<(typeof CONTROL_PLANE_TOOLS)[number], string>>;
  /** Runs the built kubectl against this control plane. */
  kubectl(args: string[], options?: KubectlOptions): Promise<KubectlResult>;
  stopApiserver(): Promise<void>;
  startApiserver(): Promise<void>;
  restartApiserver(): Promise<void>;
  stopEtcd(): Promise<void>;
  startEtcd(): Promise<void>;
  restartEtcd(): Promise<void>;
  /** A client configuration that authenticates as the ServiceAccount (created if missing). */
  serviceAccountKubeConfig(namespace: string, name: string): Promise<KubeConfig>;
  /** PIDs of every process this control plane ever started that may still run. */
  pids(): number[];
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Process-exit safety net: whatever is still registered here is killed and removed when
// the Node process exits, however it exits short of SIGKILL.

// Each live child with the signal that ends it at once: SIGKILL for the components, SIGTERM
// for hack/build-tools.sh, whose trap then stops `go build` and removes the partial build.
const liveChildren = new Map<ChildProcess, NodeJS.Signals>();
const liveDirs = new Set<string>();
const liveStops = new Set<() => Promise<void>>();
let exitHooksInstalled = false;

function killEverythingSync(): void {
  for (const [child, signal] of liveChildren) {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
  for (const dir of liveDirs) removeBestEffortSync(dir);
  liveDirs.clear();
}

// Runs in exit and signal hooks, where a throw would skip the other dirs and turn a signal's
// exit code into a crash. A component just SIGKILLed may still be writing (ENOTEMPTY): one
// retry after it. What stays is removed by the next start (removeOrphanedDataDirs).
function removeBestEffortSync(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 1, retryDelay: 100 });
  } catch (err) {
    process.stderr.write(`control plane: could not remove ${dir}: ${(err as Error).message}\n`);
  }
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', killEverythingSync);
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    let received = false;
    process.on(signal, () => {
      // A second signal means "now": no graceful stop.
      if (received) {
        killEverythingSync();
        process.exit(code);
      }
      received = true;
      void Promise.allSettled([...liveStops].map((stop) => stop())).finally(() => {
        killEverythingSync();
        process.exit(code);
      });
    });
  }
}

// Probed on first spawn, not at import: importing this module starts nothing.
let setprivProbed: boolean | undefined;
function setprivAvailable(): boolean {
  setprivProbed ??= spawnSync('setpriv', ['--help'], { stdio: 'ignore' }).status === 0;
  return setprivProbed;
}

/** One component of the control plane, restartable in place, its output appended to a log. */
class Component {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  readonly everStarted = new Set<number>();

  constructor(
    readonly name: string,
    private readonly binary: string,
    private readonly args: string[],
    readonly logPath: string,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.running) return;
    const log = openSync(this.logPath, 'a');
    // pdeathsig: the kernel kills the component if this Node process dies without cleanup.
    const [command, args] = setprivAvailable()
      ? ['setpriv', ['--pdeathsig', 'KILL', '--', this.binary, ...this.args]]
      : [this.binary, this.args];
    const child = spawn(command, args, { stdio: ['ignore', log, log] });
    closeSync(log);
    this.child = child;
    liveChildren.set(child, 'SIGKILL');
    if (child.pid !== undefined) this.everStarted.add(child.pid);
    this.exited = new Promise((resolveExit) => {
      child.once('exit', () => {
        liveChildren.delete(child);
        resolveExit();
      });
      child.once('error', () => {
        liveChildren.delete(child);
        resolveExit();
      });
    });
  }

  // kube-apiserver drains open watches (kube-controller-manager's) for up to a minute on
  // SIGTERM; nothing here keeps state that SIGKILL could lose (etcd's writes are in the page
  // cache), so a short grace keeps restarts quick.
  async stop(graceMs = 3_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return this.exited;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  logTail(lines = 40): string {
    if (!existsSync(this.logPath)) return '(no log)';
    const all = readFileSync(this.logPath, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).join('\n');
  }
}

// ---------------------------------------------------------------------------------------

/** Builds (or finds cached) binaries with hack/build-tools.sh; its progress goes to `progress`. */
export async function ensureTools<T extends ToolName>(
  names: readonly T[],
  progress: (line: string) => void = defaultProgress,
): Promise<Record<T, string>> {
  const script = join(repoRoot, 'hack', 'build-tools.sh');
  // If this process dies outright, the kernel sends the script SIGTERM, so its trap still runs.
  const [command, args] = setprivAvailable()
    ? ['setpriv', ['--pdeathsig', 'TERM', '--', 'bash', script, ...names]]
    : ['bash', [script, ...names]];
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.set(child, 'SIGTERM');
  let stdout = '';
  let stderrTail = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  let pending = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-4000);
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) progress(line);
  });
  const code = await new Promise<number>((resolveCode, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolveCode(c ?? 1));
  }).finally(() => liveChildren.delete(child));
  if (code !== 0) throw new Error(`hack/build-tools.sh ${names.join(' ')} failed (exit ${code}):\n${stderrTail}`);
  const paths = stdout.split('\n').filter(Boolean);
  const result = {} as Record<T, string>;
  for (const name of names) {
    const path = paths.find((p) => basename(p) === name);
    if (!path) throw new Error(`hack/build-tools.sh printed no path for ${name}; stdout:\n${stdout}`);
    result[name] = path;
  }
  return result;
}

function defaultProgress(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * Free loopback ports, all distinct (every listener stays open until all are found). They are
 * free when this returns, not reserved: whoever binds them later can lose the race.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolveServer, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolveServer(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function run(command: string, args: string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed: ${result.error?.message ?? result.stderr}`);
  }
}

/** CA, a serving cert it signs for the loopback apiserver, and service-account keys. */
function generateCredentials(pki: string): void {
  mkdirSync(pki, { recursive: true });
  const days = '7';
  run('openssl', ['req', '-x509', '-new', '-nodes', '-newkey', 'rsa:2048', '-keyout', 'ca.key', '-out', 'ca.crt',
    '-days', days, '-subj', '/CN=trellis-test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], pki);
  writeFileSync(
    join(pki, 'apiserver.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc',
      '',
    ].join('\n'),
  );
  run('openssl', ['req', '-new', '-nodes', '-newkey', 'rsa:2048', '-keyout', 'apiserver.key', '-out', 'apiserver.csr',
    '-subj', '/CN=kube-apiserver'], pki);
  run('openssl', ['x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'apiserver.crt', '-days', days, '-extfile', 'apiserver.ext'], pki);
  run('openssl', ['genrsa', '-out', 'sa.key', '2048'], pki);
  run('openssl', ['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], pki);
}

interface HttpAnswer {
  status: number;
  body: string;
}

function get(url: string, options: { ca?: Buffer; token?: string } = {}): Promise<HttpAnswer> {
  return new Promise((resolveAnswer, reject) => {
    const headers: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
    const callback = (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolveAnswer({ status: res.statusCode ?? 0, body }));
    };
    const req = url.startsWith('https:')
      ? httpsRequest(url, { ca: options.ca, headers, timeout: 5000 }, callback)
      : httpRequest(url, { headers, timeout: 5000 }, callback);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(
  what: string,
  component: Component,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    if (!component.running) {
      throw new Error(`${component.name} exited while waiting for ${what}; last log lines:\n${component.logTail()}`);
    }
    try {
      if (await check()) return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what} not ready after ${timeoutMs} ms (${lastError || 'not ready'}); ${component.name} log tail:\n${component.logTail()}`,
      );
    }
    await sleep(200);
  }
}

function elapsed(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

function kubeConfigFor(server: string, caData: string, user: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'trellis-test', server, caData, skipTLSVerify: false }],
    users: [{ name: user, token }],
    contexts: [{ name: user, cluster: 'trellis-test', user }],
    currentContext: user,
  });
  return kc;
}

function kubeconfigYaml(server: string, caData: string, user: string, token: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'trellis-test', cluster: { server, 'certificate-authority-data': caData } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: user, context: { cluster: 'trellis-test', user } }],
    'current-context': user,
  });
}

const DATA_DIR_PREFIX = 'trellis-cp-';
/** Starts of etcd and kube-apiserver on fresh ports before a port collision is an error. */
const PORT_ATTEMPTS = 3;
const OWNER_FILE = 'owner.pid';

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes temp dirs left by control planes whose Node process was SIGKILLed (its children
 * died with it through pdeathsig, but nothing could remove the files).
 */
function removeOrphanedDataDirs(): void {
  for (const entry of readdirSync(tmpdir())) {
    if (!entry.startsWith(DATA_DIR_PREFIX)) continue;
    const dir = join(tmpdir(), entry);
    try {
      const owner = Number(readFileSync(join(dir, OWNER_FILE), 'utf8'));
      if (owner > 0 && !processAlive(owner)) rmSync(dir, { recursive: true, force: true });
    } catch {
      // no owner file yet (being created) or not ours: leave it
    }
  }
}

/** Starts a control plane; see the module comment for what it guarantees. */
export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  installExitHooks();
  const progress = options.progress ?? defaultProgress;
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  const begun = Date.now();

  progress('control plane: finding or building etcd, kube-apiserver, kube-controller-manager, kubectl');
  const binaries = await ensureTools(CONTROL_PLANE_TOOLS, progress);
  progress(`control plane: binaries ready (${elapsed(begun)})`);

  removeOrphanedDataDirs();
  const dataDir = await mkdtemp(join(tmpdir(), DATA_DIR_PREFIX));
  liveDirs.add(dataDir);
  writeFileSync(join(dataDir, OWNER_FILE), String(process.pid));
  const components: Component[] = [];
  let stopping: Promise<void> | undefined;

  // Every caller, concurrent or late, gets the same teardown and waits for its end.
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      liveStops.delete(stop);
      // Reverse start order: controllers first, storage last.
      for (const component of [...components].reverse()) await component.stop();
      rmSync(dataDir, { recursive: true, force: true });
      liveDirs.delete(dataDir);
    })();
    return stopping;
  };
  liveStops.add(stop);

  try {
    const pki = join(dataDir, 'pki');
    const logs = join(dataDir, 'logs');
    mkdirSync(logs);
    generateCredentials(pki);
    const caPem = await readFile(join(pki, 'ca.crt'));
    const caData = caPem.toString('base64');
    const adminToken = randomBytes(24).toString('hex');
    writeFileSync(join(pki, 'tokens.csv'), `${adminToken},trellis-admin,trellis-admin,"system:masters"\n`, { mode: 0o600 });

    // Collections of the installed CRDs; filled once they are Established.
    const crdCollections: string[] = [];

    // etcd and kube-apiserver on the given ports, not started yet.
    const storageAndApi = ([etcdPort, etcdPeerPort, apiPort]: number[]) => {
      const server = `https://127.0.0.1:${apiPort}`;
      const etcdUrl = `http://127.0.0.1:${etcdPort}`;
      const etcdPeerUrl = `http://127.0.0.1:${etcdPeerPort}`;

      const etcd = new Component('etcd', binaries.etcd, [
        '--name=trellis-test',
        `--data-dir=${join(dataDir, 'etcd')}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${etcdPeerUrl}`,
        `--initial-advertise-peer-urls=${etcdPeerUrl}`,
        `--initial-cluster=trellis-test=${etcdPeerUrl}`,
        // Throwaway data: durability buys nothing and fsync slows every write.
        '--unsafe-no-fsync',
        '--log-level=warn',
      ], join(logs, 'etcd.log'));

      const apiserver = new Component('kube-apiserver', binaries['kube-apiserver'], [
        `--etcd-servers=${etcdUrl}`,
        `--secure-port=${apiPort}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        // The default reconciler refuses a loopback advertise address.
        '--endpoint-reconciler-type=none',
        `--tls-cert-file=${join(pki, 'apiserver.crt')}`,
        `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
        `--client-ca-file=${join(pki, 'ca.crt')}`,
        '--service-account-issuer=https://kubernetes.default.svc',
        `--service-account-key-file=${join(pki, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
        `--token-auth-file=${join(pki, 'tokens.csv')}`,
        '--authorization-mode=RBAC',
        '--service-cluster-ip-range=10.0.0.0/24',
        '--disable-admission-plugins=ServiceAccount',
        '--profiling=false',
      ], join(logs, 'kube-apiserver.log'));

      const startEtcd = async () => {
        const t = Date.now();
        etcd.start();
        await waitUntil('etcd /health', etcd, readyTimeoutMs, async () => {
          const answer = await get(`${etcdUrl}/health`);
          return answer.status === 200 && answer.body.includes('"health":"true"');
        });
        progress(`control plane: etcd ready on ${etcdUrl} (${elapsed(t)})`);
      };
      // /readyz turns ok before the watch cache of each custom resource is initialized; until
      // then lists and watches of it answer 429 "storage is (re)initializing". Ready here means
      // every installed CRD's collection can be listed.
      const waitApiserverReady = async () => {
        await waitUntil('kube-apiserver /readyz', apiserver, readyTimeoutMs, async () => {
          const answer = await get(`${server}/readyz`, { ca: caPem, token: adminToken });
          return answer.status === 200;
        });
        for (const collection of crdCollections) {
          await waitUntil(`a list of ${collection}`, apiserver, readyTimeoutMs, async () => {
            // resourceVersion=0 is answered from the watch cache, the part that re-initializes;
            // a plain (consistent) list is answered from it too once it is ready, and can be
            // refused a moment longer: both must answer.
            for (const query of ['resourceVersion=0&limit=1', 'limit=1']) {
              const answer = await get(`${server}${collection}?${query}`, { ca: caPem, token: adminToken });
              if (answer.status !== 200) return false;
            }
            return true;
          });
        }
      };
      const startApiserver = async () => {
        const t = Date.now();
        apiserver.start();
        await waitApiserverReady();
        progress(`control plane: kube-apiserver ready on ${server} (${elapsed(t)})`);
      };
      return { server, etcd, apiserver, startEtcd, startApiserver, waitApiserverReady };
    };

    // The free ports are closed again before etcd and kube-apiserver bind them, so another
    // process can take one in between: then the component exits with "address already in
    // use", and both start again on new ports.
    const choosePorts = options.choosePorts ?? freePorts;
    let plane: ReturnType<typeof storageAndApi>;
    for (let attempt = 1; ; attempt += 1) {
      plane = storageAndApi(await choosePorts(3));
      try {
        components.push(plane.etcd);
        await plane.startEtcd();
        components.push(plane.apiserver);
        await plane.startApiserver();
        break;
      } catch (err) {
        if (attempt >= PORT_ATTEMPTS || !/address already in use/.test((err as Error).message)) throw err;
        progress(`control plane: a port was taken before it was bound; starting again on new ports (${(err as Error).message.split('\n')[0]})`);
        for (const component of components.splice(0).reverse()) await component.stop();
        // The next attempt logs afresh; this one's logs stay beside them for diagnosis.
        for (const name of ['etcd', 'kube-apiserver']) {
          const log = join(logs, `${name}.log`);
          if (existsSync(log)) renameSync(log, join(logs, `${name}.attempt-${attempt}.log`));
        }
        rmSync(join(dataDir, 'etcd'), { recursive: true, force: true });
      }
    }
    const { server, etcd, apiserver, startEtcd, startApiserver, waitApiserverReady } = plane;

    const adminKubeconfigPath = join(dataDir, 'kubeconfig');
    writeFileSync(adminKubeconfigPath, kubeconfigYaml(server, caData, 'trellis-admin', adminToken), { mode: 0o600 });

    const controllerManager = new Component('kube-controller-manager', binaries['kube-controller-manager'], [
      `--kubeconfig=${adminKubeconfigPath}`,
      `--service-account-private-key-file=${join(pki, 'sa.key')}`,
      `--root-ca-file=${join(pki, 'ca.crt')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=0',
      '--controllers=*,-nodeipam,-nodelifecycle',
    ], join(logs, 'kube-controller-manager.log'));
    if (options.controllerManager !== false) {
      components.push(controllerManager);
      controllerManager.start();
      progress('control plane: kube-controller-manager started');
    }

    const kubeConfig = kubeConfigFor(server, caData, 'trellis-admin', adminToken);
    const kubectlCache = join(dataDir, 'kubectl-cache');
    const kubectl = (args: string[], opts: KubectlOptions = {}): Promise<KubectlResult> =>
      runKubectl(binaries.kubectl, [`--kubeconfig=${adminKubeconfigPath}`, `--cache-dir=${kubectlCache}`, ...args], opts);

    const crdsDir = options.crdsDir === undefined ? join(repoRoot, 'crds') : options.crdsDir;
    if (crdsDir !== false) {
      const t = Date.now();
      await kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager=trellis-test', '-f', crdsDir]);
      await kubectl(['wait', '--for=condition=Established', '--timeout=60s', '-f', crdsDir]);
      crdCollections.push(...(await collectionsOf(crdsDir)));
      // Established is not served: each new resource's watch cache still initializes.
      await plane.waitApiserverReady();
      progress(`control plane: CRDs from ${crdsDir} Established (${elapsed(t)})`);
    }

    if (options.controllerManager !== false) {
      // kcm proves itself by creating the root CA ConfigMap in every namespace.
      await waitUntil('kube-controller-manager (kube-root-ca.crt in default)', controllerManager, readyTimeoutMs, async () => {
        const answer = await get(`${server}/api/v1/namespaces/default/configmaps/kube-root-ca.crt`, {
          ca: caPem,
          token: adminToken,
        });
        return answer.status === 200;
      });
      progress('control plane: kube-controller-manager running');
    }
    progress(`control plane: up in ${elapsed(begun)}; KUBECONFIG=${adminKubeconfigPath}`);

    const core = kubeConfig.makeApiClient(CoreV1Api);
    return {
      dataDir,
      server,
      kubeconfigPath: adminKubeconfigPath,
      kubeConfig,
      binaries,
      kubectl,
      stopApiserver: () => apiserver.stop(),
      startApiserver,
      restartApiserver: async () => {
        await apiserver.stop();
        await startApiserver();
      },
      stopEtcd: () => etcd.stop(),
      startEtcd,
      restartEtcd: async () => {
        await etcd.stop();
        await startEtcd();
        await waitApiserverReady();
      },
      serviceAccountKubeConfig: async (namespace, name) => {
        try {
          await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
        } catch (err) {
          if ((err as { code?: number }).code !== 409) throw err;
        }
        const answer = await core.createNamespacedServiceAccountToken({
          name,
          namespace,
          body: { spec: { audiences: [], expirationSeconds: 3600 } },
        });
        const token = answer.status?.token;
        if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
        return kubeConfigFor(server, caData, `system:serviceaccount:${namespace}:${name}`, token);
      },
      pids: () => components.flatMap((c) => [...c.everStarted]),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

interface CrdManifest {
  kind?: string;
  spec?: { group: string; scope: string; names: { plural: string }; versions: { name: string; served: boolean }[] };
}

/** The cluster-wide collection path of every CRD in `dir`, e.g. /apis/trellis.dev/v1alpha1/volumes. */
async function collectionsOf(dir: string): Promise<string[]> {
  const paths: string[] = [];
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f))) {
    for (const doc of parseAllDocuments(await readFile(join(dir, file), 'utf8'))) {
      const crd = doc.toJS() as CrdManifest | null;
      if (crd?.kind !== 'CustomResourceDefinition' || !crd.spec) continue;
      const served = crd.spec.versions.find((v) => v.served);
      if (served) paths.push(`/apis/${crd.spec.group}/${served.name}/${crd.spec.names.plural}`);
    }
  }
  return paths;
}

/** Runs a kubectl binary; rejects on a non-zero exit unless `options.check` is false. */
export function runKubectl(binary: string, args: string[], options: KubectlOptions = {}): Promise<KubectlResult> {
  return new Promise((resolveResult, reject) => {
    const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    liveChildren.set(child, 'SIGKILL');
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', (err) => {
      liveChildren.delete(child);
      reject(err);
    });
    child.once('close', (code) => {
      liveChildren.delete(child);
      const result = { code: code ?? 1, stdout, stderr };
      if (result.code !== 0 && options.check !== false) {
        const shown = args.filter((a) => !a.startsWith('--kubeconfig=') && !a.startsWith('--cache-dir='));
        reject(new Error(`kubectl ${shown.join(' ')} exited ${result.code}: ${stderr.trim()}`));
      } else {
        resolveResult(result);
      }
    });
    child.stdin.end(options.input ?? '');
  });
}
