// Standard conditions (metav1.Condition) as Trellis sets them. Guarantees:
// - a list holds at most one condition per type, in the order types were first set;
// - lastTransitionTime moves only when a condition's status changes; a new reason or
//   message alone keeps it, so a status computed twice from the same facts is identical
//   and the status writer can skip the write.
import type { Condition } from '../api/schema.js';

export type { Condition };
export type ConditionStatus = Condition['status'];

/** The three condition types every Trellis kind carries. */
export const ConditionType = { ready: 'Ready', progressing: 'Progressing', degraded: 'Degraded' } as const;

export interface ConditionUpdate {
  type: string;
  status: ConditionStatus;
  /** CamelCase, for programs: `Provisioned`, `BackendUnreachable`. */
  reason: string;
  /** For a person; never a Secret's value. */
  message?: string;
  observedGeneration?: number;
}

/** `conditions` with `update` applied; the input is not modified. `now` is only read when the status changes. */
export function setCondition(conditions: readonly Condition[] | undefined, update: ConditionUpdate, now: () => Date = () => new Date()): Condition[] {
  const list = [...(conditions ?? [])];
  const at = list.findIndex((c) => c.type === update.type);
  const previous = at >= 0 ? list[at] : undefined;
  const next: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message: update.message ?? '',
    lastTransitionTime: previous && previous.status === update.status ? previous.lastTransitionTime : rfc3339(now()),
  };
  if (update.observedGeneration !== undefined) next.observedGeneration = update.observedGeneration;
  if (at >= 0) list[at] = next;
  else list.push(next);
  return list;
}

export function findCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

/** Kubernetes timestamps have second precision; a finer one would differ on every write. */
export function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
