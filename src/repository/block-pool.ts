// The memory the chunk pipeline reads volumes into: one shared WebAssembly.Memory for the
// process, so the chunk workers' cut-point scan (WebAssembly, gear-scan.ts) reads a block where
// it lies instead of first copying it into a memory of its own (3.6% of a backup's CPU).
// Guarantees:
// - A block is `poolBlockSize` bytes, page-aligned, and stays the caller's until it is
//   released; released blocks are handed out again before the memory grows.
// - The memory grows as blocks are wanted and never shrinks (WebAssembly memory cannot), so
//   it holds the most blocks ever in use at once; past `maxPoolBytes` allocate() says no and
//   the caller uses memory of its own (scanned by copying, with the same results).
// - Addresses stay below 2 GiB: the scan marks small-mask candidates in bit 31 of a
//   position. The gear table sits at address 0 (see gear-scan.wat), written once here.
// - Each scanner has a region of its own (scanRegionBytes: a staging piece for bytes from
//   elsewhere, and room for the candidates of a whole block), never released.
import { gearTable } from './chunker.js';

/** The part of the WebAssembly API used here (the compiler's libs here do not declare it). */
export interface SharedMemory {
  readonly buffer: SharedArrayBuffer;
  grow(pages: number): number;
}

interface MemoryConstructor {
  Memory: new (descriptor: { initial: number; maximum: number; shared: true }) => SharedMemory;
}

export const poolBlockSize = 2 * 1024 * 1024;
/** A scanner's region: a staging piece of a block's size, then 4 bytes of output per byte of it. */
export const scanRegionBytes = 5 * poolBlockSize;
const pageSize = 65536;
export const maxPoolBytes = 2 ** 31 - pageSize;

/** A shared memory for scanners: the gear table at 0, the rest grown on demand. */
export function newScanMemory(): SharedMemory {
  const api = (globalThis as unknown as { WebAssembly: MemoryConstructor }).WebAssembly;
  const memory = new api.Memory({ initial: 1, maximum: maxPoolBytes / pageSize, shared: true });
  new Int32Array(memory.buffer, 0, 256).set(gearTable());
  return memory;
}

export class BlockPool {
  readonly memory = newScanMemory();
  private readonly free: number[] = [];

  /** A block: its address in the memory and a view of it; undefined once the pool is full. */
  allocate(): { at: number; bytes: Uint8Array } | undefined {
    const at = this.free.pop() ?? this.grow(poolBlockSize);
    if (at === undefined) return undefined;
    return { at, bytes: new Uint8Array(this.memory.buffer, at, poolBlockSize) };
  }

  /** Gives a block back; its bytes must no longer be read or written by anyone. */
  release(at: number): void {
    this.free.push(at);
  }

  /** A scanner's own region (see scanRegionBytes), kept for good; undefined once full. */
  region(): number | undefined {
    return this.grow(scanRegionBytes);
  }

  /** The address of `bytes` more memory at the end, or undefined past maxPoolBytes. */
  private grow(bytes: number): number | undefined {
    const at = this.memory.buffer.byteLength;
    if (at + bytes > maxPoolBytes) return undefined;
    try {
      this.memory.grow(bytes / pageSize);
    } catch {
      return undefined; // the system would not commit more: the caller uses memory of its own
    }
    return at;
  }

  /** Bytes the memory spans (what it grew to). */
  get size(): number {
    return this.memory.buffer.byteLength;
  }

  /** Blocks given back and not handed out again. */
  get freeBlocks(): number {
    return this.free.length;
  }
}

let shared: BlockPool | undefined;

/** The process's block pool, made on first use. */
export function blockPool(): BlockPool {
  return (shared ??= new BlockPool());
}
