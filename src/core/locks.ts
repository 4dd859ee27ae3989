// Hierarchical read-write locks over HierarchyPaths. Guarantees:
// - Taking a path in mode M takes read on every ancestor and M on the path: a write
//   excludes every lock on the path and its descendants and any write on its ancestors;
//   reads on one path, on siblings, and on a shared parent run together.
// - One request for many paths (a group snapshot over 50 volumes) is granted all at once
//   or not at all, so nobody holds some locks while waiting for others: no deadlock.
//   Its paths are kept in the global order (HierarchyPath.compare) for a stable record.
// - Fair: a request never overtakes an earlier waiting request it conflicts with, so a
//   stream of readers cannot starve a writer; every waiter waits only for holders and for
//   earlier waiters, so all are served. This is the one fairness rule of the engine: the
//   runner queues every busy key here, however many there are.
// - Cheap at any number of waiters: conflict checks walk one root-to-leaf path of a trie,
//   O(depth); a release (or an abandoned wait) examines only the waiters on a line with
//   it (equal path, ancestor or descendant), in arrival order, and stops once a write on
//   its line is granted again: O(depth + woken). Blocked keys of one backend cost nothing
//   to releases on another, and a queue behind the global lock costs O(1) a release
//   (`examined` counts the waiters looked at, for tests).
// - A wait is bounded by the caller's AbortSignal: aborting it rejects the wait and leaves
//   nothing behind. A hold is not: it lasts until the holder calls `release` (the runner
//   does so when its run settles, so an operation is never cut in half by a timeout).
// - Release is idempotent; the trie prunes itself, so no state is left once every lock is
//   released and no request waits.
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

interface Waiter {
  readonly requests: readonly LockRequest[];
  /** Arrival number: lower arrived earlier. */
  readonly seq: number;
  readonly since: number;
  readonly resolve: (handle: LockHandle) => void;
}

class TrieNode {
  readonly children = new Map<string, TrieNode>();
  // Held locks exactly here, and held requests here or below.
  heldReads = 0;
  heldWrites = 0;
  heldBelow = 0;
  // Waiters requesting a write on exactly this path; and waiters requesting it or a path
  // below, in any mode. Both in arrival order.
  // Made on the first waiter: most nodes live only while a lock is held, and never see one.
  writeWaiters = NO_WAITERS;
  waitersBelow = NO_WAITERS;

  constructor(
    readonly parent: TrieNode | undefined,
    readonly segment: string,
  ) {}

  get unused(): boolean {
    return this.heldBelow === 0 && this.waitersBelow.size === 0 && this.children.size === 0;
  }
}

/**
 * Waiters in arrival order, with O(1) add, delete and earliest. A plain Set keeps order too,
 * but V8 leaves deleted entries as holes its iteration walks over, which made "the
 * earliest" O(waiters served so far) for a long queue.
 */
class ArrivalSet {
  private readonly members = new Set<Waiter>();
  // Members in arrival order, plus entries of deleted ones before `head` or not yet swept.
  private order: Waiter[] = [];
  private head = 0;

  get size(): number {
    return this.members.size;
  }

  add(waiter: Waiter): void {
    if (this.members.has(waiter)) return;
    this.members.add(waiter);
    this.order.push(waiter);
  }

  delete(waiter: Waiter): boolean {
    if (!this.members.delete(waiter)) return false;
    if (this.members.size === 0) {
      this.order = [];
      this.head = 0;
    } else if (this.order.length - this.head > 2 * this.members.size + 32) {
      this.order = this.order.slice(this.head).filter((w) => this.members.has(w));
      this.head = 0;
    }
    return true;
  }

  /** Arrival number of the earliest member; Infinity when empty. */
  earliest(): number {
    while (this.head < this.order.length && !this.members.has(this.order[this.head])) this.head++;
    return this.head < this.order.length ? this.order[this.head].seq : Infinity;
  }

