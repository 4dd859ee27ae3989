// A volume's bytes as hashed content-defined chunks, in order, with the CPU work spread
// over the chunk workers. Guarantees:
// - The same cut points as chunkStream (chunker.ts), for any split of the input: the
//   workers find the candidate cut points of each block in parallel (the rolling hash at a
//   position depends only on the 32 bytes ending there), and the main thread picks the
//   cuts from them in order, computing exactly only the 31 positions after each chunk's
//   minimum size, where the rolling hash has not yet seen 32 bytes.
// - Chunks come in stream order, each with a promise of its own hash (computed on a
//   worker) and an encode() that compresses it on a worker.
// - Memory is bounded: the input is copied once into shared blocks of the block pool
//   (block-pool.ts; a VolumeReader, such as fileBytes, reads straight into them; the workers
//   hash and scan them in place), and at most `maxBlocks` blocks (32 MiB) are held; reading
//   the input waits until the consumer release()s chunks. return() gives the blocks back to
//   the pool once no worker reads them and no read of the source writes into them (without
//   waiting for that read: a stalled source must not hold up a failed upload); no block is
//   taken after it. A consumer must release every chunk it took and may hold at most
//   `batchBytes` of unreleased chunks per batch, two batches at once.
import { blockPool, poolBlockSize } from './block-pool.js';
import type { ChunkHashName } from './chunk-hash.js';
import type { ChunkerOptions } from './chunker.js';
import { highMask, rollingHashOf, rollingRules, validateChunkerOptions, type RollingHashName, type RollingRules } from './chunker.js';
import { chunkWorkers, type ScanResult } from './chunk-workers.js';
import type { CodecName } from './codec.js';
import { isVolumeReader, type VolumeReader } from './file-source.js';
import type { ChunkRef } from './format.js';

export interface VolumeChunk {
  /** [hash, size]; the hash is filled in once `hashed` resolves. */
  ref: ChunkRef;
  size: number;
  hashed: Promise<string>;
  /**
   * The chunk's stored form (codec byte + payload) as pieces to concatenate, made on a
   * worker; the pieces may be the chunk's own memory, valid until release().
   */
  encode(codec: CodecName): Promise<Uint8Array[]>;
  /** The consumer is done with the chunk's bytes. */
  release(): void;
}

export interface VolumeChunks extends AsyncIterable<VolumeChunk> {
  /** Unreleased bytes a consumer may gather into one batch before it hands the batch on. */
  readonly batchBytes: number;
  /** Frees the blocks and wakes a read waiting for one; safe to call more than once. */
  return(): Promise<void>;
}

const blockSize = poolBlockSize;
const maxBlocks = 16;
/** Blocks read beyond the last cut before cutting waits for their scans. */
const readAhead = 6;
/** Window of the rolling hash minus one: bytes before a position that its hash still depends on. */
const lead = 31;

/** A block's memory: its address in the block pool (-1: memory of its own, the pool being full) and a view of it. */
interface Memory {
  at: number;
  bytes: Uint8Array;
}

interface Block extends Memory {
  /** Stream offset of the block's first byte. */
  base: number;
  filled: number;
  /** The previous block's last `lead` bytes (what the hash at this block's start depends on). */
  lead: Uint8Array;
  /** Scans of [from, to) of the block, in order: a full block has one, a block the input
   * stalled in (or ended in) may have several. `scannedTo` is the end of the last. */
  scans: { from: number; result: Promise<ScanResult>; value?: ScanResult }[];
  scannedTo: number;
  /** Scans not yet finished. */
  scanning: number;
}

interface Pending {
  end: number;
  done: boolean;
}

/** `data` as chunks cut by `chunking` and named by `hash`. */
export function volumeChunks(data: AsyncIterable<Uint8Array>, chunking: ChunkerOptions, hash: ChunkHashName): VolumeChunks {
  return new ChunkPipeline(data, chunking, hash);
}

