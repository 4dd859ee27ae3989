import { expect } from 'chai';
import { FakeClock, settle } from '../../src/core/testing.js';
import { sleep } from '../../src/core/clock.js';
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

/** Runs `n` operations that finish at once, drives the fake clock until all ran, returns their start times. */
async function runInstantOps(clock: FakeClock, limiter: BackendLimiter, backend: string, n: number): Promise<number[]> {
  const starts: number[] = [];
  const all = Promise.all(Array.from({ length: n }, () => limiter.run(backend, 'op', async () => void starts.push(clock.now()))));
  while (await clock.runNext());
  await all;
  return starts;
}

/** The most starts found in any half-open one-second window [t, t + 1000). */
function busiestWindow(starts: readonly number[]): number {
  return Math.max(...starts.map((t) => starts.filter((s) => s >= t && s < t + 1000).length));
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
    expect(limiter.limits('a')).to.include({ maxConcurrent: 1, opsPerSecond: Infinity });
  });

  it('an abort while waiting for the rate rejects only the waiting operations and leaves no timer', async () => {
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock });
    limiter.configure('a', { maxConcurrent: 100, opsPerSecond: 2 });
    const abort = new AbortController();
    const { gates, started, results } = startOps(limiter, 'a', 5, abort.signal);
    await settle();
    expect(started).to.have.length(2);
    expect(limiter.waiting('a')).to.equal(3);
    expect(clock.pendingTimers).to.equal(1);
    // Dropping the waiting ones frees the queue without waiting out the window; started ones are never cut off.
    abort.abort(new Error('stop'));
    for (const gate of gates) gate.resolve();
    await settle();
    expect(results.map((r) => r.value)).to.deep.equal([0, 1, undefined, undefined, undefined]);
    expect(results.filter((r) => r.error !== undefined)).to.have.length(3);
    expect(limiter.waiting('a')).to.equal(0);
    expect(clock.pendingTimers).to.equal(0);
  });

  it('holds opsPerSecond in every sliding one-second window, on the injected clock, and no stricter', async () => {
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock });
    limiter.configure('a', { maxConcurrent: 100, opsPerSecond: 5 });
    const starts = await runInstantOps(clock, limiter, 'a', 40);
    expect(starts).to.have.length(40);
    expect(busiestWindow(starts)).to.equal(5);
    // 40 starts at 5 per second: eight windows, the last opening at 7 s.
    expect(starts.at(-1)).to.equal(7000);
  });

  it('a rate below one per second allows one start per 1/rate seconds', async () => {
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock });
    limiter.configure('a', { opsPerSecond: 0.5 });
    expect(await runInstantOps(clock, limiter, 'a', 3)).to.deep.equal([0, 2000, 4000]);
  });

  it('a rate change counts the starts made under the old rate: no window holds more than the rate of its last start', async () => {
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock });
    limiter.configure('a', { maxConcurrent: 100, opsPerSecond: 10 });
    // Down to 4/s at 0.5 s, up to 8/s at 2.2 s, down to 3/s at 3.7 s, while ops keep coming.
    const changes: Array<[number, number]> = [[500, 4], [2200, 8], [3700, 3]];
    for (const [at, rate] of changes) clock.setTimeout(() => limiter.configure('a', { opsPerSecond: rate }), at);
    const starts: Array<{ at: number; cap: number }> = [];
    const results: Array<Promise<void>> = [];
    for (let i = 0; i < 60; i++) {
      clock.setTimeout(() => {
        results.push(limiter.run('a', 'op', async () => void starts.push({ at: clock.now(), cap: limiter.limits('a').opsPerSecond })));
      }, i * 100);
    }
    while (await clock.runNext());
    await Promise.all(results);
    expect(starts).to.have.length(60);
    for (const [i, first] of starts.entries()) {
      const inWindow = starts.slice(i).filter((s) => s.at < first.at + 1000);
      expect(inWindow.length, `starts in [${first.at}, ${first.at + 1000}) ms`).to.be.at.most(inWindow.at(-1)!.cap);
    }
    // Right after the cut to 4/s, the ten starts of the last second keep the window shut.
    expect(starts.filter((s) => s.at >= 500 && s.at < 1000)).to.have.length(0);
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
        concurrencyLimit: () => {},
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

  it('a slot taken with acquire counts against the limit until released; a full backend refuses tryAcquire', async () => {
    const limiter = new BackendLimiter({ clock: new FakeClock(), defaults: { maxConcurrent: 2 } });
    const first = await limiter.acquire('a');
    const second = limiter.tryAcquire('a')!;
    expect(limiter.tryAcquire('a')).to.equal(undefined);
    const third = track(limiter.acquire('a'));
    await settle();
    expect([limiter.inFlight('a'), limiter.waiting('a'), third.settled]).to.deep.equal([2, 1, false]);
    // Operations run in a held slot do not take another one.
    expect(await first.run('create', async () => 'made')).to.equal('made');
    expect(limiter.inFlight('a')).to.equal(2);
    first.release();
    first.release();
    await settle();
    expect([third.settled, limiter.inFlight('a')]).to.deep.equal([true, 2]);
    second.release();
    third.value!.release();
    expect(limiter.inFlight('a')).to.equal(0);
  });

  it('a limit lowered under held slots holds for their operations: the next one waits for a running one to end', async () => {
    const limiter = new BackendLimiter({ clock: new FakeClock(), defaults: { maxConcurrent: 2 } });
    const [first, second] = [await limiter.acquire('a'), await limiter.acquire('a')];
    limiter.configure('a', { maxConcurrent: 1 });
    const gate = deferred();
    const running = track(first.run('create', () => gate.promise));
    const waiting = track(second.run('create', async () => 'second'));
    await settle();
    expect([running.settled, waiting.settled]).to.deep.equal([false, false]);
    gate.resolve();
    await settle();
    expect(waiting.value).to.equal('second');
    first.release();
    second.release();
    expect(limiter.inFlight('a')).to.equal(0);
  });

  it('a rate lowered under slots holding reserved starts holds for them: their first operations wait for the window', async () => {
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock, defaults: { maxConcurrent: 10, opsPerSecond: 4 } });
    // Two slots reserve their starts at 4/s; two operations start meanwhile.
    const held = [await limiter.acquire('a'), await limiter.acquire('a')];
    const starts: number[] = [];
    await limiter.run('a', 'op', async () => void starts.push(clock.now()));
    await limiter.run('a', 'op', async () => void starts.push(clock.now()));
    // Lowered to 2/s, the window is full: the reservations made at 4/s must not start now.
    limiter.configure('a', { opsPerSecond: 2 });
    const reserved = held.map((slot) => slot.run('op', async () => void starts.push(clock.now())));
    await clock.advanceAndSettle(999);
    expect(starts).to.deep.equal([0, 0]);
    await clock.advanceAndSettle(1);
    await Promise.all(reserved);
    expect(starts).to.deep.equal([0, 0, 1000, 1000]);
    for (const slot of held) slot.release();
  });

  it('the operations after the first in a held slot wait for the rate window', async () => {
    const clock = new FakeClock();
    const limiter = new BackendLimiter({ clock, defaults: { maxConcurrent: 10, opsPerSecond: 2 } });
    const slot = await limiter.acquire('a');
    const starts: number[] = [];
    const three = (async () => {
      for (let i = 0; i < 3; i++) await slot.run('op', async () => void starts.push(clock.now()));
    })();
    await clock.advanceAndSettle(1000);
    await three;
    slot.release();
    expect(starts).to.deep.equal([0, 0, 1000]);
  });

  describe('adaptive concurrency', () => {
    /**
     * A storage system that takes `storageLimit` operations at once and refuses the rest as
     * busy, driven by `clients` callers that each loop: take a slot, call, and on a busy
     * answer wait `retryAfterMs` outside the slot (as the runner does). Fake time throughout.
     */
    async function drive(options: { limiter: BackendLimiter; clock: FakeClock; storageLimit: () => number; clients: number; untilMs: number; latencyMs?: number }) {
      const { limiter, clock } = options;
      let active = 0;
      let done = 0;
      let refused = 0;
      const samples: Array<{ at: number; limit: number }> = [];
      const client = async () => {
        while (clock.now() < options.untilMs) {
          try {
            await limiter.run('array', 'create', async () => {
              if (active >= options.storageLimit()) throw Object.assign(new Error('array busy'), { busy: true, retryAfterMs: 20 });
              active++;
              try {
                await sleep(clock, options.latencyMs ?? 20);
              } finally {
                active--;
              }
            });
            done++;
          } catch {
            refused++;
            await sleep(clock, 20);
          }
          samples.push({ at: clock.now(), limit: limiter.concurrencyLimit('array') });
        }
      };
      const all = Promise.all(Array.from({ length: options.clients }, client));
      while (clock.now() < options.untilMs && (await clock.runNext()));
      while (await clock.runNext());
      await all;
      return { done, refused, samples };
    }

    it('settles near a storage limit of 8 under a ceiling of 64: few refusals, at least 90% of a static 8', async () => {
      const clock = new FakeClock();
      const adaptive = new BackendLimiter({ clock });
      adaptive.configure('array', { maxConcurrent: 64, adaptive: true });
      const learned = await drive({ limiter: adaptive, clock, storageLimit: () => 8, clients: 80, untilMs: 60_000 });
      const staticClock = new FakeClock();
      const fixed = new BackendLimiter({ clock: staticClock });
      fixed.configure('array', { maxConcurrent: 8 });
      const baseline = await drive({ limiter: fixed, clock: staticClock, storageLimit: () => 8, clients: 80, untilMs: 60_000 });
      const afterWarmUp = learned.samples.filter((s) => s.at > 5_000).map((s) => s.limit);
      expect(Math.min(...afterWarmUp), 'lowest limit after warm-up').to.be.at.least(6);
      expect(Math.max(...afterWarmUp), 'highest limit after warm-up').to.be.at.most(12);
      const refusalRate = learned.refused / (learned.done + learned.refused);
      expect(refusalRate, 'busy refusals per operation').to.be.below(0.02);
      expect(learned.done / baseline.done, 'throughput against a static limit of 8').to.be.at.least(0.9);
    });

    it('follows a storage limit raised from 8 to 32 within 10 s', async () => {
      const clock = new FakeClock();
      const limiter = new BackendLimiter({ clock });
      limiter.configure('array', { maxConcurrent: 64, adaptive: true });
      const storageLimit = () => (clock.now() < 20_000 ? 8 : 32);
      const { samples } = await drive({ limiter, clock, storageLimit, clients: 80, untilMs: 40_000 });
      const before = samples.filter((s) => s.at > 15_000 && s.at < 20_000).map((s) => s.limit);
      expect(Math.max(...before)).to.be.at.most(12);
      const reached = samples.find((s) => s.at >= 20_000 && s.limit >= 28);
      expect(reached, 'the limit reached 28 after the raise').to.not.equal(undefined);
      expect(reached!.at - 20_000, 'ms to follow the raise').to.be.at.most(10_000);
      const settled = samples.filter((s) => s.at > 35_000).map((s) => s.limit);
      expect(Math.min(...settled)).to.be.at.least(24);
      expect(Math.max(...settled)).to.be.at.most(36);
    });

    it('stays between the floor and the Backend ceiling, and a ceiling lowered at run time applies at once', async () => {
      const clock = new FakeClock();
      const limiter = new BackendLimiter({ clock });
      limiter.configure('array', { maxConcurrent: 16, minConcurrent: 3, adaptive: true });
      await drive({ limiter, clock, storageLimit: () => 1000, clients: 40, untilMs: 5_000 });
      expect(limiter.concurrencyLimit('array')).to.equal(16);
      limiter.configure('array', { maxConcurrent: 5 });
      expect(limiter.concurrencyLimit('array')).to.equal(5);
      const { samples } = await drive({ limiter, clock, storageLimit: () => 1, clients: 40, untilMs: 10_000 });
      expect(Math.min(...samples.map((s) => s.limit))).to.equal(3);
      expect(limiter.maxInFlight('array')).to.be.at.most(16);
    });
  });

  it('rejects nonsensical limits', () => {
    const limiter = new BackendLimiter();
    expect(() => limiter.configure('a', { maxConcurrent: 0 })).to.throw(RangeError);
    expect(() => limiter.configure('a', { opsPerSecond: 0 })).to.throw(RangeError);
  });
});
