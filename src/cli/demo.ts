// `npm run demo`: Trellis at work on a local cluster. Uses the cluster in KUBECONFIG when set,
// or else builds (or finds cached) and starts a real control plane on loopback; starts two
// simulated arrays and `trellis operator` (a child process); applies examples/01 and 02 and
// shows them become Online and Available; then applies a burst of Volumes over both arrays,
// once with the operator in hierarchical mode and once serial, and prints the time until all
// are Available and the speed-up. `--once` exits after that; otherwise the operator keeps
// running (hierarchical) until Ctrl-C, which tears everything down.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { ensureTools, repoRoot, runKubectl, startControlPlane, type KubectlOptions, type KubectlResult } from './local-cluster.js';
import { SCALED_LATENCY, createBurst, startOperator, startSimArray, waitAvailable, type ConcurrencyMode, type OperatorChild, type SimArray } from './operator-burst.js';

const usage = `usage: npm run demo [-- --once] [-- --volumes N]

Starts a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
built from pinned Go modules on first use: ~12 min cold on 2 cores, seconds when cached),
two simulated storage arrays (array-a on 127.0.0.1:7101, as examples/01-backends.yaml says,
and array-b) and the Trellis operator; applies examples/01 and 02 and shows them become
Online and Available. Then it applies a burst of Volumes over both arrays (N per array,
default 100) with the operator in hierarchical mode, and again in serial mode, and prints
both times and the speed-up. With KUBECONFIG set it uses that cluster instead. Ctrl-C stops
and removes everything it started.

  --once       exit after the burst
  --volumes N  volumes per array in each burst (default 100)
`;

/** The Backends' limit in the burst, and the workers that let every backend fill it. */
const LIMIT = 20;
const WORKERS = 50;

const begun = Date.now();
function say(line: string): void {
  const seconds = ((Date.now() - begun) / 1000).toFixed(1).padStart(6);
  process.stdout.write(`[${seconds} s] ${line}\n`);
}

function show(result: KubectlResult): void {
  process.stdout.write(`\n${result.stdout.trimEnd()}\n\n`);
}

interface Args {
  once: boolean;
  perArray: number;
}

function parse(argv: string[]): Args | string {
  const args: Args = { once: false, perArray: 100 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--once') args.once = true;
    else if (arg === '--volumes' || arg.startsWith('--volumes=')) {
      const text = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++i];
      const n = Number(text);
      if (!Number.isInteger(n) || n < 1) return `--volumes: "${text}" must be an integer >= 1`;
      args.perArray = n;
    } else return `unknown argument ${arg}`;
  }
  return args;
}

