// Deterministic test volumes, generated on the fly in 64 KiB blocks: block i depends only
// on (seed, i), so a volume of any size streams without being held in memory and a test
// can change one region and regenerate everything else identically.
import { createHash } from 'node:crypto';

export const blockSize = 64 * 1024;

/** xorshift32, seeded per block: fast, and plenty random for content-defined chunking. */
function fillRandom(buf: Buffer, seed: number): void {
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2);
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
}

function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x85ebca6b, 0xc2b2ae35) ^ Math.imul(b + 0x27d4eb2f, 0x165667b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return (h ^ (h >>> 13)) >>> 0;
}

const words = ['volume', 'snapshot', 'backend', 'ready', 'error', 'retry', 'trellis', 'chunk', 'lease', 'manifest', 'quota', 'io'];

/** A block of a "structured" volume: zeros, log-like text, repeats of earlier blocks, or noise. */
function fillStructured(buf: Buffer, seed: number, block: number): void {
  const kind = mix(seed, block) % 10;
  if (kind < 3) {
    buf.fill(0);
  } else if (kind < 7) {
    let pos = 0;
    let n = mix(seed + 1, block);
    while (pos < buf.length) {
      n = mix(n, pos);
      const line = `${block}:${pos} level=info ${words[n % words.length]} ${words[(n >>> 8) % words.length]} id=${n % 100000}\n`;
      pos += buf.write(line, pos, 'latin1');
    }
  } else if (kind < 9 && block > 0) {
    fillStructured(buf, seed, mix(seed + 2, block) % block);
  } else {
    fillRandom(buf, mix(seed + 3, block));
  }
}

export interface VolumeShape {
  seed: number;
  size: number;
  kind: 'random' | 'structured';
  /** Blocks in [from, to) come from this other seed instead: "one changed region". */
  changed?: { fromBlock: number; toBlock: number; seed: number };
}

export async function* volumeBytes(shape: VolumeShape, pieceBlocks = 16): AsyncGenerator<Buffer> {
  const blocks = Math.ceil(shape.size / blockSize);
  for (let first = 0; first < blocks; first += pieceBlocks) {
    const count = Math.min(pieceBlocks, blocks - first);
    const piece = Buffer.allocUnsafe(count * blockSize);
    for (let j = 0; j < count; j++) {
      const block = first + j;
      const inChange = shape.changed && block >= shape.changed.fromBlock && block < shape.changed.toBlock;
      const seed = inChange ? shape.changed!.seed : shape.seed;
      const view = piece.subarray(j * blockSize, (j + 1) * blockSize);
      if (shape.kind === 'random') fillRandom(view, mix(seed, block));
      else fillStructured(view, seed, block);
    }
    const end = Math.min(piece.length, shape.size - first * blockSize);
    yield piece.subarray(0, end);
  }
}

export async function sha256Of(stream: AsyncIterable<Uint8Array>): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const piece of stream) {
    hash.update(piece);
    size += piece.length;
  }
  return { sha256: hash.digest('hex'), size };
}
