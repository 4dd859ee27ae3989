// Cut-point candidates of a block of bytes, found by the WebAssembly gear scan
// (gear-scan.wat), about three times the speed of the same loop in JavaScript. Guarantees:
// the same candidates as the reference loop in chunker.ts for any block and lead; the
// scanner owns its memory (a block is copied in, 2 MiB at a time), so one scanner serves
// one thread at a time.

/** Cut-point candidates of a block: positions (block-relative) whose gear hash has the large mask clear; `small` those with the small mask clear too. */
export interface ScanResult {
  large: number[];
  small: number[];
}

/** The part of the WebAssembly API used here (the compiler's libs here do not declare it). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}

interface GearScanExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  hash: { value: number };
  scan: (p: number, end: number, h: number, maskLarge: number, maskSmall: number, out: number) => number;
}

export type GearScanner = (block: Uint8Array, lead: Uint8Array, maskSmall: number, maskLarge: number) => ScanResult;

/**
 * A scanner over the compiled module (`wasm`: its bytes, base64) and the gear table.
 * Self-contained: the chunk workers evaluate it from its source text, so it uses nothing
 * but its arguments.
 */
export function makeGearScanner(wasm: string, gear: Int32Array): GearScanner {
  const api = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
  const exports = new api.Instance(new api.Module(Buffer.from(wasm, 'base64')), {}).exports as GearScanExports;
  const pieceAt = 1024; // after the gear table
  const piece = 2 * 1024 * 1024;
  const outAt = pieceAt + piece;
  // Every position may be a candidate (some repeated patterns do that): 4 bytes each.
  const bytesNeeded = outAt + 4 * piece;
  const pages = Math.ceil(bytesNeeded / 65536) - exports.memory.buffer.byteLength / 65536;
  if (pages > 0) exports.memory.grow(pages);
  const memory = new Uint8Array(exports.memory.buffer);
  const words = new Int32Array(exports.memory.buffer);
  new Int32Array(exports.memory.buffer, 0, 256).set(gear);
  return (block, lead, maskSmall, maskLarge) => {
    const large: number[] = [];
    const small: number[] = [];
    let h = 0;
    for (let i = 0; i < lead.length; i++) h = ((h << 1) + gear[lead[i]!]!) | 0;
    for (let start = 0; start < block.length; start += piece) {
      const n = Math.min(piece, block.length - start);
      memory.set(block.subarray(start, start + n), pieceAt);
      const outEnd = exports.scan(pieceAt, pieceAt + n, h, maskLarge, maskSmall, outAt);
      h = exports.hash.value;
      for (let w = outAt / 4; w < outEnd / 4; w++) {
        const v = words[w]!;
        const at = (v & 0x7fffffff) - pieceAt + start;
        large.push(at);
        if (v < 0) small.push(at);
      }
    }
    return { large, small };
  };
}
