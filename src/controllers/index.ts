// The controllers `trellis operator` runs, in registration order. Each is a
// ControllerDefinition (src/runtime/controller.ts): the kind it reconciles, a factory for
// its reconciler, its finalizer and the related kinds that re-enqueue it. The Backend and
// Volume controllers (issue 20) are added here.
import type { ControllerDefinition } from '../runtime/controller.js';

export const controllers: readonly ControllerDefinition[] = [];