  /** Members in arrival order; ones deleted during the iteration are skipped. */
  *[Symbol.iterator](): Generator<Waiter> {
    // A delete may sweep `order` into a new array; this walk keeps the one it started on.
    const order = this.order;
    for (let i = this.head; i < order.length; i++) if (this.members.has(order[i])) yield order[i];
  }
}

/** The empty set every trie node starts with; never added to. */
const NO_WAITERS = new ArrivalSet();

/** The waiters of several arrival-ordered sets merged into one arrival order, each once; sets may shrink meanwhile. */
function* inArrivalOrder(sets: ArrivalSet[]): Generator<Waiter> {
  const cursors = sets.map((set) => set[Symbol.iterator]());
  const heads = cursors.map((cursor) => cursor.next().value as Waiter | undefined);
  const seen = new Set<Waiter>();
  for (;;) {
    let first = -1;
    for (let i = 0; i < heads.length; i++) if (heads[i] && (first < 0 || heads[i]!.seq < heads[first]!.seq)) first = i;
    if (first < 0) return;
    const waiter = heads[first]!;
    heads[first] = cursors[first].next().value as Waiter | undefined;
    if (seen.has(waiter)) continue;
    seen.add(waiter);
    yield waiter;
  }
}


export class HierarchicalLocks {
  private readonly clock: Clock;
  private readonly observer?: LockObserver;
  // Every held and waiting request is recorded on its path's node and, in `heldBelow` or
  // `waitersBelow`, on every ancestor; unused nodes are removed at once.
  private readonly root = new TrieNode(undefined, '');
  private nextSeq = 0;
  private examinedCount = 0;

  constructor(options: HierarchicalLocksOptions = {}) {
    this.clock = options.clock ?? realClock;
    this.observer = options.observer;
  }

  /** Takes `mode` on `path` (and read on its ancestors). Rejects with the signal's reason if it aborts first. */
  acquire(path: HierarchyPath, mode: LockMode, signal?: AbortSignal): Promise<LockHandle> {
    return this.acquireMany([{ path, mode }], signal);
  }

  /** Takes all `requests` now if they are free and no waiter conflicts; else undefined (nothing is queued). */
  tryAcquireMany(requests: Iterable<LockRequest>): LockHandle | undefined {
    const normalized = normalize(requests);
    return this.free(normalized, Infinity) ? this.grant(normalized, this.clock.now()) : undefined;
  }

