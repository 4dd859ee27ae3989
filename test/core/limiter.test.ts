import { expect } from 'chai';
import { FakeClock, settle } from '../../src/core/clock.js';
import { BackendLimiter } from '../../src/core/limiter.js';
import { deferred, track, type Deferred } from './helpers.js';

/** Starts `n` operations on `backend` that finish only when their deferred is resolved. */
function startOps(limiter: BackendLimiter, backend: string, n: number, signal?: AbortSignal) {
  const gates: Deferred<void>[] = [];
  const started: number[] = [];
  const results = Array.from({ length: n }, (_, i) => {
    const gate = deferred();
    gates.push(gate);
    return track(
      limiter.run(
        backend,
        'create',
        async () => {
          started.push(i);
          await gate.promise;
          return i;
        },
        signal,
      ),
    );
  });
  return { gates, started, results };
}

describe('core/limiter', () => {
  it('never runs more than maxConcurrent operations of one backend at once', async () => {
    const limiter = new BackendLimiter({ clock: new FakeClock() });
    limiter.configure('a', { maxConcurrent: 3 });
    const { gates, started, results } = startOps(limiter, 'a', 10);
    await settle();
    expect(started).to.deep.equal([0, 1, 2]);
    for (let i = 0; i < 10; i++) {
      expect(limiter.inFlight('a')).to.be.at.most(3);
      gates[i].resolve();
      await settle();
    }
    expect(results.map((r) => r.value)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(limiter.maxInFlight('a')).to.equal(3);
    expect(limiter.inFlight('a')).to.equal(0);
  });

  it('keeps backends apart: a full backend does not hold back another', async () => {
    const limiter = new BackendLimiter({ defaults: { maxConcurrent: 1 } });
    const a = startOps(limiter, 'a', 2);
    const b = startOps(limiter, 'b', 1);
    await settle();
    expect(a.started).to.deep.equal([0]);
    expect(b.started).to.deep.equal([0]);
  });

  it('resizes concurrency at runtime, up and down', async () => {
    const limiter = new BackendLimiter();
    limiter.configure('a', { maxConcurrent: 2 });
    const { gates, started } = startOps(limiter, 'a', 8);
    await settle();
    expect(started).to.have.length(2);
    limiter.configure('a', { maxConcurrent: 5 });
    await settle();
    expect(started).to.have.length(5);
    expect(limiter.inFlight('a')).to.equal(5);
    limiter.configure('a', { maxConcurrent: 1 });
    for (const i of [0, 1, 2, 3]) gates[i].resolve();
    await settle();
    // Five were running; one finished-slot is freed per finish only once below the new limit.
    expect(limiter.inFlight('a')).to.equal(1);
    expect(started).to.have.length(5);
    gates[4].resolve();
    await settle();
    expect(started).to.have.length(6);
    expect(limiter.inFlight('a')).to.equal(1);
    expect(limiter.limits('a')).to.deep.equal({ maxConcurrent: 1, opsPerSecond: Infinity });
  });

  it('starts no more than opsPerSecond operations within a second', async () => {
    const limiter = new BackendLimiter();
    limiter.configure('a', { maxConcurrent: 100, opsPerSecond: 2 });
    const abort = new AbortController();
    const { gates, started, results } = startOps(limiter, 'a', 5, abort.signal);
    await settle();
    expect(started).to.have.length(2);
    expect(limiter.waiting('a')).to.equal(3);
    // Dropping the waiting ones frees the queue without waiting out the window.
    abort.abort(new Error('stop'));
    for (const gate of gates) gate.resolve();
    await settle();
    expect(results.filter((r) => r.error !== undefined)).to.have.length(5);
    expect(limiter.waiting('a')).to.equal(0);
  });

  it('a rate change takes over only once operations admitted under the old rate are done', async () => {
    const limiter = new BackendLimiter();
    limiter.configure('a', { maxConcurrent: 2, opsPerSecond: 1000 });
    const before = startOps(limiter, 'a', 3);
    await settle();
    expect(before.started).to.have.length(2);
    limiter.configure('a', { opsPerSecond: 500, maxConcurrent: 4 });
    const after = startOps(limiter, 'a', 2);
    await settle();
    // The old generation takes the new concurrency at once; the new one waits for it to empty.
    expect(before.started).to.have.length(3);
    expect(after.started).to.have.length(0);
    for (const gate of before.gates) gate.resolve();
    await settle();
    await settle();
    expect(after.started).to.have.length(2);
    expect(limiter.maxInFlight('a')).to.be.at.most(4);
    for (const gate of after.gates) gate.resolve();
    await settle();
    expect(limiter.inFlight('a')).to.equal(0);
  });

  it('reports in-flight and timed results by backend, operation and result', async () => {
    const clock = new FakeClock();
    const inFlight: number[] = [];
    const ops: string[] = [];
    const limiter = new BackendLimiter({
      clock,
      metrics: {
        inFlight: (_backend, count) => inFlight.push(count),
        operation: (backend, operation, result, seconds) => ops.push(`${backend} ${operation} ${result} ${seconds}`),
      },
    });
    const gate = deferred();
    const ok = limiter.run('a', 'create', () => gate.promise);
    const failed = track(limiter.run('a', 'delete', () => Promise.reject(new Error('boom'))));
    await settle();
    clock.advance(1500);
    gate.resolve();
    await ok;
    expect((failed.error as Error).message).to.equal('boom');
    expect(inFlight).to.deep.equal([1, 2, 1, 0]);
    expect(ops).to.deep.equal(['a delete error 0', 'a create success 1.5']);
  });

  it('rejects nonsensical limits', () => {
    const limiter = new BackendLimiter();
    expect(() => limiter.configure('a', { maxConcurrent: 0 })).to.throw(RangeError);
    expect(() => limiter.configure('a', { opsPerSecond: 0 })).to.throw(RangeError);
  });
});
