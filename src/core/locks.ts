// Hierarchical read-write locks over HierarchyPaths. Guarantees:
// - Taking a path in mode M takes read on every ancestor and M on the path: a write
//   excludes every lock on the path and its descendants and any write on its ancestors;
//   reads on one path, on siblings, and on a shared parent run together.
// - One request for many paths (a group snapshot over 50 volumes) is granted all at once
//   or not at all, so nobody holds some locks while waiting for others: no deadlock.
//   Its paths are kept in the global order (HierarchyPath.compare) for a stable record.
// - Fair: a request never overtakes an earlier waiting request it conflicts with, so a
//   stream of readers cannot starve a writer; every waiter waits only for holders and for
//   earlier waiters, so all are served.
// - Conflict checks walk one root-to-leaf path of a trie: O(depth), not O(held locks); a
//   release re-examines the waiters only if one is on a line with it.
// - A wait is bounded by the caller's AbortSignal: aborting it rejects the wait and leaves
//   nothing behind. A hold is not: it lasts until the holder calls `release` (the runner
//   does so when its run settles, so an operation is never cut in half by a timeout).
// - Release is idempotent; the trie prunes itself, so no state is left once every lock is
//   released.
// - `onRelease` listeners hear every release and every abandoned wait, with its requests:
//   the moments a `tryAcquireMany` that failed may succeed (only one whose paths are on a
//   line with those: equal, ancestor or descendant), so callers can retry instead of queueing.
import { realClock, type Clock } from './clock.js';
import { HierarchyPath } from './path.js';

export type LockMode = 'read' | 'write';

export interface LockRequest {
  path: HierarchyPath;
  mode: LockMode;
}

export interface LockHandle {
  /** The normalized requests held, in global order. */
  readonly requests: readonly LockRequest[];
  /** Releases every lock of the handle; later calls do nothing. */
  release(): void;
}

export interface LockObserver {
  /** Seconds a request waited before it was granted (0 when granted at once). */
  waited(mode: LockMode, seconds: number): void;
}

export interface HierarchicalLocksOptions {
  clock?: Clock;
  observer?: LockObserver;
}

/** Lock counts of one layer (held, or waiting) at one trie node. */
interface Counts {
  reads: number;
  writes: number;
  // Requests of this layer on this node or any descendant.
  below: number;
}

type Layer = 'held' | 'waiting';

class TrieNode {
  readonly children = new Map<string, TrieNode>();
  readonly held: Counts = { reads: 0, writes: 0, below: 0 };
  readonly waiting: Counts = { reads: 0, writes: 0, below: 0 };

  constructor(
    readonly parent: TrieNode | undefined,
    readonly segment: string,
  ) {}

  get unused(): boolean {
    return this.held.below === 0 && this.waiting.below === 0 && this.children.size === 0;
  }
}

interface Waiter {
  readonly requests: readonly LockRequest[];
  readonly since: number;
  readonly resolve: (handle: LockHandle) => void;
}

export class HierarchicalLocks {
  private readonly clock: Clock;
  private readonly observer?: LockObserver;
  // Every held and waiting request is counted on its path's node and, in `below`, on every
  // ancestor; nodes with no counts and no children are removed at once.
  private readonly root = new TrieNode(undefined, '');
  // Waiting requests in arrival order; each is counted in the `waiting` layer.
  private readonly waiters = new Set<Waiter>();
  // Called after every release and every abandoned wait, once waiters have been served.
  private readonly releaseListeners = new Set<(requests: readonly LockRequest[]) => void>();

  constructor(options: HierarchicalLocksOptions = {}) {
    this.clock = options.clock ?? realClock;
    this.observer = options.observer;
  }

  /** Takes `mode` on `path` (and read on its ancestors). Rejects with the signal's reason if it aborts first. */
  acquire(path: HierarchyPath, mode: LockMode, signal?: AbortSignal): Promise<LockHandle> {
    return this.acquireMany([{ path, mode }], signal);
  }

  /** Takes all `requests` now if they are free and no earlier waiter conflicts; else undefined (nothing is queued). */
  tryAcquireMany(requests: Iterable<LockRequest>): LockHandle | undefined {
    const normalized = normalize(requests);
    return this.grantable(normalized) ? this.grant(normalized, this.clock.now()) : undefined;
  }

