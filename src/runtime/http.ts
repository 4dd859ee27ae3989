// The operator's HTTP endpoints: `/metrics` (Prometheus text from the injected Registry),
// `/healthz` (the process serves) and `/readyz` (every cache synced and the manager not
// stopping). Guarantees: one server per distinct address (metrics and probes may share
// one); a failed check answers 503 naming what failed; `close` ends open connections.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** A probe: undefined when fine, else why not. */
export type Check = () => string | undefined;

export interface HttpEndpointsOptions {
  registry: Registry;
  /** `host:port`, `:port` (all interfaces) or `0` to disable. */
  metricsAddress: string;
  probeAddress: string;
  healthz: Check;
  readyz: Check;
}

export class HttpEndpoints {
  private readonly servers: Server[] = [];

  constructor(private readonly options: HttpEndpointsOptions) {}

  /** Listens; resolves with the bound addresses (port 0 picks a free port). */
  async start(): Promise<{ metrics?: AddressInfo; probes?: AddressInfo }> {
    const routes = (paths: Set<string>) => async (path: string) => {
      if (paths.has('metrics') && path === '/metrics') {
        return { status: 200, type: this.options.registry.contentType, body: await this.options.registry.metrics() };
      }
      if (paths.has('probes') && (path === '/healthz' || path === '/readyz' || path === '/livez')) {
        const failure = (path === '/readyz' ? this.options.readyz : this.options.healthz)();
        return failure === undefined ? { status: 200, type: 'text/plain', body: 'ok\n' } : { status: 503, type: 'text/plain', body: `${failure}\n` };
      }
      return { status: 404, type: 'text/plain', body: 'not found\n' };
    };
    const { metricsAddress, probeAddress } = this.options;
    const result: { metrics?: AddressInfo; probes?: AddressInfo } = {};
    if (metricsAddress !== '0' && metricsAddress === probeAddress) {
      const address = await this.listen(metricsAddress, routes(new Set(['metrics', 'probes'])));
      return { metrics: address, probes: address };
    }
    if (metricsAddress !== '0') result.metrics = await this.listen(metricsAddress, routes(new Set(['metrics'])));
    if (probeAddress !== '0') result.probes = await this.listen(probeAddress, routes(new Set(['probes'])));
    return result;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.servers.splice(0).map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    );
  }

  private listen(address: string, route: (path: string) => Promise<{ status: number; type: string; body: string }>): Promise<AddressInfo> {
    const { host, port } = parseAddress(address);
    const server = createServer((request, response) => {
      const path = (request.url ?? '/').split('?')[0];
      route(path).then(
        ({ status, type, body }) => response.writeHead(status, { 'content-type': type }).end(body),
        (error: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(error)}\n`),
      );
    });
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve(server.address() as AddressInfo));
    });
  }
}

/** `host:port`, `:port` or `port`; throws a RangeError naming the address when it is neither. */
export function parseAddress(address: string): { host?: string; port: number } {
  const match = /^(?:(\[[^\]]+\]|[^:]*):)?(\d+)$/.exec(address);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) throw new RangeError(`not an address (host:port or :port): ${JSON.stringify(address)}`);
  const host = match[1] ? match[1].replace(/^\[|\]$/g, '') : undefined;
  return { host, port };
}
