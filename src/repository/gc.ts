// Garbage collection: frees the chunks no manifest references, safe while uploads run.
//
// The unit it frees is a blob: a pack (with its index) or, in a format-1 repository, a
// loose chunk file. A pack some of whose chunks are still referenced stays whole until
// the unreferenced part reaches `repackThreshold` of its bytes; then its live chunks are
// copied into a new pack (durable, with its index) and the old pack becomes a victim.
//
// Why a concurrent upload never loses a chunk it relies on (the one argument; backup.ts
// and uploads.ts keep their side of it):
// - An upload writes an intent record naming a batch of chunks before it checks whether
//   they are stored, and that check asks the store (is the pack's index there?), not a
//   snapshot. It writes its manifest before it drops its lease.
// - GC first moves each victim into trash/ (a pack's index first, then the pack), then
//   reads leases (with their intents), then manifests, and puts back every victim holding
//   a chunk either of them names that no surviving blob holds.
// Take an upload that found chunk X stored and so did not write it. Its check came before
// GC's move of X's blob, so its intent came before the move too, and GC reads intents after
// the move: if the lease is still there, GC sees X. If the lease is gone, the upload wrote
// its manifest before dropping it, and GC reads manifests after leases: GC sees X. An upload
// that checks after the move finds X absent and writes it again (into a pack of its own).
// A pack is put back pack first, index last, so an index never names a missing pack.
// A GC killed between moving and deciding leaves trash/ behind; the next run puts all of
// it back first and decides again. A pack without an index is a killed upload's leftover
// (an upload writes the index right after the pack); it goes once it is older than the
// temporaries' grace. Two GC runs must not overlap (run one per repository at a time).
import { randomBytes } from 'node:crypto';
import { componentLogger } from '../log.js';
import { manifestKeys, readManifest } from './catalog.js';
import { ChunkIndex, readStored } from './chunk-index.js';
import type { RepositoryContext } from './context.js';
import { chunkHashOf, defaultPacking, isChunkHash, keys, packIdOf, type PackEntry } from './format.js';
import { PackWriter } from './pack-writer.js';
import { leasedChunks, listUploads, removeUpload } from './uploads.js';

const log = componentLogger('repository-gc');

export interface GcOptions {
  /** Report what would be removed, remove nothing. */
  dryRun?: boolean;
  /** Temporary files and index-less packs younger than this are left alone: a writer may still own them (default 1 h). */
  temporaryGraceMs?: number;
  /** Repack a pack once this fraction of its stored bytes is unreferenced (default 0.5; above 1: never). */
  repackThreshold?: number;
  onProgress?: (phase: string, done: number, total?: number) => void;
}

export interface GcResult {
  dryRun: boolean;
  /** Chunks stored (counting every copy). */
  chunksScanned: number;
  /** Distinct stored chunks some manifest or live upload references. */
  chunksReferenced: number;
  /** Unreferenced chunks at the first look, in the blobs chosen to go. */
  candidates: number;
  chunksDeleted: number;
  /** Stored bytes of those chunks. */
  bytesDeleted: number;
  /** Candidates put back because a lease or a new manifest named them in the second look. */
  chunksKeptForUploads: number;
  /** Packs and loose chunks a killed run had left in the trash, put back. */
  trashRecovered: number;
  packsDeleted: number;
  /** Packs whose live chunks were copied into new packs so the rest could go. */
  packsRepacked: number;
  chunksRepacked: number;
  /** Packs without an index (a killed upload's) removed after the grace. */
  orphanPacksRemoved: number;
  expiredUploadsRemoved: number;
  temporariesRemoved: number;
}

/** Chunks referenced by active leases, then by manifests; this order is what the argument above relies on. */
export async function referencedChunks(repo: RepositoryContext): Promise<{ leased: Set<string>; referenced: Set<string> }> {
  const leased = await leasedChunks(repo);
  const referenced = new Set(leased);
  for await (const key of manifestKeys(repo)) {
    // An unreadable manifest stops GC: it may reference anything.
    const manifest = await readManifest(repo, key);
    for (const [hash] of manifest.chunks) referenced.add(hash);
  }
  return { leased, referenced };
}