  /** Takes all `requests` at once; see the module comment. */
  acquireMany(requests: Iterable<LockRequest>, signal?: AbortSignal): Promise<LockHandle> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const normalized = normalize(requests);
    const since = this.clock.now();
    if (this.grantable(normalized)) return Promise.resolve(this.grant(normalized, since));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (!this.waiters.delete(waiter)) return;
        this.count(waiter.requests, 'waiting', -1);
        reject(signal?.reason);
        // The aborted request may have held back later, conflicting ones.
        this.serveWaiters();
        this.notifyRelease(waiter.requests);
      };
      const waiter: Waiter = {
        requests: normalized,
        since,
        resolve: (handle) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(handle);
        },
      };
      this.waiters.add(waiter);
      this.count(normalized, 'waiting', +1);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Calls `listener` with the requests released or given up whenever locks may have become free; returns its removal. */
  onRelease(listener: (requests: readonly LockRequest[]) => void): () => void {
    this.releaseListeners.add(listener);
    return () => this.releaseListeners.delete(listener);
  }

  /** Requests waiting now. */
  get waiting(): number {
    return this.waiters.size;
  }

  /** Trie nodes below the root; 0 when no lock is held or awaited. */
  nodeCount(): number {
    let nodes = 0;
    const stack = [...this.root.children.values()];
    for (let node = stack.pop(); node; node = stack.pop()) {
      nodes++;
      stack.push(...node.children.values());
    }
    return nodes;
  }

  private grantable(requests: readonly LockRequest[]): boolean {
    return requests.every((request) => !this.conflicts(request, 'held') && !this.conflicts(request, 'waiting'));
  }

  private conflicts(request: LockRequest, layer: Layer): boolean {
    let node: TrieNode | undefined = this.root;
    for (const segment of request.path.segments) {
      // `node` is a strict ancestor of the path: only a write on it conflicts.
      if (node[layer].writes > 0) return true;
      node = node.children.get(segment);
      if (!node) return false;
    }
    return request.mode === 'read' ? node[layer].writes > 0 : node[layer].below > 0;
  }

  private grant(requests: readonly LockRequest[], since: number): LockHandle {
    this.count(requests, 'held', +1);
    const mode: LockMode = requests.some((r) => r.mode === 'write') ? 'write' : 'read';
    this.observer?.waited(mode, (this.clock.now() - since) / 1000);
    let released = false;
    return {
      requests,
      release: () => {
        if (released) return;
        released = true;
        this.count(requests, 'held', -1);
        // A release frees only waiters on a line with it; the others stay as they were.
        if (requests.some((request) => this.waiterOnALine(request))) this.serveWaiters();
        this.notifyRelease(requests);
      },
    };
  }

  /** True when a waiting request's path equals `request`'s, or is its ancestor or descendant: O(depth). */
  private waiterOnALine(request: LockRequest): boolean {
    let node: TrieNode | undefined = this.root;
    for (const segment of request.path.segments) {
      if (node.waiting.reads + node.waiting.writes > 0) return true;
      node = node.children.get(segment);
      if (!node) return false;
    }
    return node.waiting.below > 0;
  }

  /** Grants, in arrival order, every waiter that conflicts with no holder and no earlier waiter. */
  private serveWaiters(): void {
    if (this.waiters.size === 0) return;
    for (const waiter of this.waiters) this.count(waiter.requests, 'waiting', -1);
    for (const waiter of this.waiters) {
      if (this.grantable(waiter.requests)) {
        this.waiters.delete(waiter);
        waiter.resolve(this.grant(waiter.requests, waiter.since));
      } else {
        this.count(waiter.requests, 'waiting', +1);
      }
    }
  }

  private notifyRelease(requests: readonly LockRequest[]): void {
    for (const listener of this.releaseListeners) listener(requests);
  }

  private count(requests: readonly LockRequest[], layer: Layer, delta: 1 | -1): void {
    for (const { path, mode } of requests) {
      let node = this.root;
      node[layer].below += delta;
      for (const segment of path.segments) {
        let next = node.children.get(segment);
        if (!next) {
          next = new TrieNode(node, segment);
          node.children.set(segment, next);
        }
        node = next;
        node[layer].below += delta;
      }
      if (mode === 'read') node[layer].reads += delta;
      else node[layer].writes += delta;
      for (let n: TrieNode = node; n.parent && n.unused; n = n.parent) n.parent.children.delete(n.segment);
    }
  }
}

/**
 * Sorts requests into the global order, merges duplicates (write wins), and drops paths
 * already covered by a write on an ancestor in the same request, so a request never
 * conflicts with itself.
 */
function normalize(requests: Iterable<LockRequest>): LockRequest[] {
  const sorted = [...requests].sort((a, b) => HierarchyPath.compare(a.path, b.path));
  const result: LockRequest[] = [];
  let coveringWrite: HierarchyPath | undefined;
  for (const request of sorted) {
    const last = result.at(-1);
    if (last && last.path.equals(request.path)) {
      if (request.mode === 'write') {
        result[result.length - 1] = request;
        coveringWrite = request.path;
      }
      continue;
    }
    // Pre-order sort puts a path's descendants right after it.
    if (coveringWrite?.isAncestorOf(request.path)) continue;
    result.push(request);
    coveringWrite = request.mode === 'write' ? request.path : undefined;
  }
  return result;
}
