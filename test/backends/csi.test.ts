// The csi driver beyond the shared contract: how gRPC codes map to typed errors, and
// group snapshots only where the plugin advertises them.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { csiError } from '../../src/backends/csi/driver.js';
import { cachedCsiProtoPath, resolveCsiProto } from '../../src/backends/csi/proto.js';
import type { DriverErrorReason } from '../../src/backends/errors.js';
import { snapshotGroup } from '../../src/backends/driver.js';
import { createDriver } from '../../src/backends/registry.js';
import { csiFixture, ensureCsiProto, tempDir } from './fixtures.js';
import { expectDriverError } from './contract.js';
import { FakeClock, settle } from '../../src/core/testing.js';

const never = new AbortController().signal;
const MiB = 1024 * 1024;

function serviceError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

describe('csi driver', () => {
  describe('gRPC codes to typed errors', () => {
    const table: [grpc.status, string, DriverErrorReason, 'retryable' | 'terminal'][] = [
      [grpc.status.UNAVAILABLE, 'connection refused', 'unavailable', 'retryable'],
      [grpc.status.RESOURCE_EXHAUSTED, 'too many requests in flight', 'busy', 'retryable'],
      [grpc.status.ABORTED, 'an operation is pending for volume v1', 'busy', 'retryable'],
      [grpc.status.DEADLINE_EXCEEDED, 'deadline exceeded', 'timeout', 'retryable'],
      [grpc.status.INVALID_ARGUMENT, 'name is required', 'invalid', 'terminal'],
      [grpc.status.OUT_OF_RANGE, 'capacity too large', 'invalid', 'terminal'],
      [grpc.status.NOT_FOUND, 'volume v1 not found', 'notFound', 'terminal'],
      [grpc.status.ALREADY_EXISTS, 'volume "a" exists with other parameters', 'alreadyExists', 'terminal'],
      [grpc.status.RESOURCE_EXHAUSTED, 'insufficient capacity: 10 bytes requested', 'noSpace', 'terminal'],
    ];
    for (const [code, details, reason, kind] of table) {
      it(`${grpc.status[code]} "${details}" -> ${kind} ${reason}, keeping the plugin's message`, () => {
        const err = csiError(serviceError(code, details), 'CreateVolume');
        expect(err.reason).to.equal(reason);
        expect(err.kind).to.equal(kind);
        expect(err.message).to.equal(`csi CreateVolume: ${grpc.status[code]}: ${details}`);
      });
    }
  });

  describe('finding csi.proto', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await tempDir('csi-proto');
    });
    afterEach(() => rm(dir, { recursive: true, force: true }));

    it('TRELLIS_CSI_PROTO wins over the tools cache', async () => {
      const own = join(dir, 'own.proto');
      await writeFile(own, 'syntax = "proto3";');
      await mkdir(dirname(cachedCsiProtoPath({ TRELLIS_TOOLS_DIR: dir })), { recursive: true });
      await writeFile(cachedCsiProtoPath({ TRELLIS_TOOLS_DIR: dir }), 'syntax = "proto3";');
      expect(await resolveCsiProto({ TRELLIS_CSI_PROTO: own, TRELLIS_TOOLS_DIR: dir })).to.equal(own);
    });

    it('without TRELLIS_CSI_PROTO the tools cache under TRELLIS_TOOLS_DIR is used', async () => {
      const cached = join(dir, 'csi-spec-v1.12.0', 'csi.proto');
      await mkdir(dirname(cached), { recursive: true });
      await writeFile(cached, 'syntax = "proto3";');
      expect(await resolveCsiProto({ TRELLIS_TOOLS_DIR: dir })).to.equal(cached);
    });

    it('where neither exists it fails terminally, naming both places and the fetch command, and fetches nothing', async () => {
      const missing = join(dir, 'nope.proto');
      const err = await expectDriverError(resolveCsiProto({ TRELLIS_CSI_PROTO: missing, TRELLIS_TOOLS_DIR: dir }), 'invalid');
      expect(err.message).to.include(missing).and.to.include(join(dir, 'csi-spec-v1.12.0', 'csi.proto')).and.to.include('npm run csi-proto');
      expect(await readdir(dir)).to.deep.equal([]);
    });
  });

  /** A unix socket that accepts connections and says nothing, so no gRPC call ever completes. */
  async function muteSocket(): Promise<{ socket: string; close: () => Promise<void> }> {
    const dir = await tempDir('csi-mute');
    const socket = join(dir, 'csi.sock');
    const held: Socket[] = [];
    const mute = createServer((c) => void held.push(c));
    await new Promise<void>((resolve) => mute.listen(socket, resolve));
    return {
      socket,
      close: async () => {
        for (const c of held) c.destroy();
        await new Promise<void>((resolve) => mute.close(() => resolve()));
        await rm(dir, { recursive: true, force: true });
      },
    };
  }

  describe('a plugin that never answers', function () {
    this.timeout(120_000);
    before(ensureCsiProto);

    it('discovery past the deadline is a retryable timeout DriverError, not a bare abort', async () => {
      const mute = await muteSocket();
      const driver = createDriver('csi', { endpoint: `unix://${mute.socket}`, timeoutMs: 200 });
      try {
        const err = await expectDriverError(driver.getVolume('v', never), 'timeout');
        expect(err.message).to.match(/discovery|deadline/i);
      } finally {
        await driver.close();
        await mute.close();
      }
    });

    it('the deadline runs on the Clock the driver was given: a FakeClock times out a mute plugin without real waiting', async () => {
      const mute = await muteSocket();
      const clock = new FakeClock();
      const driver = createDriver('csi', { endpoint: `unix://${mute.socket}`, timeoutMs: 3_600_000 }, {}, { clock });
      try {
        const pending = driver.getVolume('v', never).catch((e: unknown) => e);
        while (clock.pendingTimers === 0) await settle();
        const started = performance.now();
        await clock.advanceAndSettle(3_600_000);
        expect(await pending).to.have.property('reason', 'timeout');
        expect(performance.now() - started).to.be.below(5_000);
      } finally {
        await driver.close();
        await mute.close();
      }
    });
  });

  describe('against the sim array CSI socket', function () {
    this.timeout(120_000);
    let fx: Awaited<ReturnType<typeof csiFixture>>;
    before(ensureCsiProto);
    beforeEach(async () => {
      fx = await csiFixture();
    });
    afterEach(async () => {
      await fx.driver.close();
      await fx.teardown();
    });

    it('uses CreateVolumeGroupSnapshot when advertised, and fans out when the plugin does not advertise it', async () => {
      const vols = await Promise.all(['a', 'b'].map((name) => fx.driver.createVolume({ name, capacityBytes: MiB }, never)));
      const handles = vols.map((v) => v.handle);
      expect((await snapshotGroup(fx.driver, 'native', handles, never)).native).to.equal(true);
      expect(fx.array.state.stats().groupSnapshots).to.equal(1);

      fx.array.state.configure({ nativeConsistencyGroups: false });
      const fresh = createDriver('csi', { endpoint: `unix://${fx.socket}` });
      try {
        expect((await fresh.probe(never)).capabilities.nativeGroupSnapshot).to.equal(false);
        const fanned = await snapshotGroup(fresh, 'fanned', handles, never);
        expect(fanned.native).to.equal(false);
        expect(fanned.snapshots.map((s) => s.sourceVolume)).to.deep.equal(handles);
        expect(fx.array.state.stats().groupSnapshots).to.equal(1);
      } finally {
        await fresh.close();
      }
    });

    it('an operation pending on the volume (ABORTED) is busy at once; the retry after it ends succeeds', async () => {
      const vol = await fx.driver.createVolume({ name: 'pending', capacityBytes: MiB }, never);
      const s = fx.array.state;
      s.setFault('resizeVolume', { stallMs: 60_000 });
      const resize = s.resizeVolume(vol.handle, 2 * MiB);
      s.setFault('resizeVolume', {});
      const err = await expectDriverError(fx.driver.deleteVolume(vol.handle, never), 'busy');
      expect(err.retryAfterMs).to.be.within(50, 100);
      expect(s.stats().conflicts).to.equal(1);
      s.abortStalls();
      await resize;
      await fx.driver.deleteVolume(vol.handle, never);
      await expectDriverError(fx.driver.getVolume(vol.handle, never), 'notFound');
      const refused = s.oplog().filter((e) => e.outcome === 'pending').map((e) => `${e.op} ${e.target}`);
      expect(new Set(refused)).to.deep.equal(new Set([`deleteVolume ${vol.handle}`]));
    });

    it('has no data path: reading snapshots and writing volumes are terminal errors', async () => {
      expect((await fx.driver.probe(never)).capabilities).to.include({ snapshotData: false, volumeData: false, resize: true });
      await expectDriverError(fx.driver.readSnapshot('snap-1', never), 'invalid');
      await expectDriverError(fx.driver.writeVolume('vol-1', Readable.from([]), never), 'invalid');
    });

    it('an unreachable plugin probes unhealthy with the reason, and calls fail retryable', async () => {
      const gone = createDriver('csi', { endpoint: `unix://${fx.socket}.missing`, timeoutMs: 2000 });
      try {
        const p = await gone.probe(never);
        expect(p.healthy).to.equal(false);
        expect(p.message).to.match(/UNAVAILABLE|DEADLINE_EXCEEDED/);
        const err = await gone.getVolume('v', never).catch((e: unknown) => e);
        expect(err).to.have.property('kind', 'retryable');
      } finally {
        await gone.close();
      }
    });
  });

  // Issue 21: what real plugins do that a forgiving endpoint hid. Each case fails on the csi
  // driver as it was before the fix, against this stricter simulated array.
  describe('against a sim array CSI socket as strict as real plugins', function () {
    this.timeout(120_000);
    let fx: Awaited<ReturnType<typeof csiFixture>> | undefined;
    before(ensureCsiProto);
    afterEach(async () => {
      await fx?.driver.close();
      await fx?.teardown();
      fx = undefined;
    });

    it('a native group snapshot create -> delete leaves no snapshot (snapshot_ids sent; a member alone is refused)', async () => {
      fx = await csiFixture();
      const d = fx.driver;
      const vols = await Promise.all(['ga', 'gb'].map((name) => d.createVolume({ name, capacityBytes: MiB }, never)));
      const group = await snapshotGroup(d, 'group-1', vols.map((v) => v.handle), never);
      expect(group.native).to.equal(true);
      // The plugin refuses to delete a member on its own, as real ones do.
      await expectDriverError(d.deleteSnapshot(group.snapshots[0]!.handle, never), 'invalid');
      await d.deleteGroupSnapshot(group.handle, never);
      await d.deleteGroupSnapshot(group.handle, never);
      const left = (await d.listSnapshots(never)).map((s) => s.handle);
      for (const s of group.snapshots) expect(left, s.handle).not.to.include(s.handle);
      expect(fx.array.state.stats()).to.include({ snapshots: 0, groupSnapshots: 0 });
    });

    it('get of a deleted volume is notFound, also from a plugin that answers OK with an abnormal condition', async () => {
      fx = await csiFixture({ server: { quirks: { unknownVolumeAbnormal: true } } });
      const vol = await fx.driver.createVolume({ name: 'gone', capacityBytes: MiB }, never);
      expect((await fx.driver.getVolume(vol.handle, never)).condition).to.deep.equal({ abnormal: false, message: 'volume is healthy' });
      await fx.driver.deleteVolume(vol.handle, never);
      const err = await expectDriverError(fx.driver.getVolume(vol.handle, never), 'notFound');
      expect(err.message).to.match(/not found/);
    });

    it('an abnormal volume is surfaced as its condition, with the plugin\'s message', async () => {
      fx = await csiFixture();
      const vol = await fx.driver.createVolume({ name: 'sick', capacityBytes: MiB }, never);
      await fx.array.state.setVolumeCondition(vol.handle, 'disk 3 of the RAID set failed');
      expect((await fx.driver.getVolume(vol.handle, never)).condition).to.deep.equal({ abnormal: true, message: 'disk 3 of the RAID set failed' });
      expect((await fx.driver.listVolumes(never)).find((v) => v.handle === vol.handle)?.condition?.abnormal).to.equal(true);
    });

    it('a conflicting re-create is alreadyExists, also from a plugin that ignores parameters on a name match', async () => {
      for (const quirks of [{}, { ignoreParametersOnNameMatch: true }]) {
        fx = await csiFixture({ server: { quirks } });
        const d = fx.driver;
        const vol = await d.createVolume({ name: 'dup', capacityBytes: 4 * MiB, params: { tier: 'gold' } }, never);
        expect(vol.params, 'what the plugin reports, not what was sent').to.deep.equal({ tier: 'gold' });
        expect((await d.createVolume({ name: 'dup', capacityBytes: 4 * MiB, params: { tier: 'gold' } }, never)).handle).to.equal(vol.handle);
        await expectDriverError(d.createVolume({ name: 'dup', capacityBytes: 4 * MiB, params: { tier: 'bronze' } }, never), 'alreadyExists');
        await expectDriverError(d.createVolume({ name: 'dup', capacityBytes: 16 * MiB, params: { tier: 'gold' } }, never), 'alreadyExists');
        expect(fx.array.state.stats().volumes).to.equal(1);
        await d.close();
        await fx.teardown();
        fx = undefined;
      }
    });

    it('an oversize create is noSpace in capacity words, whether the plugin says RESOURCE_EXHAUSTED or OUT_OF_RANGE', async () => {
      for (const quirks of [{}, { oversizeOutOfRange: true }]) {
        fx = await csiFixture({ array: { capacityBytes: 8 * MiB }, server: { quirks } });
        const err = await expectDriverError(fx.driver.createVolume({ name: 'huge', capacityBytes: 64 * MiB }, never), 'noSpace');
        expect(err.message).to.match(/capacity/);
        await fx.driver.close();
        await fx.teardown();
        fx = undefined;
      }
    });

    it('topology: the plugin\'s VOLUME_ACCESSIBILITY_CONSTRAINTS shows in probe; configured requirements are passed through', async () => {
      fx = await csiFixture({ server: { topology: { zone: 'z1' } }, config: { accessibilityRequirements: { requisite: [{ zone: 'z1' }], preferred: [{ zone: 'z1' }] } } });
      expect((await fx.driver.probe(never)).capabilities.topology).to.equal(true);
      const vol = await fx.driver.createVolume({ name: 'zoned', capacityBytes: MiB }, never);
      expect(vol.accessibleTopology).to.deep.equal([{ zone: 'z1' }]);
      const elsewhere = createDriver('csi', { endpoint: `unix://${fx.socket}`, accessibilityRequirements: { requisite: [{ zone: 'z2' }] } });
      try {
        await expectDriverError(elsewhere.createVolume({ name: 'zoned-elsewhere', capacityBytes: MiB }, never), 'noSpace');
      } finally {
        await elsewhere.close();
      }
      const plain = await csiFixture();
      try {
        expect((await plain.driver.probe(never)).capabilities.topology).to.equal(false);
      } finally {
        await plain.driver.close();
        await plain.teardown();
      }
    });
  });
});
