// Waiting on a real server's asynchronous effects: poll a condition against a deadline, so
// a test waits only as long as the server needs and fails with what it waited for.

/** Resolves once `condition` holds, polling every 50 ms; rejects naming `what` after `timeoutMs`. */
export async function eventually(what: string, condition: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
