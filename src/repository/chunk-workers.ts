// The CPU work of the data path, on worker threads (as many as the machine has cores):
// scanning for content-defined cut points, chunk hashes (chunk-hash.ts), compression and
// decompression. Guarantees:
// - Each task runs on one worker and resolves with its result or rejects with its error;
//   a worker that dies fails only its own tasks, and later tasks go to the others (or run
//   inline when none is left, with the same results).
// - Bytes in a SharedArrayBuffer are read where they are, never copied to a worker; results
//   the worker made come back transferred, not copied. A block of the block pool is also
//   scanned where it lies (scanAt): each worker's scanner works in the pool's memory.
// - Idle workers never keep the process alive.
// The task code is one self-contained function (runTask) whose source the workers
// evaluate, as volume-hash.ts does: under tsx a worker cannot load a .ts module by path.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { blockPool } from './block-pool.js';
import { blake3Missing, blake3ModulePath, chunkHasher, makeChunkHashers, type ChunkHasher, type ChunkHashName } from './chunk-hash.js';
import { gearTable, type RollingHashName } from './chunker.js';
import { decodeStoredSync, encodeStoredSync, looksIncompressible, type CodecName } from './codec.js';
import { makeGearScanner, type GearScanner, type ScanResult } from './gear-scan.js';
import { gearScanWasm } from './gear-scan-wasm.js';

export type { ScanResult } from './gear-scan.js';

interface TaskDeps {
  hasher: (name: ChunkHashName) => ChunkHasher;
  zlib: typeof zlib;
  scan: GearScanner;
  incompressible: typeof looksIncompressible;
  encode: typeof encodeStoredSync;
  decode: typeof decodeStoredSync;
}

/** One decoded chunk of an extent: where its bytes are (in the extent's bytes or its output), and their hash; or what is wrong with it. */
export type DecodedChunk = { in: 'bytes' | 'out'; offset: number; length: number; hash: string } | { error: string };

type Task =
  | { op: 'scan'; block: Uint8Array; lead: Uint8Array; maskSmall: number; maskLarge: number; rolling: RollingHashName }
  | { op: 'scanAt'; at: number; length: number; lead: Uint8Array; maskSmall: number; maskLarge: number; rolling: RollingHashName }
  | { op: 'hash'; hash: ChunkHashName; parts: Uint8Array[] }
  | { op: 'hashAndSample'; hash: ChunkHashName; parts: Uint8Array[] }
  | { op: 'encode'; codec: CodecName; parts: Uint8Array[] }
  | { op: 'decode'; stored: Uint8Array }
  | { op: 'decodeExtent'; hash: ChunkHashName; bytes: Uint8Array; lengths: number[]; sizes: number[]; out: Uint8Array };

/**
 * Runs one task. Self-contained (the workers run it from its source text): it uses only
 * its arguments, and no inner functions.
 */
export function runTask(d: TaskDeps, t: Task): unknown {
  // The rolling hash of the 32 bytes ending at each position: the lead (the previous block's
  // last 31 bytes) makes positions near the block's start exact too.
  if (t.op === 'scan') return d.scan.scan(t.block, t.lead, t.maskSmall, t.maskLarge, t.rolling);
  if (t.op === 'scanAt') return d.scan.scanAt(t.at, t.length, t.lead, t.maskSmall, t.maskLarge, t.rolling);
  if (t.op === 'hash') {
    const hash = d.hasher(t.hash);
    for (const part of t.parts) hash.update(part);
    return hash.digest('hex');
  }
  // A fresh chunk's hash, and whether compressing it is worth a try (so an incompressible
  // chunk needs no second task to be stored).
  if (t.op === 'hashAndSample') {
    const hash = d.hasher(t.hash);
    for (const part of t.parts) hash.update(part);
    return { hash: hash.digest('hex'), incompressible: d.incompressible(t.parts) };
  }
  if (t.op === 'encode') return d.encode(d.zlib, t.codec, t.parts, d.incompressible);
  if (t.op === 'decode') return d.decode(d.zlib, t.stored);
  // decodeExtent: chunks stored one after another; raw ones stay where they are (in
  // `bytes`), the others are decoded into `out`, one after another.
  const decoded: DecodedChunk[] = [];
  let outAt = 0;
  let at = 0;
  for (let i = 0; i < t.lengths.length; i++) {
    const stored = t.bytes.subarray(at, at + t.lengths[i]!);
    at += t.lengths[i]!;
    let data: Uint8Array;
    try {
      data = d.decode(d.zlib, stored);
    } catch (err) {
      decoded.push({ error: `does not decode: ${err instanceof Error ? err.message : String(err)}` });
      continue;
    }
    if (data.length !== t.sizes[i]) {
      decoded.push({ error: `has ${data.length} bytes, the manifest says ${t.sizes[i]}` });
      continue;
    }
    const hasher = d.hasher(t.hash);
    hasher.update(data);
    const hash = hasher.digest('hex');
    if (data.buffer === t.bytes.buffer) {
      decoded.push({ in: 'bytes', offset: data.byteOffset - t.bytes.byteOffset, length: data.length, hash });
      continue;
    }
    t.out.set(data, outAt);
    decoded.push({ in: 'out', offset: outAt, length: data.length, hash });
    outAt += data.length;
  }
  return decoded;
}

