// `trellis sim-array`: runs the simulated storage array as its own process: the HTTP API,
// and the CSI controller on a unix socket with --csi-socket. When it is ready it prints one
// JSON line on stdout ({"ready": true, "url", "port", "csiSocket"?}; log lines also go to
// stdout and carry "level") for scripts and tests to read; it
// stops cleanly on SIGINT/SIGTERM and exits 70 at once when a crash fault fires.
import { parseArgs } from 'node:util';
import { quantityUnits } from '../../api/quantity.js';
import { SimArrayServer } from '../../backends/sim/array.js';
import { SimCsiServer, type SimCsiQuirks } from '../../backends/sim/csi-server.js';
import { defaultLatency } from '../../backends/sim/random.js';

const usage = `usage: trellis sim-array [options]

  --port N                      HTTP port (0 picks a free one; default 8080)
  --host ADDR                   address to listen on (default 127.0.0.1)
  --state FILE                  persist state to FILE (atomic writes) and reload it on start
  --csi-socket PATH             also serve CSI Identity/Controller/GroupController on this unix socket
  --csi-topology K=V[,K=V]      the one topology segment its volumes are accessible from
                                (advertises VOLUME_ACCESSIBILITY_CONSTRAINTS)
  --csi-quirks Q[,Q]            answer like some real plugins: unknownVolumeAbnormal,
                                ignoreParametersOnNameMatch, oversizeOutOfRange
  --capacity SIZE               total capacity, bytes or 500Gi/2Ti (default 1Ti)
  --max-concurrent-operations N operations beyond N in flight get 429 busy (default 16)
  --retry-after-ms MS           wait suggested to refused clients (default 50)
  --busy-status 429|503         HTTP status of a busy answer (default 429)
  --latency-median-ms MS        median operation latency (default 20; 0 disables)
  --latency-sigma S             log-normal tail: 0 constant, 1 long (default 0.8)
  --latency-max-ms MS           cap on one operation's latency (default 10000)
  --seed N                      seed of latencies, faults and data (default 1)
  --no-consistency-groups       no native group snapshots
  --initial-data-bytes SIZE     seeded data in each new volume (default 1Mi)
  --token TOKEN                 require "Authorization: Bearer TOKEN" on /api
`;

/** Bytes for `10Gi`, `500M` or a plain integer. */
export function parseSize(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(text.trim());
  if (!m) throw new Error(`${flag}: "${text}" is not a size (e.g. 1048576, 10Gi, 500M)`);
  return Math.round(Number(m[1]) * quantityUnits[m[2] ?? '']!);
}

function int(text: string | undefined, flag: string, fallback: number, min = 0): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag}: "${text}" must be an integer >= ${min}`);
  return n;
}

const quirkNames: (keyof SimCsiQuirks)[] = ['unknownVolumeAbnormal', 'ignoreParametersOnNameMatch', 'oversizeOutOfRange'];

function topology(text: string): Record<string, string> {
  const segment: Record<string, string> = {};
  for (const pair of text.split(',')) {
    const m = /^([^=]+)=(.+)$/.exec(pair.trim());
    if (!m) throw new Error(`--csi-topology: "${pair}" is not KEY=VALUE`);
    segment[m[1]!] = m[2]!;
  }
  return segment;
}

function quirks(text: string): SimCsiQuirks {
  const out: SimCsiQuirks = {};
  for (const name of text.split(',').map((q) => q.trim())) {
    if (!quirkNames.includes(name as keyof SimCsiQuirks)) throw new Error(`--csi-quirks: unknown quirk "${name}" (known: ${quirkNames.join(', ')})`);
    out[name as keyof SimCsiQuirks] = true;
  }
  return out;
}

function busyStatus(text: string | undefined): 429 | 503 {
  if (text === undefined || text === '429') return 429;
  if (text === '503') return 503;
  throw new Error(`--busy-status: "${text}" must be 429 or 503`);
}

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        state: { type: 'string' },
        'csi-socket': { type: 'string' },
        'csi-topology': { type: 'string' },
        'csi-quirks': { type: 'string' },
        capacity: { type: 'string' },
        'max-concurrent-operations': { type: 'string' },
        'retry-after-ms': { type: 'string' },
        'busy-status': { type: 'string' },
        'latency-median-ms': { type: 'string' },
        'latency-sigma': { type: 'string' },
        'latency-max-ms': { type: 'string' },
        seed: { type: 'string' },
        'no-consistency-groups': { type: 'boolean' },
        'initial-data-bytes': { type: 'string' },
        token: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`trellis sim-array: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }

  let array: SimArrayServer;
  let csi: SimCsiServer | undefined;
  try {
    const sigma = values['latency-sigma'] === undefined ? defaultLatency.sigma : Number(values['latency-sigma']);
    if (!(sigma >= 0)) throw new Error(`--latency-sigma: "${values['latency-sigma']}" must be a number >= 0`);
    const csiOptions = {
      socketPath: values['csi-socket'] ?? '',
      ...(values['csi-topology'] ? { topology: topology(values['csi-topology']) } : {}),
      ...(values['csi-quirks'] ? { quirks: quirks(values['csi-quirks']) } : {}),
    };
    array = await SimArrayServer.start({
      port: int(values.port, '--port', 8080),
      host: values.host ?? '127.0.0.1',
      ...(values.state ? { statePath: values.state } : {}),
      ...(values.token ? { token: values.token } : {}),
      capacityBytes: values.capacity ? parseSize(values.capacity, '--capacity') : 1024 ** 4,
      maxConcurrentOperations: int(values['max-concurrent-operations'], '--max-concurrent-operations', 16, 1),
      retryAfterMs: int(values['retry-after-ms'], '--retry-after-ms', 50),
      busyStatus: busyStatus(values['busy-status']),
      latency: {
        ...defaultLatency,
        medianMs: int(values['latency-median-ms'], '--latency-median-ms', 20),
        sigma,
        maxMs: int(values['latency-max-ms'], '--latency-max-ms', defaultLatency.maxMs),
      },
      seed: int(values.seed, '--seed', 1),
      nativeConsistencyGroups: !values['no-consistency-groups'],
      initialDataBytes: values['initial-data-bytes'] ? parseSize(values['initial-data-bytes'], '--initial-data-bytes') : 1024 * 1024,
      onCrash: () => {
        csi?.crash();
        process.stderr.write('trellis sim-array: crashed (injected fault)\n');
        process.exit(70);
      },
    });
    if (values['csi-socket']) csi = await SimCsiServer.start(array.state, csiOptions).catch(async (err: unknown) => {
      await array.close();
      throw err;
    });
  } catch (err) {
    process.stderr.write(`trellis sim-array: ${(err as Error).message}\n`);
    return 1;
  }

  process.stdout.write(`${JSON.stringify({ ready: true, url: array.url, port: array.port, ...(csi ? { csiSocket: csi.socketPath } : {}) })}\n`);

  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  // The array first: closing it ends stalled operations, which the CSI server's graceful
  // shutdown would otherwise wait for forever.
  await array.close();
  await csi?.close();
  return 0;
}
