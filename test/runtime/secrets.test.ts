import { expect } from 'chai';
import { FakeClock } from '../../src/core/testing.js';
import { SecretNotReadable, SecretReader } from '../../src/runtime/secrets.js';
import { FakeApiServer } from './fake-api.js';

describe('runtime/secrets: credentials read by name, cached briefly, never shown', () => {
  const path = '/api/v1/namespaces/storage/secrets/array-a';
  const setup = () => {
    const clock = new FakeClock();
    const server = new FakeApiServer();
    server.store(path, { metadata: { name: 'array-a' }, data: { token: Buffer.from('s3cret-value').toString('base64') } } as never);
    const reader = new SecretReader({ api: server.client(), clock, ttlMs: 30_000 });
    return { clock, server, reader };
  };

  it('reads one Secret by GET, then serves it from the cache until the TTL runs out', async () => {
    const { clock, server, reader } = setup();
    expect((await reader.read('storage', 'array-a')).get('token')?.toString()).to.equal('s3cret-value');
    await reader.read('storage', 'array-a');
    clock.advance(30_000);
    await reader.read('storage', 'array-a');
    expect(server.requests.map((r) => `${r.verb} ${r.path}`)).to.deep.equal([`get ${path}`, `get ${path}`]);
  });

  it('names the Secret and the status in its error, and values never serialize as text', async () => {
    const { reader } = setup();
    const error = await reader.read('storage', 'missing').then(() => undefined, (e: unknown) => e);
    expect(error).to.be.instanceOf(SecretNotReadable);
    expect((error as Error).message).to.equal('Secret storage/missing could not be read (HTTP 404)');
    const data = await reader.read('storage', 'array-a');
    expect(JSON.stringify(Object.fromEntries(data))).not.to.include('s3cret');
  });
});
