// Driver config validation: each driver owns a JSON schema (typebox, additionalProperties
// false). A config that does not match is a terminal `invalid` DriverError whose message
// and `option` field name the offending option, so a Backend's Ready condition can say
// `unknown option "endpont"` instead of a schema dump.
import { Ajv, type ErrorObject } from 'ajv';
import type { Static, TSchema } from 'typebox';
import { DriverError } from './errors.js';

const ajv = new Ajv({ allErrors: true, strict: false, useDefaults: true, coerceTypes: false });
const compiled = new WeakMap<TSchema, ReturnType<typeof ajv.compile>>();

function optionPath(err: ErrorObject): string {
  const parts = err.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (err.keyword === 'additionalProperties') parts.push(String(err.params.additionalProperty));
  if (err.keyword === 'required') parts.push(String(err.params.missingProperty));
  return parts.join('.');
}

function describe(err: ErrorObject, option: string): string {
  switch (err.keyword) {
    case 'additionalProperties':
      return `unknown option "${option}"`;
    case 'required':
      return `missing required option "${option}"`;
    default:
      return option ? `option "${option}" ${err.message ?? 'is invalid'}` : `config ${err.message ?? 'is invalid'}`;
  }
}

/** Returns a copy of `config` with schema defaults filled in, or throws a terminal error naming the bad option. */
export function validateDriverConfig<S extends TSchema>(driver: string, schema: S, config: unknown): Static<S> {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  const copy: unknown = config === undefined ? {} : structuredClone(config);
  if (!validate(copy)) {
    // A typo is the likeliest mistake, and it also shows up as a missing required option:
    // name the unknown option first.
    const errors = validate.errors ?? [];
    const err = errors.find((e) => e.keyword === 'additionalProperties') ?? errors[0]!;
    const option = optionPath(err);
    throw new DriverError('invalid', `${driver} driver config: ${describe(err, option)}`, { option });
  }
  return copy as Static<S>;
}
