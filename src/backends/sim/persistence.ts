// The simulated array's state file. Guarantees:
// - `save` resolves only once a snapshot taken after the call is on disk, so a mutation
//   awaited through it survives a restart; saves that overlap coalesce into one write.
// - A write is atomic (temp file + rename): a crash leaves the old file or the new one.
//   No fsync: the array simulates process crashes, not power loss.
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { GroupRecord, SnapshotRecord, VolumeRecord } from './records.js';

export interface PersistedState {
  version: 1;
  nextId: number;
  volumes: VolumeRecord[];
  snapshots: SnapshotRecord[];
  groups: GroupRecord[];
}

export class StateFile {
  /** Generations of state: `dirtyGen` counts saves asked for, `savedGen` the last one on disk. */
  private dirtyGen = 0;
  private savedGen = 0;
  private saving: Promise<void> | undefined;

  constructor(
    readonly path: string,
    /** The state as it is now; called when a write starts. */
    private readonly snapshot: () => PersistedState,
  ) {}

  /** The saved state, or undefined when there is no file yet. */
  async load(): Promise<PersistedState | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const saved = JSON.parse(text) as PersistedState;
    if (saved.version !== 1) throw new Error(`sim array: unknown state file version ${String(saved.version)} in ${this.path}`);
    return saved;
  }

  /** Resolves once every mutation so far is on disk. */
  async save(): Promise<void> {
    const wanted = ++this.dirtyGen;
    while (this.savedGen < wanted) {
      this.saving ??= this.write().finally(() => {
        this.saving = undefined;
      });
      await this.saving;
    }
  }

  /** Resolves once no write is running. */
  async settled(): Promise<void> {
    await this.saving;
  }

  private async write(): Promise<void> {
    const gen = this.dirtyGen;
    const tmp = `${this.path}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(this.snapshot()));
    await rename(tmp, this.path);
    this.savedGen = gen;
  }
}
