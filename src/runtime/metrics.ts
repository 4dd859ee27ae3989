// The runtime's metrics, beside the core's on the same injected Registry. Guarantees: labels
// are low-cardinality (a kind, a verb, a lease name), never an object's name or key.
import { Counter, Gauge, type Registry } from 'prom-client';

export interface RuntimeMetrics {
  readonly informerRestarts: Counter<'kind'>;
  readonly informerSynced: Gauge<'kind'>;
  /** The age of each kind's last sign of a healthy watch; set by `trackSyncAge`. */
  trackSyncAge(kind: string, lastSync: () => number | undefined): void;
  readonly leaderStatus: Gauge<'name'>;
  readonly apiWrites: Counter<'verb' | 'resource'>;
  readonly statusWrites: Counter<'kind' | 'result'>;
}

export function createRuntimeMetrics(registry: Registry, now: () => number = () => performance.now()): RuntimeMetrics {
  const registers = [registry];
  const ages = new Map<string, () => number | undefined>();
  new Gauge({
    name: 'trellis_informer_last_sync_age_seconds',
    help: "Seconds since the kind's watch last listed, (re)connected or delivered an event",
    labelNames: ['kind'],
    registers,
    collect() {
      for (const [kind, lastSync] of ages) {
        const at = lastSync();
        if (at !== undefined) this.set({ kind }, (now() - at) / 1000);
      }
    },
  });
  return {
    informerRestarts: new Counter({ name: 'trellis_informer_restarts_total', help: 'Watches restarted after an error or a silence, per kind', labelNames: ['kind'], registers }),
    informerSynced: new Gauge({ name: 'trellis_informer_synced', help: "1 once the kind's cache holds a full list", labelNames: ['kind'], registers }),
    trackSyncAge(kind, lastSync) {
      ages.set(kind, lastSync);
    },
    leaderStatus: new Gauge({ name: 'leader_election_master_status', help: 'Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master', labelNames: ['name'], registers }),
    apiWrites: new Counter({ name: 'trellis_kube_api_writes_total', help: 'Writes the Kubernetes API server accepted, per verb and resource', labelNames: ['verb', 'resource'], registers }),
    statusWrites: new Counter({ name: 'trellis_status_updates_total', help: 'Status updates per kind: written, or skipped because nothing changed', labelNames: ['kind', 'result'], registers }),
  };
}

/** The resource a write went to (`volumes`, `volumes/status`, `events`), from its URL path. */
export function resourceOfPath(path: string): string {
  const parts = path.split('?')[0].split('/').filter(Boolean);
  // /apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>[/<sub>]] or /api/<version>/...
  const rest = parts.slice(parts[0] === 'api' ? 2 : 3);
  const tail = rest[0] === 'namespaces' ? rest.slice(2) : rest;
  return tail.length >= 3 ? `${tail[0]}/${tail[2]}` : (tail[0] ?? 'unknown');
}
