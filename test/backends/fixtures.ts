// Fixtures that start real backends for the driver tests: a sim array (HTTP, optionally
// CSI on a unix socket) on a free port with a state file in a temp dir, and a hostpath root.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { HostpathDriver } from '../../src/backends/hostpath/driver.js';
import { createDriver } from '../../src/backends/registry.js';
import { SimArrayServer, type SimArrayServerOptions } from '../../src/backends/sim/array.js';
import { SimCsiServer, type SimCsiServerOptions } from '../../src/backends/sim/csi-server.js';
import type { ContractFixture } from './contract.js';

const fetchProto = fileURLToPath(new URL('../../hack/tools/csi-spec/fetch-proto.sh', import.meta.url));

/**
 * Fills the tools cache with csi.proto (the driver never fetches it itself); for before
 * hooks, which need a generous timeout the first time (a Go module download).
 */
export async function ensureCsiProto(): Promise<void> {
  if (process.env.TRELLIS_CSI_PROTO) return;
  await promisify(execFile)('bash', [fetchProto], { timeout: 120_000 });
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `trellis-${prefix}-`));
}

export async function startArray(options: SimArrayServerOptions = {}, dir?: string): Promise<{ array: SimArrayServer; dir: string }> {
  const d = dir ?? (await tempDir('sim'));
  const array = await SimArrayServer.start({
    port: 0,
    statePath: join(d, 'state.json'),
    retryAfterMs: 5,
    latency: { medianMs: 0, sigma: 0, maxMs: 1000, factors: {} },
    ...options,
  });
  return { array, dir: d };
}

/** Busy and stall hooks over an array's own state, shared by the sim and csi fixtures. */
function arrayHooks(array: SimArrayServer): Pick<ContractFixture, 'busy' | 'stallCreates'> {
  const s = array.state;
  return {
    busy: async () => {
      // Fill the array's only slot with a probe that stalls until released.
      const limit = s.options.maxConcurrentOperations;
      const before = s.stats().rejectedBusy;
      s.configure({ maxConcurrentOperations: 1 });
      s.setFault('getArray', { stallMs: 60_000 });
      const holder = s.getArray().catch(() => undefined);
      s.setFault('getArray', {});
      return {
        refusals: async () => s.stats().rejectedBusy - before,
        release: async () => {
          s.configure({ maxConcurrentOperations: limit });
          s.abortStalls();
          await holder;
        },
      };
    },
    stallCreates: async () => {
      s.setFault('createVolume', { stallMs: 60_000 });
      return async () => {
        s.setFault('createVolume', {});
        s.abortStalls();
      };
    },
  };
}

export async function simFixture(): Promise<ContractFixture> {
  const { array, dir } = await startArray();
  const driver = createDriver('sim', { endpoint: array.url });
  return {
    driver,
    ...arrayHooks(array),
    teardown: async () => {
      await array.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The csi driver against the sim array's CSI socket. `server` sets the CSI server's options
 * (quirks, topology), `config` adds driver config; `plain` leaves out the busy and stall
 * hooks, as for a CSI plugin the test cannot reach into.
 */
export async function csiFixture(
  opts: { server?: Omit<SimCsiServerOptions, 'socketPath'>; config?: Record<string, unknown>; plain?: boolean; array?: SimArrayServerOptions } = {},
): Promise<ContractFixture & { array: SimArrayServer; socket: string }> {
  const { array, dir } = await startArray(opts.array);
  const socket = join(dir, 'csi.sock');
  const csi = await SimCsiServer.start(array.state, { socketPath: socket, ...opts.server });
  const driver = createDriver('csi', { endpoint: `unix://${socket}`, timeoutMs: 30_000, ...opts.config });
  return {
    driver,
    array,
    socket,
    ...(opts.plain ? {} : arrayHooks(array)),
    teardown: async () => {
      csi.crash();
      await csi.close();
      await array.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function hostpathFixture(): Promise<ContractFixture & { root: string }> {
  const root = await tempDir('hostpath');
  // While `busy` holds, every try of a create fails as a busy filesystem would.
  let busy = false;
  let refused = 0;
  const driver = new HostpathDriver(
    { root },
    {
      beforeTry: (call) => {
        if (!busy || call !== 'createVolume') return;
        refused++;
        throw Object.assign(new Error(`EBUSY: resource busy or locked (injected into ${call})`), { code: 'EBUSY' });
      },
    },
  );
  return {
    driver,
    root,
    busy: async () => {
      busy = true;
      const before = refused;
      return {
        refusals: async () => refused - before,
        release: async () => {
          busy = false;
        },
      };
    },
    teardown: () => rm(root, { recursive: true, force: true }),
  };
}
