// `trellis <command>`: one binary, each command in its own module under ./commands,
// loaded on demand so `trellis repo stats` does not pay for the Kubernetes client.
const commands: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  operator: { summary: 'run the Kubernetes operator (watches, leader election, controllers, /metrics, probes)', load: () => import('./commands/operator.js') },
  'sim-array': { summary: 'run a simulated storage array (HTTP API, optional CSI socket)', load: () => import('./commands/sim-array.js') },
  repo: { summary: 'operate a backup repository: verify | stats | gc', load: () => import('./commands/repo.js') },
};

function usage(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return `usage: trellis <command> [options]\n\ncommands:\n${rows.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`trellis: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

process.exitCode = await main(process.argv.slice(2));
