// Chunk encoding on disk. Guarantees: every stored chunk names its own codec in its first
// byte, so a repository may mix codecs (a change of default never strands old chunks), and
// a chunk that does not shrink is stored raw, so incompressible data costs no CPU to read.
// Encoding and decoding run on the chunk workers (chunk-workers.ts), off the main thread.
import * as zlib from 'node:zlib';
import { chunkWorkers } from './chunk-workers.js';

export type CodecName = 'none' | 'zstd' | 'gzip';

const codecNames: readonly CodecName[] = ['none', 'zstd', 'gzip'];

/** The best codec this runtime has: zstd arrived in node:zlib with Node 23.8/22.15. */
export const defaultCodec: CodecName = typeof zlib.zstdCompressSync === 'function' ? 'zstd' : 'gzip';

export function isCodecName(name: string): name is CodecName {
  return (codecNames as readonly string[]).includes(name);
}

/**
 * True when a chunk (given as parts to concatenate) is not worth compressing: already
 * compressed or encrypted data is common in volumes, and a sample whose bytes are
 * near-uniformly distributed (order-0 entropy > 7.9 bits/byte) spares compressing the whole
 * chunk only to throw the result away. The sample is read from the parts where they are.
 *
 * Self-contained on purpose: the chunk workers run it from its source text, so it uses
 * nothing but its arguments (no imports, no module constants, no inner functions).
 */
export function looksIncompressible(parts: Uint8Array[]): boolean {
  let size = 0;
  for (const part of parts) size += part.length;
  const sampleSize = 64 * 1024;
  if (size < 4 * sampleSize) return false;
  const counts = new Uint32Array(256);
  let left = sampleSize;
  for (const part of parts) {
    const n = Math.min(left, part.length);
    for (let i = 0; i < n; i++) counts[part[i]!]!++;
    left -= n;
    if (left === 0) break;
  }
  let bits = 0;
  for (let i = 0; i < 256; i++) if (counts[i]! > 0) bits -= counts[i]! * Math.log2(counts[i]! / sampleSize);
  return bits / sampleSize > 7.9;
}

/**
 * The stored form of a chunk (given as parts to concatenate) that compresses: one codec
 * byte (1 zstd, 2 gzip), then the payload, in a buffer of its own (so it can be
 * transferred between threads); undefined when the chunk is to be stored raw (codec byte
 * 0, then the chunk itself): with codec none, when `incompressible` says so, or when the
 * payload would not be smaller. Self-contained like looksIncompressible, which the caller
 * passes in.
 */
export function encodeStoredSync(z: typeof zlib, codec: CodecName, parts: Uint8Array[], incompressible: (parts: Uint8Array[]) => boolean): Uint8Array | undefined {
  if (codec === 'none' || incompressible(parts)) return undefined;
  let size = 0;
  for (const part of parts) size += part.length;
  let data = parts[0] ?? new Uint8Array(0);
  if (parts.length > 1) {
    data = new Uint8Array(size);
    let at = 0;
    for (const part of parts) {
      data.set(part, at);
      at += part.length;
    }
  }
  // Level 3 is zstd's default: well past gzip's ratio at several times its speed.
  const payload = codec === 'zstd' ? z.zstdCompressSync(data, { params: { [z.constants.ZSTD_c_compressionLevel]: 3 } }) : z.gzipSync(data, { level: 6 });
  if (payload.length >= size) return undefined;
  const out = new Uint8Array(1 + payload.length);
  out[0] = codec === 'zstd' ? 1 : 2;
  out.set(payload, 1);
  return out;
}

/** Decodes a stored chunk; throws if the codec byte is unknown or the payload does not decode. Self-contained like encodeStoredSync. */
export function decodeStoredSync(z: typeof zlib, stored: Uint8Array): Uint8Array {
  if (stored.length === 0) throw new Error('empty chunk blob (no codec byte)');
  const payload = stored.subarray(1);
  if (stored[0] === 0) return payload;
  if (stored[0] === 1) {
    if (typeof z.zstdDecompressSync !== 'function') throw new Error('chunk is zstd-compressed but this Node runtime has no zstd');
    return z.zstdDecompressSync(payload);
  }
  if (stored[0] === 2) return z.gunzipSync(payload);
  throw new Error(`unknown chunk codec byte ${stored[0]}`);
}

/** Encodes a chunk for storage (codec byte + payload), on a chunk worker. */
export async function encodeChunk(codec: CodecName, data: Buffer): Promise<Buffer> {
  return Buffer.concat(await chunkWorkers().encode(codec, [data]));
}

/** Decodes a stored chunk, on a chunk worker. */
export async function decodeChunk(stored: Buffer): Promise<Buffer> {
  return chunkWorkers().decode(stored);
}
