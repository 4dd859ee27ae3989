import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { blockPool, poolBlockSize } from '../../src/repository/block-pool.js';
import { chunkHasher, type ChunkHashName } from '../../src/repository/chunk-hash.js';
import { chunkStream, defaultChunkerOptions, rollingHashNames, type ChunkerOptions, type RollingHashName } from '../../src/repository/chunker.js';
import type { VolumeReader } from '../../src/repository/file-source.js';
import { volumeChunks } from '../../src/repository/volume-chunks.js';
import { volumeBytes } from './data.js';

const smallOptions: ChunkerOptions = { minSize: 2048, avgSize: 8192, maxSize: 32768 };

async function collect(input: AsyncIterable<Uint8Array>, o: ChunkerOptions): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of chunkStream(input, o)) out.push(Buffer.from(c));
  return out;
}

async function* pieces(data: Buffer, sizes: number[]) {
  let pos = 0;
  for (let i = 0; pos < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield data.subarray(pos, pos + n);
    pos += n;
  }
}

async function bytesOf(size: number, seed = 1): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of volumeBytes({ seed, size, kind: 'random' })) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// The cut points each rolling hash gives for the same random MiB: part of the repository format.
const pinned: Record<RollingHashName, { count: number; first: number[] }> = {
  gear: { count: 114, first: [13988, 8433, 3288, 9795, 12066, 9993, 11396, 9064, 13669, 10926, 8401, 6757] },
  'gear-mul': { count: 110, first: [11935, 13260, 11636, 3380, 2364, 8250, 8652, 2532, 8303, 11481, 10249, 10579] },
};

for (const rollingHash of rollingHashNames) {
describe(`content-defined chunker (${rollingHash})`, () => {
  const options: ChunkerOptions = { ...smallOptions, rollingHash };

  it('cuts at the same places however the input is split into pieces', async () => {
    const data = await bytesOf(1024 * 1024);
    const whole = (await collect(pieces(data, [data.length]), options)).map(digest);
    const ragged = (await collect(pieces(data, [1, 7, 4096, 100_000, 3]), options)).map(digest);
    expect(ragged).to.deep.equal(whole);
    expect(Buffer.concat(await collect(pieces(data, [999]), options))).to.deep.equal(data);
  });

  it('keeps every chunk but the last within min and max, with sizes centred near the average', async () => {
    const data = await bytesOf(4 * 1024 * 1024, 2);
    const sizes = (await collect(pieces(data, [65536]), options)).map((c) => c.length);
    for (const s of sizes.slice(0, -1)) expect(s).to.be.within(options.minSize, options.maxSize);
    const mean = data.length / sizes.length;
    expect(mean).to.be.within(options.avgSize * 0.7, options.avgSize * 1.5);
  });

  it('forces a cut at max size on data without cut points (zeros)', async () => {
    const zeros = Buffer.alloc(100_000);
    const sizes = (await collect(pieces(zeros, [4096]), options)).map((c) => c.length);
    expect(sizes.reduce((a, b) => a + b, 0)).to.equal(zeros.length);
    for (const s of sizes.slice(0, -1)) expect(s).to.be.at.most(options.maxSize);
  });

  it('re-cuts only the chunks near an insert; the rest keep their hashes', async () => {
    const data = await bytesOf(2 * 1024 * 1024, 3);
    const at = 1024 * 1024 + 123;
    const edited = Buffer.concat([data.subarray(0, at), Buffer.from('an insert of a few bytes'), data.subarray(at)]);
    const before = new Set((await collect(pieces(data, [65536]), options)).map(digest));
    const after = (await collect(pieces(edited, [65536]), options)).map(digest);
    const fresh = after.filter((h) => !before.has(h));
    expect(fresh.length).to.be.at.least(1);
    expect(fresh.length).to.be.at.most(3);
  });

  it('keeps its cut points: they are part of the repository format (dedup against old backups)', async () => {
    const sizes = (await collect(volumeBytes({ seed: 1, size: 1 << 20, kind: 'random' }), options)).map((c) => c.length);
    expect(sizes).to.have.length(pinned[rollingHash].count);
    expect(sizes.slice(0, 12)).to.deep.equal(pinned[rollingHash].first);
  });

  it('yields nothing for an empty stream and rejects impossible sizes', async () => {
    expect(await collect(pieces(Buffer.alloc(0), [1]), options)).to.deep.equal([]);
    let error: Error | undefined;
    await collect(pieces(Buffer.alloc(10), [1]), { minSize: 4096, avgSize: 3000, maxSize: 8192 }).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/min < avg < max/);
  });
});
}

/** `data` as a VolumeReader whose reads stop short at the sizes given in turn (and at the target's end). */
function reader(data: Buffer, sizes: number[]): AsyncIterable<Uint8Array> & VolumeReader {
  let pos = 0;
  let i = 0;
  return {
    readInto: async (target) => {
      const n = Math.min(target.length, sizes[i++ % sizes.length]!, data.length - pos);
      target.set(data.subarray(pos, pos + n));
      pos += n;
      return n;
    },
    close: async () => undefined,
    [Symbol.asyncIterator]: () => {
      throw new Error('a reader is read in place, not iterated');
    },
  };
}

