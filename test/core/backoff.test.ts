import { expect } from 'chai';
import { ExponentialBackoff, RetryLimiter, TokenBucket } from '../../src/core/backoff.js';
import { FakeClock } from '../../src/core/testing.js';

describe('core/backoff', () => {
  it('waits base*2^n up to the cap, and forget starts the key over', () => {
    const backoff = new ExponentialBackoff({ baseMs: 1000, capMs: 300_000 });
    const delays = Array.from({ length: 12 }, () => backoff.when('k'));
    expect(delays).to.deep.equal([1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000]);
    expect(backoff.retries('k')).to.equal(12);
    backoff.forget('k');
    expect(backoff.retries('k')).to.equal(0);
    expect(backoff.size).to.equal(0);
    expect(backoff.when('k')).to.equal(1000);
  });

  it('defaults to storage-friendly 1 s .. 5 min', () => {
    const backoff = new ExponentialBackoff();
    expect(backoff.when('k')).to.equal(1000);
    for (let i = 0; i < 100; i++) backoff.when('k');
    expect(backoff.when('k')).to.equal(300_000);
  });

  it('keeps keys apart: one failing key does not slow another', () => {
    const backoff = new ExponentialBackoff({ baseMs: 10, capMs: 1000 });
    for (let i = 0; i < 5; i++) backoff.when('bad');
    expect(backoff.when('good')).to.equal(10);
    expect(backoff.when('bad')).to.equal(320);
  });

  it('token bucket allows the burst, then paces at qps, and refills with time', () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket({ qps: 10, burst: 3, clock });
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()]).to.deep.equal([0, 0, 0]);
    expect(bucket.reserve()).to.be.closeTo(100, 1e-9);
    expect(bucket.reserve()).to.be.closeTo(200, 1e-9);
    clock.advance(1000);
    expect(bucket.reserve()).to.equal(0);
  });

  it('retry limiter takes the longer of backoff and bucket', () => {
    const clock = new FakeClock();
    const limiter = new RetryLimiter({ baseMs: 5, capMs: 1000, qps: 1, burst: 1, clock });
    expect(limiter.when('a')).to.equal(5);
    // The bucket is empty now: the next retry of any key waits a full second.
    expect(limiter.when('b')).to.be.closeTo(1000, 1e-9);
    limiter.forget('a');
    limiter.forget('b');
    expect(limiter.size).to.equal(0);
  });
});
