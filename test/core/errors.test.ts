import { expect } from 'chai';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { AggregateFailure, TerminalError, aggregateFailures, isTerminal, runAll } from '../../src/core/errors.js';
import { settle } from '../../src/core/testing.js';
import { deferred, track } from './helpers.js';

function memoryLogger() {
  const lines: Array<{ key: string; msg: string }> = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(JSON.parse(String(chunk)));
      callback();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

describe('core/errors', () => {
  it('runAll reports every failure with its key, not just the first', async () => {
    const { lines, logger } = memoryLogger();
    const children = Array.from({ length: 30 }, (_, i) => `vol-${String(i).padStart(2, '0')}`);
    const failing = new Set(children.filter((_, i) => i % 2 === 1));
    const run = runAll(children, { parallelism: 4, keyOf: (c) => c, logger, what: 'volume snapshots' }, async (child) => {
      await settle();
      if (failing.has(child)) throw new Error(`array refused ${child}`);
      return child.toUpperCase();
    });
    const error = await run.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(AggregateFailure);
    const failure = error as AggregateFailure;
    expect(failure.failures.map((f) => f.key)).to.deep.equal([...failing]);
    expect(failure.message).to.match(/^15 of 30 volume snapshots failed: vol-01: array refused vol-01; vol-03: /);
    expect(failure.message).to.contain('vol-19: array refused vol-19; and 5 more');
    expect(failure.message).not.to.contain('vol-21');
    await settle();
    expect(lines.map((l) => l.key).sort()).to.deep.equal([...failing]);
    expect(failure.terminal).to.equal(false);
  });

  it('runAll never runs more than `parallelism` children at once and returns results in order', async () => {
    let running = 0;
    let peak = 0;
    const gates = Array.from({ length: 9 }, () => deferred());
    const run = track(
      runAll([...gates.keys()], { parallelism: 3, keyOf: String }, async (i) => {
        running++;
        peak = Math.max(peak, running);
        await gates[i].promise;
        running--;
        return i * 10;
      }),
    );
    for (const gate of [...gates].reverse()) {
      await settle();
      gate.resolve();
    }
    for (const gate of gates) gate.resolve();
    await settle();
    await settle();
    expect(peak).to.equal(3);
    expect(run.value).to.deep.equal([0, 10, 20, 30, 40, 50, 60, 70, 80]);
  });

  it('after an abort, children not yet started fail with the reason instead of running', async () => {
    const abort = new AbortController();
    const ran: number[] = [];
    const error = await runAll([0, 1, 2, 3], { parallelism: 1, keyOf: String, signal: abort.signal }, async (i) => {
      ran.push(i);
      if (i === 1) abort.abort(new TerminalError('cancelled'));
    }).then(
      () => undefined,
      (e: unknown) => e as AggregateFailure,
    );
    expect(ran).to.deep.equal([0, 1]);
    expect(error!.failures.map((f) => f.key)).to.deep.equal(['2', '3']);
    expect(error!.terminal).to.equal(true);
    expect(isTerminal(error)).to.equal(true);
  });

  it('a keyOf that throws fails only its own child: every other child runs and each failure is reported', async () => {
    const ran: number[] = [];
    const failure = await runAll(
      [0, 1, 2, 3, 4],
      {
        parallelism: 2,
        keyOf: (n) => {
          if (n === 1) throw new Error('no key for 1');
          return `child-${n}`;
        },
      },
      async (n) => {
        await settle();
        ran.push(n);
        if (n === 3) throw new Error('child 3 broke');
      },
    ).then(
      () => undefined,
      (e: unknown) => e as AggregateFailure,
    );
    expect(ran.sort()).to.deep.equal([0, 2, 3, 4]);
    expect(failure).to.be.instanceOf(AggregateFailure);
    expect(failure!.failures.map((f) => f.key)).to.deep.equal(['#1', 'child-3']);
    expect(failure!.message).to.equal('2 of 5 children failed: #1: no key for 1; child-3: child 3 broke');
  });

  it('aggregateFailures is undefined without failures and terminal only if every failure is', () => {
    expect(aggregateFailures('x', [], 3)).to.equal(undefined);
    const mixed = aggregateFailures('x', [{ key: 'a', error: new TerminalError('bad spec') }, { key: 'b', error: 'timeout' }], 2)!;
    expect(mixed.message).to.equal('2 of 2 x failed: a: bad spec; b: timeout');
    expect(isTerminal(mixed)).to.equal(false);
    expect(isTerminal(new TerminalError('t'))).to.equal(true);
    expect(isTerminal(new Error('e'))).to.equal(false);
  });
});
