// `npm run demo`: a local Trellis cluster to look at. Uses the cluster in KUBECONFIG when
// set, or else builds (or finds cached) and starts a real control plane on loopback;
// installs the CRDs and the examples and shows them with kubectl, then keeps the control
// plane up until Ctrl-C, which tears it down completely. `--once` exits after showing.
import { join } from 'node:path';
import {
  ensureTools,
  repoRoot,
  runKubectl,
  startControlPlane,
  type KubectlOptions,
  type KubectlResult,
} from './local-cluster.js';
import { runSimulatedWorkload, startArrays, type RunningArrays } from './simulated-workload.js';

const usage = `usage: npm run demo [-- --once]

Starts a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
built from pinned Go modules on first use: ~12 min cold on 2 cores, seconds when cached),
installs the Trellis CRDs and examples/, and shows them; starts two simulated storage arrays
(array-a on 127.0.0.1:7101, as examples/01-backends.yaml says) and runs the engine on them,
hierarchical and serial side by side. With KUBECONFIG set it uses that
cluster instead. Ctrl-C stops and removes everything it started.

  --once   exit after showing the objects
`;

const begun = Date.now();
function say(line: string): void {
  const seconds = ((Date.now() - begun) / 1000).toFixed(1).padStart(6);
  process.stdout.write(`[${seconds} s] ${line}\n`);
}

function kubectlWith(binary: string, kubeconfig: string) {
  return (args: string[], options: KubectlOptions = {}): Promise<KubectlResult> =>
    runKubectl(binary, [`--kubeconfig=${kubeconfig}`, ...args], options);
}

export async function runDemo(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(usage);
    return 0;
  }
  const unknown = argv.filter((a) => a !== '--once');
  if (unknown.length > 0) {
    process.stderr.write(`demo: unknown argument ${unknown.join(' ')}\n\n${usage}`);
    return 2;
  }
  const once = argv.includes('--once');
  const crds = join(repoRoot, 'crds');
  const examples = join(repoRoot, 'examples');

  let kubectl: (args: string[], options?: KubectlOptions) => Promise<KubectlResult>;
  let stop: () => Promise<void> = async () => {};
  let kubeconfigPath: string;
  let kubectlBinary: string;
  const external = process.env.KUBECONFIG;
  if (external) {
    say(`using the cluster in KUBECONFIG=${external}`);
    const tools = await ensureTools(['kubectl'], (line) => say(line));
    kubectl = kubectlWith(tools.kubectl, external);
    kubectlBinary = tools.kubectl;
    kubeconfigPath = external;
    say('installing the Trellis CRDs');
    await kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager=trellis-demo', '-f', crds]);
    await kubectl(['wait', '--for=condition=Established', '--timeout=60s', '-f', crds]);
  } else {
    say('no KUBECONFIG set: starting a local control plane (CRDs are installed as part of it)');
    const controlPlane = await startControlPlane({ progress: (line) => say(line) });
    kubectl = controlPlane.kubectl;
    kubectlBinary = controlPlane.binaries.kubectl;
    kubeconfigPath = controlPlane.kubeconfigPath;
    stop = () => controlPlane.stop();
  }

  let arrays: RunningArrays | undefined;
  const stopAll = async () => {
    await arrays?.close();
    await stop();
  };
  try {
    arrays = await startArrays({ ports: [7101, 0], latencyMedianMs: 10 });
    say(`simulated arrays up: ${arrays.names.map((n, i) => `${n} at ${arrays!.servers[i]!.url}`).join(', ')}`);
    say('applying examples/');
    const applied = await kubectl(['apply', '-f', examples]);
    for (const line of applied.stdout.trim().split('\n')) say(`  ${line}`);
    say('the Trellis operator is not written yet: nothing reconciles these objects, so they have no status');
    say('kubectl get tbe,tvol,tvgs,tbj,trj -A');
    const shown = await kubectl(['get', 'tbe,tvol,tvgs,tbj,trj', '-A']);
    process.stdout.write(`\n${shown.stdout}\n`);
    await runSimulatedWorkload(arrays, { volumesPerArray: 100, limit: 20, latencyMedianMs: 10, say });
  } catch (err) {
    await stopAll();
    throw err;
  }

  if (once) {
    if (!external) say('--once: stopping the control plane');
    await stopAll();
    say('done');
    return 0;
  }
  say(`running; try: ${kubectlBinary} --kubeconfig=${kubeconfigPath} get trellis -A`);
  say('press Ctrl-C to stop');
  // The harness's own SIGINT/SIGTERM hooks stop every process and remove the temp dir.
  await new Promise<void>((resolveSignal) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        say(external ? 'stopping' : 'stopping the control plane and removing its files');
        resolveSignal();
      });
    }
  });
  await stopAll();
  return 0;
}

process.exitCode = await runDemo(process.argv.slice(2));
