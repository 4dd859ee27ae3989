// The upstream CSI conformance suite (csi-sanity, csi-test v5.6.0) against `trellis
// sim-array --csi-socket`, run as a separate process the way a user would start it. Only the
// Node service tests are skipped (the array is a controller plugin); every other skip must
// be one of the few csi-sanity 5.6.0 asks for features that CSI spec v1.12.0 lacks.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { createDriver } from '../../src/backends/registry.js';
import { ensureCsiProto, tempDir } from './fixtures.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const main = join(repo, 'src/cli/main.ts');

/** Skips csi-sanity may report besides the filtered Node tests, and why each is acceptable. */
const allowedSkips: Record<string, string> = {
  'ControllerGetVolumeHealth not supported': 'GET_VOLUME_HEALTH is CSI v1.13, not in the pinned v1.12.0 spec',
  'ControllerListVolumeHealth not supported': 'LIST_VOLUME_HEALTH is CSI v1.13, not in the pinned v1.12.0 spec',
  'SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported': 'a CSI v1.13 plugin capability, not in the pinned v1.12.0 spec',
};

/** Starts `trellis sim-array` and resolves once it printed its ready line. */
export async function startSimArrayProcess(args: string[]): Promise<{ child: ChildProcess; ready: { url: string; port: number; csiSocket?: string } }> {
  const child = spawn(process.execPath, ['--import', 'tsx', main, 'sim-array', ...args], {
    cwd: repo,
    env: { ...process.env, TRELLIS_LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`sim-array exited with ${String(code)} before it was ready`);
  });
  // Only the race below reads this; a later exit is not a failure.
  exited.catch(() => undefined);
  const ready = (async () => {
    for await (const line of lines) {
      const parsed = JSON.parse(line) as { ready?: boolean; url: string; port: number; csiSocket?: string };
      if (parsed.ready) return parsed;
    }
    throw new Error('sim-array closed stdout before it was ready');
  })();
  try {
    return { child, ready: await Promise.race([ready, exited]) };
  } catch (err) {
    // A start that failed must not leave the process running.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw err;
  }
}

export async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  return code;
}

/** How many specs match `focus`, by a dry run that contacts no plugin. */
async function countSpecs(sanity: string, socket: string, focus: string): Promise<number> {
  const { stdout } = await promisify(execFile)(sanity, [`-csi.endpoint=unix://${socket}`, '-ginkgo.dry-run', `-ginkgo.focus=${focus}`, '-ginkgo.no-color']);
  return Number(/Ran (\d+) of \d+ Specs/.exec(stdout)![1]);
}

describe('csi-sanity against trellis sim-array --csi-socket @integration', function () {
  // Building csi-sanity on a cold cache takes about 30 s of Go build.
  this.timeout(15 * 60_000);
  let dir: string;
  let child: ChildProcess | undefined;

  before(async () => {
    await ensureCsiProto();
    dir = await tempDir('csi-sanity');
  });
  after(async () => {
    if (child) await stop(child);
    await rm(dir, { recursive: true, force: true });
  });

  it('passes every Identity, Controller and GroupController spec; only Node tests are skipped', async () => {
    const { stdout: built } = await promisify(execFile)('bash', [join(repo, 'hack/build-tools.sh'), 'csi-sanity'], { cwd: repo, timeout: 14 * 60_000 });
    const sanity = built.trim().split('\n').pop()!;

    const socket = join(dir, 'csi.sock');
    const started = await startSimArrayProcess(['--port', '0', '--csi-socket', socket, '--state', join(dir, 'state.json'), '--latency-median-ms', '1', '--latency-sigma', '0.5']);
    child = started.child;
    expect(started.ready.csiSocket).to.equal(socket);

    const mutable = join(dir, 'mutable.yaml');
    await writeFile(mutable, 'iops: "3000"\nthroughput: "125"\n');
    const args = [
      `-csi.endpoint=unix://${socket}`,
      `-csi.controllerendpoint=unix://${socket}`,
      '-ginkgo.skip=Node Service',
      `-csi.testvolumemutableparameters=${mutable}`,
      '-csi.testnodevolumeattachlimit',
      `-csi.mountdir=${join(dir, 'mnt')}`,
      `-csi.stagingdir=${join(dir, 'staging')}`,
      '-ginkgo.no-color',
      '-ginkgo.v',
    ];
    const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
      execFile(sanity, args, { cwd: dir, maxBuffer: 64 * 1024 * 1024, timeout: 10 * 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: `${stdout}\n${stderr}` });
      });
    });
    const summary = /(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped/.exec(result.output);
    const ran = /Ran (\d+) of (\d+) Specs/.exec(result.output);
    expect(summary, result.output.slice(-4000)).not.to.equal(null);
    const [passed, failed, , skipped] = summary!.slice(1).map(Number) as [number, number, number, number];
    expect(failed, result.output.slice(-8000)).to.equal(0);
    expect(result.code).to.equal(0);

    const reasons = [...result.output.matchAll(/^\s+\[SKIPPED\] (?!in \[)(.+)$/gm)].map((m) => m[1]!.trim());
    for (const reason of reasons) expect(allowedSkips, `unexpected skip: ${reason}`).to.have.property(reason);
    // Every other skip is a spec filtered out by -ginkgo.skip: exactly the Node service specs.
    const nodeSpecs = await countSpecs(sanity, socket, 'Node Service');
    expect(nodeSpecs).to.be.greaterThan(0);
    expect(skipped).to.equal(nodeSpecs + reasons.length);
    expect(Number(ran![1])).to.equal(passed);
    expect(passed).to.be.at.least(71);
    process.stdout.write(`      csi-sanity: ${passed} passed, ${failed} failed, ${skipped} skipped (${nodeSpecs} Node service, ${reasons.length} CSI v1.13-only)\n`);

    expect(await stop(child)).to.equal(0);
    child = undefined;
  });
});

