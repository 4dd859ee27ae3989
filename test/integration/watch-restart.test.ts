// Watches through client-node against a kube-apiserver that restarts: a watch resumed from
// the last resourceVersion it saw (or a relist, if the server says 410 Gone) misses no
// object created while it was down, and an informer restarted on error catches up.
import { expect } from 'chai';
import { Watch, makeInformer, type KubernetesObject } from '@kubernetes/client-node';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { group, version, volumeClient } from '../support/volumes.js';

/** Resolves once `condition` holds, polling; rejects with `what` after `timeoutMs`. */
async function eventually(what: string, condition: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('watching Volumes across a kube-apiserver restart @integration', function () {
  this.timeout(180_000);
  const controlPlane = useSharedControlPlane();
  const volumes = () => volumeClient(controlPlane().kubeConfig);
  const createVolume = (namespace: string, name: string) => volumes().create(namespace, name, 1024);

  it('resumes a watch from the last resourceVersion seen and misses nothing created meanwhile', async () => {
    const namespace = await testNamespace('watch');
    const path = `/apis/${group}/${version}/namespaces/${namespace}/volumes`;
    const seen: string[] = [];
    let resourceVersion = '';
    let relisted = false;
    let ended: (err: unknown) => void = () => {};

    const watchFrom = async (rv: string) => {
      const end = new Promise<unknown>((r) => (ended = r));
      const controller = await new Watch(controlPlane().kubeConfig).watch(
        path,
        { resourceVersion: rv, allowWatchBookmarks: true },
        (type, obj: KubernetesObject & { code?: number }) => {
          if (type === 'ERROR') {
            if (obj.code === 410) relisted = true;
            return;
          }
          if (type === 'ADDED') seen.push(obj.metadata?.name ?? '');
          resourceVersion = obj.metadata?.resourceVersion ?? resourceVersion;
        },
        (err) => ended(err),
      );
      return { controller, end };
    };

    const list = await volumes().list(namespace);
    const first = await watchFrom(list.metadata.resourceVersion);
    await createVolume(namespace, 'before-restart');
    await eventually('ADDED before-restart', () => seen.includes('before-restart'));

    await controlPlane().restartApiserver();
    await first.end; // the server went away, so the watch ended
    await createVolume(namespace, 'while-disconnected');

    const second = await watchFrom(resourceVersion);
    await eventually('the watch to resume (or relist after 410)', () => seen.includes('while-disconnected') || relisted);
    if (relisted) {
      // The server forgot the resourceVersion: a relist must show both volumes.
      expect(await volumes().names(namespace)).to.deep.equal(['before-restart', 'while-disconnected']);
    } else {
      expect(seen).to.deep.equal(['before-restart', 'while-disconnected']);
    }
    second.controller.abort();
  });

  it('an informer restarted on error catches up with changes made during the restart', async () => {
    const namespace = await testNamespace('informer');
    const path = `/apis/${group}/${version}/namespaces/${namespace}/volumes`;
    const informer = makeInformer<KubernetesObject>(controlPlane().kubeConfig, path, () =>
      volumes().list(namespace) as never,
    );
    // client-node's informer stops for good on a connection error: supervise it.
    let errors = 0;
    let stopped = false;
    informer.on('error', () => {
      errors += 1;
      if (!stopped) setTimeout(() => void informer.start(), 200);
    });
    await informer.start();
    try {
      await createVolume(namespace, 'a');
      await eventually('informer to see a', () => informer.get('a', namespace) !== undefined);

      await controlPlane().stopApiserver();
      await eventually('the informer to notice the apiserver is gone', () => errors > 0);
      await controlPlane().startApiserver();
      await createVolume(namespace, 'b');
      await eventually('informer to see b after the restart', () => informer.get('b', namespace) !== undefined);
      expect(informer.list(namespace).map((o) => o.metadata?.name).sort()).to.deep.equal(['a', 'b']);
    } finally {
      stopped = true;
      await informer.stop();
    }
  });

  it('keeps serving after etcd restarts', async () => {
    const namespace = await testNamespace('etcd');
    await createVolume(namespace, 'before');
    await controlPlane().restartEtcd();
    await createVolume(namespace, 'after');
    expect(await volumes().names(namespace)).to.deep.equal(['after', 'before']);
  });
});
