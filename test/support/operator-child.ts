// `trellis operator` as a child process for integration tests, with a test controller in
// place of src/controllers: it reconciles Volumes by writing status phase Available and a
// Ready condition, and appends one JSON line per status write it made to $TEST_WRITE_LOG
// ({pid, namespace, name, at, resourceVersion}), so tests can tell which process wrote what
// and when. A Volume annotated `test.trellis.dev/sleep-ms` makes its reconcile wait that
// long first (honouring the run's signal; an abort is logged to the write log as
// {aborted: true}). A Volume annotated `test.trellis.dev/fail` fails every reconcile with
// that text. With TEST_FINALIZER set, the controller keeps that finalizer on its Volumes and
// logs {cleaned: true} when it cleans one up. A Volume annotated
// `test.trellis.dev/needs-backend` logs {reconciled: true} on every reconcile and stays
// Pending until its Backend exists; a Backend's changes re-enqueue exactly the Volumes on it
// (through the cache's backend index). A Volume annotated `test.trellis.dev/secret: ns/name`
// has that Secret read through the runtime's SecretReader and logs {secretKeys: n} (never a
// value). Flags are the operator's own.
import { appendFileSync } from 'node:fs';
import { parseSettings, runOperator } from '../../src/cli/commands/operator.js';
import { sleep } from '../../src/core/index.js';
import { HierarchyPath } from '../../src/core/path.js';
import { defineController, keyOf, related, setCondition } from '../../src/runtime/index.js';

const log = process.env.TEST_WRITE_LOG;
const record = (entry: Record<string, unknown>) => {
  if (log) appendFileSync(log, `${JSON.stringify({ pid: process.pid, at: Date.now(), ...entry })}\n`);
};

const testVolumes = defineController({
  name: 'test-volume',
  kind: 'Volume',
  finalizer: process.env.TEST_FINALIZER || undefined,
  watches: [related('Backend', (backend, cache) => cache.volumesOnBackend(backend.metadata.name))],
  create: ({ clock }) => ({
    plan: (volume) => ({ locks: [{ path: HierarchyPath.parse(keyOf('Volume', volume)), mode: 'write' }] }),
    async reconcile(volume, context) {
      const { name, namespace } = volume.metadata;
      if (volume.metadata.annotations?.['test.trellis.dev/needs-backend'] !== undefined) {
        record({ namespace, name, reconciled: true });
        if (!context.cache.get('Backend', undefined, volume.spec.backend)) {
          await context.updateStatus((status) => {
            status.phase = 'Pending';
            status.conditions = setCondition(status.conditions, { type: 'Ready', status: 'False', reason: 'BackendMissing', message: `Backend ${volume.spec.backend} does not exist` });
          });
          return;
        }
      }
      const secret = volume.metadata.annotations?.['test.trellis.dev/secret'];
      if (secret) {
        const [secretNamespace, secretName] = secret.split('/');
        record({ namespace, name, secretKeys: (await context.secrets.read(secretNamespace, secretName, context.signal)).size });
      }
      const failure = volume.metadata.annotations?.['test.trellis.dev/fail'];
      if (failure) throw new Error(failure);
      const sleepMs = Number(volume.metadata.annotations?.['test.trellis.dev/sleep-ms'] ?? 0);
      if (sleepMs > 0 && volume.status?.phase !== 'Available') {
        record({ namespace, name, started: true });
        try {
          await sleep(clock, sleepMs, context.signal);
        } catch (error) {
          record({ namespace, name, aborted: true });
          throw error;
        }
      }
      const written = await context.updateStatus((status) => {
        status.phase = 'Available';
        status.conditions = setCondition(status.conditions, { type: 'Ready', status: 'True', reason: 'TestReconciled', message: 'reconciled by the test controller' });
      });
      if (written) record({ namespace, name, resourceVersion: written.metadata.resourceVersion });
    },
    async cleanup(volume) {
      record({ namespace: volume.metadata.namespace, name: volume.metadata.name, cleaned: true });
    },
  }),
});

const settings = parseSettings(process.argv.slice(2));
if (settings === 'help') throw new Error('no --help here');
process.exitCode = await runOperator(settings, [testVolumes]);
