// trellis.dev/v1alpha1: the types, schemas and CRDs of Trellis's five kinds.
export * from './backend.js';
export * from './volume.js';
export * from './volume-group-snapshot.js';
export * from './backup-job.js';
export * from './restore-job.js';
export { kinds, kindByName, group, version, apiVersion, type KindDefinition, type PrinterColumn } from './kinds.js';
export { crdFor, renderCrds, toStructural } from './crd.js';
export { Validator, formatErrors, type FieldError, type ValidationResult } from './validation.js';
export type { Condition, KubeObject, LabelSelector } from './schema.js';
