// The classification the core reads from a DriverError by shape: terminal, busy, retryAfterMs.
import { expect } from 'chai';
import { DriverError, type DriverErrorReason } from '../../src/backends/errors.js';

describe('DriverError classification', () => {
  const table: [DriverErrorReason, { terminal: boolean; busy: boolean; retryable: boolean }][] = [
    ['busy', { terminal: false, busy: true, retryable: true }],
    ['timeout', { terminal: false, busy: false, retryable: true }],
    ['unavailable', { terminal: false, busy: false, retryable: true }],
    ['invalid', { terminal: true, busy: false, retryable: false }],
    ['notFound', { terminal: true, busy: false, retryable: false }],
    ['noSpace', { terminal: true, busy: false, retryable: false }],
    ['alreadyExists', { terminal: true, busy: false, retryable: false }],
  ];
  for (const [reason, want] of table) {
    it(`${reason}: terminal ${want.terminal}, busy ${want.busy}, retryable ${want.retryable}`, () => {
      const err = new DriverError(reason, 'x');
      expect({ terminal: err.terminal, busy: err.busy, retryable: err.retryable }).to.deep.equal(want);
    });
  }

  it('a busy error always carries retryAfterMs: the backend\'s hint, else 50-100 ms, jittered', () => {
    expect(new DriverError('busy', 'x', { retryAfterMs: 1500 }).retryAfterMs).to.equal(1500);
    const defaults = Array.from({ length: 200 }, () => new DriverError('busy', 'x').retryAfterMs!);
    for (const ms of defaults) expect(ms).to.be.within(50, 100);
    expect(new Set(defaults).size, 'refused callers must not all come back together').to.be.greaterThan(10);
    expect(new DriverError('unavailable', 'x').retryAfterMs).to.equal(undefined);
  });
});