const workerSource = () => `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const zlib = require('node:zlib');
const __name = (f) => f;
// A lower priority than the main thread and the I/O threads (Linux: a thread's own nice
// value): with fewer cores than busy threads, the thread that hands out work must not wait
// behind the work it handed out. Backups ran 12% faster on 2 cores.
try {
  const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
  require('node:os').setPriority(tid, workerData.nice);
} catch {
  // Not Linux: the same priority as the rest.
}
// BLAKE3 from the path the parent found it at; without it, a BLAKE3 task fails saying why.
let blake3 = null;
try {
  if (workerData.blake3) blake3 = require(workerData.blake3);
} catch {
  // As if absent.
}
const deps = {
  hasher: (${makeChunkHashers.toString()})(createHash, blake3, workerData.blake3Missing),
  zlib,
  scan: (${makeGearScanner.toString()})(workerData.wasm, new Int32Array(workerData.gear), { memory: workerData.memory, regionAt: workerData.regionAt }),
  incompressible: (${looksIncompressible.toString()}),
  encode: (${encodeStoredSync.toString()}),
  decode: (${decodeStoredSync.toString()}),
};
const runTask = (${runTask.toString()});
parentPort.on('message', (m) => {
  let value;
  try {
    value = runTask(deps, m.task);
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
    return;
  }
  // A result of the worker's own is transferred, unless it is a slice of a bigger (pooled) buffer.
  let transfer = [];
  if (value instanceof Uint8Array && !(value.buffer instanceof SharedArrayBuffer)) {
    if (value.byteOffset !== 0 || value.byteLength !== value.buffer.byteLength) value = value.slice();
    transfer = [value.buffer];
  }
  try {
    parentPort.postMessage({ id: m.id, value }, transfer);
  } catch {
    parentPort.postMessage({ id: m.id, value }); // memory Node will not let go of (zlib's own): copied
  }
});
`;

/** The chunk workers' nice value (see the worker source). */
export const workerNice = 10;

interface Slot {
  worker: Worker;
  busy: number;
}

interface Waiter {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  slot: Slot;
}

