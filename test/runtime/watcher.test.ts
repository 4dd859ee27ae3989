// The supervised watch against a stand-in API server on loopback that answers what a
// restarting kube-apiserver answers: 429 "storage is (re)initializing", 500s, and watches
// that connect and then say nothing.
import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { KubeApi } from '../../src/runtime/api.js';
import { createRuntimeMetrics } from '../../src/runtime/metrics.js';
import { Store } from '../../src/runtime/store.js';
import { Watcher } from '../../src/runtime/watcher.js';
import { metricValue } from '../support/operator-process.js';
import { eventually } from '../support/eventually.js';

interface Item {
  metadata: { name: string; namespace: string; resourceVersion: string };
}

describe('runtime/watcher: a supervised list+watch', function () {
  this.timeout(20_000);
  let server: Server;
  let watcher: Watcher<Item> | undefined;
  // What the stand-in answers next: a status per list and per watch request, in turn.
  let lists: number[];
  let watches: Array<number | 'silent'>;
  let items: Item[];
  const requests: string[] = [];

  beforeEach(async () => {
    requests.length = 0;
    server = createServer((request, response) => {
      const url = new URL(request.url!, 'http://x');
      const isWatch = url.searchParams.get('watch') === 'true';
      requests.push(isWatch ? 'watch' : 'list');
      const status = isWatch ? (watches.shift() ?? 'silent') : (lists.shift() ?? 200);
      if (status === 'silent') {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.flushHeaders();
        return; // connected, then nothing: a hung watch
      }
      if (status !== 200) {
        response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', status: 'Failure', reason: 'TooManyRequests', message: 'storage is (re)initializing', code: status }));
        return;
      }
      // Pages of `limit`, with the offset as the continue token.
      const limit = Number(url.searchParams.get('limit') ?? items.length);
      const offset = Number(url.searchParams.get('continue') ?? 0);
      const rest = offset + limit < items.length ? { continue: String(offset + limit) } : {};
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ metadata: { resourceVersion: '10', ...rest }, items: items.slice(offset, offset + limit) }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  afterEach(async () => {
    await watcher?.stop();
    watcher = undefined;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const start = (silenceMs = 60_000) => {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const registry = new Registry();
    const metrics = createRuntimeMetrics(registry);
    const store = new Store<Item>();
    watcher = new Watcher<Item>({ kubeConfig, api: new KubeApi(kubeConfig), path: '/apis/trellis.dev/v1alpha1/volumes', apiVersion: 'trellis.dev/v1alpha1', kind: 'Volume', store, metrics, silenceMs, initialBackoffMs: 20, maxBackoffMs: 100 });
    watcher.start();
    const restarts = async () => metricValue(await registry.metrics(), 'trellis_informer_restarts_total', { kind: 'Volume' }) ?? 0;
    return { store, restarts, watcher };
  };

  it('retries a list refused with 429 and 500 until it syncs, counting each restart', async () => {
    items = [{ metadata: { name: 'a', namespace: 'ns', resourceVersion: '5' } }];
    lists = [429, 500, 429];
    watches = [];
    const { store, restarts, watcher } = start();
    await watcher.whenSynced();
    expect(store.list().map((o) => o.metadata.name)).to.deep.equal(['a']);
    expect(await restarts()).to.equal(3);
  });

  it('restarts a watch that fails, relisting what changed meanwhile', async () => {
    items = [{ metadata: { name: 'a', namespace: 'ns', resourceVersion: '5' } }];
    lists = [];
    watches = [500];
    const { store, restarts, watcher } = start();
    await watcher.whenSynced();
    items = [{ metadata: { name: 'b', namespace: 'ns', resourceVersion: '6' } }];
    await eventually('the relist after the failed watch', () => store.get('ns', 'b') !== undefined, 5_000);
    expect(store.get('ns', 'a'), 'deleted meanwhile').to.equal(undefined);
    expect(await restarts()).to.equal(1);
  });

  it('lists a large collection in pages', async () => {
    items = Array.from({ length: 1234 }, (_, i) => ({ metadata: { name: `v${i}`, namespace: 'ns', resourceVersion: '5' } }));
    lists = [];
    watches = [];
    const { store, watcher } = start();
    await watcher.whenSynced();
    expect(store.size).to.equal(1234);
    expect(requests.filter((r) => r === 'list')).to.have.length(3);
  });

  it('restarts a watch that stays silent past the silence window', async () => {
    items = [];
    lists = [];
    watches = ['silent'];
    const { restarts, watcher } = start(400);
    await watcher.whenSynced();
    await eventually('a restart after the silence', () => requests.filter((r) => r === 'list').length >= 2, 5_000);
    expect(await restarts()).to.be.at.least(1);
  });
});
