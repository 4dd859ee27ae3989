// Starting and watching `trellis operator` child processes (test/support/operator-child.ts)
// in integration tests. Every process started is killed by `stopAll` (call it in an
// afterEach), so no test leaves one behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from '../../src/cli/local-cluster.js';

export interface WriteRecord {
  pid: number;
  at: number;
  namespace: string;
  name: string;
  resourceVersion?: string;
  started?: boolean;
  aborted?: boolean;
  cleaned?: boolean;
  reconciled?: boolean;
  secretKeys?: number;
}

export interface OperatorProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly metricsUrl: string;
  readonly probesUrl: string;
  /** Lines the process printed (JSON logs), stdout and stderr together. */
  readonly output: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly exitedAt: () => number | undefined;
  /** Its writes, from the shared write log. */
  writes(): WriteRecord[];
  metric(name: string, labels?: Record<string, string>): Promise<number | undefined>;
}

export class OperatorProcesses {
  private readonly started: OperatorProcess[] = [];
  private dir?: string;

  get writeLog(): string {
    this.dir ??= mkdtempSync(join(tmpdir(), 'trellis-operator-test-'));
    return join(this.dir, 'writes.jsonl');
  }

  /** Every write any process logged, in order. */
  allWrites(): WriteRecord[] {
    if (!existsSync(this.writeLog)) return [];
    return readFileSync(this.writeLog, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as WriteRecord);
  }

  async start(kubeconfigPath: string, flags: string[], env: Record<string, string> = {}): Promise<OperatorProcess> {
    const [metricsPort, probesPort] = await freePorts(2);
    const args = ['--import', 'tsx', join(import.meta.dirname, 'operator-child.ts'), `--kubeconfig=${kubeconfigPath}`, `--metrics-bind-address=127.0.0.1:${metricsPort}`, `--health-probe-bind-address=127.0.0.1:${probesPort}`, '--log-level=info', ...flags];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TRELLIS_LOG_LEVEL: 'info', TEST_WRITE_LOG: this.writeLog, ...env } });
    const output: string[] = [];
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream.setEncoding('utf8').on('data', (chunk: string) => {
        const lines = (pending + chunk).split('\n');
        pending = lines.pop() ?? '';
        output.push(...lines);
      });
    }
    let exitedAt: number | undefined;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => {
        exitedAt = Date.now();
        resolve({ code, signal });
      }),
    );
    const pid = child.pid!;
    const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    const operator: OperatorProcess = {
      child,
      pid,
      metricsUrl,
      probesUrl: `http://127.0.0.1:${probesPort}`,
      output,
      exited,
      exitedAt: () => exitedAt,
      writes: () => this.allWrites().filter((w) => w.pid === pid),
      metric: async (name, labels = {}) => {
        const text = await (await fetch(metricsUrl)).text();
        return metricValue(text, name, labels);
      },
    };
    this.started.push(operator);
    return operator;
  }

  /** SIGKILLs every process still running and removes the write log. */
  async stopAll(): Promise<void> {
    for (const operator of this.started.splice(0)) {
      if (operator.exitedAt() === undefined) {
        operator.child.kill('SIGKILL');
        await operator.exited;
      }
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}

/** The sum of a metric's samples whose labels include `labels` (Prometheus text format). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const sample = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => sample[k] === v)) total = (total ?? 0) + Number(match[3]);
  }
  return total;
}

/** GET `url`; the status, or 0 when nothing answers. */
export async function httpStatus(url: string): Promise<number> {
  try {
    return (await fetch(url)).status;
  } catch {
    return 0;
  }
}

/** Polls every 100 ms until `condition` holds; resolves with the time it first held. */
export async function when(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return Date.now();
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** True when the process reports that it leads. */
export async function leads(operator: OperatorProcess): Promise<boolean> {
  return (await operator.metric('leader_election_master_status').catch(() => undefined)) === 1;
}
