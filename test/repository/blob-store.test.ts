import { expect } from 'chai';
import { open, readdir, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobNotFoundError, FilesystemBlobStore, type BlobStore } from '../../src/repository/index.js';
import { removeTempDirs, tempDir } from './helpers.js';
import { MemoryBlobStore } from './memory-blob-store.js';

async function listAll(store: BlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

// The contract every BlobStore keeps; an object-store backend joins this list.
const stores: [string, () => Promise<BlobStore>][] = [
  ['filesystem', async () => new FilesystemBlobStore(await tempDir())],
  ['memory', async () => new MemoryBlobStore()],
];

for (const [name, makeStore] of stores) {
  describe(`blob store contract: ${name}`, () => {
    after(removeTempDirs);

    it('putIfAbsent writes once and never replaces; put replaces', async () => {
      const store = await makeStore();
      expect(await store.putIfAbsent('a/b/c', Buffer.from('one'))).to.equal(true);
      expect(await store.putIfAbsent('a/b/c', Buffer.from('two'))).to.equal(false);
      expect((await store.get('a/b/c')).toString()).to.equal('one');
      await store.put('a/b/c', Buffer.from('three'));
      expect((await store.get('a/b/c')).toString()).to.equal('three');
      expect(await store.stat('a/b/c')).to.include({ size: 5 });
    });

    it('agrees on one winner when many writers race for one key', async () => {
      const store = await makeStore();
      const wins = await Promise.all(Array.from({ length: 20 }, (_, i) => store.putIfAbsent('race', Buffer.from(String(i)))));
      expect(wins.filter(Boolean)).to.have.length(1);
      expect(await listAll(store, '')).to.deep.equal(['race']);
    });

    it('lists keys under a folder; get, delete and move of absent keys say so', async () => {
      const store = await makeStore();
      await store.put('x/1', Buffer.from('1'));
      await store.put('x/y/2', Buffer.from('2'));
      await store.put('xz', Buffer.from('3'));
      expect(await listAll(store, 'x')).to.deep.equal(['x/1', 'x/y/2']);
      expect(await listAll(store, 'nothing')).to.deep.equal([]);
      let error: unknown;
      await store.get('x/missing').catch((e) => (error = e));
      expect(error).to.be.instanceOf(BlobNotFoundError);
      expect(await store.stat('x/missing')).to.equal(undefined);
      expect(await store.delete('x/missing')).to.equal(false);
      expect(await store.move('x/missing', 'x/other')).to.equal(false);
      expect(await store.move('x/1', 'moved/1')).to.equal(true);
      expect(await store.has('x/1')).to.equal(false);
      expect((await store.get('moved/1')).toString()).to.equal('1');
      expect(await store.delete('moved/1')).to.equal(true);
    });

    it('rejects keys that could escape the root or collide with the store’s own files', async () => {
      const store = await makeStore();
      for (const key of ['../x', 'a/../../b', '/abs', 'a//b', '.tmp-x', 'a/.hidden', '']) {
        let error: Error | undefined;
        await store.put(key, Buffer.from('x')).catch((e: Error) => (error = e));
        expect(error?.message, key).to.match(/invalid blob key/);
      }
    });
  });
}

describe('filesystem blob store', () => {
  after(removeTempDirs);

  it('writes a blob piece by piece: nothing visible before commit, never replacing, nothing left after an abort', async () => {
    const store = new FilesystemBlobStore(await tempDir());
    const writer = await store.createWriter('packs/ab/one');
    await writer.write([Buffer.from('hel'), Buffer.from('lo, ')]);
    await writer.write([new Uint8Array(Buffer.from('world'))]);
    expect(await store.has('packs/ab/one')).to.equal(false);
    expect(await listAll(store, '')).to.deep.equal([]);
    expect(await writer.commit()).to.equal(true);
    expect((await store.get('packs/ab/one')).toString()).to.equal('hello, world');

    const second = await store.createWriter('packs/ab/one');
    await second.write([Buffer.from('other')]);
    expect(await second.commit()).to.equal(false);
    expect((await store.get('packs/ab/one')).toString()).to.equal('hello, world');

    const dropped = await store.createWriter('packs/ab/two');
    await dropped.write([Buffer.from('partial')]);
    await dropped.abort();
    expect(await readdir(join(store.root, 'packs', 'ab'))).to.deep.equal(['one']);
  });

  it('syncs a blob written piece by piece in the background every 4 MiB, and a failed background sync fails its commit and leaves nothing', async () => {
    const proto = Object.getPrototypeOf(await open(process.execPath, 'r').then(async (h) => (await h.close(), h))) as FileHandle;
    const original = proto.datasync;
    let syncs = 0;
    try {
      proto.datasync = async function (this: FileHandle) {
        syncs++;
        return original.call(this);
      };
      const store = new FilesystemBlobStore(await tempDir());
      const writer = await store.createWriter('packs/ab/big');
      for (let i = 0; i < 10; i++) await writer.write([Buffer.alloc(1024 * 1024, i)]);
      await new Promise((r) => setImmediate(r));
      expect(syncs).to.be.within(1, 2); // 4 MiB, then 8 (if the first was done by then)
      expect(await writer.commit()).to.equal(true);
      expect((await store.stat('packs/ab/big'))?.size).to.equal(10 * 1024 * 1024);

      proto.datasync = () => Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
      // The sync started after 4 MiB fails: the next write or the commit says so (the pack
      // writer then aborts), never a commit as if durable.
      const failing = await store.createWriter('packs/ab/lost');
      let error: Error | undefined;
      try {
        for (let i = 0; i < 6; i++) {
          await failing.write([Buffer.alloc(1024 * 1024, i)]);
          await new Promise((r) => setImmediate(r));
        }
        await failing.commit();
      } catch (e) {
        error = e as Error;
        await failing.abort();
      }
      expect(error?.message).to.match(/EIO/);
      expect(await readdir(join(store.root, 'packs', 'ab'))).to.deep.equal(['big']);
    } finally {
      proto.datasync = original;
    }
  });

  it('never lists its temporary files, and removes only those older than the cut-off', async () => {
    const dir = await tempDir();
    const store = new FilesystemBlobStore(dir);
    await store.put('x/keep', Buffer.from('k'));
    await writeFile(join(dir, 'x', '.tmp-old'), 'partial');
    await writeFile(join(dir, 'x', '.tmp-new'), 'partial');
    expect(await listAll(store, 'x')).to.deep.equal(['x/keep']);
    const old = new Date('2020-01-01T00:00:00Z');
    await utimes(join(dir, 'x', '.tmp-old'), old, old);
    expect(await store.removeStaleTemporaries(new Date('2021-01-01T00:00:00Z'))).to.equal(1);
    expect((await readdir(join(dir, 'x'))).sort()).to.deep.equal(['.tmp-new', 'keep']);
  });

  it('writes and moves again into a folder another store instance pruned meanwhile', async () => {
    const dir = await tempDir();
    const a = new FilesystemBlobStore(dir);
    const b = new FilesystemBlobStore(dir);
    await a.put('u/j/v/lease.json', Buffer.from('1'));
    await b.delete('u/j/v/lease.json');
    await b.pruneEmptyFolders('u');
    await a.put('u/j/v/lease.json', Buffer.from('2'));
    expect((await a.get('u/j/v/lease.json')).toString()).to.equal('2');
    await a.put('t/x', Buffer.from('3'));
    await a.move('t/x', 't/run/x');
    await b.move('t/run/x', 'x');
    await b.pruneEmptyFolders('t');
    expect(await a.move('x', 't/run/x')).to.equal(true);
    expect((await b.get('t/run/x')).toString()).to.equal('3');
  });

  it('syncs the folders of blobs another writer put, and passes over folders that are gone', async () => {
    const dir = await tempDir();
    const writer = new FilesystemBlobStore(dir);
    const reader = new FilesystemBlobStore(dir);
    await writer.put('chunks/ab/one', Buffer.from('1'));
    await writer.put('gone/x', Buffer.from('2'));
    await writer.delete('gone/x');
    await writer.pruneEmptyFolders('gone');
    await reader.syncBlobs(['chunks/ab/one', 'gone/x']);
    let error: Error | undefined;
    await reader.syncBlobs(['../escape']).catch((err: Error) => (error = err));
    expect(error?.message).to.match(/invalid blob key/);
  });
});
