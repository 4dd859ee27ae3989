// The Kubernetes side of Trellis (see README.md): supervised watches, the cache and its
// indexes, status writes, conditions, Events, finalizers, leader election, the HTTP
// endpoints and the manager that assembles them. Controllers import from here only.
export * from './keys.js';
export * from './resources.js';
export * from './store.js';
export * from './cache.js';
export * from './selector.js';
export * from './conditions.js';
export * from './status.js';
export * from './events.js';
export * from './finalizer.js';
export * from './secrets.js';
export * from './controller.js';
export * from './manager.js';
export { KubeApi, ApiError, WriteFenced, FIELD_MANAGER, isConflict, isNotFound, isRetryable, type JsonPatchOperation, type PatchType } from './api.js';
export { LeaderElector, type LeaderElectionOptions } from './leader.js';
export { Watcher, type WatcherOptions } from './watcher.js';
export { HttpEndpoints, parseAddress } from './http.js';
export { createRuntimeMetrics, type RuntimeMetrics } from './metrics.js';
