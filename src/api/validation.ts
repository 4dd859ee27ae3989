// Validates Trellis objects in the operator and in tests with the same schemas the API server
// enforces. CEL rules cannot run in ajv, so each rule the CRDs carry has a JavaScript twin
// here; a rule without a twin fails at start-up, so the two can never drift apart silently.
// Transition rules (those reading oldSelf) only the API server can judge.
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { kinds, type KindDefinition } from './kinds.js';
import type { CelRule } from './schema.js';

type Obj = Record<string, unknown>;
const has = (o: unknown, key: string): boolean => typeof o === 'object' && o !== null && (o as Obj)[key] !== undefined;

const celTwins: Record<string, (self: Obj) => boolean> = {
  'has(self.selector) != has(self.volumes)': (s) => has(s, 'selector') !== has(s, 'volumes'),
  '(has(self.selector) ? 1 : 0) + (has(self.volumes) ? 1 : 0) + (has(self.volumeGroupSnapshotRef) ? 1 : 0) == 1': (s) =>
    ['selector', 'volumes', 'volumeGroupSnapshotRef'].filter((k) => has(s, k)).length === 1,
  '!has(self.minConcurrentOperations) || self.minConcurrentOperations <= (has(self.maxConcurrentOperations) ? self.maxConcurrentOperations : 10)': (s) =>
    !has(s, 'minConcurrentOperations') || (s.minConcurrentOperations as number) <= (has(s, 'maxConcurrentOperations') ? (s.maxConcurrentOperations as number) : 10),
  "(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)": (s) =>
    (s.operator === 'In' || s.operator === 'NotIn') === (Array.isArray(s.values) && s.values.length > 0),
};

export function isTransitionRule(rule: CelRule): boolean {
  return /\boldSelf\b/.test(rule.rule);
}

function createAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
  (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
  for (const keyword of ['x-kubernetes-int-or-string', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-list-type', 'x-kubernetes-list-map-keys']) {
    ajv.addKeyword({ keyword, schemaType: ['boolean', 'string', 'array'] });
  }
  ajv.addKeyword({
    keyword: 'x-kubernetes-validations',
    schemaType: 'array',
    errors: true,
    compile(rules: CelRule[]) {
      const checks = rules.filter((r) => !isTransitionRule(r)).map((r) => {
        const twin = celTwins[r.rule];
        if (!twin) throw new Error(`CEL rule has no JavaScript twin in validation.ts: ${r.rule}`);
        return { rule: r, twin };
      });
      const validate = (data: unknown): boolean => {
        const failed = checks.filter((c) => !c.twin(data as Obj));
        (validate as unknown as { errors: Partial<ErrorObject>[] }).errors = failed.map((c) => ({
          keyword: 'x-kubernetes-validations',
          message: c.rule.message,
          params: { rule: c.rule.rule },
        }));
        return failed.length === 0;
      };
      return validate;
    },
  });
  return ajv;
}

/** A validation failure: `field` is a dotted path such as `spec.source.volumes`. */
export interface FieldError {
  field: string;
  message: string;
}

export interface ValidationResult {
  valid: boolean;
  errors: FieldError[];
}

function toFieldError(prefix: string, e: ErrorObject): FieldError {
  const parts = e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let field = [prefix, ...parts].join('.').replace(/\.(\d+)(?=\.|$)/g, '[$1]');
  let message = e.message ?? 'is invalid';
  if (e.keyword === 'additionalProperties') {
    field = `${field}.${String(e.params.additionalProperty)}`;
    message = 'unknown field';
  } else if (e.keyword === 'required') {
    field = `${field}.${String(e.params.missingProperty)}`;
    message = 'required field is missing';
  } else if (e.keyword === 'enum') {
    message = `must be one of: ${(e.params.allowedValues as string[]).join(', ')}`;
  }
  return { field, message };
}

/** Drops the errors ajv reports for each branch of an int-or-string anyOf when the pattern already said why. */
function dedupe(errors: FieldError[]): FieldError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    if (e.message.startsWith('must match a schema in anyOf') || e.message === 'must be integer' || e.message === 'must be string') {
      if (errors.some((o) => o.field === e.field && o !== e && !o.message.startsWith('must'))) return false;
    }
    const key = `${e.field}: ${e.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

export class Validator {
  private readonly ajv = createAjv();
  private readonly compiled = new Map<string, { spec: ValidateFunction; status: ValidateFunction }>();

  constructor(definitions: KindDefinition[] = kinds) {
    for (const def of definitions) {
      this.compiled.set(def.kind, { spec: this.ajv.compile(withRulesForAjv(def)), status: this.ajv.compile(def.status) });
    }
  }

  /** Checks an object's spec (and status when present) the way the API server would on create. */
  validate(object: { kind?: string; spec?: unknown; status?: unknown }): ValidationResult {
    const compiled = object.kind ? this.compiled.get(object.kind) : undefined;
    if (!compiled) return { valid: false, errors: [{ field: 'kind', message: `unknown kind ${String(object.kind)}` }] };
    const errors: FieldError[] = [];
    if (object.spec === undefined) errors.push({ field: 'spec', message: 'required field is missing' });
    else if (!compiled.spec(object.spec)) errors.push(...(compiled.spec.errors ?? []).map((e) => toFieldError('spec', e)));
    if (object.status !== undefined && !compiled.status(object.status)) {
      errors.push(...(compiled.status.errors ?? []).map((e) => toFieldError('status', e)));
    }
    const unique = dedupe(errors);
    return { valid: unique.length === 0, errors: unique };
  }
}

/** The spec schema with its CEL rules attached, as the CRD carries them. */
function withRulesForAjv(def: KindDefinition): object {
  const copy = structuredClone(def.spec) as Record<string, unknown>;
  for (const [pointer, list] of Object.entries(def.rules)) {
    let node = copy;
    for (const part of pointer.split('/').slice(1)) node = node[part] as Record<string, unknown>;
    node['x-kubernetes-validations'] = list;
  }
  return copy;
}

export function formatErrors(errors: FieldError[]): string {
  return errors.map((e) => `${e.field}: ${e.message}`).join('; ');
}
