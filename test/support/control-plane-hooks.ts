// One real control plane per test run, shared by every @integration test, each test in a
// namespace of its own.
//
// Guarantees:
// - Nothing starts until a test asks (a unit-only run never builds or starts anything).
// - Concurrent first callers share one start; a failed start is reported to each caller
//   and retried by the next one.
// - As a mocha root hook plugin (.mocharc.json `require`), it stops the control plane after
//   the run and fails the run if any of its processes is still alive. Imported directly,
//   the harness's process-exit hooks still stop everything when mocha exits.
import { CoreV1Api } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import {
  CONTROL_PLANE_START_TIMEOUT_MS,
  startControlPlane,
  type ControlPlane,
} from '../../src/cli/local-cluster.js';

let shared: Promise<ControlPlane> | undefined;

/** The run's control plane, started on first use (allow CONTROL_PLANE_START_TIMEOUT_MS). */
export function sharedControlPlane(): Promise<ControlPlane> {
  if (!shared) {
    shared = startControlPlane().catch((err: unknown) => {
      shared = undefined;
      throw err;
    });
  }
  return shared;
}

/**
 * Registers a `before` hook (with a timeout long enough for a cold build) that starts or
 * joins the shared control plane; call inside a describe and use the returned getter in tests.
 */
export function useSharedControlPlane(): () => ControlPlane {
  let controlPlane: ControlPlane | undefined;
  before(async function () {
    this.timeout(CONTROL_PLANE_START_TIMEOUT_MS);
    controlPlane = await sharedControlPlane();
  });
  return () => {
    if (!controlPlane) throw new Error('the shared control plane is not started (did its before hook fail?)');
    return controlPlane;
  };
}

/** Creates a namespace no other test uses and returns its name. */
export async function testNamespace(prefix = 'test'): Promise<string> {
  const controlPlane = await sharedControlPlane();
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  await controlPlane.kubeConfig.makeApiClient(CoreV1Api).createNamespace({
    body: { metadata: { name, labels: { 'trellis.dev/test': 'true' } } },
  });
  return name;
}

/** PIDs among `pids` that still run, plus any process whose command line names `dataDir`. */
export function leftoverProcesses(pids: number[], dataDir: string): number[] {
  const left = new Set<number>();
  for (const pid of pids) {
    if (spawnSync('ps', ['-o', 'pid=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim()) left.add(pid);
  }
  for (const line of spawnSync('pgrep', ['-f', dataDir], { encoding: 'utf8' }).stdout.split('\n')) {
    if (line.trim()) left.add(Number(line.trim()));
  }
  return [...left].sort((a, b) => a - b);
}

/** Stops the shared control plane, if one was started, and returns what it left running. */
export async function stopSharedControlPlane(): Promise<number[]> {
  if (!shared) return [];
  const starting = shared;
  shared = undefined;
  let controlPlane: ControlPlane;
  try {
    controlPlane = await starting;
  } catch {
    return [];
  }
  const pids = controlPlane.pids();
  await controlPlane.stop();
  return leftoverProcesses(pids, controlPlane.dataDir);
}

export const mochaHooks = {
  async afterAll(this: Mocha.Context) {
    this.timeout(60_000);
    const left = await stopSharedControlPlane();
    if (left.length > 0) throw new Error(`control plane processes still running after stop: pids ${left.join(', ')}`);
  },
};
