// Watches through client-node against a kube-apiserver that restarts: a watch resumed from
// the last resourceVersion it saw (or a relist, when the restarted server says 410 Gone, as
// kube-apiserver 1.37 does) misses no object created while it was down, and an informer
// restarted on error catches up.
import { expect } from 'chai';
import { Watch, makeInformer, type KubernetesObject } from '@kubernetes/client-node';
import { testNamespace, useSharedControlPlane } from '../support/control-plane-hooks.js';
import { group, version, volumeClient } from '../support/volumes.js';
import { eventually } from '../support/eventually.js';

describe('watching Volumes across a kube-apiserver restart @integration', function () {
  this.timeout(180_000);
  const controlPlane = useSharedControlPlane();
  const volumes = () => volumeClient(controlPlane().kubeConfig);
  const createVolume = (namespace: string, name: string) => volumes().create(namespace, name, 1024);

  it('picks a watch up after the restart (resume, or relist on 410 Gone) and misses nothing created meanwhile', async () => {
    const namespace = await testNamespace('watch');
    const path = `/apis/${group}/${version}/namespaces/${namespace}/volumes`;
    const seen: string[] = [];
    let resourceVersion = '';
    let relisted = false;
    let ended: (err: unknown) => void = () => {};
    // Set when the newest watch ended (the server went away or refused it).
    let watchEnded = false;

    const watchFrom = (rv: string) => {
      watchEnded = false;
      const end = new Promise<unknown>((r) => (ended = r)).finally(() => (watchEnded = true));
      return new Watch(controlPlane().kubeConfig)
        .watch(
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
        )
        .then((controller) => ({ controller, end }));
    };
    const list = await volumes().list(namespace);
    const first = await watchFrom(list.metadata.resourceVersion);
    await createVolume(namespace, 'before-restart');
    await eventually('ADDED before-restart', () => seen.includes('before-restart'));

    await controlPlane().restartApiserver();
    await first.end; // the server went away, so the watch ended
    await createVolume(namespace, 'while-disconnected');

    let current = await watchFrom(resourceVersion);
    // A restarted server may still refuse a watch while its cache re-initializes (429), which
    // ends it at once: watch again from the same resourceVersion, as any client would.
    for (const deadline = Date.now() + 60_000; !(seen.includes('while-disconnected') || relisted); ) {
      if (Date.now() > deadline) throw new Error('timed out after 60000 ms waiting for the watch to resume, or a 410 Gone');
      if (watchEnded) current = await watchFrom(resourceVersion);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (relisted) {
      // The restarted server's watch cache starts after that resourceVersion: relist, which
      // must show what was created meanwhile, and watch on from the list.
      current.controller.abort();
      const relist = await volumes().list(namespace);
      expect(relist.items.map((v) => v.metadata.name).sort()).to.deep.equal(['before-restart', 'while-disconnected']);
      current = await watchFrom(relist.metadata.resourceVersion);
    } else {
      expect(seen).to.deep.equal(['before-restart', 'while-disconnected']);
    }
    await createVolume(namespace, 'after-reconnect');
    await eventually('ADDED after-reconnect', () => seen.includes('after-reconnect'));
    current.controller.abort();
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
    let restart: ReturnType<typeof setTimeout> | undefined;
    informer.on('error', () => {
      errors += 1;
      clearTimeout(restart);
      // Checked when the timer fires, not when the error comes: the test may end in between.
      restart = setTimeout(() => {
        if (!stopped) void informer.start();
      }, 200);
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
      clearTimeout(restart);
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