/** A Buffer over the whole of a Uint8Array's memory, without copying. */
function asBuffer(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Bytes to send to a worker: shared memory as is; a slice of a bigger buffer copied, or the whole buffer would be cloned. */
function sendable(data: Uint8Array): Uint8Array {
  if (data.buffer instanceof SharedArrayBuffer || (data.byteOffset === 0 && data.byteLength === data.buffer.byteLength)) return data;
  return data.slice();
}

export class ChunkWorkers {
  private readonly slots: Slot[] = [];
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 1;
  private inlineDeps?: TaskDeps;

  constructor(readonly size = availableParallelism()) {
    try {
      for (let i = 0; i < size; i++) this.slots.push(this.spawn());
    } catch {
      // No workers here: tasks run inline.
    }
  }

  private spawn(): Slot {
    // Small heaps: a worker's own allocations are small and short-lived (the bytes it works
    // on are shared or transferred), so frequent young-generation collections keep its
    // memory, and the process's, low.
    const pool = blockPool();
    const worker = new Worker(workerSource(), {
      eval: true,
      workerData: { gear: gearTable(), wasm: gearScanWasm, nice: workerNice, blake3: blake3ModulePath(), blake3Missing, memory: pool.memory, regionAt: pool.region() },
      // Plain JavaScript: none of the parent's loaders (tsx under tests) is needed.
      execArgv: [],
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
    });
    const slot: Slot = { worker, busy: 0 };
    worker.on('message', (m: { id: number; value?: unknown; error?: string }) => {
      const waiter = this.waiting.get(m.id);
      if (!waiter) return;
      this.waiting.delete(m.id);
      if (--slot.busy === 0) worker.unref();
      if (m.error !== undefined) waiter.reject(new Error(m.error));
      else waiter.resolve(m.value);
    });
    const fail = (err: Error): void => {
      const index = this.slots.indexOf(slot);
      if (index >= 0) this.slots.splice(index, 1);
      for (const [id, waiter] of this.waiting) {
        if (waiter.slot !== slot) continue;
        this.waiting.delete(id);
        waiter.reject(err);
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`chunk worker exited with code ${code}`)));
    worker.unref();
    return slot;
  }

  /** What tasks run with on this thread, when no worker is left (same results). */
  private makeInlineDeps(): TaskDeps {
    const pool = blockPool();
    const scan = makeGearScanner(gearScanWasm, gearTable(), { memory: pool.memory, regionAt: pool.region() });
    return { hasher: chunkHasher, zlib, scan, incompressible: looksIncompressible, encode: encodeStoredSync, decode: decodeStoredSync };
  }

  private run<T>(task: Task): Promise<T> {
    if (this.slots.length === 0) {
      this.inlineDeps ??= this.makeInlineDeps();
      const deps = this.inlineDeps;
      return Promise.resolve().then(() => runTask(deps, task) as T);
    }
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.busy < slot.busy) slot = s;
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject, slot });
      if (slot.busy++ === 0) slot.worker.ref();
      slot.worker.postMessage({ id, task });
    });
  }

  /** Candidate cut points of one block (see ScanResult). */
  scan(block: Uint8Array, lead: Uint8Array, maskSmall: number, maskLarge: number, rolling: RollingHashName): Promise<ScanResult> {
    return this.run({ op: 'scan', block: sendable(block), lead, maskSmall, maskLarge, rolling });
  }

  /** Candidate cut points of the `length` bytes (at most a pool block) at address `at` of the block pool, read where they lie. */
  scanAt(at: number, length: number, lead: Uint8Array, maskSmall: number, maskLarge: number, rolling: RollingHashName): Promise<ScanResult> {
    return this.run({ op: 'scanAt', at, length, lead, maskSmall, maskLarge, rolling });
  }

  /** The chunk hash `hash` (hex) of the parts, one after another. */
  hash(hash: ChunkHashName, parts: Uint8Array[]): Promise<string> {
    return this.run({ op: 'hash', hash, parts: parts.map(sendable) });
  }

  /** The chunk hash `hash` (hex) of the parts, and whether a sample of them looks incompressible (see codec.ts). */
  hashAndSample(hash: ChunkHashName, parts: Uint8Array[]): Promise<{ hash: string; incompressible: boolean }> {
    return this.run({ op: 'hashAndSample', hash, parts: parts.map(sendable) });
  }

  /**
   * The stored form of a chunk given in parts (see codec.ts), as pieces to concatenate:
   * the compressed form, or (stored raw) the codec byte 0 and the parts themselves.
   */
  async encode(codec: CodecName, parts: Uint8Array[]): Promise<Uint8Array[]> {
    const compressed = await this.run<Uint8Array | undefined>({ op: 'encode', codec, parts: parts.map(sendable) });
    return compressed ? [compressed] : [Uint8Array.of(0), ...parts];
  }

  /** A stored chunk decoded. */
  async decode(stored: Uint8Array): Promise<Buffer> {
    return asBuffer(await this.run<Uint8Array>({ op: 'decode', stored: sendable(stored) }));
  }

  /**
   * Chunks stored one after another (`lengths`), decoded, size-checked against `sizes` and
   * hashed with `hash`; raw chunks stay in `bytes`, the others are decoded into `out` (shared
   * memory, large enough for the sum of `sizes`).
   */
  decodeExtent(hash: ChunkHashName, bytes: Uint8Array, lengths: number[], sizes: number[], out: Uint8Array): Promise<DecodedChunk[]> {
    return this.run({ op: 'decodeExtent', hash, bytes: sendable(bytes), lengths, sizes, out });
  }
}

let shared: ChunkWorkers | undefined;

/** The process's chunk workers, started on first use. */
export function chunkWorkers(): ChunkWorkers {
  return (shared ??= new ChunkWorkers());
}
