// Schema building blocks shared by every kind. Each helper yields a plain JSON Schema that is
// valid both for ajv (draft-07) and as a structural CRD schema, so one definition serves the
// TypeScript types (Static<>), the operator's own validation and the CRD YAML.
import { Type, type Static, type TSchema } from 'typebox';

export { Type, type Static, type TSchema };

/** A CEL rule as the API server runs it; `validation.ts` holds the same rule for ajv. */
export interface CelRule {
  rule: string;
  message: string;
  /** JSON path of the offending field, for a precise error location. */
  fieldPath?: string;
}

/** A string limited to `values`; typed, which CRDs require and typebox's Enum omits. */
export function StringEnum<const T extends readonly string[]>(values: T, options: { description: string; default?: T[number] }) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/** An object with free string keys (labels, driver parameters). */
export function StringMap(description: string) {
  return Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: { type: 'string' }, description });
}

/**
 * A Kubernetes resource quantity for a byte size that must be above zero: an integer number
 * of bytes, or a string such as `10Gi`, `500M`, `1.5Ti`. Milli-units and exponents make no
 * sense for bytes and are refused. The mantissa must hold a non-zero digit, so `0`, `0Gi`
 * and `-1Gi` fail the pattern; RE2 (the API server's regex engine) has no lookahead, hence
 * the two alternatives.
 */
export const positiveQuantityPattern =
  '^\\+?(0*[1-9][0-9]*(\\.[0-9]*)?|0*\\.0*[1-9][0-9]*)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$';

export function PositiveQuantity(description: string) {
  return Type.Unsafe<string | number>({
    'x-kubernetes-int-or-string': true,
    anyOf: [{ type: 'integer' }, { type: 'string' }],
    pattern: positiveQuantityPattern,
    minimum: 1,
    description,
  });
}

/** A Go-style duration such as `720h`, `30m` or `7d` (days are allowed for retention). */
export const durationPattern = '^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+$';

/** Kubernetes object names (DNS-1123 subdomain, the API server checks `metadata.name` the same way). */
export const namePattern = '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$';

export function ObjectName(description: string) {
  return Type.String({ minLength: 1, maxLength: 253, pattern: namePattern, description });
}

/** A label selector, the same shape as metav1.LabelSelector. */
export const LabelSelector = Type.Object(
  {
    matchLabels: Type.Optional(StringMap('Labels that a Volume must carry, each with exactly this value.')),
    matchExpressions: Type.Optional(
      Type.Array(
        Type.Object(
          {
            key: Type.String({ minLength: 1, description: 'The label key the requirement applies to.' }),
            operator: StringEnum(['In', 'NotIn', 'Exists', 'DoesNotExist'] as const, {
              description: 'How the label value relates to values: In, NotIn, Exists or DoesNotExist.',
            }),
            values: Type.Optional(
              Type.Array(Type.String(), { description: 'Values for In and NotIn; must be empty for Exists and DoesNotExist.' }),
            ),
          },
          { additionalProperties: false, description: 'One label requirement.' },
        ),
        { description: 'Label requirements that must all hold.' },
      ),
    ),
  },
  { additionalProperties: false, description: 'Selects Volumes by label, like metav1.LabelSelector. An empty selector selects every Volume in the namespace.' },
);
export type LabelSelector = Static<typeof LabelSelector>;

/** Standard metav1.Condition, kept as a list map keyed by type. */
export const Conditions = Type.Unsafe<Condition[]>({
  type: 'array',
  description: 'The latest observations of the object: Ready, Progressing and Degraded, each with a reason and a message.',
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
  items: Type.Object(
    {
      type: Type.String({ minLength: 1, maxLength: 316, description: 'Condition type: Ready, Progressing or Degraded.' }),
      status: StringEnum(['True', 'False', 'Unknown'] as const, { description: 'True, False or Unknown.' }),
      reason: Type.String({ minLength: 1, maxLength: 1024, description: 'A CamelCase word a program can match on.' }),
      message: Type.String({ maxLength: 32768, description: 'What happened, for a person.' }),
      lastTransitionTime: Type.String({ format: 'date-time', description: 'When status last changed.' }),
      observedGeneration: Type.Optional(Type.Integer({ minimum: 0, description: 'The metadata.generation this condition was computed from.' })),
    },
    { additionalProperties: false, description: 'One condition.' },
  ),
});
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export const ObservedGeneration = Type.Integer({ minimum: 0, description: 'The metadata.generation the status was computed from.' });

export function Timestamp(description: string) {
  return Type.String({ format: 'date-time', description });
}

/** The Kubernetes object envelope every kind shares; metadata is checked by the API server itself. */
export interface KubeObject<Spec, Status> {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    deletionTimestamp?: string;
    creationTimestamp?: string;
  };
  spec: Spec;
  status?: Status;
}
