// Runs the StorageDriver contract for every driver: sim over HTTP, csi against the sim
// array's CSI socket, hostpath on a temp directory.
import { driverContract } from './contract.js';
import { csiFixture, hostpathFixture, simFixture } from './fixtures.js';

driverContract('sim', simFixture);
driverContract('csi (against the sim array CSI socket)', csiFixture);
driverContract('hostpath', hostpathFixture);
