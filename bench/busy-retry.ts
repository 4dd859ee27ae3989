// Busy retries and job completion against the simulated array under 10x load, side by side
// in one run (issue 18). The array runs `arrayLimit` operations at once with a flat latency;
// `callers` (10x that) each create volumes one after the other through the core's
// BackendLimiter. Three ways to call it:
// - before: the old sim driver, reproduced here only: busy answers retried inside the call
//   (so inside the limiter slot) with jittered backoff, and the job polled at 10 ms, 1.5x
//   longer each time;
// - in-slot retry, long-poll: today's driver (long-polled jobs) under the old in-call retry,
//   to tell the two changes apart;
// - after: today's driver answers busy at once; the caller leaves the slot, waits the
//   answer's retryAfterMs and queues again (a stand-in for the core's runner).
// - after, jittered: the same, waiting 0.5-1.5x retryAfterMs (a policy the runner may pick);
// - after + the core's adaptive limit: the same under `limits.adaptive`, which learns the
//   array's concurrency from its busy answers (src/core/adaptive-limit.ts).
// For each: throughput, the array's busy refusals (/admin/stats rejectedBusy), and the p50
// latency of an accepted operation as the array ran it (its oplog) and as the caller saw
// it end. The ideal makespan is ceil(ops / arrayLimit) * latency. A second table is the
// issue's "completion seen late" case alone: 20 in flight, no refusals.
// The array runs as its own process (`trellis sim-array`), as a real one would: sharing the
// callers' event loop would add its own delays to what the callers see.
// Flags: --quick (fewer operations), --latency-ms N, --retry-after-ms N.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { realClock, sleep } from '../src/core/clock.js';
import { BackendLimiter } from '../src/core/limiter.js';
import { DriverError } from '../src/backends/errors.js';
import { createDriver } from '../src/backends/registry.js';
import type { OplogEntry } from '../src/backends/sim/oplog.js';
import type { ArrayStats } from '../src/backends/sim/state.js';

const quick = process.argv.includes('--quick');
function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const arrayLimit = 8;
const callers = arrayLimit * 10;
const perCaller = quick ? 2 : 4;
/** Each table row is the median of this many runs, interleaved with the other arms' (the machine's load drifts). */
const rounds = quick ? 1 : 3;
const latencyMs = flag('--latency-ms', 20);
const retryAfterMs = flag('--retry-after-ms', 50);
const MiB = 1024 * 1024;
const epochNow = () => performance.timeOrigin + performance.now();

type Create = (name: string) => Promise<void>;

/** The old drivers' in-call busy retry, kept only to measure it: the hint (else 20 ms doubling to 2 s), jittered. */
async function retryInCall<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof DriverError && err.busy)) throw err;
      const wait = err.retryAfterMs ?? Math.min(2_000, 20 * 2 ** Math.min(attempt, 20));
      await sleep(realClock, wait * (0.5 + Math.random()));
    }
  }
}

