import { expect } from 'chai';
import { chunkWorkers } from '../../src/repository/chunk-workers.js';
import { decodeChunk, encodeChunk, looksIncompressible, type CodecName } from '../../src/repository/codec.js';
import { BackupRepository } from '../../src/repository/index.js';
import { sha256Of, volumeBytes, type VolumeShape } from './data.js';
import { backUp, expected, removeTempDirs, smallChunks, tempRepository } from './helpers.js';

async function bytesOf(shape: VolumeShape): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of volumeBytes(shape)) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

describe('chunk codecs', () => {
  after(removeTempDirs);

  for (const codec of ['zstd', 'gzip', 'none'] as CodecName[]) {
    it(`${codec}: round-trips text, and stores random data raw (codec byte 0)`, async () => {
      const text = await bytesOf({ seed: 1, size: 512 * 1024, kind: 'structured' });
      const packed = await encodeChunk(codec, text);
      expect(await decodeChunk(packed)).to.deep.equal(text);
      if (codec !== 'none') expect(packed.length).to.be.below(text.length / 2);
      const noise = await bytesOf({ seed: 2, size: 512 * 1024, kind: 'random' });
      const raw = await encodeChunk(codec, noise);
      expect(raw[0]).to.equal(0);
      expect(raw.length).to.equal(noise.length + 1);
      expect(await decodeChunk(raw)).to.deep.equal(noise);
    });
  }

  it('encodes a chunk given in parts as its joined bytes, and samples them for entropy in place', async () => {
    const text = await bytesOf({ seed: 4, size: 512 * 1024, kind: 'structured' });
    const parts = [text.subarray(0, 1000), text.subarray(1000, 300_000), text.subarray(300_000)];
    const packed = Buffer.concat(await chunkWorkers().encode('zstd', parts));
    expect(packed[0]).to.equal(1);
    expect(await decodeChunk(packed)).to.deep.equal(text);
    // Random bytes in parts (the first shorter than the 64 KiB sample) are stored raw: the
    // codec byte 0, then the parts themselves, uncopied.
    const noise = await bytesOf({ seed: 5, size: 512 * 1024, kind: 'random' });
    const noisy = [noise.subarray(0, 10), noise.subarray(10)];
    const raw = await chunkWorkers().encode('zstd', noisy);
    expect(raw[0]).to.deep.equal(Uint8Array.of(0));
    expect(raw.slice(1)).to.deep.equal(noisy);
  });

  it('stores incompressible chunks raw without a second task (the hash task samples them), and compresses the rest', async () => {
    const workers = chunkWorkers();
    const encode = workers.encode.bind(workers);
    let encodes = 0;
    workers.encode = (codec, parts) => {
      encodes++;
      return encode(codec, parts);
    };
    try {
      const repo = await tempRepository({ chunking: { minSize: 64 * 1024, avgSize: 256 * 1024, maxSize: 1024 * 1024 }, codec: 'zstd' });
      const noise = await backUp(repo, 'a', 'ns.noise', { seed: 6, size: 4 * 1024 * 1024, kind: 'random' });
      expect(noise.chunksUploaded).to.be.above(4);
      expect(noise.storedBytesUploaded).to.equal(noise.bytesUploaded + noise.chunksUploaded); // a codec byte each
      // Only a chunk too small to sample (under 256 KiB) goes to a worker to be tried.
      expect(encodes).to.equal(noise.manifest.chunks.filter(([, size]) => size < 256 * 1024).length);
      expect(encodes).to.be.below(noise.chunksUploaded / 2);
      encodes = 0;
      const text = await backUp(repo, 'a', 'ns.text', { seed: 7, size: 4 * 1024 * 1024, kind: 'structured' });
      // Text is compressed; a chunk whose sample is one of the volume's noise blocks is not
      // (looksIncompressible samples chunks of 256 KiB and more). Each distinct chunk once.
      const sampledNoise = new Map<string, boolean>();
      const chunks = repo.restoredChunks('a', 'ns.text');
      for (const [hash] of text.manifest.chunks) sampledNoise.set(hash, looksIncompressible([(await chunks.next()).value as Buffer]));
      expect(sampledNoise.size).to.equal(text.chunksUploaded);
      expect(encodes).to.equal([...sampledNoise.values()].filter((noise) => !noise).length);
      expect(encodes).to.be.above(text.chunksUploaded / 2);
      expect(text.storedBytesUploaded).to.be.below(text.bytesUploaded / 2);
    } finally {
      workers.encode = encode;
    }
  });

  it('rejects an unknown codec byte', async () => {
    let error: Error | undefined;
    await decodeChunk(Buffer.from([9, 1, 2, 3])).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/unknown chunk codec byte 9/);
  });

  it('reads chunks written under another codec: each chunk names its own', async () => {
    const zstdRepo = await tempRepository({ chunking: smallChunks, codec: 'zstd' });
    const shape: VolumeShape = { seed: 3, size: 1024 * 1024, kind: 'structured' };
    const first = await backUp(zstdRepo, 'a', 'ns.v', shape);
    expect(first.storedBytesUploaded).to.be.below(first.bytesUploaded / 2);
    // The same store, reopened as if its default had become gzip: old chunks still read.
    const config = JSON.parse((await zstdRepo.store.get('config.json')).toString());
    await zstdRepo.store.put('config.json', Buffer.from(JSON.stringify({ ...config, codec: 'gzip' })));
    const gzipRepo = await BackupRepository.open(zstdRepo.store);
    await backUp(gzipRepo, 'b', 'ns.v', { ...shape, changed: { fromBlock: 2, toBlock: 6, seed: 77 } });
    expect(await sha256Of(gzipRepo.restoreStream('a', 'ns.v'))).to.deep.equal(await expected(shape));
    expect(await sha256Of(gzipRepo.restoreStream('b', 'ns.v'))).to.deep.equal(await expected({ ...shape, changed: { fromBlock: 2, toBlock: 6, seed: 77 } }));
  });
});
