// Hierarchy paths: the key of every piece of work. Guarantees:
// - paths compare segment by segment, so `backends/a` is never an ancestor of `backends/ab`;
// - `compare` is one total order (root-to-leaf, then lexical by code unit, locale-free), so
//   every lock set sorted by it is taken in the same order on every process.

/** Separator between segments in a path's string form. Segments never contain it. */
const SEPARATOR = '/';

export class HierarchyPath {
  /** The empty path: the ancestor of every other path; a write on it excludes everything. */
  static readonly root = new HierarchyPath([]);

  private constructor(readonly segments: readonly string[]) {}

  /** Builds a path from segments; throws on an empty segment or one holding the separator. */
  static of(...segments: string[]): HierarchyPath {
    for (const segment of segments) {
      if (segment.length === 0 || segment.includes(SEPARATOR)) {
        throw new TypeError(`invalid hierarchy path segment ${JSON.stringify(segment)}`);
      }
    }
    return segments.length === 0 ? HierarchyPath.root : new HierarchyPath(segments);
  }

  /** Parses the string form (`backends/a/volumes/ns.v1`); the empty string is the root. */
  static parse(text: string): HierarchyPath {
    return text === '' ? HierarchyPath.root : HierarchyPath.of(...text.split(SEPARATOR));
  }

  get depth(): number {
    return this.segments.length;
  }

  /** The parent path, or undefined for the root. */
  parent(): HierarchyPath | undefined {
    return this.depth === 0 ? undefined : new HierarchyPath(this.segments.slice(0, -1));
  }

  /** Every strict ancestor, root first (the root itself included). */
  ancestors(): HierarchyPath[] {
    const result: HierarchyPath[] = [];
    for (let i = 0; i < this.depth; i++) result.push(new HierarchyPath(this.segments.slice(0, i)));
    return result;
  }

  child(...segments: string[]): HierarchyPath {
    return HierarchyPath.of(...this.segments, ...segments);
  }

  /** True when this path is a strict ancestor of `other`, compared segment-wise. */
  isAncestorOf(other: HierarchyPath): boolean {
    if (this.depth >= other.depth) return false;
    return this.segments.every((segment, i) => segment === other.segments[i]);
  }

  equals(other: HierarchyPath): boolean {
    return this.depth === other.depth && this.segments.every((segment, i) => segment === other.segments[i]);
  }

  /** The global lock order: ancestors before descendants, siblings by code-unit order. */
  static compare(a: HierarchyPath, b: HierarchyPath): number {
    const shared = Math.min(a.depth, b.depth);
    for (let i = 0; i < shared; i++) {
      const x = a.segments[i];
      const y = b.segments[i];
      if (x !== y) return x < y ? -1 : 1;
    }
    return a.depth - b.depth;
  }

  toString(): string {
    return this.segments.join(SEPARATOR);
  }
}