/** The old sim driver's create: one POST (busy thrown typed), then the job polled at 10 ms, 1.5x longer each time. */
async function oldCreate(base: string, name: string): Promise<void> {
  const jobId = await retryInCall(async () => {
    const res = await fetch(`${base}/api/volumes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, capacityBytes: MiB }) });
    const body = (await res.json()) as { jobId?: string; error?: { code: string; message: string; retryAfterMs?: number } };
    if (res.ok) return body.jobId!;
    const reason = res.status === 429 || body.error?.code === 'pending' ? 'busy' : 'invalid';
    throw new DriverError(reason, `sim array: ${body.error?.message ?? res.status}`, body.error?.retryAfterMs === undefined ? {} : { retryAfterMs: body.error.retryAfterMs });
  });
  for (let wait = 10; ; wait = Math.min(500, wait * 1.5)) {
    await sleep(realClock, wait);
    const job = (await (await fetch(`${base}/api/jobs/${jobId}`)).json()) as { state: string; error?: { message: string } };
    if (job.state === 'succeeded') return;
    if (job.state === 'failed') throw new Error(`create ${name}: ${job.error?.message}`);
  }
}

interface Arm {
  title: string;
  /** Runs one create of `name` as this arm's caller would, under `limiter`. */
  make(limiter: BackendLimiter, url: string): Create;
}

/** The after arm's caller loop: out of the slot on busy, wait `wait(retryAfterMs)`, queue again. */
function outOfSlot(wait: (retryAfterMs: number) => number): Arm['make'] {
  return (limiter, url) => {
    const driver = createDriver('sim', { endpoint: url });
    const never = new AbortController().signal;
    return async (name) => {
      for (;;) {
        const outcome = await limiter.run('array', 'createVolume', () => driver.createVolume({ name, capacityBytes: MiB }, never)).catch((err: unknown) => err);
        if (!(outcome instanceof DriverError && outcome.busy)) {
          if (outcome instanceof Error) throw outcome;
          return;
        }
        await sleep(realClock, wait(outcome.retryAfterMs ?? 0));
      }
    };
  };
}

const arms: Arm[] = [
  {
    title: 'before: in-slot retry, 10 ms x1.5 polls',
    make: (limiter, url) => (name) => limiter.run('array', 'createVolume', () => oldCreate(url, name)),
  },
  {
    title: 'in-slot retry, long-poll',
    make: (limiter, url) => {
      const driver = createDriver('sim', { endpoint: url });
      const never = new AbortController().signal;
      return (name) => limiter.run('array', 'createVolume', () => retryInCall(() => driver.createVolume({ name, capacityBytes: MiB }, never))).then(() => undefined);
    },
  },
  { title: 'after: busy out of the slot, long-poll', make: outOfSlot((ms) => ms) },
  { title: 'after, jittered wait (0.5-1.5x)', make: outOfSlot((ms) => ms * (0.5 + Math.random())) },
  {
    title: 'after + the core\'s adaptive limit',
    make: (limiter, url) => {
      limiter.configure('array', { adaptive: true });
      return outOfSlot((ms) => ms)(limiter, url);
    },
  },
];

function p50(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

interface Result {
  ms: number;
  opsPerSec: number;
  rejectedBusy: number;
  arrayP50: number;
  seenP50: number;
}

interface ArrayProcess {
  url: string;
  stop(): Promise<void>;
}

/** Starts `trellis sim-array` and resolves once it printed its ready line. */
async function startArrayProcess(): Promise<ArrayProcess> {
  const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', main, 'sim-array', '--port', '0', '--retry-after-ms', String(retryAfterMs)], {
    env: { ...process.env, TRELLIS_LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  for await (const line of createInterface({ input: child.stdout })) {
    const ready = JSON.parse(line) as { ready?: boolean; url: string };
    if (ready.ready) {
      return {
        url: ready.url,
        stop: async () => {
          const exited = once(child, 'exit');
          child.kill('SIGTERM');
          await exited;
        },
      };
    }
  }
  throw new Error('sim-array exited before it was ready');
}

async function admin<T>(url: string, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${url}/admin/${path}`, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  if (!res.ok) throw new Error(`${method} /admin/${path}: ${res.status}`);
  return (await res.json()) as T;
}

let run = 0;

async function measure(array: ArrayProcess, arm: Arm, opts: { arrayLimit: number; slots: number; callers: number; perCaller: number }): Promise<Result> {
  const { url } = array;
  await admin(url, 'PATCH', 'config', { maxConcurrentOperations: opts.arrayLimit, latency: { medianMs: latencyMs, sigma: 0, factors: { createVolume: 1 } } });
  const before = (await admin<ArrayStats>(url, 'POST', 'reset-stats')).volumes;
  const limiter = new BackendLimiter();
  limiter.configure('array', { maxConcurrent: opts.slots });
  const create = arm.make(limiter, url);
  const seenAt = new Map<string, number>();
  const prefix = `r${++run}`;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: opts.callers }, async (_, c) => {
      for (let i = 0; i < opts.perCaller; i++) {
        const name = `${prefix}-c${c}-v${i}`;
        await create(name);
        seenAt.set(name, epochNow());
      }
    }),
  );
  const ms = performance.now() - start;
  const stats = await admin<ArrayStats>(url, 'GET', 'stats');
  const { entries } = await admin<{ entries: OplogEntry[] }>(url, 'GET', 'oplog');
  const ran = entries.filter((e) => e.op === 'createVolume' && e.outcome === 'ok');
  const ops = opts.callers * opts.perCaller;
  if (stats.volumes - before !== ops) throw new Error(`${arm.title}: ${stats.volumes - before} volumes made, ${ops} asked`);
  return {
    ms,
    opsPerSec: (ops / ms) * 1000,
    rejectedBusy: stats.rejectedBusy,
    arrayP50: p50(ran.map((e) => e.end - e.start)),
    seenP50: p50(ran.map((e) => seenAt.get(e.target.slice('name:'.length))! - e.start)),
  };
}

