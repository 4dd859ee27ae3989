// hostpath beyond the shared contract: real files, consistent snapshots during writes,
// data integrity by SHA-256, and handles that cannot escape the root.
import { createHash } from 'node:crypto';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import type { StorageDriver } from '../../src/backends/driver.js';
import { DriverError } from '../../src/backends/errors.js';
import { HostpathDriver } from '../../src/backends/hostpath/driver.js';
import { createDriver } from '../../src/backends/registry.js';
import { expectDriverError, pattern, sha256 } from './contract.js';
import { hostpathFixture } from './fixtures.js';

const never = new AbortController().signal;
const MiB = 1024 * 1024;
const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A stream whose chunks the test hands out one by one; `wanted` resolves when the reader asks for more. */
function controlledStream() {
  let wake: (() => void) | undefined;
  const stream = new Readable({
    highWaterMark: 1,
    read() {
      wake?.();
      wake = undefined;
    },
  });
  return {
    stream,
    wanted: () => new Promise<void>((resolve) => (wake = resolve)),
  };
}

describe('hostpath driver', () => {
  let fx: Awaited<ReturnType<typeof hostpathFixture>>;
  let d: StorageDriver;

  beforeEach(async () => {
    fx = await hostpathFixture();
    d = fx.driver;
  });
  afterEach(() => fx.teardown());

  it('a volume is a sparse image file of its full size', async () => {
    const vol = await d.createVolume({ name: 'sparse', capacityBytes: 64 * MiB }, never);
    const st = await stat(join(fx.root, 'volumes', `${vol.handle}.img`));
    expect(st.size).to.equal(64 * MiB);
    expect(st.blocks * 512).to.be.below(MiB);
  });

  it('a snapshot taken while the volume is being written is the earlier, complete copy', async () => {
    const vol = await d.createVolume({ name: 'busy', capacityBytes: 8 * MiB }, never);
    const before = pattern(1, 2 * MiB);
    await d.writeVolume(vol.handle, Readable.from([before]), never);

    const after = pattern(2, 3 * MiB);
    const feed = controlledStream();
    const writing = d.writeVolume(vol.handle, feed.stream, never);
    feed.stream.push(after.subarray(0, MiB));
    await feed.wanted();
    feed.stream.push(after.subarray(MiB, 2 * MiB));
    await feed.wanted();
    // Two thirds of the new data are in flight: snapshot now.
    const during = await d.createSnapshot({ name: 'during', sourceVolume: vol.handle }, never);
    feed.stream.push(after.subarray(2 * MiB));
    feed.stream.push(null);
    expect(await writing).to.deep.equal({ bytes: after.length });
    const later = await d.createSnapshot({ name: 'after', sourceVolume: vol.handle }, never);

    expect(await sha256(await d.readSnapshot(during.handle, never))).to.equal(digest(before));
    expect(await sha256(await d.readSnapshot(later.handle, never))).to.equal(digest(after));
    // The snapshot is its own copy: the image it was cut from has changed since.
    const restored = await d.createVolume({ name: 'restored', capacityBytes: 8 * MiB, sourceSnapshot: during.handle }, never);
    const again = await d.createSnapshot({ name: 'restored-snap', sourceVolume: restored.handle }, never);
    expect(await sha256(await d.readSnapshot(again.handle, never))).to.equal(digest(before));
  });

  it('data read back equals data written (SHA-256), across 16 MiB in odd-sized chunks', async () => {
    const vol = await d.createVolume({ name: 'big', capacityBytes: 32 * MiB }, never);
    const data = pattern(7, 16 * MiB + 4093);
    const chunks: Buffer[] = [];
    for (let off = 0; off < data.length; off += 777_777) chunks.push(data.subarray(off, off + 777_777));
    expect((await d.writeVolume(vol.handle, Readable.from(chunks), never)).bytes).to.equal(data.length);
    const snap = await d.createSnapshot({ name: 'big-snap', sourceVolume: vol.handle }, never);
    expect(await sha256(await d.readSnapshot(snap.handle, never))).to.equal(digest(data));
    expect((await d.getVolume(vol.handle, never)).dataBytes).to.equal(data.length);
  });

  it('a failed write leaves the volume as it was and no temporary file behind', async () => {
    const vol = await d.createVolume({ name: 'keep', capacityBytes: 2 * MiB }, never);
    const first = pattern(3, MiB);
    await d.writeVolume(vol.handle, Readable.from([first]), never);
    await expectDriverError(d.writeVolume(vol.handle, Readable.from([pattern(4, 3 * MiB)]), never), 'noSpace');
    const snap = await d.createSnapshot({ name: 'keep-snap', sourceVolume: vol.handle }, never);
    expect(await sha256(await d.readSnapshot(snap.handle, never))).to.equal(digest(first));
    expect(await readdir(join(fx.root, 'tmp'))).to.deep.equal([]);
  });

  it('a busy filesystem fails at once as busy, with a retry-after, and leaves nothing behind', async () => {
    let tries = 0;
    const busy = new HostpathDriver(
      { root: fx.root },
      {
        beforeTry: () => {
          tries++;
          throw Object.assign(new Error('EMFILE: too many open files (injected)'), { code: 'EMFILE' });
        },
      },
    );
    const err = await expectDriverError(busy.createVolume({ name: 'never-free', capacityBytes: MiB }, never), 'busy');
    expect(err.busy).to.equal(true);
    expect(err.terminal).to.equal(false);
    expect(err.retryAfterMs).to.be.within(50, 100);
    expect(err.message).to.match(/EMFILE/);
    expect(tries, 'one try, no wait inside the call').to.equal(1);
    expect(await d.listVolumes(never)).to.deep.equal([]);
  });

  it('a failed create leaves no temporary image behind', async () => {
    const name = 'blocked';
    const handle = `vol-${digest(Buffer.from(name)).slice(0, 24)}`;
    // A directory where the image must go makes the final rename fail.
    await mkdir(join(fx.root, 'volumes', `${handle}.img`, 'occupied'), { recursive: true });
    const err = await d.createVolume({ name, capacityBytes: 64 * MiB }, never).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(DriverError);
    expect(await readdir(join(fx.root, 'tmp'))).to.deep.equal([]);
  });

  it('a plain-copy snapshot copies only the data: the rest of the image stays sparse', async () => {
    const copying = createDriver('hostpath', { root: fx.root, reflink: 'never' });
    const vol = await copying.createVolume({ name: 'mostly-empty', capacityBytes: 64 * MiB }, never);
    const data = pattern(5, MiB + 3);
    await copying.writeVolume(vol.handle, Readable.from([data]), never);
    const snap = await copying.createSnapshot({ name: 'mostly-empty-snap', sourceVolume: vol.handle }, never);
    const st = await stat(join(fx.root, 'snapshots', `${snap.handle}.img`));
    expect(st.size).to.equal(64 * MiB);
    expect(st.blocks * 512).to.be.below(4 * MiB);
    expect(await sha256(await copying.readSnapshot(snap.handle, never))).to.equal(digest(data));
    const restored = await copying.createVolume({ name: 'restored-sparse', capacityBytes: 64 * MiB, sourceSnapshot: snap.handle }, never);
    const rst = await stat(join(fx.root, 'volumes', `${restored.handle}.img`));
    expect(rst.size).to.equal(64 * MiB);
    expect(rst.blocks * 512).to.be.below(4 * MiB);
  });

  it('handles cannot name files outside the root', async () => {
    await expectDriverError(d.getVolume('../../etc/passwd', never), 'notFound');
    await expectDriverError(d.readSnapshot('../volumes/x', never), 'notFound');
    await d.deleteVolume('../../etc/passwd', never);
  });

  it('reflink "always" either clones or fails with a terminal error, never silently copies', async () => {
    const strict = createDriver('hostpath', { root: fx.root, reflink: 'always' });
    const vol = await strict.createVolume({ name: 'clone-src', capacityBytes: MiB }, never);
    const made = await strict.createSnapshot({ name: 'clone', sourceVolume: vol.handle }, never).then(
      (snap) => snap.handle,
      (err: unknown) => err,
    );
    if (typeof made !== 'string') expect(made).to.have.property('kind', 'terminal');
  });

  it('a configured capacity limits provisioning and is what probe reports', async () => {
    await fx.teardown();
    fx = await hostpathFixture();
    d = createDriver('hostpath', { root: fx.root, capacityBytes: 10 * MiB });
    await d.createVolume({ name: 'a', capacityBytes: 6 * MiB }, never);
    await expectDriverError(d.createVolume({ name: 'b', capacityBytes: 6 * MiB }, never), 'noSpace');
    expect(await d.probe(never)).to.deep.include({ healthy: true, capacityBytes: 10 * MiB, usedBytes: 6 * MiB });
  });
});
