// The operator end to end, hierarchical against serial, in one run: a real control plane,
// simulated arrays in this process, `trellis operator` as a child process. For each mode a
// fresh operator (--concurrency hierarchical, then serial) gets the same burst of Volumes
// applied at once (default 1,200 over 4 arrays, Backend limit 20 each, arrays accepting 64),
// and the time from the first create until every Volume is Available is measured. Printed:
// both times, the ratio, each array's peak in flight, and the ideal bounds from the arrays'
// latency alone (what the storage would allow if Kubernetes cost nothing).
// Flags: --volumes N (total), --arrays K, --latency-ms M (median of one array operation;
// creates take twice that), --workers W.
import { parseArgs } from 'node:util';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { startControlPlane } from '../src/cli/local-cluster.js';
import { SCALED_LATENCY, createBurst, startOperator, startSimArray, waitAvailable, type ConcurrencyMode, type SimArray } from '../src/cli/operator-burst.js';

const { values } = parseArgs({
  options: {
    volumes: { type: 'string', default: '1200' },
    arrays: { type: 'string', default: '4' },
    'latency-ms': { type: 'string', default: String(SCALED_LATENCY.medianMs) },
    workers: { type: 'string', default: '100' },
    limit: { type: 'string', default: '20' },
  },
});
const total = Number(values.volumes);
const arrayCount = Number(values.arrays);
const latencyMs = Number(values['latency-ms']);
const workers = Number(values.workers);
const limit = Number(values.limit);
if (![total, arrayCount, latencyMs, workers, limit].every((n) => Number.isInteger(n) && n > 0) || total % arrayCount !== 0) {
  process.stderr.write('bench:operator: --volumes, --arrays, --latency-ms, --workers and --limit must be positive integers, --volumes a multiple of --arrays\n');
  process.exit(2);
}
const perArray = total / arrayCount;
const createMs = latencyMs * SCALED_LATENCY.factors.createVolume;

const begun = Date.now();
const say = (line: string) => process.stdout.write(`[${((Date.now() - begun) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);

const controlPlane = await startControlPlane({ progress: () => {} });
say(`control plane up (${controlPlane.server})`);
const arrays: SimArray[] = [];
try {
  const latency = { ...SCALED_LATENCY, medianMs: latencyMs };
  for (let i = 0; i < arrayCount; i++) arrays.push(await startSimArray(`bench-${String.fromCharCode(97 + i)}`, { seed: i + 1, latency, maxConcurrentOperations: 64 }));
  const custom = controlPlane.kubeConfig.makeApiClient(CustomObjectsApi);
  for (const array of arrays) {
    await custom.createClusterCustomObject({
      group: 'trellis.dev',
      version: 'v1alpha1',
      plural: 'backends',
      body: { apiVersion: 'trellis.dev/v1alpha1', kind: 'Backend', metadata: { name: array.name }, spec: { driver: 'sim', config: { endpoint: array.url }, limits: { maxConcurrentOperations: limit } } },
    });
  }
  say(`${arrayCount} simulated arrays, latency median ${latencyMs} ms per operation (creates ${createMs} ms), Backend limit ${limit} each; ${total} Volumes per mode; operator --workers ${workers}`);

  const results: Partial<Record<ConcurrencyMode, { seconds: number; peaks: number[] }>> = {};
  for (const mode of ['hierarchical', 'serial'] as const) {
    const namespace = `bench-${mode}`;
    await controlPlane.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
    const operator = await startOperator({ kubeconfigPath: controlPlane.kubeconfigPath, concurrency: mode, workers, logLevel: 'warn', extraFlags: [`--namespaces=${namespace}`] });
    try {
      await operator.ready();
      // Let the fresh operator probe every Backend before the clock starts.
      await new Promise((r) => setTimeout(r, 2_000));
      for (const array of arrays) array.server!.state.resetStats();
      const start = performance.now();
      await createBurst(controlPlane.kubeConfig, { namespace, perBackend: perArray, backends: arrays.map((a) => a.name) });
      await waitAvailable(controlPlane.kubeConfig, namespace, total, { timeoutMs: 3_600_000, progress: (n) => say(`  ${mode}: ${n}/${total} Available`) });
      const seconds = (performance.now() - start) / 1000;
      results[mode] = { seconds, peaks: arrays.map((a) => a.server!.state.stats().peakInFlight) };
      say(`${mode}: ${total} Volumes Available in ${seconds.toFixed(1)} s (${(total / seconds).toFixed(1)} volumes/s); peak in flight per array ${JSON.stringify(results[mode]!.peaks)}`);
    } finally {
      await operator.stop();
    }
  }
  const { hierarchical, serial } = results as Required<typeof results>;
  const idealHierarchical = (Math.ceil(perArray / limit) * createMs) / 1000;
  const idealSerial = (total * createMs) / 1000;
  process.stdout.write(
    [
      '',
      `operator burst: ${total} Volumes over ${arrayCount} sim arrays, limit ${limit} each, array create latency ~${createMs} ms (scaled down)`,
      `  hierarchical  ${hierarchical.seconds.toFixed(1).padStart(7)} s   (storage-only ideal ${idealHierarchical.toFixed(1)} s)`,
      `  serial        ${serial.seconds.toFixed(1).padStart(7)} s   (storage-only ideal ${idealSerial.toFixed(1)} s)`,
      `  speed-up      ${(serial.seconds / hierarchical.seconds).toFixed(1).padStart(7)}x  (storage-only ideal ${(idealSerial / idealHierarchical).toFixed(0)}x; the rest is Kubernetes: finalizer, status and Event writes per Volume)`,
      '',
    ].join('\n'),
  );
} finally {
  await Promise.all(arrays.map((a) => a.stop()));
  await controlPlane.stop();
}