class ChunkPipeline implements VolumeChunks {
  readonly batchBytes = 12 * 1024 * 1024;
  private readonly workers = chunkWorkers();
  private readonly maskSmall: number;
  private readonly maskLarge: number;
  private readonly rolling: RollingHashName;
  private readonly rules: RollingRules;
  /** Live blocks in stream order; blocks[0] starts at stream offset firstBlock * blockSize. */
  private blocks: Block[] = [];
  private firstBlock = 0;
  private readonly spare: Memory[] = [];
  /** Every block's memory this pipeline took, to give back at the end. */
  private readonly taken: Memory[] = [];
  /** Worker tasks that read the blocks (scans, hashes, encodes): the blocks go back to the pool once these settle. */
  private readonly reading = new Set<Promise<unknown>>();
  /** The last `lead` bytes of the last full block (the next block's scans need them). */
  private tail = new Uint8Array(0);
  /** Bytes received. */
  private total = 0;
  private eof = false;
  /** Chunks handed out and not yet done, in order; the stream before `doneOffset` is no longer needed. */
  private readonly pending: Pending[] = [];
  private doneOffset = 0;
  private freed?: () => void;
  private ended = false;
  private source?: AsyncIterator<Uint8Array>;
  /** A read the source is making straight into a block (readInPlace), until it settles. */
  private sourceRead?: Promise<unknown>;

