// The hostpath driver: real storage on the operator's own filesystem. Guarantees beyond
// the StorageDriver contract:
// - A volume is a sparse image file of its full size under `<root>/volumes`; a snapshot is
//   a reflink copy of that image where the filesystem can clone (a plain copy otherwise)
//   under `<root>/snapshots`.
// - Handles derive from names (a SHA-256 prefix), and an object exists exactly when its
//   metadata JSON does (written last, atomically), so a create is idempotent across
//   restarts and a half-finished create is simply redone.
// - Writing a volume fills a temporary image and swaps it in with one rename, so a snapshot
//   taken during a write copies the earlier, complete image: never a torn one.
// - Group snapshots are not native: createGroupSnapshot resolves undefined and the caller
//   fans out under its locks.
// - A busy filesystem (EBUSY, EAGAIN, EMFILE, ENFILE) is not waited out here: the call
//   fails at once with a `busy` DriverError (a short jittered `retryAfterMs`) and the caller
//   retries, outside its slot. Each try is safe to repeat (creates find what an earlier try
//   made; a failed try leaves no temp file).
// - A copy that is not a reflink reads only the data bytes and re-extends the rest sparsely,
//   so a large, mostly empty volume costs its data, not its size.
import { createHash, randomUUID } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, statfs, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Type, type Static } from 'typebox';
import { abortReason, DriverError } from '../errors.js';
import { sameParams, throwIfAborted } from '../driver.js';
import type { CreateSnapshotRequest, CreateVolumeRequest, DriverOptions, GroupSnapshotInfo, ProbeResult, SnapshotInfo, StorageDriver, VolumeInfo } from '../driver.js';