/** A blob GC decides about: a pack with its index, or a loose chunk. */
interface Unit {
  /** Keys in the order they are moved to the trash (a pack's index before the pack). */
  keys: string[];
  entries: PackEntry[];
  /** Entries whose chunk is referenced and held here rather than elsewhere. */
  live: PackEntry[];
}

function storedBytes(entries: PackEntry[]): number {
  return entries.reduce((n, [, , length]) => n + length, 0);
}

/** The units of the index, with loose chunks sized by stat. */
async function unitsOf(repo: RepositoryContext, index: ChunkIndex): Promise<Unit[]> {
  const units: Unit[] = [];
  for (const record of index.packIndexes()) units.push({ keys: [keys.packIndex(record.pack), keys.pack(record.pack)], entries: record.entries, live: [] });
  for (const hash of index.looseChunks()) {
    const length = (await repo.store.stat(keys.chunk(hash)))?.size ?? 0;
    units.push({ keys: [keys.chunk(hash)], entries: [[hash, 0, length, 0]], live: [] });
  }
  return units;
}

/**
 * Marks each referenced chunk live in one unit: where several hold it (a repack, racing
 * uploads), in the unit most of whose chunks are referenced, so copies elsewhere are garbage.
 */
function markLive(units: Unit[], referenced: Set<string>): number {
  const fraction = new Map<Unit, number>();
  for (const unit of units) fraction.set(unit, unit.entries.filter(([h]) => referenced.has(h)).length / Math.max(1, unit.entries.length));
  const home = new Map<string, Unit>();
  for (const unit of units) {
    for (const [hash] of unit.entries) {
      if (!referenced.has(hash)) continue;
      const best = home.get(hash);
      if (!best || fraction.get(unit)! > fraction.get(best)! || (fraction.get(unit) === fraction.get(best) && unit.keys[0]! < best.keys[0]!)) home.set(hash, unit);
    }
  }
  for (const unit of units) unit.live = unit.entries.filter(([hash]) => home.get(hash) === unit);
  return home.size;
}

export async function collectGarbage(repo: RepositoryContext, options: GcOptions = {}): Promise<GcResult> {
  const store = repo.store;
  const dryRun = options.dryRun ?? false;
  const threshold = options.repackThreshold ?? 0.5;
  const progress = options.onProgress ?? (() => undefined);
  const result: GcResult = {
    dryRun,
    chunksScanned: 0,
    chunksReferenced: 0,
    candidates: 0,
    chunksDeleted: 0,
    bytesDeleted: 0,
    chunksKeptForUploads: 0,
    trashRecovered: 0,
    packsDeleted: 0,
    packsRepacked: 0,
    chunksRepacked: 0,
    orphanPacksRemoved: 0,
    expiredUploadsRemoved: 0,
    temporariesRemoved: 0,
  };

  if (!dryRun) result.trashRecovered = await restoreTrash(repo);

  const first = await referencedChunks(repo);
  const index = await ChunkIndex.load(store);
  const units = await unitsOf(repo, index);
  result.chunksScanned = units.reduce((n, u) => n + u.entries.length, 0);
  progress('scan', result.chunksScanned);
  result.chunksReferenced = markLive(units, first.referenced);

  const victims: Unit[] = [];
  const repack: Unit[] = [];
  for (const unit of units) {
    if (unit.live.length === 0) victims.push(unit);
    else if (unit.live.length < unit.entries.length && 1 - storedBytes(unit.live) / Math.max(1, storedBytes(unit.entries)) >= threshold) repack.push(unit);
  }
  const garbage = (unit: Unit) => unit.entries.filter((e) => !unit.live.includes(e));
  result.candidates = [...victims, ...repack].reduce((n, u) => n + garbage(u).length, 0);
  if (dryRun) {
    result.chunksDeleted = result.candidates;
    result.bytesDeleted = [...victims, ...repack].reduce((n, u) => n + storedBytes(garbage(u)), 0);
    return result;
  }

  // Live chunks of packs worth repacking go into new packs first, durably, so the old
  // packs can go like any victim.
  const copied = new Set<string>();
  if (repack.length > 0) {
    const writer = new PackWriter(repo, repo.config.packing ?? defaultPacking, repo.config.chunking.maxSize + 1, (record) => {
      for (const [hash] of record.entries) copied.add(hash);
    });
    for (const unit of repack) {
      for (const entry of unit.live) {
        const location = index.lookup(entry[0]);
        if (!location) continue;
        await writer.add(entry[0], entry[3], [await readStored(store, location)]);
        result.chunksRepacked++;
      }
      result.packsRepacked++;
      victims.push(unit);
    }
    await writer.flush();
  }

  const run = `${repo.now().toISOString().replace(/[:.]/g, '-')}-${randomBytes(4).toString('hex')}`;
  const moved: Unit[] = [];
  for (const [i, unit] of victims.entries()) {
    if (await store.move(unit.keys[0]!, keys.trashed(run, unit.keys[0]!))) {
      for (const key of unit.keys.slice(1)) await store.move(key, keys.trashed(run, key));
      moved.push(unit);
    }
    if ((i + 1) % 1000 === 0) progress('move', i + 1, victims.length);
  }

  const second = await referencedChunks(repo);
  const survivors = new Set(copied);
  const victimSet = new Set(victims);
  for (const unit of units) if (!victimSet.has(unit)) for (const [hash] of unit.entries) survivors.add(hash);
  for (const [i, unit] of moved.entries()) {
    const needed = unit.entries.some(([hash]) => second.referenced.has(hash) && !survivors.has(hash));
    const dead = garbage(unit);
    if (needed) {
      for (const key of [...unit.keys].reverse()) await putBack(repo, keys.trashed(run, key), key);
      result.chunksKeptForUploads += dead.length;
    } else {
      for (const key of unit.keys) await store.delete(keys.trashed(run, key));
      result.chunksDeleted += dead.length;
      result.bytesDeleted += storedBytes(dead);
      if (unit.keys.length > 1) result.packsDeleted++;
    }
    if ((i + 1) % 1000 === 0) progress('decide', i + 1, moved.length);
  }
  await store.pruneEmptyFolders?.(keys.trash);

  for (const upload of await listUploads(repo)) {
    if (upload.active) continue;
    await removeUpload(repo, upload.job, upload.volume);
    result.expiredUploadsRemoved++;
  }
  const graceMs = options.temporaryGraceMs ?? 60 * 60_000;
  const before = new Date(repo.now().getTime() - graceMs);
  result.orphanPacksRemoved = await removeOrphanPacks(repo, index, before);
  result.temporariesRemoved = (await store.removeStaleTemporaries?.(before)) ?? 0;

  log.info(result, 'garbage collection done');
  return result;
}