  constructor(
    private readonly data: AsyncIterable<Uint8Array>,
    private readonly chunking: ChunkerOptions,
    private readonly hash: ChunkHashName,
  ) {
    validateChunkerOptions(chunking);
    const bits = Math.log2(chunking.avgSize);
    // Normalized chunking, as in chunker.ts.
    this.maskSmall = highMask(bits + 2);
    this.maskLarge = highMask(bits - 2);
    this.rolling = rollingHashOf(chunking);
    this.rules = rollingRules[this.rolling];
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<VolumeChunk> {
    let cut = 0;
    const source = (this.source = isVolumeReader(this.data) ? this.readInPlace(this.data) : this.data[Symbol.asyncIterator]());
    let next = source.next();
    for (;;) {
      // While the source produces the next piece, the block it stopped in is scanned as far
      // as it is filled; if that is done first, the chunks it allows go out, so a source
      // that stalls does not hold back the chunks of what it already gave.
      const last = this.blocks.at(-1);
      if (last && last.scannedTo < last.filled) {
        this.scanUpTo(last);
        const scanned = last.scans.at(-1)!.result.then(
          () => undefined,
          () => undefined,
        );
        if ((await Promise.race([next, scanned])) === undefined) {
          for (let end = await this.cutAfter(cut); end !== undefined; end = await this.cutAfter(cut)) {
            yield this.chunk(cut, end);
            cut = end;
          }
        }
      }
      const r = await next;
      if (r.done) break;
      const bytes = r.value instanceof Uint8Array ? r.value : new Uint8Array(r.value);
      for (let at = 0; at < bytes.length; ) {
        const block = await this.writableBlock();
        this.checkNotEnded();
        const n = Math.min(blockSize - block.filled, bytes.length - at);
        const inPlace = bytes.buffer === block.bytes.buffer && bytes.byteOffset + at === block.bytes.byteOffset + block.filled;
        if (!inPlace) block.bytes.set(bytes.subarray(at, at + n), block.filled);
        block.filled += n;
        this.total += n;
        at += n;
        if (block.filled === blockSize) {
          this.tail = block.bytes.slice(blockSize - lead);
          this.scanUpTo(block); // at once: the workers scan blocks in parallel while more is read
        }
        // The piece is copied (or was read in place): the source may read the next meanwhile.
        if (at === bytes.length) next = source.next();
        // Cuts wait for scans only once `readAhead` blocks are filled beyond the last cut:
        // until then the next blocks are read and handed to the workers meanwhile.
        const wait = () => this.blocks.length - (Math.floor(cut / blockSize) - this.firstBlock) > readAhead;
        for (let end = await this.cutAfter(cut, wait()); end !== undefined; end = await this.cutAfter(cut, wait())) {
          yield this.chunk(cut, end);
          cut = end;
        }
      }
      if (bytes.length === 0) next = source.next();
    }
    this.eof = true;
    const last = this.blocks.at(-1);
    if (last) this.scanUpTo(last);
    while (cut < this.total) {
      const end = (await this.cutAfter(cut))!;
      yield this.chunk(cut, end);
      cut = end;
    }
  }

  async return(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    // The source is told to stop (a file is closed), but not waited for: a stalled source
    // must not hold up the end of a failed upload.
    this.source?.return?.().catch(() => undefined);
    this.blocks = [];
    this.spare.length = 0;
    this.freed?.();
    // Workers may still read the blocks (an upload that failed mid-way), and a read of the
    // source may still write into one: the pool gets them back only after both, so nothing
    // of this pipeline lands in, or is read from, another pipeline's bytes. The workers are
    // waited for (they finish promptly); the source's read is not.
    const taken = this.taken.splice(0);
    await Promise.allSettled([...this.reading]);
    const giveBack = () => {
      const pool = blockPool();
      for (const { at } of taken) if (at >= 0) pool.release(at);
    };
    if (this.sourceRead) this.sourceRead.then(giveBack, giveBack);
    else giveBack();
  }

  /** Counts a worker task that reads the blocks until it settles; returns it. */
  private reads<T>(task: Promise<T>): Promise<T> {
    this.reading.add(task);
    const done = () => this.reading.delete(task);
    task.then(done, done);
    return task;
  }

  /**
   * A reader's bytes as pieces read straight into the block being filled (the piece is
   * where the copy would put it, so there is no copy).
   */
  private readInPlace(reader: VolumeReader): AsyncIterator<Uint8Array> {
    return {
      next: async () => {
        const block = await this.writableBlock();
        this.checkNotEnded();
        const target = block.bytes.subarray(block.filled);
        const read = (this.sourceRead = reader.readInto(target));
        let n: number;
        try {
          n = await read;
        } finally {
          if (this.sourceRead === read) this.sourceRead = undefined;
        }
        return n === 0 ? { done: true, value: undefined } : { done: false, value: target.subarray(0, n) };
      },
      return: async () => {
        await reader.close();
        return { done: true, value: undefined };
      },
    };
  }

  /**
   * Throws once return() has run: its blocks may be on their way back to the pool. Checked
   * right after each wait for a block, before anything is written into it (return() may run
   * between the block's promise settling and its caller going on).
   */
  private checkNotEnded(): void {
    if (this.ended) throw new Error('volume chunking ended');
  }

  /** The block being filled, or a new one (waiting while maxBlocks are held); none once ended. */
  private async writableBlock(): Promise<Block> {
    this.checkNotEnded();
    const last = this.blocks.at(-1);
    if (last && last.filled < blockSize) return last;
    while (this.spare.length === 0 && this.taken.length >= maxBlocks) {
      await new Promise<void>((resolve) => (this.freed = resolve));
      this.checkNotEnded();
    }
    let memory = this.spare.pop();
    if (!memory) {
      memory = blockPool().allocate() ?? { at: -1, bytes: new Uint8Array(new SharedArrayBuffer(blockSize)) };
      this.taken.push(memory);
    }
    const block: Block = { ...memory, base: (this.firstBlock + this.blocks.length) * blockSize, filled: 0, lead: this.tail, scans: [], scannedTo: 0, scanning: 0 };
    this.blocks.push(block);
    return block;
  }

  /** Scans what the block holds beyond what was scanned. */
  private scanUpTo(block: Block): void {
    const from = block.scannedTo;
    const to = block.filled;
    if (to <= from) return;
    // The `lead` bytes before `from`: from the block itself, else partly from the previous one.
    let before = block.bytes.subarray(Math.max(0, from - lead), from);
    if (before.length < lead && block.lead.length > 0) {
      const joined = new Uint8Array(Math.min(lead, block.lead.length + from));
      joined.set(block.lead.subarray(block.lead.length - (joined.length - from)));
      joined.set(block.bytes.subarray(0, from), joined.length - from);
      before = joined;
    } else {
      before = before.slice();
    }
    const result = this.reads(
      block.at >= 0
        ? this.workers.scanAt(block.at + from, to - from, before, this.maskSmall, this.maskLarge, this.rolling)
        : this.workers.scan(block.bytes.subarray(from, to), before, this.maskSmall, this.maskLarge, this.rolling),
    );
    const scan: Block['scans'][number] = { from, result };
    block.scans.push(scan);
    result.then((value) => (scan.value = value)).catch(() => undefined);
    block.scannedTo = to;
    block.scanning++;
    result
      .finally(() => {
        block.scanning--;
        this.advance();
      })
      .catch(() => undefined); // cutAfter awaits the scan and meets its failure
  }

  private byteAt(offset: number): number {
    const block = this.blocks[Math.floor(offset / blockSize) - this.firstBlock]!;
    return block.bytes[offset - block.base]!;
  }

  /**
   * The end of the chunk starting at `start`, or undefined when it depends on bytes not yet
   * received or scanned (without `wait`, also when it depends on a scan still running).
   * Mirrors chunkStream's rules exactly.
   */
  private async cutAfter(start: number, wait = true): Promise<number | undefined> {
    const { minSize, avgSize, maxSize } = this.chunking;
    const end = this.total;
    const more = this.eof ? end : undefined;
    const from = start + minSize;
    if (from >= end) return start < end ? more : undefined;
    const normal = start + avgSize;
    const limit = start + maxSize;
    // The hash restarts at `from`: until it has seen 32 bytes it differs from the
    // workers' window hash, so these positions are computed here.
    const exactEnd = Math.min(from + lead, limit, end);
    let h = 0;
    for (let i = from; i < exactEnd; i++) {
      h = this.rules.next(h, this.byteAt(i));
      if (this.rules.isCandidate(h, i < normal ? this.maskSmall : this.maskLarge)) return i + 1;
    }
    if (exactEnd === limit) return limit;
    if (exactEnd < from + lead) return more;
    const scanEnd = Math.min(limit, end);
    // By block number, not index: blocks before the cut may be freed (and the array
    // shifted) while this waits for a scan.
    for (let n = Math.floor((from + lead) / blockSize); n * blockSize < scanEnd; n++) {
      const block = this.blocks[n - this.firstBlock];
      if (!block) break;
      for (const scan of block.scans) {
        if (!scan.value && !wait) return undefined; // read ahead meanwhile
        const { large, small } = scan.value ?? (await scan.result);
        let s = 0;
        for (const p of large) {
          const at = block.base + scan.from + p;
          if (at < from + lead) continue;
          if (at >= scanEnd) break;
          if (at >= normal) return at + 1;
          while (s < small.length && small[s]! < p) s++;
          if (small[s] === p) return at + 1;
        }
      }
      // Not scanned that far yet (the block is being filled): decided later.
      if (block.scannedTo < Math.min(scanEnd - block.base, blockSize)) return undefined;
    }
    if (limit <= end) return limit;
    return more;
  }

  /** Hands out the chunk [start, end), hashed on a worker. */
  private chunk(start: number, end: number): VolumeChunk {
    const parts: Uint8Array[] = [];
    for (let at = start; at < end; ) {
      const block = this.blocks[Math.floor(at / blockSize) - this.firstBlock]!;
      const to = Math.min(end, block.base + block.filled);
      parts.push(block.bytes.subarray(at - block.base, to - block.base));
      at = to;
    }
    const ref: ChunkRef = ['', end - start];
    const sampled = this.reads(this.workers.hashAndSample(this.hash, parts));
    const hashed = sampled.then(({ hash }) => (ref[0] = hash));
    hashed.catch(() => undefined); // awaited by the consumer; this only keeps an early exit quiet
    const entry: Pending = { end, done: false };
    this.pending.push(entry);
    let released = false;
    return {
      ref,
      size: end - start,
      hashed,
      // Stored raw without a second trip to a worker when the hash task found it incompressible.
      encode: async (codec) => (codec === 'none' || (await sampled).incompressible ? [Uint8Array.of(0), ...parts] : this.reads(this.workers.encode(codec, parts))),
      release: () => {
        if (released) return;
        released = true;
        // The hash worker may still be reading the chunk's bytes.
        const done = () => {
          entry.done = true;
          this.advance();
        };
        hashed.then(done, done);
      },
    };
  }

  /** Frees the blocks every done chunk has left behind. */
  private advance(): void {
    while (this.pending[0]?.done) this.doneOffset = this.pending.shift()!.end;
    let freed = false;
    for (
      let block = this.blocks[0];
      block && block.filled === blockSize && block.scannedTo === blockSize && block.scanning === 0 && block.base + blockSize <= this.doneOffset;
      block = this.blocks[0]
    ) {
      this.blocks.shift();
      this.firstBlock++;
      this.spare.push({ at: block.at, bytes: block.bytes });
      freed = true;
    }
    if (freed) {
      const wake = this.freed;
      this.freed = undefined;
      wake?.();
    }
  }
}
