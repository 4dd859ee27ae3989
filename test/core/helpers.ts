import { HierarchyPath } from '../../src/core/path.js';
// Test helpers for the core: hand-resolved promises and a state probe for promises.
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Tracks whether a promise has settled, for asserting "still waiting" without sleeping. */
export function track<T>(promise: Promise<T>): { readonly settled: boolean; readonly value?: T; readonly error?: unknown } {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error) => Object.assign(state, { settled: true, error }),
  );
  return state;
}


/** `backends/<b>/volumes/<ns>.<v>`: the shape the runtime gives volume keys. */
export function volumePath(backend: string, namespace: string, name: string): HierarchyPath {
  return HierarchyPath.of('backends', backend, 'volumes', `${namespace}.${name}`);
}
