import { expect } from 'chai';
import { readdir, readFile } from 'node:fs/promises';
import { getPriority } from 'node:os';
import { blockPool, poolBlockSize } from '../../src/repository/block-pool.js';
import { gearTable, highMask } from '../../src/repository/chunker.js';
import { chunkWorkers, workerNice } from '../../src/repository/chunk-workers.js';

/** Nice value of each thread of this process, by thread id (Linux). */
async function threadNices(): Promise<Map<number, number>> {
  const nices = new Map<number, number>();
  for (const tid of await readdir('/proc/self/task')) {
    const stat = await readFile(`/proc/self/task/${tid}/stat`, 'utf8').catch(() => undefined);
    if (stat) nices.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
  }
  return nices;
}

describe('chunk workers', () => {
  it('run below the main thread’s priority, which stays as it was', async function () {
    if (process.platform !== 'linux') this.skip();
    const before = getPriority();
    const workers = chunkWorkers();
    // One task per worker at least, so each has started and set its priority.
    await Promise.all(Array.from({ length: 2 * workers.size }, () => workers.hash('sha256', [Buffer.alloc(1024)])));
    const nices = await threadNices();
    expect(nices.get(process.pid)).to.equal(before);
    expect([...nices.values()].filter((n) => n === workerNice).length).to.be.at.least(workers.size);
  });

  it('scan a block of the pool where it lies, also in memory the pool grew after they started', async () => {
    const workers = chunkWorkers();
    await Promise.all(Array.from({ length: 2 * workers.size }, () => workers.hash('blake3', [Buffer.alloc(16)])));
    // Past the free blocks earlier tests gave back: a block the memory grew for.
    const before = blockPool().size;
    const taken = [blockPool().allocate()!];
    while (taken.at(-1)!.at < before) taken.push(blockPool().allocate()!);
    try {
      const block = taken.at(-1)!;
      for (let i = 0; i < poolBlockSize; i++) block.bytes[i] = (i * 2654435761) >>> 24;
      const gear = gearTable();
      const [maskSmall, maskLarge] = [highMask(12), highMask(8)];
      const want = { large: [] as number[], small: [] as number[] };
      let h = 0;
      for (let i = 0; i < poolBlockSize; i++) {
        h = ((h << 1) + gear[block.bytes[i]!]!) | 0;
        if ((h & maskLarge) === 0) want.large.push(i);
        if ((h & maskLarge) === 0 && (h & maskSmall) === 0) want.small.push(i);
      }
      expect(want.small.length).to.be.above(0);
      for (let k = 0; k < 2 * workers.size; k++) {
        expect(await workers.scanAt(block.at, poolBlockSize, new Uint8Array(0), maskSmall, maskLarge, 'gear')).to.deep.equal(want);
      }
    } finally {
      for (const { at } of taken) blockPool().release(at);
    }
  });
});