describe('trellis sim-array command', function () {
  this.timeout(30_000);

  it('serves the HTTP API on the port it prints, and stops cleanly on SIGTERM', async () => {
    const dir = await tempDir('sim-cli');
    const { child, ready } = await startSimArrayProcess(['--port', '0', '--state', join(dir, 'state.json'), '--capacity', '10Gi', '--no-consistency-groups']);
    try {
      const array = (await (await fetch(`${ready.url}/api/array`)).json()) as { capacityBytes: number; nativeConsistencyGroups: boolean };
      expect(array).to.deep.include({ capacityBytes: 10 * 2 ** 30, nativeConsistencyGroups: false });
    } finally {
      expect(await stop(child)).to.equal(0);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stops on SIGTERM even while a CSI call is stalled inside the array', async () => {
    await ensureCsiProto();
    const dir = await tempDir('sim-cli-stall');
    const socket = join(dir, 'csi.sock');
    const { child, ready } = await startSimArrayProcess(['--port', '0', '--state', join(dir, 'state.json'), '--csi-socket', socket, '--latency-median-ms', '0']);
    const driver = createDriver('csi', { endpoint: `unix://${socket}`, timeoutMs: 60_000 });
    const ctl = new AbortController();
    try {
      await fetch(`${ready.url}/admin/faults`, { method: 'POST', body: JSON.stringify({ createVolume: { stallMs: 600_000 } }) });
      const stalled = driver.createVolume({ name: 'stalled', capacityBytes: 1024 * 1024 }, ctl.signal).catch((err: unknown) => err);
      while (((await (await fetch(`${ready.url}/admin/stats`)).json()) as { inFlight: number }).inFlight === 0) await new Promise((r) => setTimeout(r, 5));
      expect(await stop(child)).to.equal(0);
      expect(await stalled).to.be.instanceOf(Error);
    } finally {
      ctl.abort();
      if (child.exitCode === null) child.kill('SIGKILL');
      await driver.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('--csi-topology advertises VOLUME_ACCESSIBILITY_CONSTRAINTS and --csi-quirks plays real plugins', async () => {
    await ensureCsiProto();
    const dir = await tempDir('sim-cli-topology');
    const socket = join(dir, 'csi.sock');
    const { child } = await startSimArrayProcess(['--port', '0', '--csi-socket', socket, '--csi-topology', 'zone=z1', '--csi-quirks', 'unknownVolumeAbnormal', '--latency-median-ms', '0']);
    const driver = createDriver('csi', { endpoint: `unix://${socket}` });
    try {
      expect((await driver.probe(new AbortController().signal)).capabilities.topology).to.equal(true);
      const vol = await driver.createVolume({ name: 'zoned', capacityBytes: 1024 * 1024 }, new AbortController().signal);
      expect(vol.accessibleTopology).to.deep.equal([{ zone: 'z1' }]);
      await driver.deleteVolume(vol.handle, new AbortController().signal);
      const err = await driver.getVolume(vol.handle, new AbortController().signal).catch((e: unknown) => e);
      expect(err).to.have.property('reason', 'notFound');
    } finally {
      await driver.close();
      expect(await stop(child)).to.equal(0);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses an unknown flag with usage and exit code 2', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', main, 'sim-array', '--prot', '1'], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).to.equal(2);
    expect(stderr).to.match(/--prot/);
    expect(stderr).to.match(/usage: trellis sim-array/);
  });
});
