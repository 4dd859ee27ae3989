import { expect } from 'chai';
import { RetryLimiter } from '../../src/core/backoff.js';
import { FakeClock, settle } from '../../src/core/testing.js';
import { WorkQueue } from '../../src/core/queue.js';
import { track } from './helpers.js';

function newQueue(clock = new FakeClock()) {
  return { clock, queue: new WorkQueue({ clock, retryLimiter: new RetryLimiter({ baseMs: 100, capMs: 1000, clock }) }) };
}

describe('core/queue', () => {
  it('N adds before dispatch run once', async () => {
    const { queue } = newQueue();
    for (let i = 0; i < 5; i++) queue.add('k');
    expect(queue.len()).to.equal(1);
    expect(await queue.get()).to.equal('k');
    expect(queue.tryGet()).to.equal(undefined);
  });

  it('add while processing runs exactly twice: once now, once after done, never concurrently', async () => {
    const { queue } = newQueue();
    queue.add('k');
    expect(await queue.get()).to.equal('k');
    queue.add('k');
    queue.add('k');
    // Still processing: the key is not handed to a second worker.
    expect(queue.tryGet()).to.equal(undefined);
    const waiting = track(queue.get());
    await settle();
    expect(waiting.settled).to.equal(false);
    queue.done('k');
    await settle();
    expect(waiting.value).to.equal('k');
    queue.done('k');
    expect(queue.tryGet()).to.equal(undefined);
    expect(queue.stats()).to.include({ dirty: 0, processing: 0, ready: 0 });
  });

  it('hands keys out in add order, and a processing key does not block the others', async () => {
    const { queue } = newQueue();
    queue.add('a');
    expect(queue.tryGet()).to.equal('a');
    queue.add('a');
    queue.add('b');
    queue.add('c');
    expect([queue.tryGet(), queue.tryGet(), queue.tryGet()]).to.deep.equal(['b', 'c', undefined]);
  });

  it('real changes overtake low-priority startup and resync adds; a normal add promotes a low one', () => {
    const { queue } = newQueue();
    queue.add('list-1', { priority: 'low' });
    queue.add('list-2', { priority: 'low' });
    queue.add('list-3', { priority: 'low' });
    queue.add('change');
    queue.add('list-3');
    expect([queue.tryGet(), queue.tryGet(), queue.tryGet(), queue.tryGet(), queue.tryGet()]).to.deep.equal(['change', 'list-3', 'list-1', 'list-2', undefined]);
    expect(queue.stats().fifo).to.equal(0);
  });

  it('a key promoted, handed out and added again low does not jump ahead through its stale low entry', () => {
    const { queue } = newQueue();
    queue.add('A', { priority: 'low' });
    queue.add('B', { priority: 'low' });
    queue.add('A');
    queue.add('C', { priority: 'low' });
    expect(queue.tryGet()).to.equal('A');
    queue.done('A');
    queue.add('A', { priority: 'low' });
    expect([queue.tryGet(), queue.tryGet(), queue.tryGet(), queue.tryGet()]).to.deep.equal(['B', 'C', 'A', undefined]);
    expect(queue.stats()).to.include({ dirty: 0, ready: 0, fifo: 0 });
  });

  it('addAfter keeps the earliest ready time', () => {
    const { clock, queue } = newQueue();
    queue.addAfter('k', 500);
    queue.addAfter('k', 100);
    queue.addAfter('k', 900);
    expect(clock.pendingTimers).to.equal(1);
    clock.advance(99);
    expect(queue.len()).to.equal(0);
    clock.advance(1);
    expect(queue.tryGet()).to.equal('k');
    queue.done('k');
    clock.advance(10_000);
    expect(queue.tryGet()).to.equal(undefined);
  });

  it('addRateLimited backs off base*2^n per key; forget resets; other keys are not slowed', () => {
    const { clock, queue } = newQueue();
    const readyAfter = (key: string): number => {
      const start = clock.now();
      queue.addRateLimited(key);
      for (let t = 0; t <= 2000; t++) {
        const got = queue.tryGet();
        if (got !== undefined) {
          expect(got).to.equal(key);
          queue.done(key);
          return clock.now() - start;
        }
        clock.advance(1);
      }
      throw new Error('never became ready');
    };
    expect([readyAfter('bad'), readyAfter('bad'), readyAfter('bad'), readyAfter('bad'), readyAfter('bad')]).to.deep.equal([100, 200, 400, 800, 1000]);
    expect(queue.numRequeues('bad')).to.equal(5);
    expect(readyAfter('good')).to.equal(100);
    queue.forget('bad');
    expect(readyAfter('bad')).to.equal(100);
  });

  it('shutdown drains: in-flight keys finish, later adds and queued keys are dropped', async () => {
    const { clock, queue } = newQueue();
    queue.add('running');
    expect(await queue.get()).to.equal('running');
    queue.add('queued');
    queue.addAfter('delayed', 100);
    queue.add('running');
    queue.shutdown();
    const drained = track(queue.drain());
    queue.add('late');
    queue.addAfter('late', 1);
    queue.addRateLimited('late');
    expect(await queue.get()).to.equal(undefined);
    await settle();
    expect(drained.settled).to.equal(false);
    queue.done('running');
    await settle();
    expect(drained.settled).to.equal(true);
    clock.advance(1000);
    expect(queue.stats()).to.deep.include({ dirty: 0, processing: 0, delayed: 0, ready: 0, fifo: 0, getters: 0 });
  });

  it('wakes waiting getters on shutdown', async () => {
    const { queue } = newQueue();
    const waiting = track(queue.get());
    queue.shutdown();
    await settle();
    expect(waiting).to.deep.include({ settled: true, value: undefined });
  });

  it('leaves no state behind once keys are idle, across thousands of keys', () => {
    const { clock, queue } = newQueue();
    for (let i = 0; i < 5000; i++) {
      queue.add(`k${i}`, { priority: i % 2 ? 'low' : 'normal' });
      if (i % 3 === 0) queue.addAfter(`k${i}`, 50);
      if (i % 7 === 0) queue.addRateLimited(`k${i}`);
    }
    // The overall retry bucket (10/s) paces the 715 retries over about a minute.
    for (let round = 0; round < 1000 && (queue.len() > 0 || clock.pendingTimers > 0); round++) {
      for (let key = queue.tryGet(); key !== undefined; key = queue.tryGet()) {
        queue.forget(key);
        queue.done(key);
      }
      clock.advance(100);
    }
    expect(queue.stats()).to.deep.equal({ dirty: 0, processing: 0, delayed: 0, ready: 0, fifo: 0, backoff: 0, getters: 0 });
    expect(clock.pendingTimers).to.equal(0);
  });

  it('done is idempotent and done of an unknown key does nothing', () => {
    const { queue } = newQueue();
    queue.add('k');
    expect(queue.tryGet()).to.equal('k');
    queue.done('k');
    queue.done('k');
    queue.done('never');
    expect(queue.stats()).to.include({ processing: 0, dirty: 0 });
  });
});
