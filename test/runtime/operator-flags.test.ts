import { expect } from 'chai';
import { UsageError, parseSettings } from '../../src/cli/commands/operator.js';

describe('trellis operator: flags and environment', () => {
  it('has defaults for everything', () => {
    expect(parseSettings([], {})).to.deep.include({ workers: 10, concurrency: 'hierarchical', metricsAddress: ':8080', probeAddress: ':8081', leaderElect: true, leaseName: 'trellis-operator', namespaces: [] });
  });

  it('reads the environment, and a flag wins over it', () => {
    const settings = parseSettings(['--workers=4'], { TRELLIS_WORKERS: '2', TRELLIS_NAMESPACES: 'a, b', TRELLIS_LEADER_ELECT: 'false', TRELLIS_CONCURRENCY: 'serial' });
    expect(settings).to.deep.include({ workers: 4, namespaces: ['a', 'b'], leaderElect: false, concurrency: 'serial' });
  });

  it('names the flag or variable of a bad value', () => {
    const bad: Array<[string[], Record<string, string>, RegExp]> = [
      [['--workers', '0'], {}, /--workers: "0"/],
      [['--concurrency=parallel'], {}, /--concurrency: "parallel"/],
      [['--metrics-bind-address=localhost'], {}, /--metrics-bind-address/],
      [[], { TRELLIS_LEADER_ELECT: 'yes' }, /TRELLIS_LEADER_ELECT: "yes"/],
      [['--namespaces=Bad_NS'], {}, /--namespaces: "Bad_NS"/],
      [['--log-level=loud'], {}, /--log-level/],
      [['--no-such-flag'], {}, /no-such-flag/],
    ];
    for (const [argv, env, message] of bad) expect(() => parseSettings(argv, env), argv.join(' ')).to.throw(UsageError, message);
  });
});
