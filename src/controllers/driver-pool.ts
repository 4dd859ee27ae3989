// One StorageDriver per Backend, shared by the Backend and Volume controllers. Guarantees:
// - a Backend's driver is built from its driver kind, its config and its credentials (the
//   values of its Secret), validated against the driver's own schema, and reused for as long
//   as all three stay the same (compared by a SHA-256 fingerprint; the values themselves are
//   kept only inside the driver);
// - a change of any of them (a new endpoint, a rotated Secret) builds a new driver on the
//   next call; the old one is closed after the longest a reconcile may still use it, so
//   in-flight work is never cut off;
// - `remove` closes a deleted Backend's driver at once (its work is done: the Backend
//   controller holds the write lock on the backend's path when it calls it);
// - what goes wrong is a BackendSetupError whose message names the Secret, the key or the
//   option at fault, never a value.
import { createHash } from 'node:crypto';
import type { Backend } from '../api/backend.js';
import type { StorageDriver } from '../backends/driver.js';
import { DriverError } from '../backends/errors.js';
import { createDriver } from '../backends/registry.js';
import { SecretNotReadable, type SecretReader } from '../runtime/index.js';

/** Builds a driver; the registry's `createDriver` unless a test injects another. */
export type DriverFactory = (kind: string, config: unknown, credentials: Record<string, string>) => StorageDriver;

/** Why a Backend has no driver: its config is bad (`InvalidConfig`) or its credentials are unreadable. */
export class BackendSetupError extends Error {
  override readonly name = 'BackendSetupError';
  constructor(
    readonly reason: 'InvalidConfig' | 'CredentialsUnavailable',
    message: string,
  ) {
    super(message);
  }
}

/** A replaced driver may still serve a reconcile for this long (the core's reconcile timeout). */
const RETIRE_AFTER_MS = 5 * 60_000;

export class DriverPool {
  // Backend name -> the driver built for the fingerprint of its kind, config and credentials.
  private readonly drivers = new Map<string, { fingerprint: string; driver: StorageDriver }>();
  // Replaced drivers waiting to be closed, so `close` can close them too.
  private readonly retiring = new Set<StorageDriver>();

  constructor(private readonly build: DriverFactory = createDriver) {}

  /** The driver for the Backend as it is now; throws a BackendSetupError naming what is wrong. */
  async driverFor(backend: Backend, secrets: SecretReader, signal?: AbortSignal): Promise<StorageDriver> {
    const name = backend.metadata.name;
    const credentials = await readCredentials(backend, secrets, signal);
    const fingerprint = fingerprintOf(backend.spec.driver, backend.spec.config ?? {}, credentials);
    const current = this.drivers.get(name);
    if (current?.fingerprint === fingerprint) return current.driver;
    let driver: StorageDriver;
    try {
      driver = this.build(backend.spec.driver, backend.spec.config ?? {}, credentials);
    } catch (error) {
      if (error instanceof DriverError && error.reason === 'invalid') throw new BackendSetupError('InvalidConfig', error.message);
      throw error;
    }
    this.drivers.set(name, { fingerprint, driver });
    if (current) this.retire(current.driver);
    return driver;
  }

  /** The driver built last for `backend`, if any (no Secret read). */
  current(backend: string): StorageDriver | undefined {
    return this.drivers.get(backend)?.driver;
  }

  /** Closes and forgets a Backend's driver. */
  async remove(backend: string): Promise<void> {
    const entry = this.drivers.get(backend);
    this.drivers.delete(backend);
    await entry?.driver.close();
  }

  /** Closes every driver (the operator stops). */
  async close(): Promise<void> {
    const all = [...[...this.drivers.values()].map((e) => e.driver), ...this.retiring];
    this.drivers.clear();
    this.retiring.clear();
    await Promise.allSettled(all.map((d) => d.close()));
  }

  private retire(driver: StorageDriver): void {
    this.retiring.add(driver);
    const timer = setTimeout(() => {
      if (this.retiring.delete(driver)) void driver.close().catch(() => {});
    }, RETIRE_AFTER_MS);
    timer.unref();
  }
}

/** The Secret's values as strings, or {} without a credentialsSecretRef. */
async function readCredentials(backend: Backend, secrets: SecretReader, signal?: AbortSignal): Promise<Record<string, string>> {
  const ref = backend.spec.credentialsSecretRef;
  if (!ref) return {};
  let data: ReadonlyMap<string, Buffer>;
  try {
    data = await secrets.read(ref.namespace, ref.name, signal);
  } catch (error) {
    if (!(error instanceof SecretNotReadable)) throw error;
    const why = error.status === 404 ? 'does not exist' : `could not be read${error.status ? ` (HTTP ${error.status})` : ''}`;
    throw new BackendSetupError('CredentialsUnavailable', `credentials Secret ${ref.namespace}/${ref.name} ${why}`);
  }
  if (data.size === 0) throw new BackendSetupError('CredentialsUnavailable', `credentials Secret ${ref.namespace}/${ref.name} has no keys`);
  return Object.fromEntries([...data].map(([key, value]) => [key, value.toString('utf8')]));
}

function fingerprintOf(kind: string, config: unknown, credentials: Record<string, string>): string {
  const hash = createHash('sha256');
  hash.update(kind).update('\0').update(canonical(config)).update('\0');
  for (const key of Object.keys(credentials).sort()) hash.update(key).update('\0').update(credentials[key]!).update('\0');
  return hash.digest('hex');
}

/** JSON with sorted keys, so equal configs hash equally whatever their key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