describe('volume chunks on the chunk workers', () => {
  async function sizesOf(input: AsyncIterable<Uint8Array>, o: ChunkerOptions, hash: ChunkHashName): Promise<{ sizes: number[]; hashes: string[] }> {
    const chunks = volumeChunks(input, o, hash);
    const sizes: number[] = [];
    const hashes: string[] = [];
    for await (const c of chunks) {
      sizes.push(c.size);
      hashes.push(await c.hashed);
      c.release();
    }
    await chunks.return();
    return { sizes, hashes };
  }

  for (const [name, o, size] of [
    ['small chunks, gear', smallOptions, 5 * 1024 * 1024 + 3],
    ['small chunks, gear-mul', { ...smallOptions, rollingHash: 'gear-mul' }, 5 * 1024 * 1024 + 3],
    ['default chunks (gear-mul)', defaultChunkerOptions, 24 * 1024 * 1024 + 5],
  ] as const) {
    it(`cuts where chunkStream cuts and hashes each chunk, however the input is split (${name})`, async () => {
      const data = await bytesOf(size, 9);
      const want = await collect(pieces(data, [65536]), o);
      const blake3 = (b: Buffer) => {
        const h = chunkHasher('blake3');
        h.update(b);
        return h.digest('hex');
      };
      for (const split of [[data.length], [1 << 20], [1, 7, 4096, 100_000, 3, 3 << 20]]) {
        const got = await sizesOf(pieces(data, split), o, 'blake3');
        expect(got.sizes, `split ${split}`).to.deep.equal(want.map((c) => c.length));
        expect(got.hashes, `split ${split}`).to.deep.equal(want.map(blake3));
        // The same input as a VolumeReader, read straight into the blocks in short reads.
        const read = await sizesOf(reader(data, split), o, 'blake3');
        expect(read.sizes, `reader ${split}`).to.deep.equal(want.map((c) => c.length));
        expect(read.hashes, `reader ${split}`).to.deep.equal(want.map(blake3));
      }
      // Repositories of formats 1-3 name chunks by SHA-256.
      const sha = await sizesOf(pieces(data, [1, 7, 4096, 100_000, 3, 3 << 20]), o, 'sha256');
      expect(sha.hashes).to.deep.equal(want.map(digest));
    });
  }

  for (const rollingHash of rollingHashNames) {
    it(`cuts where chunkStream cuts with tiny chunks, whose first hashed positions (before the hash has seen 32 bytes) decide most cuts, across block edges (${rollingHash})`, async () => {
      const tiny: ChunkerOptions = { minSize: 64, avgSize: 128, maxSize: 512, rollingHash };
      const data = await bytesOf(poolBlockSize + 4099, 11);
      const want = (await collect(pieces(data, [65536]), tiny)).map((c) => c.length);
      expect(want.length).to.be.above(10_000);
      expect((await sizesOf(reader(data, [1 << 20, 1 << 19]), tiny, 'blake3')).sizes).to.deep.equal(want);
    });
  }

  it('gives a block back only once a read the source started into it has landed: another volume chunked meanwhile keeps its bytes', async () => {
    const pool = blockPool();
    const before = { size: pool.size, free: pool.freeBlocks };
    const outstanding = () => (pool.size - before.size) / poolBlockSize + before.free - pool.freeBlocks;
    // A slow device: its bytes land in the block 150 ms after the read starts.
    let landed = false;
    const slow: VolumeReader & AsyncIterable<Uint8Array> = {
      readInto: async (target) => {
        await new Promise((r) => setTimeout(r, 150));
        target.fill(0xff);
        landed = true;
        return target.length;
      },
      close: async () => undefined,
      [Symbol.asyncIterator]: () => {
        throw new Error('a reader is read in place, not iterated');
      },
    };
    const ended = volumeChunks(slow, defaultChunkerOptions, 'sha256');
    void ended[Symbol.asyncIterator]()
      .next()
      .catch(() => undefined);
    await new Promise((r) => setTimeout(r, 20)); // the read is under way
    await ended.return(); // as a failed upload does, without waiting for the source
    expect(landed).to.equal(false);
    // Another volume, chunked while the stale read is still to land.
    const data = await bytesOf(4 * 1024 * 1024, 21);
    async function* trickle(): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < data.length; at += 65536) {
        await new Promise((r) => setTimeout(r, 3));
        yield data.subarray(at, at + 65536);
      }
    }
    const got = await sizesOf(trickle(), defaultChunkerOptions, 'sha256');
    expect(landed).to.equal(true);
    const want: string[] = [];
    for (let at = 0, i = 0; i < got.sizes.length; at += got.sizes[i]!, i++) want.push(digest(data.subarray(at, at + got.sizes[i]!)));
    expect(got.hashes).to.deep.equal(want);
    // Every block of both is back in the pool.
    expect(outstanding()).to.equal(0);
  });

  it('reads into blocks of the block pool and gives them back at the end: the next volume reuses them', async () => {
    const data = await bytesOf(40 * 1024 * 1024, 11);
    await sizesOf(pieces(data, [1 << 20]), defaultChunkerOptions, 'blake3');
    const size = blockPool().size;
    await sizesOf(pieces(data, [1 << 20]), defaultChunkerOptions, 'blake3');
    await sizesOf(reader(data, [3 << 20]), defaultChunkerOptions, 'blake3');
    expect(blockPool().size).to.equal(size);
  });
});
