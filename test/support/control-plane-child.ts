// Run as its own process by the teardown tests: starts a control plane, prints its data dir
// and PIDs as one JSON line, then waits to be killed.
import { startControlPlane } from '../../src/cli/local-cluster.js';

const controlPlane = await startControlPlane({ crdsDir: false, controllerManager: false, progress: () => {} });
process.stdout.write(`${JSON.stringify({ dataDir: controlPlane.dataDir, pids: controlPlane.pids() })}\n`);
setInterval(() => {}, 60_000);
