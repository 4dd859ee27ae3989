// Placeholder until the drivers land: the backup repository operator commands.
export async function run(_argv: string[]): Promise<number> {
  process.stderr.write('trellis repo: not built yet\n');
  return 1;
}
