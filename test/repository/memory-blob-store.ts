// A BlobStore in memory: the test double that shows the repository needs nothing from a
// filesystem beyond the BlobStore contract (as an object-store backend will not have one).
import { BlobNotFoundError, checkKey, type BlobStat, type BlobStore } from '../../src/repository/blob-store.js';

export class MemoryBlobStore implements BlobStore {
  readonly location = 'memory';
  private readonly blobs = new Map<string, { data: Buffer; modifiedAt: Date }>();

  async putIfAbsent(key: string, data: Buffer): Promise<boolean> {
    checkKey(key);
    if (this.blobs.has(key)) return false;
    this.blobs.set(key, { data: Buffer.from(data), modifiedAt: new Date() });
    return true;
  }

  async put(key: string, data: Buffer): Promise<void> {
    checkKey(key);
    this.blobs.set(key, { data: Buffer.from(data), modifiedAt: new Date() });
  }

  async get(key: string): Promise<Buffer> {
    checkKey(key);
    const blob = this.blobs.get(key);
    if (!blob) throw new BlobNotFoundError(key, this.location);
    return Buffer.from(blob.data);
  }

  async getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    const data = await this.get(key);
    if (offset + length > data.length) throw new RangeError(`blob ${key} ends before byte ${offset + length}`);
    if (!into) return data.subarray(offset, offset + length);
    into.set(data.subarray(offset, offset + length));
    return Buffer.from(into.buffer, into.byteOffset, length);
  }

  async has(key: string): Promise<boolean> {
    return (await this.stat(key)) !== undefined;
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    checkKey(key);
    const blob = this.blobs.get(key);
    return blob && { size: blob.data.length, modifiedAt: blob.modifiedAt };
  }

  async *list(prefix: string): AsyncIterable<string> {
    const folder = prefix.replace(/\/+$/, '');
    for (const key of [...this.blobs.keys()]) if (folder === '' || key.startsWith(`${folder}/`)) yield key;
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key);
    return this.blobs.delete(key);
  }

  async move(from: string, to: string): Promise<boolean> {
    checkKey(from);
    checkKey(to);
    const blob = this.blobs.get(from);
    if (!blob) return false;
    this.blobs.delete(from);
    this.blobs.set(to, blob);
    return true;
  }

  /** Test hook: the stored bytes themselves, to corrupt them. */
  raw(key: string): Buffer | undefined {
    return this.blobs.get(key)?.data;
  }
}
