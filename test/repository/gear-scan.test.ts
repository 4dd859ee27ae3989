import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { compileGearScan } from '../../hack/build-wasm.js';
import { gearTable, highMask } from '../../src/repository/chunker.js';
import { makeGearScanner, type ScanResult } from '../../src/repository/gear-scan.js';
import { gearScanWasm } from '../../src/repository/gear-scan-wasm.js';

/** The scan as plain JavaScript: the rules the WebAssembly must keep. */
function reference(block: Uint8Array, lead: Uint8Array, maskSmall: number, maskLarge: number): ScanResult {
  const gear = gearTable();
  const large: number[] = [];
  const small: number[] = [];
  let h = 0;
  for (const byte of lead) h = ((h << 1) + gear[byte]!) | 0;
  for (let i = 0; i < block.length; i++) {
    h = ((h << 1) + gear[block[i]!]!) | 0;
    if ((h & maskLarge) === 0) {
      large.push(i);
      if ((h & maskSmall) === 0) small.push(i);
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
  const scan = makeGearScanner(gearScanWasm, gearTable());

  it('the committed module is what gear-scan.wat compiles to', async () => {
    expect(Buffer.from(await compileGearScan()).toString('base64')).to.equal(gearScanWasm, 'run `npm run wasm` after editing gear-scan.wat');
  });

  it('finds exactly the candidates the JavaScript loop finds, with and without a lead, at every length mod 4', () => {
    // Loose masks, so a small block has many candidates of both kinds.
    const maskSmall = highMask(10);
    const maskLarge = highMask(6);
    const data = bytes(70_003, 1);
    for (const length of [0, 1, 2, 3, 4, 5, 31, 32, 33, 4099, 70_003]) {
      for (const lead of [new Uint8Array(0), data.subarray(0, 31), data.subarray(0, 7)]) {
        const block = data.subarray(data.length - length);
        const got = scan(block, lead, maskSmall, maskLarge);
        expect(got, `length ${length}, lead ${lead.length}`).to.deep.equal(reference(block, lead, maskSmall, maskLarge));
        expect(got.large.length > 0 || length < 200).to.equal(true);
      }
    }
  });

  it('carries the hash across its 2 MiB pieces, and keeps every candidate of a block where every position is one', () => {
    const maskSmall = highMask(22);
    const maskLarge = highMask(18);
    const big = bytes(5 * 1024 * 1024 + 77, 2);
    expect(scan(big, new Uint8Array(0), maskSmall, maskLarge)).to.deep.equal(reference(big, new Uint8Array(0), maskSmall, maskLarge));
    // With empty masks every position is a candidate: 4 bytes of output per byte scanned.
    const all = scan(big.subarray(0, 3 * 1024 * 1024), new Uint8Array(0), 0, 0);
    expect(all.large.length).to.equal(3 * 1024 * 1024);
    expect(all.small.length).to.equal(3 * 1024 * 1024);
    expect(all.large.at(-1)).to.equal(3 * 1024 * 1024 - 1);
  });
});
