// The sim-array command's CSI flags: a bad value is refused before anything starts, with a
// message naming the flag and what it accepts.
import { expect } from 'chai';
import { run } from '../../src/cli/commands/sim-array.js';

/** Runs `trellis sim-array` in-process with `argv`; returns its exit code and what it wrote to stderr. */
async function simArray(argv: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write.bind(process.stderr);
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await run(argv), stderr };
  } finally {
    process.stderr.write = write;
  }
}

describe('trellis sim-array CSI flags', () => {
  it('refuses an unknown --csi-quirks name, listing the known ones', async () => {
    const { code, stderr } = await simArray(['--port', '0', '--csi-quirks', 'unknownVolumeAbnormal,sloppy']);
    expect(code).to.equal(1);
    expect(stderr).to.contain('--csi-quirks: unknown quirk "sloppy" (known: unknownVolumeAbnormal, ignoreParametersOnNameMatch, oversizeOutOfRange)');
  });

  it('refuses a --csi-topology segment that is not KEY=VALUE', async () => {
    const { code, stderr } = await simArray(['--port', '0', '--csi-topology', 'zone=z1,rack']);
    expect(code).to.equal(1);
    expect(stderr).to.contain('--csi-topology: "rack" is not KEY=VALUE');
  });
});
