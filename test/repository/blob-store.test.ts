import { expect } from 'chai';
import { readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobNotFoundError, FilesystemBlobStore } from '../../src/repository/index.js';
import { removeTempDirs, tempDir } from './helpers.js';

async function listAll(store: FilesystemBlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

describe('filesystem blob store', () => {
  after(removeTempDirs);

  it('putIfAbsent writes once and never replaces; put replaces', async () => {
    const store = new FilesystemBlobStore(await tempDir());
    expect(await store.putIfAbsent('a/b/c', Buffer.from('one'))).to.equal(true);
    expect(await store.putIfAbsent('a/b/c', Buffer.from('two'))).to.equal(false);
    expect((await store.get('a/b/c')).toString()).to.equal('one');
    await store.put('a/b/c', Buffer.from('three'));
    expect((await store.get('a/b/c')).toString()).to.equal('three');
    expect(await store.stat('a/b/c')).to.include({ size: 5 });
  });

  it('agrees on one winner when many writers race for one key', async () => {
    const store = new FilesystemBlobStore(await tempDir());
    const wins = await Promise.all(Array.from({ length: 20 }, (_, i) => store.putIfAbsent('race', Buffer.from(String(i)))));
    expect(wins.filter(Boolean)).to.have.length(1);
    expect(await listAll(store, '')).to.deep.equal(['race']);
  });

  it('lists keys under a folder and never its temporary files; get/delete/move of absent keys', async () => {
    const dir = await tempDir();
    const store = new FilesystemBlobStore(dir);
    await store.put('x/1', Buffer.from('1'));
    await store.put('x/y/2', Buffer.from('2'));
    await store.put('z', Buffer.from('3'));
    await writeFile(join(dir, 'x', '.tmp-left-behind'), 'partial');
    expect(await listAll(store, 'x')).to.deep.equal(['x/1', 'x/y/2']);
    expect(await listAll(store, 'nothing')).to.deep.equal([]);
    let error: unknown;
    await store.get('x/missing').catch((e) => (error = e));
    expect(error).to.be.instanceOf(BlobNotFoundError);
    expect(await store.delete('x/missing')).to.equal(false);
    expect(await store.move('x/missing', 'x/other')).to.equal(false);
    expect(await store.move('x/1', 'moved/1')).to.equal(true);
    expect(await store.has('x/1')).to.equal(false);
    expect((await store.get('moved/1')).toString()).to.equal('1');
  });

  it('removes only temporary files older than the cut-off', async () => {
    const dir = await tempDir();
    const store = new FilesystemBlobStore(dir);
    await store.put('x/keep', Buffer.from('k'));
    await writeFile(join(dir, 'x', '.tmp-old'), 'partial');
    await writeFile(join(dir, 'x', '.tmp-new'), 'partial');
    const old = new Date('2020-01-01T00:00:00Z');
    await utimes(join(dir, 'x', '.tmp-old'), old, old);
    expect(await store.removeStaleTemporaries(new Date('2021-01-01T00:00:00Z'))).to.equal(1);
    expect((await readdir(join(dir, 'x'))).sort()).to.deep.equal(['.tmp-new', 'keep']);
  });

  it('rejects keys that could escape the root or collide with its own files', async () => {
    const store = new FilesystemBlobStore(await tempDir());
    for (const key of ['../x', 'a/../../b', '/abs', 'a//b', '.tmp-x', 'a/.hidden', '']) {
      let error: Error | undefined;
      await store.put(key, Buffer.from('x')).catch((e: Error) => (error = e));
      expect(error?.message, key).to.match(/invalid blob key/);
    }
  });
});
