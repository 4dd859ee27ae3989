// What every part of a repository shares: its store, its configuration, its time and its
// log. BackupRepository is one; the modules beside it (catalog, uploads, backup, restore,
// gc) are functions of it, each one idea.
import type { Clock } from '../core/clock.js';
import type { Logger } from '../log.js';
import { BlobNotFoundError, type BlobStore } from './blob-store.js';
import { decodeRecord, type RepositoryConfig } from './format.js';

export interface RepositoryContext {
  readonly store: BlobStore;
  readonly config: RepositoryConfig;
  /** Timers and elapsed time (lease renewal, the upload's own lease age). */
  readonly clock: Clock;
  /** Wall-clock time, for timestamps in records and for lease times other hosts compare. */
  now(): Date;
  readonly log: Logger;
  /** Who holds leases taken by this process, for operators reading them. */
  readonly holder: string;
  readonly leaseTtlMs: number;
  readonly leaseRenewMs: number;
}

export async function readRecord<T>(store: BlobStore, key: string): Promise<T> {
  return decodeRecord<T>(key, await store.get(key));
}

/** The record at `key`, or undefined when there is none. */
export async function tryRecord<T>(store: BlobStore, key: string): Promise<T | undefined> {
  try {
    return await readRecord<T>(store, key);
  } catch (err) {
    if (err instanceof BlobNotFoundError) return undefined;
    throw err;
  }
}
