// The controllers `trellis operator` runs, in registration order. Each is a
// ControllerDefinition (src/runtime/controller.ts): the kind it reconciles, a factory for
// its reconciler, its finalizer and the related kinds that re-enqueue it. The Backend and
// Volume controllers share one DriverPool, so a Backend has exactly one driver in the process.
import type { ControllerDefinition } from '../runtime/controller.js';
import { backendController } from './backend.js';
import { DriverPool, type DriverFactory } from './driver-pool.js';
import { volumeController } from './volume.js';

export { DriverPool, BackendSetupError, type DriverFactory } from './driver-pool.js';
export { BACKEND_FINALIZER, PROBE_INTERVAL_MS, isOnline, limitsOf } from './backend.js';
export { VOLUME_FINALIZER, isSettled, storageName } from './volume.js';

/** The Backend and Volume controllers over one driver pool (a test may inject the driver factory). */
export function createControllers(build?: DriverFactory): ControllerDefinition[] {
  const pool = new DriverPool(build);
  return [backendController(pool), volumeController(pool)] as ControllerDefinition[];
}
