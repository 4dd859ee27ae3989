// SHA-256 of a whole volume, computed on one shared worker thread: a volume's hash is one
// sequential pass, so it runs beside the chunk workers (chunk-workers.ts) rather than on
// the main thread. Only manifests from before format 3 need it (restore.ts).
// Guarantees: appends are hashed in the order they were given; digest() resolves after
// every earlier append; the worker never keeps the process alive while no hash is in
// progress; if no worker can start, hashing happens inline with the same results.
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

const workerSource = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const sessions = new Map();
parentPort.on('message', (m) => {
  let hash = sessions.get(m.id);
  if (!hash) sessions.set(m.id, (hash = createHash('sha256')));
  if (m.data) {
    hash.update(m.data);
    parentPort.postMessage({ id: m.id, value: '' });
  } else {
    sessions.delete(m.id);
    parentPort.postMessage({ id: m.id, value: hash.digest('hex'), last: true });
  }
});
`;

interface Waiter {
  resolve: (hex: string) => void;
  reject: (err: Error) => void;
}

let worker: Worker | undefined;
let nextId = 1;
/** Per hash in progress, the replies it waits for, in the order the worker will send them. */
const sessions = new Map<number, Waiter[]>();

function failAll(err: Error): void {
  worker = undefined;
  for (const waiters of sessions.values()) for (const w of waiters) w.reject(err);
  sessions.clear();
}

function sharedWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(workerSource, { eval: true, execArgv: [], resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 } });
  w.on('message', (m: { id: number; value: string; last?: boolean }) => {
    const waiters = sessions.get(m.id);
    if (!waiters) return;
    waiters.shift()?.resolve(m.value);
    if (m.last) {
      sessions.delete(m.id);
      if (sessions.size === 0) w.unref();
    }
  });
  w.on('error', (err) => failAll(err));
  w.on('exit', (code) => failAll(new Error(`hash worker exited with code ${code}`)));
  w.unref();
  worker = w;
  return w;
}

export interface VolumeHash {
  /**
   * Adds `data` to the volume's hash; resolves once it is hashed. Bytes in a
   * SharedArrayBuffer reach the worker without a copy.
   */
  append(data: Uint8Array): Promise<void>;
  /** The volume's SHA-256 (hex); no updates after it. */
  digest(): Promise<string>;
  /** Ends a hash whose digest is not wanted (an aborted stream); safe to call after digest. */
  dispose(): void;
}

class WorkerVolumeHash implements VolumeHash {
  private readonly id = nextId++;
  private readonly waiters: Waiter[] = [];
  private finished = false;

  constructor(private readonly worker: Worker) {
    sessions.set(this.id, this.waiters);
    worker.ref();
  }

  private request(message: { id: number; data?: Uint8Array }): Promise<string> {
    return new Promise((resolve, reject) => {
      if (!sessions.has(this.id)) return reject(new Error('hash worker stopped'));
      this.waiters.push({ resolve, reject });
      // Not transferred: the caller keeps `data` (shared memory reaches the worker as is).
      this.worker.postMessage(message);
    });
  }

  async append(data: Uint8Array): Promise<void> {
    await this.request({ id: this.id, data });
  }

  digest(): Promise<string> {
    this.finished = true;
    return this.request({ id: this.id });
  }

  dispose(): void {
    if (!this.finished) this.digest().catch(() => undefined);
  }
}

class InlineVolumeHash implements VolumeHash {
  private readonly hash = createHash('sha256');
  async append(data: Uint8Array): Promise<void> {
    this.hash.update(data);
  }
  async digest(): Promise<string> {
    return this.hash.digest('hex');
  }
  dispose(): void {}
}

/** Hashes started and not yet digested or disposed of (what keeps the worker referenced). */
export function volumeHashesInProgress(): number {
  return sessions.size;
}

/** Starts a volume hash on the shared worker, or inline if no worker can start. */
export function startVolumeHash(): VolumeHash {
  try {
    return new WorkerVolumeHash(sharedWorker());
  } catch {
    return new InlineVolumeHash();
  }
}
