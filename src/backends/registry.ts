// Builds a StorageDriver from a Backend's driver kind, config and credentials. The config
// (and credentials) are checked against the driver's own schema first, so a typo fails
// fast with a terminal error naming the option instead of surfacing later as an I/O error.
import type { TSchema } from 'typebox';
import { validateDriverConfig } from './config.js';
import type { DriverOptions, StorageDriver } from './driver.js';
import { DriverError } from './errors.js';
import { CsiConfig, CsiCredentials, CsiDriver } from './csi/driver.js';
import { HostpathConfig, HostpathCredentials, HostpathDriver } from './hostpath/driver.js';
import { SimConfig, SimCredentials, SimDriver } from './sim/driver.js';

interface DriverEntry {
  config: TSchema;
  credentials: TSchema;
  create(config: never, credentials: never, options: DriverOptions): StorageDriver;
}

const entries = {
  sim: { config: SimConfig, credentials: SimCredentials, create: (c: SimConfig, k: SimCredentials, o: DriverOptions) => new SimDriver(c, k, o) },
  hostpath: { config: HostpathConfig, credentials: HostpathCredentials, create: (c: HostpathConfig, _k: unknown, o: DriverOptions) => new HostpathDriver(c, o) },
  csi: { config: CsiConfig, credentials: CsiCredentials, create: (c: CsiConfig, k: CsiCredentials, o: DriverOptions) => new CsiDriver(c, k, o) },
} satisfies Record<string, DriverEntry>;

export type DriverKind = keyof typeof entries;
export const driverKinds = Object.keys(entries) as DriverKind[];

/** The JSON schema of a driver's config, e.g. for documentation or a CRD check. */
export function driverConfigSchema(kind: DriverKind): TSchema {
  return entries[kind].config;
}

/**
 * Validates `config` and `credentials` (values of the Backend's Secret) for `kind` and
 * builds the driver on `options.clock` (default realClock). Throws a terminal `invalid`
 * DriverError naming the bad option.
 */
export function createDriver(kind: string, config: unknown, credentials: Record<string, string> = {}, options: DriverOptions = {}): StorageDriver {
  if (!Object.hasOwn(entries, kind)) {
    throw new DriverError('invalid', `unknown driver "${kind}" (known: ${driverKinds.join(', ')})`, { option: 'driver' });
  }
  const entry: DriverEntry = entries[kind as DriverKind] as DriverEntry;
  const cfg = validateDriverConfig(kind, entry.config, config);
  const creds = validateDriverConfig(`${kind} credentials`, entry.credentials, credentials);
  return entry.create(cfg as never, creds as never, options);
}
