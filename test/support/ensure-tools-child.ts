// Run as its own process by the build-tools tests: builds the tools named in argv through
// the harness (into TRELLIS_TOOLS_DIR), echoing the script's progress on stdout.
import { ensureTools, type ToolName } from '../../src/cli/local-cluster.js';

await ensureTools(process.argv.slice(2) as ToolName[], (line) => process.stdout.write(`${line}\n`));