/** Removes packs older than `before` that no index names (an upload killed between the two). */
async function removeOrphanPacks(repo: RepositoryContext, index: ChunkIndex, before: Date): Promise<number> {
  const indexed = new Set([...index.packIndexes()].map((r) => r.pack));
  let removed = 0;
  for await (const key of repo.store.list(keys.packFolder)) {
    const id = packIdOf(key);
    if (id?.kind !== 'pack' || indexed.has(id.id)) continue;
    const stat = await repo.store.stat(key);
    if (!stat || stat.modifiedAt >= before || (await repo.store.has(keys.packIndex(id.id)))) continue;
    if (await repo.store.delete(key)) removed++;
  }
  return removed;
}

/** Puts a trashed blob back unless it is there again (a loose chunk an upload wrote anew). */
async function putBack(repo: RepositoryContext, trashed: string, key: string): Promise<void> {
  if (await repo.store.has(key)) await repo.store.delete(trashed);
  else await repo.store.move(trashed, key);
}

/** Puts back everything a killed GC run left in the trash: packs before their indexes. */
async function restoreTrash(repo: RepositoryContext): Promise<number> {
  const found: { trashed: string; key: string }[] = [];
  for await (const trashed of repo.store.list(keys.trash)) {
    const rest = trashed.split('/').slice(2).join('/');
    // A format-1 run kept a chunk as trash/<run>/<sha256>.
    const key = isChunkHash(rest) ? keys.chunk(rest) : rest;
    if (chunkHashOf(key) || packIdOf(key)) found.push({ trashed, key });
  }
  const order = (key: string) => (key.startsWith(`${keys.packIndexFolder}/`) ? 1 : 0);
  found.sort((a, b) => order(a.key) - order(b.key));
  let restored = 0;
  for (const { trashed, key } of found) {
    await putBack(repo, trashed, key);
    if (order(key) === 0) restored++;
  }
  await repo.store.pruneEmptyFolders?.(keys.trash);
  return restored;
}