export const HostpathConfig = Type.Object(
  {
    root: Type.String({ minLength: 2, pattern: '^/', description: 'Absolute directory that holds the volumes and snapshots.' }),
    capacityBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'Provisioning limit (sum of volume sizes); default: the filesystem size.' })),
    reflink: Type.Optional(
      Type.Union([Type.Literal('auto'), Type.Literal('always'), Type.Literal('never')], {
        default: 'auto',
        description: 'auto: clone where the filesystem can, else copy; always: fail where it cannot; never: always copy.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type HostpathConfig = Static<typeof HostpathConfig>;

export const HostpathCredentials = Type.Object({}, { additionalProperties: false });

interface VolumeMeta {
  name: string;
  capacityBytes: number;
  params: Record<string, string>;
  sourceSnapshot?: string;
  dataBytes: number;
  createdAt: string;
}

interface SnapshotMeta {
  name: string;
  sourceVolume: string;
  sizeBytes: number;
  dataBytes: number;
  createdAt: string;
}

const handlePattern = /^(vol|snap)-[0-9a-f]{24}$/;

function handleFor(prefix: 'vol' | 'snap', name: string): string {
  return `${prefix}-${createHash('sha256').update(name).digest('hex').slice(0, 24)}`;
}

/** Maps a filesystem error to a typed one, keeping the system's message. */
function fsError(err: unknown, what: string): DriverError {
  if (err instanceof DriverError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const message = `hostpath: ${what}: ${(err as Error).message}`;
  switch (code) {
    case 'ENOENT':
      return new DriverError('notFound', message, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return new DriverError('noSpace', message, { cause: err });
    case 'EBUSY':
    case 'EAGAIN':
    case 'EMFILE':
    case 'ENFILE':
      return new DriverError('busy', message, { cause: err });
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
    case 'EXDEV':
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
    case 'ENOTDIR':
      return new DriverError('invalid', message, { cause: err });
    default:
      return new DriverError('unavailable', message, { cause: err });
  }
}

/** Runs functions for one key one at a time, in call order. */
class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(key, tail);
    try {
      return await next;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/** The driver options; hostpath never waits on time, so `clock` is accepted and unused. */
export interface HostpathOptions extends DriverOptions {
  /**
   * Runs before each try of a call, named by the call; what it throws counts as that try's
   * filesystem error. The seam through which tests make the filesystem busy.
   */
  beforeTry?: (call: string) => void;
}

/** Where a volume's bytes are copied from and how much of them is data. */
interface ImageSource {
  path: string;
  dataBytes: number;
  sizeBytes: number;
}

export class HostpathDriver implements StorageDriver {
  readonly kind = 'hostpath';
  private readonly volumesDir: string;
  private readonly snapshotsDir: string;
  private readonly tmpDir: string;
  private readonly mutex = new KeyedMutex();
  private ready: Promise<void> | undefined;

  constructor(
    private readonly config: HostpathConfig,
    private readonly options: HostpathOptions = {},
  ) {
    this.volumesDir = join(config.root, 'volumes');
    this.snapshotsDir = join(config.root, 'snapshots');
    this.tmpDir = join(config.root, 'tmp');
  }

  /** One try of `fn`; a filesystem error comes back typed (busy with its retry-after). */
  private async attempt<T>(call: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    throwIfAborted(signal);
    try {
      this.options.beforeTry?.(call);
      return await fn();
    } catch (err) {
      if (signal.aborted) throw abortReason(signal);
      throw err instanceof DriverError || (err as NodeJS.ErrnoException).code ? fsError(err, call) : err;
    }
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      for (const dir of [this.volumesDir, this.snapshotsDir, this.tmpDir]) await mkdir(dir, { recursive: true });
    })().catch((err: unknown) => {
      this.ready = undefined;
      throw fsError(err, `cannot prepare root ${this.config.root}`);
    });
    return this.ready;
  }

  private volPath(handle: string, ext: 'json' | 'img'): string {
    return join(this.volumesDir, `${handle}.${ext}`);
  }

  private snapPath(handle: string, ext: 'json' | 'img'): string {
    return join(this.snapshotsDir, `${handle}.${ext}`);
  }

  private tmpPath(): string {
    return join(this.tmpDir, `${randomUUID()}.tmp`);
  }

  private async readMeta<T>(path: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(path, 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError(err, `reading ${path}`);
    }
  }

  /** Writes metadata atomically: the object exists from the rename on. */
  private async writeMeta(path: string, meta: object): Promise<void> {
    const tmp = this.tmpPath();
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(meta));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }

  /** Copies an image to `dest`: a reflink where configured and possible, else its data bytes. */
  private async clone(src: ImageSource, dest: string): Promise<void> {
    const mode = this.config.reflink ?? 'auto';
    if (mode !== 'never') {
      try {
        await copyFile(src.path, dest, constants.COPYFILE_FICLONE_FORCE);
        return;
      } catch (err) {
        // The filesystem cannot clone (or cannot clone this): copy instead, unless told not to.
        if (mode === 'always') throw err;
      }
    }
    // A plain copy of the whole image would fill its holes: copy the data, then extend.
    const readable = src.dataBytes > 0 ? createReadStream(src.path, { start: 0, end: src.dataBytes - 1 }) : Readable.from([]);
    await pipeline(readable, createWriteStream(dest, { flush: true }));
    await truncate(dest, src.sizeBytes);
  }

  private volumeInfo(handle: string, m: VolumeMeta): VolumeInfo {
    const info: VolumeInfo = { handle, name: m.name, capacityBytes: m.capacityBytes, params: m.params, dataBytes: m.dataBytes };
    if (m.sourceSnapshot) info.sourceSnapshot = m.sourceSnapshot;
    return info;
  }

  private snapshotInfo(handle: string, m: SnapshotMeta): SnapshotInfo {
    return { handle, name: m.name, sourceVolume: m.sourceVolume, sizeBytes: m.sizeBytes, readyToUse: true, createdAt: m.createdAt };
  }

  private async mustVolume(handle: string): Promise<VolumeMeta> {
    const meta = handlePattern.test(handle) ? await this.readMeta<VolumeMeta>(this.volPath(handle, 'json')) : undefined;
    if (!meta) throw new DriverError('notFound', `hostpath: volume ${handle} not found`);
    return meta;
  }

  private async mustSnapshot(handle: string): Promise<SnapshotMeta> {
    const meta = handlePattern.test(handle) ? await this.readMeta<SnapshotMeta>(this.snapPath(handle, 'json')) : undefined;
    if (!meta) throw new DriverError('notFound', `hostpath: snapshot ${handle} not found`);
    return meta;
  }

  private async provisioned(): Promise<number> {
    let sum = 0;
    for (const v of await this.listVolumeMetas()) sum += v.meta.capacityBytes;
    return sum;
  }

  private async listVolumeMetas(): Promise<{ handle: string; meta: VolumeMeta }[]> {
    return this.listMetas<VolumeMeta>(this.volumesDir);
  }

  private async listMetas<T>(dir: string): Promise<{ handle: string; meta: T }[]> {
    const out: { handle: string; meta: T }[] = [];
    for (const file of (await readdir(dir)).sort()) {
      if (!file.endsWith('.json')) continue;
      const meta = await this.readMeta<T>(join(dir, file));
      if (meta) out.push({ handle: file.slice(0, -'.json'.length), meta });
    }
    return out;
  }

  async probe(signal: AbortSignal): Promise<ProbeResult> {
    throwIfAborted(signal);
    const capabilities = { nativeGroupSnapshot: false, snapshotData: true, volumeData: true, resize: true, topology: false };
    try {
      await this.init();
      const fs = await statfs(this.config.root);
      const fsCapacity = fs.blocks * fs.bsize;
      if (this.config.capacityBytes !== undefined) {
        return { healthy: true, capacityBytes: this.config.capacityBytes, usedBytes: await this.provisioned(), capabilities };
      }
      return { healthy: true, capacityBytes: fsCapacity, usedBytes: (fs.blocks - fs.bavail) * fs.bsize, capabilities };
    } catch (err) {
      return { healthy: false, capacityBytes: 0, usedBytes: 0, capabilities, message: fsError(err, 'probe').message };
    }
  }

  private async checkSpace(bytes: number): Promise<void> {
    if (this.config.capacityBytes !== undefined) {
      const free = this.config.capacityBytes - (await this.provisioned());
      if (bytes > free) throw new DriverError('noSpace', `hostpath: insufficient capacity: ${bytes} bytes requested, ${free} free`);
      return;
    }
    const fs = await statfs(this.config.root);
    const free = fs.bavail * fs.bsize;
    // Images are sparse, so only data needs room; refuse a volume larger than the whole filesystem.
    if (bytes > fs.blocks * fs.bsize) throw new DriverError('noSpace', `hostpath: ${bytes} bytes exceed the filesystem (${free} bytes free)`);
  }

  async createVolume(req: CreateVolumeRequest, signal: AbortSignal): Promise<VolumeInfo> {
    if (!req.name) throw new DriverError('invalid', 'hostpath: volume name is required');
    if (!Number.isSafeInteger(req.capacityBytes) || req.capacityBytes <= 0) {
      throw new DriverError('invalid', `hostpath: capacityBytes must be a positive integer, got ${req.capacityBytes}`);
    }
    const params = req.params ?? {};
    await this.init();
    const handle = handleFor('vol', req.name);
    return this.attempt('createVolume', signal, () => this.mutex.run(handle, async () => {
      throwIfAborted(signal);
      const existing = await this.readMeta<VolumeMeta>(this.volPath(handle, 'json'));
      if (existing) {
        if (existing.capacityBytes === req.capacityBytes && sameParams(existing.params, params) && existing.sourceSnapshot === req.sourceSnapshot) {
          return this.volumeInfo(handle, existing);
        }
        throw new DriverError('alreadyExists', `hostpath: volume "${req.name}" exists (${handle}, ${existing.capacityBytes} bytes) with other parameters`);
      }
      const tmp = this.tmpPath();
      try {
        await this.checkSpace(req.capacityBytes);
        let dataBytes = 0;
        if (req.sourceSnapshot) {
          const snap = await this.mustSnapshot(req.sourceSnapshot);
          if (snap.sizeBytes > req.capacityBytes) {
            throw new DriverError('invalid', `hostpath: volume of ${req.capacityBytes} bytes is smaller than snapshot ${req.sourceSnapshot} (${snap.sizeBytes} bytes)`);
          }
          await this.clone({ path: this.snapPath(req.sourceSnapshot, 'img'), dataBytes: snap.dataBytes, sizeBytes: snap.sizeBytes }, tmp);
          dataBytes = snap.dataBytes;
        } else {
          await (await open(tmp, 'w')).close();
        }
        await truncate(tmp, req.capacityBytes);
        throwIfAborted(signal);
        await rename(tmp, this.volPath(handle, 'img'));
        const meta: VolumeMeta = { name: req.name, capacityBytes: req.capacityBytes, params, dataBytes, createdAt: new Date().toISOString() };
        if (req.sourceSnapshot) meta.sourceSnapshot = req.sourceSnapshot;
        await this.writeMeta(this.volPath(handle, 'json'), meta);
        return this.volumeInfo(handle, meta);
      } catch (err) {
        // A full-size image must not outlive a failed or aborted create.
        await rm(tmp, { force: true });
        if (signal.aborted) throw abortReason(signal);
        throw fsError(err, `creating volume "${req.name}"`);
      }
    }));
  }

  async deleteVolume(handle: string, signal: AbortSignal): Promise<void> {
    throwIfAborted(signal);
    if (!handlePattern.test(handle)) return;
    await this.init();
    await this.attempt('deleteVolume', signal, () => this.mutex.run(handle, async () => {
      try {
        // Metadata first: from here on the volume does not exist, even if the image lingers.
        await rm(this.volPath(handle, 'json'), { force: true });
        await rm(this.volPath(handle, 'img'), { force: true });
      } catch (err) {
        throw fsError(err, `deleting volume ${handle}`);
      }
    }));
  }

  async resizeVolume(handle: string, capacityBytes: number, signal: AbortSignal): Promise<VolumeInfo> {
    throwIfAborted(signal);
    return this.attempt('resizeVolume', signal, () => this.mutex.run(handle, async () => {
      const meta = await this.mustVolume(handle);
      if (capacityBytes < meta.capacityBytes) {
        throw new DriverError('invalid', `hostpath: cannot shrink volume ${handle} from ${meta.capacityBytes} to ${capacityBytes} bytes`);
      }
      if (capacityBytes === meta.capacityBytes) return this.volumeInfo(handle, meta);
      try {
        await this.checkSpace(capacityBytes - meta.capacityBytes);
        await truncate(this.volPath(handle, 'img'), capacityBytes);
        const next = { ...meta, capacityBytes };
        await this.writeMeta(this.volPath(handle, 'json'), next);
        return this.volumeInfo(handle, next);
      } catch (err) {
        throw fsError(err, `resizing volume ${handle}`);
      }
    }));
  }

  async getVolume(handle: string, signal: AbortSignal): Promise<VolumeInfo> {
    return this.attempt('getVolume', signal, async () => this.volumeInfo(handle, await this.mustVolume(handle)));
  }

  async listVolumes(signal: AbortSignal): Promise<VolumeInfo[]> {
    await this.init();
    return this.attempt('listVolumes', signal, async () => (await this.listVolumeMetas()).map(({ handle, meta }) => this.volumeInfo(handle, meta)));
  }

  async createSnapshot(req: CreateSnapshotRequest, signal: AbortSignal): Promise<SnapshotInfo> {
    if (!req.name) throw new DriverError('invalid', 'hostpath: snapshot name is required');
    await this.init();
    const handle = handleFor('snap', req.name);
    return this.attempt('createSnapshot', signal, () => this.mutex.run(handle, async () => {
      throwIfAborted(signal);
      const existing = await this.readMeta<SnapshotMeta>(this.snapPath(handle, 'json'));
      if (existing) {
        if (existing.sourceVolume === req.sourceVolume) return this.snapshotInfo(handle, existing);
        throw new DriverError('alreadyExists', `hostpath: snapshot "${req.name}" exists (${handle}) of another volume, ${existing.sourceVolume}`);
      }
      // The volume's lock orders the copy against resize and the swap-in of a write.
      return this.mutex.run(req.sourceVolume, async () => {
        const vol = await this.mustVolume(req.sourceVolume);
        const tmp = this.tmpPath();
        try {
          await this.clone({ path: this.volPath(req.sourceVolume, 'img'), dataBytes: vol.dataBytes, sizeBytes: vol.capacityBytes }, tmp);
          await rename(tmp, this.snapPath(handle, 'img'));
          const meta: SnapshotMeta = {
            name: req.name,
            sourceVolume: req.sourceVolume,
            sizeBytes: vol.capacityBytes,
            dataBytes: vol.dataBytes,
            createdAt: new Date().toISOString(),
          };
          await this.writeMeta(this.snapPath(handle, 'json'), meta);
          return this.snapshotInfo(handle, meta);
        } catch (err) {
          await rm(tmp, { force: true });
          throw fsError(err, `snapshotting volume ${req.sourceVolume}`);
        }
      });
    }));
  }

  async deleteSnapshot(handle: string, signal: AbortSignal): Promise<void> {
    throwIfAborted(signal);
    if (!handlePattern.test(handle)) return;
    await this.init();
    await this.attempt('deleteSnapshot', signal, () => this.mutex.run(handle, async () => {
      try {
        await rm(this.snapPath(handle, 'json'), { force: true });
        await rm(this.snapPath(handle, 'img'), { force: true });
      } catch (err) {
        throw fsError(err, `deleting snapshot ${handle}`);
      }
    }));
  }

  async getSnapshot(handle: string, signal: AbortSignal): Promise<SnapshotInfo> {
    return this.attempt('getSnapshot', signal, async () => this.snapshotInfo(handle, await this.mustSnapshot(handle)));
  }

  async listSnapshots(signal: AbortSignal): Promise<SnapshotInfo[]> {
    await this.init();
    return this.attempt('listSnapshots', signal, async () =>
      (await this.listMetas<SnapshotMeta>(this.snapshotsDir)).map(({ handle, meta }) => this.snapshotInfo(handle, meta)),
    );
  }

  async createGroupSnapshot(_name: string, _volumeHandles: string[], signal: AbortSignal): Promise<GroupSnapshotInfo | undefined> {
    throwIfAborted(signal);
    return undefined;
  }

  async deleteGroupSnapshot(_handle: string, signal: AbortSignal): Promise<void> {
    throwIfAborted(signal);
  }

  async readSnapshot(handle: string, signal: AbortSignal): Promise<Readable> {
    throwIfAborted(signal);
    const meta = await this.mustSnapshot(handle);
    if (meta.dataBytes === 0) return Readable.from([]);
    return createReadStream(this.snapPath(handle, 'img'), { start: 0, end: meta.dataBytes - 1, signal });
  }

  async writeVolume(handle: string, data: Readable, signal: AbortSignal): Promise<{ bytes: number }> {
    throwIfAborted(signal);
    await this.init();
    const limit = (await this.mustVolume(handle)).capacityBytes;
    const tmp = this.tmpPath();
    let bytes = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        if (bytes > limit) return cb(new DriverError('noSpace', `hostpath: data exceeds volume ${handle} size of ${limit} bytes`));
        cb(null, chunk);
      },
    });
    try {
      await pipeline(data, meter, createWriteStream(tmp, { flush: true }), { signal });
      // Swap the new image in under the volume's lock, at the size the volume has now.
      return await this.attempt('writeVolume', signal, () => this.mutex.run(handle, async () => {
        const meta = await this.mustVolume(handle);
        if (bytes > meta.capacityBytes) throw new DriverError('noSpace', `hostpath: data exceeds volume ${handle} size of ${meta.capacityBytes} bytes`);
        await truncate(tmp, meta.capacityBytes);
        await rename(tmp, this.volPath(handle, 'img'));
        await this.writeMeta(this.volPath(handle, 'json'), { ...meta, dataBytes: bytes });
        return { bytes };
      }));
    } catch (err) {
      await rm(tmp, { force: true });
      if (signal.aborted) throw signal.reason;
      throw fsError(err, `writing volume ${handle}`);
    }
  }

  async close(): Promise<void> {}
}
