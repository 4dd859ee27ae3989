// Chunk encoding on disk. Guarantees: every stored chunk names its own codec in its first
// byte, so a repository may mix codecs (a change of default never strands old chunks), and
// a chunk that does not shrink is stored raw, so incompressible data costs no CPU to read.
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

export type CodecName = 'none' | 'zstd' | 'gzip';

const codecIds: Record<CodecName, number> = { none: 0, zstd: 1, gzip: 2 };
const codecById = new Map<number, CodecName>(Object.entries(codecIds).map(([name, id]) => [id, name as CodecName]));

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);
// zstd arrived in node:zlib with Node 23.8/22.15; gzip stands in where it is missing.
const zstdAvailable = typeof zlib.zstdCompress === 'function';
const zstdCompress = zstdAvailable ? promisify(zlib.zstdCompress) : undefined;
const zstdDecompress = zstdAvailable ? promisify(zlib.zstdDecompress) : undefined;

/** The best codec this runtime has. */
export const defaultCodec: CodecName = zstdAvailable ? 'zstd' : 'gzip';

export function isCodecName(name: string): name is CodecName {
  return Object.hasOwn(codecIds, name);
}

async function compress(codec: CodecName, data: Buffer): Promise<Buffer> {
  switch (codec) {
    case 'none':
      return data;
    case 'zstd':
      if (!zstdCompress) throw new Error('zstd is not available in this Node runtime');
      // Level 3 is zstd's default: well past gzip's ratio at several times its speed.
      return zstdCompress(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } });
    case 'gzip':
      return gzip(data, { level: 6 });
  }
}

const sampleSize = 64 * 1024;

/** Order-0 entropy above 7.9 bits per byte: random, encrypted or already compressed. */
function looksIncompressible(sample: Buffer): boolean {
  const counts = new Uint32Array(256);
  for (let i = 0; i < sample.length; i++) counts[sample[i]!]!++;
  let bits = 0;
  for (const n of counts) if (n > 0) bits -= n * Math.log2(n / sample.length);
  return bits / sample.length > 7.9;
}

/** Encodes a chunk for storage: one codec byte, then the (possibly compressed) payload. */
export async function encodeChunk(codec: CodecName, data: Buffer): Promise<Buffer> {
  let used: CodecName = codec;
  // Already-compressed or encrypted data is common in volumes: a sample whose bytes are
  // near-uniformly distributed spares compressing the whole chunk only to throw the
  // result away. (A histogram, not a trial compression: each zstd call sets up a fresh
  // context, which costs more than the sample's compression itself.)
  if (codec !== 'none' && data.length >= 4 * sampleSize && looksIncompressible(data.subarray(0, sampleSize))) used = 'none';
  let payload = used === 'none' ? data : await compress(codec, data);
  if (payload.length >= data.length) {
    used = 'none';
    payload = data;
  }
  return Buffer.concat([Buffer.of(codecIds[used]), payload]);
}

/** Decodes a stored chunk; throws if the codec byte is unknown or the payload does not decode. */
export async function decodeChunk(stored: Buffer): Promise<Buffer> {
  if (stored.length === 0) throw new Error('empty chunk blob (no codec byte)');
  const codec = codecById.get(stored[0]!);
  const payload = stored.subarray(1);
  switch (codec) {
    case 'none':
      return payload;
    case 'zstd':
      if (!zstdDecompress) throw new Error('chunk is zstd-compressed but this Node runtime has no zstd');
      return zstdDecompress(payload);
    case 'gzip':
      return gunzip(payload);
    default:
      throw new Error(`unknown chunk codec byte ${stored[0]}`);
  }
}
