// Driver config validation: a bad or unknown option is a terminal error that names it.
import { expect } from 'chai';
import { createDriver } from '../../src/backends/registry.js';
import { DriverError } from '../../src/backends/errors.js';

function configError(kind: string, config: unknown, credentials?: Record<string, string>): DriverError {
  try {
    createDriver(kind, config, credentials);
  } catch (err) {
    expect(err).to.be.instanceOf(DriverError);
    return err as DriverError;
  }
  throw new Error(`createDriver(${kind}) accepted ${JSON.stringify(config)}`);
}

describe('driver config validation', () => {
  const cases: [kind: string, config: unknown, option: string, message: RegExp][] = [
    ['sim', { endpont: 'http://a' }, 'endpont', /unknown option "endpont"/],
    ['sim', {}, 'endpoint', /missing required option "endpoint"/],
    ['sim', { endpoint: 'ftp://a' }, 'endpoint', /option "endpoint" must match pattern/],
    ['sim', { endpoint: 'http://a', jobWaitMs: 0 }, 'jobWaitMs', /option "jobWaitMs" must be >= 1/],
    // The in-driver busy retry is gone (the caller waits): its options are unknown now.
    ['sim', { endpoint: 'http://a', busyBackoffMs: 20 }, 'busyBackoffMs', /unknown option "busyBackoffMs"/],
    ['sim', { endpoint: 'http://a', pollIntervalMs: 10 }, 'pollIntervalMs', /unknown option "pollIntervalMs"/],
    ['hostpath', { root: '/data', maxBusyBackoffMs: 100 }, 'maxBusyBackoffMs', /unknown option "maxBusyBackoffMs"/],
    ['csi', { endpoint: 'unix:///run/csi.sock', busyBackoffMs: 20 }, 'busyBackoffMs', /unknown option "busyBackoffMs"/],
    ['sim', { endpoint: 'http://a', requestTimeoutMs: '5s' }, 'requestTimeoutMs', /option "requestTimeoutMs" must be integer/],
    ['hostpath', { root: '/data', rot: '/x' }, 'rot', /unknown option "rot"/],
    ['hostpath', { root: 'relative/dir' }, 'root', /option "root" must match pattern/],
    ['hostpath', { root: '/data', reflink: 'sometimes' }, 'reflink', /option "reflink"/],
    ['hostpath', { root: '/data', capacityBytes: -1 }, 'capacityBytes', /option "capacityBytes" must be >= 1/],
    ['csi', { endpoint: 'tcp://10.0.0.1:9000' }, 'endpoint', /option "endpoint" must match pattern/],
    ['csi', { endpoint: 'unix:///run/csi.sock', acessMode: 'x' }, 'acessMode', /unknown option "acessMode"/],
    ['csi', { endpoint: 'unix:///run/csi.sock', accessMode: 'ANY' }, 'accessMode', /option "accessMode" must be equal to one of the allowed values/],
    ['csi', { endpoint: 'unix:///run/csi.sock', timeoutMs: 1.5 }, 'timeoutMs', /option "timeoutMs" must be integer/],
    ['csi', { endpoint: 'unix:///run/csi.sock', accessibilityRequirements: { required: [{ zone: 'z1' }] } }, 'accessibilityRequirements.required', /unknown option "accessibilityRequirements.required"/],
    ['csi', { endpoint: 'unix:///run/csi.sock', accessibilityRequirements: { requisite: [{ zone: 1 }] } }, 'accessibilityRequirements.requisite.0.zone', /option "accessibilityRequirements.requisite.0.zone" must be string/],
  ];

  for (const [kind, config, option, message] of cases) {
    it(`${kind}: ${JSON.stringify(config)} names "${option}"`, () => {
      const err = configError(kind, config);
      expect(err.kind).to.equal('terminal');
      expect(err.reason).to.equal('invalid');
      expect(err.option).to.equal(option);
      expect(err.message).to.match(message);
      expect(err.message).to.match(new RegExp(`^${kind} driver config: `));
    });
  }

  it('credentials are checked too: hostpath takes none, csi takes string secrets', () => {
    expect(configError('hostpath', { root: '/data' }, { password: 'x' }).message).to.match(/hostpath credentials driver config: unknown option "password"/);
    expect(configError('sim', { endpoint: 'http://a' }, { tokn: 'x' }).option).to.equal('tokn');
    expect(() => createDriver('csi', { endpoint: 'unix:///run/csi.sock' }, { 'csi.storage.k8s.io/secret': 'x' })).not.to.throw();
  });

  it('an unknown driver kind is a terminal error naming the known ones', () => {
    const err = configError('nfs', {});
    expect(err.option).to.equal('driver');
    expect(err.message).to.equal('unknown driver "nfs" (known: sim, hostpath, csi)');
  });

  it('a valid config gets its defaults and does not change the caller\'s object', () => {
    const config = { endpoint: 'http://array:8080' };
    const driver = createDriver('sim', config);
    expect(driver.kind).to.equal('sim');
    expect(config).to.deep.equal({ endpoint: 'http://array:8080' });
  });
});
