import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { compileGearScan } from '../../hack/build-wasm.js';
import { gearTable, highMask, rollingHashNames, type RollingHashName } from '../../src/repository/chunker.js';
import { makeGearScanner, type ScanResult } from '../../src/repository/gear-scan.js';
import { gearScanWasm } from '../../src/repository/gear-scan-wasm.js';
import { BlockPool, poolBlockSize } from '../../src/repository/block-pool.js';

/** The scan as plain JavaScript: the rules the WebAssembly must keep (chunker.ts). */
function reference(block: Uint8Array, lead: Uint8Array, maskSmall: number, maskLarge: number, rolling: RollingHashName): ScanResult {
  const gear = gearTable();
  const value = (byte: number) => (rolling === 'gear' ? gear[byte]! : Math.imul(byte, 0x9e3779b1));
  // gear: a candidate where the mask's bits are clear; gear-mul: where they are set.
  const hit = (h: number, mask: number) => (h & mask) === (rolling === 'gear' ? 0 : mask);
  const large: number[] = [];
  const small: number[] = [];
  let h = 0;
  for (const byte of lead) h = ((h << 1) + value(byte)) | 0;
  for (let i = 0; i < block.length; i++) {
    h = ((h << 1) + value(block[i]!)) | 0;
    if (hit(h, maskLarge)) {
      large.push(i);
      if (hit(h, maskSmall)) small.push(i);
    }
  }
  return { large, small };
}

/** Deterministic pseudo-random bytes. */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0, i = 0; at < n; i++) {
    const block = createHash('sha256').update(`${seed}-${i}`).digest();
    out.set(block.subarray(0, Math.min(32, n - at)), at);
    at += 32;
  }
  return out;
}

describe('gear scan (WebAssembly)', () => {
  const scanner = makeGearScanner(gearScanWasm, gearTable());
  const scan = scanner.scan;

  it('the committed module is what gear-scan.wat compiles to', async () => {
    expect(Buffer.from(await compileGearScan()).toString('base64')).to.equal(gearScanWasm, 'run `npm run wasm` after editing gear-scan.wat');
  });

  for (const rolling of rollingHashNames) {
  it(`finds exactly the candidates the JavaScript loop finds, with and without a lead, at every length mod 4 and around the lanes' sizes (${rolling})`, () => {
    // Loose masks, so a small block has many candidates of both kinds.
    const maskSmall = highMask(10);
    const maskLarge = highMask(6);
    const data = bytes(70_003, 1);
    // gear-mul's lanes take blocks from 512 bytes on, in 8 segments of a multiple of 16 bytes
    // (at least 64), and scan the last bytes (fewer than 128) one at a time.
    for (const length of [0, 1, 2, 3, 4, 5, 31, 32, 33, 511, 512, 513, 639, 640, 1023, 1024, 1151, 4099, 70_003]) {
      for (const lead of [new Uint8Array(0), data.subarray(0, 31), data.subarray(0, 7)]) {
        const block = data.subarray(data.length - length);
        const got = scan(block, lead, maskSmall, maskLarge, rolling);
        expect(got, `length ${length}, lead ${lead.length}`).to.deep.equal(reference(block, lead, maskSmall, maskLarge, rolling));
        // Not a vacuous comparison: blocks of a few KiB have candidates (shorter ones may not).
        expect(got.large.length > 0 || length < 1000).to.equal(true);
      }
    }
  });

  it(`carries the hash across its 2 MiB pieces, and keeps every candidate of a block where every position is one (${rolling})`, () => {
    // Loose masks, so the positions just after each piece's start (where a hash restarted
    // at 0 would differ) hold candidates.
    const maskSmall = highMask(6);
    const maskLarge = highMask(4);
    const big = bytes(5 * 1024 * 1024 + 77, 2);
    const want = reference(big, new Uint8Array(0), maskSmall, maskLarge, rolling);
    expect(scan(big, new Uint8Array(0), maskSmall, maskLarge, rolling)).to.deep.equal(want);
    // What a scan that restarted the hash at each 2 MiB piece would give: not that.
    const piece = 2 * 1024 * 1024;
    const restarted: ScanResult = { large: [], small: [] };
    for (let start = 0; start < big.length; start += piece) {
      const r = reference(big.subarray(start, start + piece), new Uint8Array(0), maskSmall, maskLarge, rolling);
      for (const p of r.large) restarted.large.push(p + start);
      for (const p of r.small) restarted.small.push(p + start);
    }
    expect(restarted).to.not.deep.equal(want);
    // With empty masks every position is a candidate: 4 bytes of output per byte scanned.
    const all = scan(big.subarray(0, 3 * 1024 * 1024), new Uint8Array(0), 0, 0, rolling);
    expect(all.large.length).to.equal(3 * 1024 * 1024);
    expect(all.small.length).to.equal(3 * 1024 * 1024);
    expect(all.large.at(-1)).to.equal(3 * 1024 * 1024 - 1);
  });
  }

  it('scans a block of the pool where it lies, with the same candidates, and with the same results when its scanner has no region there', () => {
    const pool = new BlockPool();
    const inPlace = makeGearScanner(gearScanWasm, gearTable(), { memory: pool.memory, regionAt: pool.region() });
    const copying = makeGearScanner(gearScanWasm, gearTable(), { memory: pool.memory });
    const blocks = [pool.allocate()!, pool.allocate()!];
    expect(blocks[1]!.at - blocks[0]!.at).to.equal(poolBlockSize);
    const data = bytes(poolBlockSize, 3);
    blocks[1]!.bytes.set(data);
    const lead = data.subarray(0, 31);
    for (const [maskSmall, maskLarge] of [
      [highMask(22), highMask(18)],
      [highMask(10), highMask(6)],
      [0, 0], // every position: a whole block's worth of output
    ] as const) {
      for (const [from, to] of [
        [0, poolBlockSize],
        [5, 4099],
        [poolBlockSize - 3, poolBlockSize],
      ] as const) {
        for (const rolling of rollingHashNames) {
          const want = reference(data.subarray(from, to), lead, maskSmall, maskLarge, rolling);
          expect(inPlace.scanAt(blocks[1]!.at + from, to - from, lead, maskSmall, maskLarge, rolling), `${from}-${to}`).to.deep.equal(want);
          expect(copying.scanAt(blocks[1]!.at + from, to - from, lead, maskSmall, maskLarge, rolling), `${from}-${to}, copied`).to.deep.equal(want);
        }
      }
    }
    // A released block is handed out again before the memory grows.
    const size = pool.size;
    pool.release(blocks[0]!.at);
    expect(pool.allocate()!.at).to.equal(blocks[0]!.at);
    expect(pool.size).to.equal(size);
    expect(() => inPlace.scanAt(blocks[1]!.at, poolBlockSize + 1, lead, 0, 0, 'gear-mul')).to.throw(RangeError);
  });
});