  /** Takes all `requests` at once; see the module comment. */
  acquireMany(requests: Iterable<LockRequest>, signal?: AbortSignal): Promise<LockHandle> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const normalized = normalize(requests);
    const since = this.clock.now();
    if (this.free(normalized, Infinity)) return Promise.resolve(this.grant(normalized, since));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (!this.removeWaiter(waiter)) return;
        reject(signal?.reason);
        // The abandoned request may have held back later, conflicting ones.
        this.wake(waiter.requests);
      };
      const waiter: Waiter = {
        requests: normalized,
        seq: this.nextSeq++,
        since,
        resolve: (handle) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(handle);
        },
      };
      this.addWaiter(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Requests waiting now. */
  get waiting(): number {
    // Every waiter is recorded on the root, the ancestor of every path.
    return this.root.waitersBelow.size;
  }

  /** Waiters looked at by releases and abandoned waits so far: the cost of serving waiters. */
  get examined(): number {
    return this.examinedCount;
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

  /** True when no holder and no waiter earlier than `before` conflicts with any of `requests`. */
  private free(requests: readonly LockRequest[], before: number): boolean {
    return requests.every((request) => !this.conflicts(request, before));
  }

  private conflicts({ path, mode }: LockRequest, before: number): boolean {
    let node: TrieNode | undefined = this.root;
    for (const segment of path.segments) {
      // `node` is a strict ancestor of the path: only a write on it conflicts.
      if (node.heldWrites > 0 || node.writeWaiters.earliest() < before) return true;
      node = node.children.get(segment);
      if (!node) return false;
    }
    if (mode === 'read') return node.heldWrites > 0 || node.writeWaiters.earliest() < before;
    return node.heldBelow > 0 || node.waitersBelow.earliest() < before;
  }

  private grant(requests: readonly LockRequest[], since: number): LockHandle {
    for (const request of requests) this.countHeld(request, +1);
    const mode: LockMode = requests.some((r) => r.mode === 'write') ? 'write' : 'read';
    this.observer?.waited(mode, (this.clock.now() - since) / 1000);
    let released = false;
    return {
      requests,
      release: () => {
        if (released) return;
        released = true;
        for (const request of requests) this.countHeld(request, -1);
        this.wake(requests);
      },
    };
  }

  /**
   * Grants the waiters a release or an abandoned wait of `requests` may have freed: those
   * on a line with one of them, in arrival order. Waiters elsewhere cannot have been held
   * back by it, so they are not looked at; and once a write on the path or above it is
   * granted again, every later one on that line is held back by it, so the scan stops.
   */
  private wake(requests: readonly LockRequest[]): void {
    for (const { path, mode } of requests) {
      if (this.root.waitersBelow.size === 0) return;
      const lines: ArrivalSet[] = [];
      let node: TrieNode | undefined = this.root;
      for (const segment of path.segments) {
        // A write waiting on an ancestor was held back by anything below it.
        if (node.writeWaiters.size > 0) lines.push(node.writeWaiters);
        node = node.children.get(segment);
        if (!node) break;
      }
      // A read held back only writes on its path; a write, everything at or below it.
      if (node) lines.push(mode === 'read' ? node.writeWaiters : node.waitersBelow);
      if (lines.every((line) => line.size === 0)) continue;
      for (const waiter of inArrivalOrder(lines)) {
        this.examinedCount++;
        if (!this.free(waiter.requests, waiter.seq)) continue;
        this.removeWaiter(waiter);
        waiter.resolve(this.grant(waiter.requests, waiter.since));
        if (this.writeHeldOnOrAbove(path)) break;
      }
    }
  }

  /** True when a write is held on `path` or one of its ancestors. */
  private writeHeldOnOrAbove(path: HierarchyPath): boolean {
    let node: TrieNode | undefined = this.root;
    for (const segment of path.segments) {
      if (node.heldWrites > 0) return true;
      node = node.children.get(segment);
      if (!node) return false;
    }
    return node.heldWrites > 0;
  }

  private addWaiter(waiter: Waiter): void {
    for (const { path, mode } of waiter.requests) {
      const node = this.walk(path, (n) => (n.waitersBelow === NO_WAITERS ? (n.waitersBelow = new ArrivalSet()) : n.waitersBelow).add(waiter));
      if (mode === 'write') (node.writeWaiters === NO_WAITERS ? (node.writeWaiters = new ArrivalSet()) : node.writeWaiters).add(waiter);
    }
  }

  /** Takes a waiter out of the index; false if it was not waiting. */
  private removeWaiter(waiter: Waiter): boolean {
    if (!this.root.waitersBelow.delete(waiter)) return false;
    for (const { path, mode } of waiter.requests) {
      const node = this.walk(path, (n) => n.waitersBelow.delete(waiter));
      if (mode === 'write') node.writeWaiters.delete(waiter);
      this.prune(node);
    }
    return true;
  }

  private countHeld({ path, mode }: LockRequest, delta: 1 | -1): void {
    const node = this.walk(path, (n) => (n.heldBelow += delta));
    if (mode === 'read') node.heldReads += delta;
    else node.heldWrites += delta;
    this.prune(node);
  }

  /** The node of `path`, created with its ancestors if missing; `visit` runs on each, root first. */
  private walk(path: HierarchyPath, visit: (node: TrieNode) => void): TrieNode {
    let node = this.root;
    visit(node);
    for (const segment of path.segments) {
      let next = node.children.get(segment);
      if (!next) {
        next = new TrieNode(node, segment);
        node.children.set(segment, next);
      }
      node = next;
      visit(node);
    }
    return node;
  }

  private prune(node: TrieNode): void {
    for (let n: TrieNode = node; n.parent && n.unused; n = n.parent) n.parent.children.delete(n.segment);
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
