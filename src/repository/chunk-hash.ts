// The hash that names chunks (their content address). A repository's config fixes it for
// good, since every chunk key and manifest depends on it:
// - blake3: new repositories (format 4) where the native BLAKE3 of @napi-rs/blake-hash
//   loads. 4.5-5 GB/s per core on this machine against 1.6 GB/s for SHA-256 with SHA-NI;
//   a backup or a verified restore hashes every byte, so this is CPU every byte saves.
// - sha256: formats 1-3 (a repository upgraded to format 4 keeps it, so new backups still
//   deduplicate against its old chunks), and new repositories where BLAKE3 does not load.
// Where a repository's hash does not load, it still opens (listing, deleting and GC hash
// nothing); backups, restores and verify refuse it (checkChunkHash), saying why.
// Both give 32 bytes, written as 64 hex digits, so keys and records have one shape.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Blake3Binding from '@napi-rs/blake-hash';
import { RepositoryFormatError } from './errors.js';

export type ChunkHashName = 'sha256' | 'blake3';

const chunkHashNames: readonly ChunkHashName[] = ['sha256', 'blake3'];

/** What the workers need of a hash: node:crypto's Hash and the BLAKE3 hasher both fit. */
export interface ChunkHasher {
  update(data: Uint8Array): unknown;
  digest(encoding: 'hex'): string;
}

type Blake3Module = typeof Blake3Binding;

const require = createRequire(import.meta.url);
let blake3: Blake3Module | null | undefined;

function loadBlake3(): Blake3Module | null {
  if (blake3 === undefined) {
    try {
      blake3 = require('@napi-rs/blake-hash') as Blake3Module;
    } catch {
      blake3 = null; // no binary for this platform
    }
  }
  return blake3;
}

/**
 * Where the chunk workers load BLAKE3 from (they run from source text, so they need a path),
 * or undefined when it does not load here.
 */
export function blake3ModulePath(): string | undefined {
  return loadBlake3() ? require.resolve('@napi-rs/blake-hash') : undefined;
}

export function isChunkHashName(name: string): name is ChunkHashName {
  return (chunkHashNames as readonly string[]).includes(name);
}

/** Whether this process can compute `name`. */
export function chunkHashAvailable(name: ChunkHashName): boolean {
  return name === 'sha256' || loadBlake3() !== null;
}

/** The chunk hash of new repositories: BLAKE3 where it loads, else SHA-256. */
export function defaultChunkHash(): ChunkHashName {
  return chunkHashAvailable('blake3') ? 'blake3' : 'sha256';
}

/**
 * Hashers by name, over node:crypto's createHash and the BLAKE3 binding (null where it does
 * not load: a BLAKE3 hasher then fails with `missing`). Self-contained: the chunk workers
 * evaluate it from its source text, so it uses nothing but its arguments.
 */
export function makeChunkHashers(create: typeof createHash, binding: Blake3Module | null, missing: string): (name: ChunkHashName) => ChunkHasher {
  return (name) => {
    if (name === 'sha256') return create('sha256');
    if (!binding) throw new Error(missing);
    const hasher = new binding.Blake3Hasher();
    // The binding declares Buffers: a view over the same memory, no copy.
    return {
      update: (data) => hasher.update(Buffer.from(data.buffer, data.byteOffset, data.byteLength)),
      digest: (encoding) => hasher.digest(encoding),
    };
  };
}

let hashers: ((name: ChunkHashName) => ChunkHasher) | undefined;

/** A fresh hasher of `name`, on this thread. */
export function chunkHasher(name: ChunkHashName): ChunkHasher {
  if (!chunkHashAvailable(name)) throw new RepositoryFormatError(blake3Missing);
  hashers ??= makeChunkHashers(createHash, loadBlake3(), blake3Missing);
  return hashers(name);
}

export const blake3Missing = 'BLAKE3 names this repository\'s chunks, and its native module (@napi-rs/blake-hash) has no binary for this platform';

/** Throws a RepositoryFormatError unless `name` is a chunk hash this Trellis knows. */
export function checkChunkHashName(name: string, location: string): asserts name is ChunkHashName {
  if (!isChunkHashName(name)) throw new RepositoryFormatError(`repository at ${location} names unknown chunk hash ${name}; this Trellis knows ${chunkHashNames.join(', ')}`);
}

/** Throws a RepositoryFormatError unless this process can hash a repository's chunks with `name`. */
export function checkChunkHash(name: string, location: string): asserts name is ChunkHashName {
  checkChunkHashName(name, location);
  if (!chunkHashAvailable(name)) throw new RepositoryFormatError(`repository at ${location}: ${blake3Missing} (${process.platform}-${process.arch})`);
}
