// Cut-point candidates of a block of bytes, found by the WebAssembly scans (gear-scan.wat)
// of either rolling hash (chunker.ts): gear, about three times the speed of the same loop in
// JavaScript, and gear-mul, eight SIMD lanes at once and about three times gear's speed.
// Guarantees: the same candidates as the reference loop in chunker.ts for any block and lead, whether
// the block is scanned where it lies (scanAt: a block of the block pool, block-pool.ts) or
// copied in first, 2 MiB at a time (scan: bytes anywhere else). A scanner's region of the
// memory is its own, so one scanner serves one thread at a time.

/** Cut-point candidates of a block: positions (block-relative) whose rolling hash is a candidate for the large mask (gear: its bits clear; gear-mul: set); `small` those that are for the small mask too. */
export interface ScanResult {
  large: number[];
  small: number[];
}

/** The part of the WebAssembly API used here (the compiler's libs here do not declare it). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
  Memory: new (descriptor: { initial: number; maximum: number; shared: true }) => ScanMemory;
}

/** A shared WebAssembly.Memory, as the module imports it. */
export interface ScanMemory {
  readonly buffer: SharedArrayBuffer;
}

type ScanFunction = (p: number, end: number, h: number, maskLarge: number, maskSmall: number, out: number) => number;

interface GearScanExports {
  hash: { value: number };
  scan: ScanFunction;
  scanMul: ScanFunction;
}

/** The rolling hashes a scanner knows (chunker.ts's RollingHashName). */
type Rolling = 'gear' | 'gear-mul';

export interface GearScanner {
  /** The candidates of a block in any memory: copied into the scanner's region, 2 MiB at a time. */
  scan(block: Uint8Array, lead: Uint8Array, maskSmall: number, maskLarge: number, rolling: Rolling): ScanResult;
  /** The candidates of the `length` bytes (at most 2 MiB) at address `at` of the pool's memory, read where they lie. */
  scanAt(at: number, length: number, lead: Uint8Array, maskSmall: number, maskLarge: number, rolling: Rolling): ScanResult;
}

/**
 * A scanner over the compiled module (`wasm`: its bytes, base64) and the gear table. With a
 * `pool` (the block pool's memory, which holds the gear table at 0) and a region of it
 * (`regionAt`: see block-pool.ts), the scanner works in that memory and scanAt reads in
 * place; without a region, it works in a memory of its own and scanAt copies the bytes in.
 * Self-contained: the chunk workers evaluate it from its source text, so it uses nothing
 * but its arguments.
 */
export function makeGearScanner(wasm: string, gear: Int32Array, pool?: { memory: ScanMemory; regionAt?: number }): GearScanner {
  const api = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
  const piece = 2 * 1024 * 1024;
  const inPool = pool !== undefined && pool.regionAt !== undefined;
  let memory: ScanMemory;
  let regionAt: number;
  if (inPool) {
    memory = pool.memory;
    regionAt = pool.regionAt!;
  } else {
    // The gear table's page, then a region: a staging piece and 4 bytes of output per byte
    // of it (every position may be a candidate: some repeated patterns do that).
    const pages = 1 + (5 * piece) / 65536;
    memory = new api.Memory({ initial: pages, maximum: pages, shared: true });
    new Int32Array(memory.buffer, 0, 256).set(gear);
    regionAt = 65536;
  }
  const exports = new api.Instance(new api.Module(Buffer.from(wasm, 'base64')), { env: { memory } }).exports as GearScanExports;
  const stagingAt = regionAt;
  const outAt = regionAt + piece;
  const leadHash = (lead: Uint8Array, rolling: Rolling): number => {
    let h = 0;
    if (rolling === 'gear') for (let i = 0; i < lead.length; i++) h = ((h << 1) + gear[lead[i]!]!) | 0;
    else for (let i = 0; i < lead.length; i++) h = ((h << 1) + Math.imul(lead[i]!, 0x9e3779b1)) | 0;
    return h;
  };
  // Scans [at, at + n) from hash h into `found` (positions counted from `base`); returns the hash after it.
  const run = (at: number, n: number, h: number, maskSmall: number, maskLarge: number, rolling: Rolling, base: number, found: ScanResult): number => {
    if (rolling !== 'gear' && rolling !== 'gear-mul') throw new RangeError(`no scan for rolling hash ${String(rolling)}`);
    const outEnd = (rolling === 'gear' ? exports.scan : exports.scanMul)(at, at + n, h, maskLarge, maskSmall, outAt);
    // A view made now: the memory may have grown (other threads allocate blocks in it).
    const words = new Int32Array(memory.buffer, outAt, (outEnd - outAt) / 4);
    for (let w = 0; w < words.length; w++) {
      const v = words[w]!;
      const position = (v & 0x7fffffff) - at + base;
      found.large.push(position);
      if (v < 0) found.small.push(position);
    }
    return exports.hash.value;
  };
  const scan = (block: Uint8Array, lead: Uint8Array, maskSmall: number, maskLarge: number, rolling: Rolling): ScanResult => {
    const found: ScanResult = { large: [], small: [] };
    const bytes = new Uint8Array(memory.buffer);
    let h = leadHash(lead, rolling);
    for (let start = 0; start < block.length; start += piece) {
      const n = Math.min(piece, block.length - start);
      bytes.set(block.subarray(start, start + n), stagingAt);
      h = run(stagingAt, n, h, maskSmall, maskLarge, rolling, start, found);
    }
    return found;
  };
  return {
    scan,
    scanAt: (at, length, lead, maskSmall, maskLarge, rolling) => {
      if (length > piece) throw new RangeError(`scanAt takes at most ${piece} bytes, not ${length}`);
      if (!pool) throw new Error('scanAt reads the block pool, and this scanner was made without it');
      if (!inPool) return scan(new Uint8Array(pool.memory.buffer, at, length), lead, maskSmall, maskLarge, rolling);
      const found: ScanResult = { large: [], small: [] };
      run(at, length, leadHash(lead, rolling), maskSmall, maskLarge, rolling, 0, found);
      return found;
    },
  };
}
