// The storage driver layer's public surface: the StorageDriver contract, its typed errors,
// and the registry that builds a validated driver from a Backend's spec.
export * from './driver.js';
export * from './errors.js';
export { createDriver, driverConfigSchema, driverKinds, type DriverKind } from './registry.js';
