// Uploads in progress: leases and intent records. Guarantees:
// - Each attempt number of an upload has one owner (claimed with putIfAbsent), so two
//   uploads of one volume started at once never share, and overwrite, intent records.
// - An upload's lease is renewed while it runs (every leaseRenewMs, on the injected clock,
//   also while its source stalls). keep() fails with LostLeaseError once the lease may
//   have lapsed or another attempt took it over, rather than resurrect a lease garbage
//   collection already gave up on.
// - An active upload's intents protect their chunks from garbage collection; intents
//   without a lease protect until the newest is a lease ttl old. Lease times are wall-clock
//   times written by the uploader: hosts sharing a repository need clocks within a small
//   fraction of the ttl.
import { sleep } from '../core/clock.js';
import { runAll } from '../core/errors.js';
import { tryRecord, type RepositoryContext } from './context.js';
import { LostLeaseError } from './errors.js';
import { encodeRecord, keys, type IntentRecord, type Lease } from './format.js';

export interface UploadState {
  job: string;
  volume: string;
  lease?: Lease;
  /** The lease was renewed within the lease ttl (or is still being written). */
  active: boolean;
  intentKeys: string[];
}

/** The lease one attempt of an upload holds. */
export class UploadLease {
  private seq = 0;

  private constructor(
    private readonly repo: RepositoryContext,
    readonly lease: Lease,
    /** Chunks an earlier attempt declared: what a resume may find stored already. */
    readonly declaredBefore: Set<string>,
    /** When the lease was last written, on repo.clock. */
    private renewedAt: number,
  ) {}

  get attempt(): number {
    return this.lease.attempt;
  }

  /** Takes the lease of `job`/`volume` with the next free attempt number. */
  static async take(repo: RepositoryContext, job: string, volume: string): Promise<UploadLease> {
    const previous = await tryRecord<Lease>(repo.store, keys.lease(job, volume));
    const now = repo.now().toISOString();
    const lease: Lease = { job, volume, attempt: (previous?.attempt ?? 0) + 1, startedAt: previous?.startedAt ?? now, renewedAt: now, holder: repo.holder };
    // Intent records are keyed by attempt: whichever lease is written last wins, and the
    // other upload fails with a lost lease.
    while (!(await repo.store.putIfAbsent(keys.attempt(job, volume, lease.attempt), encodeRecord(lease)))) lease.attempt++;
    const renewedAt = repo.clock.now();
    await repo.store.put(keys.lease(job, volume), encodeRecord(lease));
    const declaredBefore = new Set<string>();
    if (previous) {
      const intents = keys.intentPrefix(job, volume, 0).replace(/\d+-$/, '');
      for await (const key of repo.store.list(keys.upload(job, volume))) {
        if (!key.startsWith(intents)) continue;
        for (const hash of (await tryRecord<IntentRecord>(repo.store, key))?.chunks ?? []) declaredBefore.add(hash);
      }
      repo.log.info({ job, volume, attempt: lease.attempt, declaredChunks: declaredBefore.size }, 'resuming interrupted upload');
    }
    return new UploadLease(repo, lease, declaredBefore, renewedAt);
  }

  lost(why?: string): LostLeaseError {
    const { job, volume, attempt } = this.lease;
    return new LostLeaseError(
      `backup ${job} volume ${volume}: upload attempt ${attempt} lost its lease (not renewed within ${this.repo.leaseTtlMs} ms, or taken over); ${why ? `${why}; ` : ''}retry the upload`,
    );
  }

  /** Renews the lease when due (always with `force`); throws LostLeaseError if it may have lapsed. */
  async keep(force = false): Promise<void> {
    const now = this.repo.clock.now();
    if (now - this.renewedAt >= this.repo.leaseTtlMs) throw this.lost();
    if (!force && now - this.renewedAt < this.repo.leaseRenewMs) return;
    const { job, volume } = this.lease;
    const held = await tryRecord<Lease>(this.repo.store, keys.lease(job, volume));
    if (held?.attempt !== this.lease.attempt) throw this.lost();
    this.lease.renewedAt = this.repo.now().toISOString();
    // Counted from before the write: a failed write fails the upload anyway, and another
    // keep() meanwhile must not see the old time once the new record may be visible.
    this.renewedAt = now;
    await this.repo.store.put(keys.lease(job, volume), encodeRecord(this.lease));
  }

