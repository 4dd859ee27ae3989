// Runs the StorageDriver contract for every driver: sim over HTTP, csi against the sim
// array's CSI socket, hostpath on a temp directory.
import { driverContract } from './contract.js';
import { csiFixture, ensureCsiProto, hostpathFixture, simFixture } from './fixtures.js';

driverContract('sim', simFixture);
describe('csi.proto in the tools cache', function () {
  this.timeout(120_000);
  before(ensureCsiProto);
  driverContract('csi (against the sim array CSI socket)', () => csiFixture());
  // A CSI plugin the test cannot stall or make busy: every case must still mean something.
  driverContract('csi (a plain CSI socket, no test hooks)', () => csiFixture({ plain: true }));
});
driverContract('hostpath', hostpathFixture);
