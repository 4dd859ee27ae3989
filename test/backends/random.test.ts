// The sim array's randomness: reproducible by seed, long-tailed latency, seeded data.
import { expect } from 'chai';
import { deriveSeed, drawLatency, prng, seededStream, type LatencyOptions } from '../../src/backends/sim/random.js';
import { sha256 } from './contract.js';

const latency: LatencyOptions = { medianMs: 10, sigma: 1, maxMs: 5_000, factors: { createGroupSnapshot: 8 } };

function draws(seed: number, op: string, n: number): number[] {
  const random = prng(seed);
  return Array.from({ length: n }, () => drawLatency(latency, op, random));
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;

describe('sim randomness', () => {
  it('the same seed gives the same latencies; another seed other ones', () => {
    expect(draws(7, 'createVolume', 50)).to.deep.equal(draws(7, 'createVolume', 50));
    expect(draws(8, 'createVolume', 50)).not.to.deep.equal(draws(7, 'createVolume', 50));
  });

  it('latency is long-tailed around the median, scaled per operation and capped', () => {
    const xs = draws(1, 'createVolume', 20_000);
    const median = quantile(xs, 0.5);
    expect(median).to.be.within(9, 11);
    // Log-normal with sigma 1: p99 is about e^2.33 = 10x the median.
    expect(quantile(xs, 0.99) / median).to.be.within(7, 14);
    expect(Math.max(...xs)).to.be.at.most(latency.maxMs);
    expect(quantile(draws(1, 'createGroupSnapshot', 20_000), 0.5)).to.be.within(72, 88);
    expect(drawLatency({ ...latency, medianMs: 0 }, 'createVolume', prng(1))).to.equal(0);
  });

  it('seeded streams are exact in length and identical per seed', async () => {
    const len = 3 * 65_536 + 5;
    let bytes = 0;
    for await (const chunk of seededStream(deriveSeed(1, 'vol-000001'), len)) bytes += (chunk as Buffer).length;
    expect(bytes).to.equal(len);
    const a = await sha256(seededStream(deriveSeed(1, 'vol-000001'), len));
    expect(await sha256(seededStream(deriveSeed(1, 'vol-000001'), len))).to.equal(a);
    expect(await sha256(seededStream(deriveSeed(1, 'vol-000002'), len))).not.to.equal(a);
    expect(deriveSeed(1, 'vol-000001')).to.not.equal(deriveSeed(2, 'vol-000001'));
  });
});