  /**
   * Renews the lease on a timer until the returned stop is called, so a source that stalls
   * longer than the ttl keeps it; a failure goes to `onFailure` and ends the renewals.
   */
  renewWhileRunning(onFailure: (err: unknown) => void): () => Promise<void> {
    const stop = new AbortController();
    const loop = (async () => {
      for (;;) {
        await sleep(this.repo.clock, this.repo.leaseRenewMs, stop.signal);
        await this.keep();
      }
    })().catch((err: unknown) => {
      if (!stop.signal.aborted) onFailure(err);
    });
    return async () => {
      stop.abort();
      await loop;
    };
  }

  /** Writes the next intent record, naming chunks this upload is about to rely on. */
  async declare(chunks: string[]): Promise<void> {
    const { job, volume, attempt } = this.lease;
    const record: IntentRecord = { attempt, seq: ++this.seq, chunks };
    await this.repo.store.put(keys.intent(job, volume, attempt, record.seq), encodeRecord(record));
  }
}

/** Removes the intent records one attempt of an upload wrote. */
export async function removeIntents(repo: RepositoryContext, job: string, volume: string, attempt: number): Promise<void> {
  const prefix = keys.intentPrefix(job, volume, attempt);
  await deleteAll(repo, await keysOf(repo, keys.upload(job, volume), (key) => key.startsWith(prefix)));
  await repo.store.pruneEmptyFolders?.(keys.upload(job, volume));
}

/** Removes an upload's intents and then its lease (so a half-removed upload is still seen as one). */
export async function removeUpload(repo: RepositoryContext, job: string, volume: string): Promise<void> {
  const leaseKey = keys.lease(job, volume);
  await deleteAll(repo, await keysOf(repo, keys.upload(job, volume), (key) => key !== leaseKey));
  await repo.store.delete(leaseKey);
  await repo.store.pruneEmptyFolders?.(keys.upload(job, volume));
}

async function keysOf(repo: RepositoryContext, prefix: string, wanted: (key: string) => boolean): Promise<string[]> {
  const found: string[] = [];
  for await (const key of repo.store.list(prefix)) if (wanted(key)) found.push(key);
  return found;
}

/**
 * Deletes the keys, eight at a time: one at a time, the twenty intents of a 256 MB upload
 * took 6 ms at the end of every backup. Resolves once all are gone; otherwise throws, once
 * every delete has settled, one error naming each key that failed, so what the caller
 * deletes after them stays.
 */
async function deleteAll(repo: RepositoryContext, keys: string[]): Promise<void> {
  await runAll(keys, { parallelism: 8, keyOf: (key) => key, what: 'upload records', logger: repo.log }, (key) => repo.store.delete(key));
}

/** Every upload in progress (or abandoned), with whether its lease still holds. */
export async function listUploads(repo: RepositoryContext): Promise<UploadState[]> {
  const uploads = new Map<string, UploadState>();
  for await (const key of repo.store.list(keys.uploads)) {
    const [, job, volume] = key.split('/');
    if (!job || !volume) continue;
    const id = `${job}/${volume}`;
    let state = uploads.get(id);
    if (!state) uploads.set(id, (state = { job, volume, active: true, intentKeys: [] }));
    if (key !== keys.lease(job, volume)) state.intentKeys.push(key);
  }
  const now = repo.now().getTime();
  for (const state of uploads.values()) {
    state.lease = await tryRecord<Lease>(repo.store, keys.lease(state.job, state.volume));
    if (state.lease) {
      state.active = now - Date.parse(state.lease.renewedAt) < repo.leaseTtlMs;
      continue;
    }
    // Intents without a lease belong to an upload being removed, or to one that lost its
    // lease while a batch was in flight: they protect (the safe side) until the newest
    // of them is a lease ttl old.
    let newest = 0;
    for (const key of state.intentKeys) newest = Math.max(newest, (await repo.store.stat(key))?.modifiedAt.getTime() ?? 0);
    state.active = now - newest < repo.leaseTtlMs;
  }
  return [...uploads.values()];
}

/** The chunks every active upload has declared. */
export async function leasedChunks(repo: RepositoryContext, uploads?: UploadState[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const upload of uploads ?? (await listUploads(repo))) {
    if (!upload.active) continue;
    for (const key of upload.intentKeys) for (const hash of (await tryRecord<IntentRecord>(repo.store, key))?.chunks ?? []) out.add(hash);
  }
  return out;
}
