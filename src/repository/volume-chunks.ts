// A volume's bytes as hashed content-defined chunks, in order, with the whole volume's
// SHA-256 at the end. Guarantees: chunks come in stream order, each with a promise of its
// own SHA-256; digest() resolves after every chunk's hash; return() releases the hashing
// (also after a failure). Memory: the chunker's one maxSize buffer plus the chunks the
// caller holds.
import { chunkStream, type ChunkerOptions } from './chunker.js';
import type { ChunkRef } from './format.js';
import { startVolumeHash } from './volume-hash.js';

export interface VolumeChunk {
  /** [hash, size]; the hash is filled in once `hashed` resolves. */
  ref: ChunkRef;
  data: Buffer;
  hashed: Promise<string>;
}

export interface VolumeChunks extends AsyncIterable<VolumeChunk> {
  /** The whole volume's SHA-256 (hex), once the iteration has ended. */
  digest(): Promise<string>;
  /** Ends the hashing; safe to call more than once and after digest(). */
  return(): Promise<void>;
}

export function volumeChunks(data: AsyncIterable<Uint8Array>, chunking: ChunkerOptions): VolumeChunks {
  const hash = startVolumeHash();
  return {
    async *[Symbol.asyncIterator]() {
      for await (const chunk of chunkStream(data, chunking)) {
        const ref: ChunkRef = ['', chunk.length];
        const hashed = hash.update(chunk).then((h) => (ref[0] = h));
        hashed.catch(() => undefined); // awaited by the caller; this only keeps an early exit quiet
        yield { ref, data: chunk, hashed };
      }
    },
    digest: () => hash.digest(),
    return: async () => hash.dispose(),
  };
}
