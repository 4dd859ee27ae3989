import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { chunkHasher, checkChunkHash, defaultChunkHash } from '../../src/repository/chunk-hash.js';
import { chunkWorkers, ChunkWorkers } from '../../src/repository/chunk-workers.js';
import { RepositoryFormatError } from '../../src/repository/errors.js';

function hex(name: 'sha256' | 'blake3', ...parts: Uint8Array[]): string {
  const h = chunkHasher(name);
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** Bytes in shared memory (as the chunk pipeline's blocks are), at an odd offset. */
function sharedBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(new SharedArrayBuffer(n + 13), 13, n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 31 + (i >> 9)) & 255;
  return bytes;
}

describe('chunk hash', () => {
  it('is BLAKE3 for new repositories here, and gives the published test vectors', () => {
    expect(defaultChunkHash()).to.equal('blake3');
    expect(hex('blake3')).to.equal('af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
    expect(hex('blake3', Buffer.from('abc'))).to.equal('6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85');
    expect(hex('sha256', Buffer.from('abc'))).to.equal(createHash('sha256').update('abc').digest('hex'));
  });

  it('hashes a view into shared memory as its own bytes, whole or in parts', () => {
    const bytes = sharedBytes(300_000);
    const copy = Buffer.from(bytes);
    const whole = hex('blake3', copy);
    expect(hex('blake3', bytes)).to.equal(whole);
    expect(hex('blake3', bytes.subarray(0, 1), bytes.subarray(1, 70_001), bytes.subarray(70_001))).to.equal(whole);
    expect(hex('blake3', bytes.subarray(1))).to.equal(hex('blake3', copy.subarray(1)));
  });

  it('gives the same hashes on the workers as on this thread, for both names', async () => {
    const bytes = sharedBytes(1 << 20);
    const parts = [bytes.subarray(0, 4097), bytes.subarray(4097)];
    for (const name of ['blake3', 'sha256'] as const) {
      expect(await chunkWorkers().hash(name, parts)).to.equal(hex(name, bytes));
      expect((await chunkWorkers().hashAndSample(name, parts)).hash).to.equal(hex(name, bytes));
    }
    // And inline, when no worker can run.
    expect(await new ChunkWorkers(0).hash('blake3', parts)).to.equal(hex('blake3', bytes));
  });

  it('refuses a repository that names a hash this Trellis does not know', () => {
    expect(() => checkChunkHash('md5', '/repo')).to.throw(RepositoryFormatError, /unknown chunk hash md5; this Trellis knows sha256, blake3/);
    expect(() => checkChunkHash('blake3', '/repo')).not.to.throw();
  });
});
