// SHA-256 off the main thread for one-off checks (verify reads chunks in any order).
import { subtle } from 'node:crypto';

/** SHA-256 (hex) on the libuv thread pool (WebCrypto), so several run in parallel. */
export async function sha256Hex(data: Buffer): Promise<string> {
  return Buffer.from(await subtle.digest('SHA-256', data)).toString('hex');
}
