import { expect } from 'chai';
import { FakeClock } from '../../src/core/testing.js';
import type { KubeApi } from '../../src/runtime/api.js';
import { EventRecorder } from '../../src/runtime/events.js';
import { addFinalizerPatch, removeFinalizerPatch } from '../../src/runtime/finalizer.js';

describe('runtime/finalizer: guarded patches', () => {
  it('tests the list it saw before adding, and the entry it saw before removing', () => {
    expect(addFinalizerPatch({ metadata: {} }, 'f')).to.deep.equal([
      { op: 'test', path: '/metadata/finalizers', value: null },
      { op: 'add', path: '/metadata/finalizers', value: ['f'] },
    ]);
    expect(addFinalizerPatch({ metadata: { finalizers: ['x'] } }, 'f')).to.deep.equal([
      { op: 'test', path: '/metadata/finalizers', value: ['x'] },
      { op: 'add', path: '/metadata/finalizers/-', value: 'f' },
    ]);
    expect(addFinalizerPatch({ metadata: { finalizers: ['f'] } }, 'f')).to.equal(undefined);
    expect(removeFinalizerPatch({ metadata: { finalizers: ['x', 'f'] } }, 'f')).to.deep.equal([
      { op: 'test', path: '/metadata/finalizers/1', value: 'f' },
      { op: 'remove', path: '/metadata/finalizers/1' },
    ]);
    expect(removeFinalizerPatch({ metadata: { finalizers: ['x'] } }, 'f')).to.equal(undefined);
  });
});

describe('runtime/events: Events aggregated into a series', () => {
  it('turns a failure repeated on every retry into one Event and a bounded number of series updates', async () => {
    const clock = new FakeClock();
    const calls: Array<{ verb: string; body: unknown }> = [];
    const api = {
      create: async (_path: string, body: unknown) => void calls.push({ verb: 'create', body }),
      patch: async (_path: string, _type: string, body: unknown) => void calls.push({ verb: 'patch', body }),
    } as unknown as KubeApi;
    const recorder = new EventRecorder({ api, instance: 'test', clock, seriesIntervalMs: 30_000 });
    const subject = { apiVersion: 'trellis.dev/v1alpha1', kind: 'Volume', metadata: { name: 'v', namespace: 'ns', uid: 'u1' } };
    // 120 retries over one minute.
    for (let i = 0; i < 120; i++) {
      recorder.record(subject, { type: 'Warning', reason: 'ReconcileFailed', action: 'Reconcile', note: 'backend unreachable' });
      clock.advance(500);
      await recorder.flush();
    }
    expect(calls.filter((c) => c.verb === 'create')).to.have.length(1);
    const patches = calls.filter((c) => c.verb === 'patch');
    expect(patches.length).to.be.within(1, 2);
    expect((patches.at(-1)!.body as { series: { count: number } }).series.count).to.be.greaterThan(60);
    // Another failure text is another Event.
    recorder.record(subject, { type: 'Warning', reason: 'ReconcileFailed', action: 'Reconcile', note: 'quota exceeded' });
    await recorder.flush();
    expect(calls.filter((c) => c.verb === 'create')).to.have.length(2);
  });
});
