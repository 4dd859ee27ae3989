// The core engine's public surface: paths, clock, backoff, queue, locks, limiter, errors,
// metrics and the controller runner. Nothing here knows Kubernetes or any storage system.
export * from './path.js';
export * from './clock.js';
export * from './backoff.js';
export * from './queue.js';
export * from './locks.js';
export * from './limiter.js';
export * from './errors.js';
export * from './metrics.js';
export * from './runner.js';