export async function runDemo(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(usage);
    return 0;
  }
  const args = parse(argv);
  if (typeof args === 'string') {
    process.stderr.write(`demo: ${args}\n\n${usage}`);
    return 2;
  }

  let kubectl: (args: string[], options?: KubectlOptions) => Promise<KubectlResult>;
  let kubeconfigPath: string;
  let kubeConfig: KubeConfig;
  let stopControlPlane: () => Promise<void> = async () => {};
  const external = process.env.KUBECONFIG;
  if (external) {
    say(`using the cluster in KUBECONFIG=${external}`);
    const tools = await ensureTools(['kubectl'], (line) => say(line));
    kubectl = (a, o) => runKubectl(tools.kubectl, [`--kubeconfig=${external}`, ...a], o);
    kubeconfigPath = external;
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(external);
    say('installing the Trellis CRDs');
    const crds = join(repoRoot, 'crds');
    await kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager=trellis-demo', '-f', crds]);
    await kubectl(['wait', '--for=condition=Established', '--timeout=60s', '-f', crds]);
  } else {
    say('no KUBECONFIG set: starting a local control plane (CRDs are installed as part of it)');
    const controlPlane = await startControlPlane({ progress: (line) => say(line) });
    kubectl = controlPlane.kubectl;
    kubeconfigPath = controlPlane.kubeconfigPath;
    kubeConfig = controlPlane.kubeConfig;
    stopControlPlane = () => controlPlane.stop();
  }

  const arrays: SimArray[] = [];
  let operator: OperatorChild | undefined;
  const hostpathRoot = mkdtempSync(join(tmpdir(), 'trellis-demo-hostpath-'));
  const stopAll = async () => {
    await operator?.stop();
    await Promise.all(arrays.map((a) => a.stop()));
    rmSync(hostpathRoot, { recursive: true, force: true });
    await stopControlPlane();
  };
  const runOperator = async (mode: ConcurrencyMode) => {
    await operator?.stop();
    operator = await startOperator({ kubeconfigPath, concurrency: mode, workers: WORKERS, logLevel: 'warn' });
    await operator.ready();
    say(`trellis operator running (pid ${operator.pid}, --concurrency ${mode}, --workers ${WORKERS})`);
  };

  try {
    arrays.push(await startSimArray('array-a', { port: 7101, seed: 1 }).catch(() => startSimArray('array-a', { seed: 1 })));
    arrays.push(await startSimArray('array-b', { seed: 2 }));
    say(`simulated arrays up: ${arrays.map((a) => `${a.name} at ${a.url}`).join(', ')} (latency scaled down: median ${SCALED_LATENCY.medianMs} ms per operation, creates twice that)`);
    await runOperator('hierarchical');

    say(`applying examples/01-backends.yaml (the hostpath Backend "local" gets a temp dir, ${hostpathRoot}, instead of /var/lib/trellis/volumes)`);
    const backends = readFileSync(join(repoRoot, 'examples', '01-backends.yaml'), 'utf8').replace('http://127.0.0.1:7101', arrays[0]!.url).replace('/var/lib/trellis/volumes', hostpathRoot);
    for (const line of (await kubectl(['apply', '-f', '-'], { input: backends })).stdout.trim().split('\n')) say(`  ${line}`);
    say('applying examples/02-volumes.yaml');
    for (const line of (await kubectl(['apply', '-f', join(repoRoot, 'examples', '02-volumes.yaml')])).stdout.trim().split('\n')) say(`  ${line}`);
    say('kubectl wait --for=condition=Ready backend/array-a backend/local');
    await kubectl(['wait', '--for=condition=Ready', '--timeout=120s', 'backend/array-a', 'backend/local']);
    say('kubectl wait --for=condition=Ready -n team-a volume --all');
    await kubectl(['wait', '--for=condition=Ready', '--timeout=120s', '-n', 'team-a', 'volume', '--all']);
    say('kubectl get tbe -o wide');
    show(await kubectl(['get', 'tbe', '-o', 'wide']));
    say('kubectl get tvol -n team-a -o wide');
    show(await kubectl(['get', 'tvol', '-n', 'team-a', '-o', 'wide']));

    const arrayB = `apiVersion: trellis.dev/v1alpha1
kind: Backend
metadata:
  name: array-b
spec:
  driver: sim
  config:
    endpoint: ${arrays[1]!.url}
  limits:
    maxConcurrentOperations: ${LIMIT}
`;
    say(`adding Backend array-b (${arrays[1]!.url}, limit ${LIMIT}) for the burst`);
    await kubectl(['apply', '-f', '-'], { input: arrayB });
    await kubectl(['wait', '--for=condition=Ready', '--timeout=120s', 'backend/array-b']);

    const times: Partial<Record<ConcurrencyMode, number>> = {};
    for (const mode of ['hierarchical', 'serial'] as const) {
      if (mode === 'serial') await runOperator('serial');
      const namespace = `burst-${mode}`;
      await kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } }).catch((error: { code?: number }) => {
        if (error.code !== 409) throw error;
      });
      for (const array of arrays) array.server!.state.resetStats();
      const total = args.perArray * arrays.length;
      say(`${mode}: applying ${total} Volumes at once in namespace ${namespace} (${args.perArray} on each of array-a and array-b, limit ${LIMIT} in flight each)`);
      const start = performance.now();
      await createBurst(kubeConfig, { namespace, perBackend: args.perArray, backends: ['array-a', 'array-b'] });
      await waitAvailable(kubeConfig, namespace, total, { progress: (n) => say(`  ${mode}: ${n}/${total} Available`) });
      const ms = performance.now() - start;
      times[mode] = ms;
      const peaks = Object.fromEntries(arrays.map((a) => [a.name, a.server!.state.stats().peakInFlight]));
      say(`${mode}: ${total} volumes Available in ${(ms / 1000).toFixed(2)} s; peak in flight per array ${JSON.stringify(peaks)} (Backend limit ${LIMIT})`);
    }
    say(`speed-up: hierarchical locking made ${args.perArray * arrays.length} volumes Available ${(times.serial! / times.hierarchical!).toFixed(1)}x faster than the serial mode (one global lock), same operator, same arrays`);
  } catch (error) {
    if (operator) process.stderr.write(`operator output (last lines):\n${operator.output.slice(-20).join('\n')}\n`);
    await stopAll();
    throw error;
  }

  if (args.once) {
    say('--once: stopping the operator, the arrays' + (external ? '' : ' and the control plane'));
    await stopAll();
    say('done');
    return 0;
  }
  await runOperator('hierarchical');
  say(`running; try: kubectl --kubeconfig=${kubeconfigPath} get tbe,tvol -A`);
  say('press Ctrl-C to stop');
  await new Promise<void>((resolveSignal) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        say(external ? 'stopping' : 'stopping the operator, the arrays and the control plane, removing its files');
        resolveSignal();
      });
    }
  });
  await stopAll();
  return 0;
}

process.exitCode = await runDemo(process.argv.slice(2));
