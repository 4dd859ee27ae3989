import { expect } from 'chai';
import { FakeClock } from '../../src/core/testing.js';
import { WriteFenced } from '../../src/runtime/api.js';
import { LeaderElector, type Lease, type LeaseWatch } from '../../src/runtime/leader.js';
import { FakeApiServer } from './fake-api.js';

describe('runtime/leader: leader election on a Lease', () => {
  const setup = ({ watch = false } = {}) => {
    const clock = new FakeClock(1_000_000);
    const server = new FakeApiServer();
    const leaseWatch: LeaseWatch = (onChange, signal) => {
      const listener = (_path: string, object: unknown) => onChange(object as Lease);
      server.listeners.add(listener);
      signal.addEventListener('abort', () => server.listeners.delete(listener), { once: true });
    };
    const make = (identity: string) => {
      const api = server.client(identity);
      return { api, elector: new LeaderElector({ api, namespace: 'ops', name: 'trellis', identity, clock, wallClock: () => new Date(clock.now()), watch: watch ? leaseWatch : undefined }) };
    };
    return { clock, server, a: make('a'), b: make('b') };
  };

  it('lets exactly one of two replicas lead', async () => {
    const { clock, a, b } = setup();
    await a.elector.acquire();
    let bLeads = false;
    void b.elector.acquire().then(() => (bLeads = true), () => {});
    for (let i = 0; i < 30; i++) await clock.advanceAndSettle(1_000);
    expect(a.elector.isLeader).to.equal(true);
    expect(bLeads).to.equal(false);
    await a.elector.release();
    await b.elector.release();
  });

  it('a leader that cannot renew fences its writes before its lease could expire, and the other takes over after it', async () => {
    const { clock, a, b } = setup();
    await a.elector.acquire();
    const lost: number[] = [];
    a.elector.onLost(() => lost.push(clock.now()));
    let bLeadsAt: number | undefined;
    void b.elector.acquire().then(() => (bLeadsAt = clock.now()), () => {});
    await clock.advanceAndSettle(3_000);
    const partitionedAt = clock.now();
    a.api.down();
    const fenceClosed = () => {
      try {
        a.elector.fence();
        return false;
      } catch (error) {
        return error instanceof WriteFenced;
      }
    };
    let fencedAt: number | undefined;
    for (let t = 0; t < 30_000 && bLeadsAt === undefined; t += 250) {
      await clock.advanceAndSettle(250);
      if (fencedAt === undefined && fenceClosed()) fencedAt = clock.now();
    }
    expect(fencedAt, 'fence closed').to.be.a('number');
    expect(bLeadsAt, 'b took over').to.be.a('number');
    // Fenced within the renew deadline of the last renewal, strictly before b could lead.
    expect(fencedAt! - partitionedAt).to.be.at.most(10_000);
    expect(bLeadsAt! - fencedAt!).to.be.at.least(4_000);
    expect(bLeadsAt! - partitionedAt).to.be.at.most(15_000 + 2_500 + 2_000);
    expect(lost).to.have.length(1);
    // Workers are told at the deadline itself, not at the next renewal attempt.
    expect(lost[0] - (partitionedAt - 1_000)).to.equal(10_000);
    await a.elector.release();
    await b.elector.release();
  });

  it('release hands the lease over at the next try, not after the lease duration', async () => {
    const { clock, a, b } = setup();
    await a.elector.acquire();
    let bLeadsAt: number | undefined;
    void b.elector.acquire().then(() => (bLeadsAt = clock.now()), () => {});
    await clock.advanceAndSettle(5_000);
    const releasedAt = clock.now();
    await a.elector.release();
    expect(a.elector.isLeader).to.equal(false);
    for (let t = 0; t < 5_000 && bLeadsAt === undefined; t += 100) await clock.advanceAndSettle(100);
    expect(bLeadsAt! - releasedAt).to.be.at.most(2_500);
    await b.elector.release();
  });

  it('a follower watching the Lease takes over within the lease duration of the last renewal', async () => {
    const { clock, a, b } = setup({ watch: true });
    await a.elector.acquire();
    let bLeadsAt: number | undefined;
    void b.elector.acquire().then(() => (bLeadsAt = clock.now()), () => {});
    await clock.advanceAndSettle(3_100);
    a.api.down();
    const lastRenewal = 1_000_000 + 2_000;
    for (let t = 0; t < 20_000 && bLeadsAt === undefined; t += 10) await clock.advanceAndSettle(10);
    expect(bLeadsAt! - lastRenewal).to.be.within(15_000, 15_200);
    await a.elector.release();
    await b.elector.release();
  });

  it('fence() refuses writes from a replica that never led', () => {
    const { b } = setup();
    expect(() => b.elector.fence()).to.throw(WriteFenced);
  });
});
