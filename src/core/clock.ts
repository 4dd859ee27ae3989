// Time as an injected dependency. Guarantees: everything in the core, the drivers and the
// repository that reads the time or waits goes through a Clock, so tests drive it with
// FakeClock (testing.ts) and never sleep.

export type TimerHandle = unknown;

export interface Clock {
  /** Milliseconds since an arbitrary, fixed origin. */
  now(): number;
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  // Timers stay referenced: a sleeping storage call must keep the process alive. Stopped
  // queues and runners clear their own timers, so they do not hold a stopping process.
  setTimeout: (callback, delayMs) => setTimeout(callback, Math.max(0, delayMs)),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Resolves after `delayMs` on `clock`; rejects with the signal's reason if it aborts first. */
export function sleep(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clock.clearTimeout(handle);
      reject(signal?.reason);
    };
    const handle = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