const header = '  arm                                        makespan   ops/s  x ideal  busy refusals  p50 array  p50 seen  seen/array';

function row(title: string, r: Result, ideal: number): string {
  return (
    `  ${title.padEnd(42)} ${`${r.ms.toFixed(0)} ms`.padStart(8)} ${r.opsPerSec.toFixed(0).padStart(7)} ${(r.ms / ideal).toFixed(2).padStart(8)} ` +
    `${String(r.rejectedBusy).padStart(14)} ${`${r.arrayP50.toFixed(1)} ms`.padStart(10)} ${`${r.seenP50.toFixed(1)} ms`.padStart(9)} ${(r.seenP50 / r.arrayP50).toFixed(2).padStart(11)}`
  );
}

const array = await startArrayProcess();
try {
  const ops = callers * perCaller;
  const ideal = Math.ceil(ops / arrayLimit) * latencyMs;
  console.log(
    `busy retries: ${callers} callers x ${perCaller} creates = ${ops} operations on an array that runs ${arrayLimit} at once ` +
      `(flat ${latencyMs} ms, Retry-After ${retryAfterMs} ms); ideal makespan ${ideal} ms`,
  );
  const table = async (list: Arm[], opts: { arrayLimit: number; slots: number; callers: number; perCaller: number }, ideal: number) => {
    const runs = new Map<Arm, Result[]>(list.map((arm) => [arm, []]));
    for (let r = 0; r < rounds; r++) for (const arm of list) runs.get(arm)!.push(await measure(array, arm, opts));
    console.log(header);
    for (const arm of list) {
      const results = runs.get(arm)!;
      const med = (f: (r: Result) => number) => p50(results.map(f));
      const r: Result = { ms: med((x) => x.ms), opsPerSec: med((x) => x.opsPerSec), rejectedBusy: med((x) => x.rejectedBusy), arrayP50: med((x) => x.arrayP50), seenP50: med((x) => x.seenP50) };
      console.log(row(arm.title, r, ideal));
    }
  };
  for (const slots of [callers, arrayLimit * 2]) {
    console.log(`\nBackendLimiter maxConcurrent ${slots} (the array takes ${arrayLimit}); median of ${rounds} runs:`);
    await table(arms, { arrayLimit, slots, callers, perCaller }, ideal);
  }

  // One in flight shows the protocol's own overhead; 20 the issue's case.
  for (const [inFlight, each] of [
    [1, quick ? 10 : 40],
    [20, quick ? 2 : 5],
  ] as const) {
    const lateIdeal = each * latencyMs;
    console.log(`\ncompletion seen late: ${inFlight} caller(s) x ${each} creates, array limit ${inFlight * 2} (no refusals), flat ${latencyMs} ms; ideal ${lateIdeal} ms; median of ${rounds} runs`);
    await table([arms[0]!, arms[2]!], { arrayLimit: inFlight * 2, slots: inFlight, callers: inFlight, perCaller: each }, lateIdeal);
  }
} finally {
  await array.stop();
}
