import { expect } from 'chai';
import { readdir, readFile } from 'node:fs/promises';
import { getPriority } from 'node:os';
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
});
