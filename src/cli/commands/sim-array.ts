// Placeholder until the drivers land: the simulated array's entry point.
export async function run(_argv: string[]): Promise<number> {
  process.stderr.write('trellis sim-array: not built yet\n');
  return 1;
}
