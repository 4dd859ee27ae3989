// Test helpers for code built on the core: a clock that moves only when told, and a way to
// let promise chains run. Not exported from the core's index: production code never needs them.
import type { Clock, TimerHandle } from './clock.js';

interface FakeTimer {
  readonly id: number;
  readonly due: number;
  readonly callback: () => void;
}

/**
 * A clock that moves only when told. Timers fire in due order (ties in creation order), each
 * with `now()` equal to its due time; `settle` variants also let promise chains run between
 * timers, which is what async code under test needs.
 */
export class FakeClock implements Clock {
  private current: number;
  private nextId = 1;
  // Pending timers by id; a fired or cleared timer is removed at once.
  private readonly timers = new Map<number, FakeTimer>();

  constructor(start = 0) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const timer = { id: this.nextId++, due: this.current + Math.max(0, delayMs), callback };
    this.timers.set(timer.id, timer);
    return timer.id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers.delete(handle as number);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Due time of the earliest pending timer, or undefined when none is pending. */
  nextDue(): number | undefined {
    return this.earliest()?.due;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way (synchronously). */
  advance(ms: number): void {
    const end = this.current + ms;
    for (let timer = this.earliest(); timer && timer.due <= end; timer = this.earliest()) {
      this.fire(timer);
    }
    this.current = end;
  }

  /** Like `advance`, but lets promise chains run after each timer and at the end. */
  async advanceAndSettle(ms: number): Promise<void> {
    const end = this.current + ms;
    await settle();
    for (let timer = this.earliest(); timer && timer.due <= end; timer = this.earliest()) {
      this.fire(timer);
      await settle();
    }
    this.current = end;
    await settle();
  }

  /** Fires the earliest pending timer (and any due at the same instant); false when none is pending. */
  async runNext(): Promise<boolean> {
    const due = this.nextDue();
    if (due === undefined) return false;
    await this.advanceAndSettle(due - this.current);
    return true;
  }

  private fire(timer: FakeTimer): void {
    this.timers.delete(timer.id);
    this.current = Math.max(this.current, timer.due);
    timer.callback();
  }

  private earliest(): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const timer of this.timers.values()) {
      if (!best || timer.due < best.due || (timer.due === best.due && timer.id < best.id)) best = timer;
    }
    return best;
  }
}

/** Lets every queued promise callback run (one macrotask turn drains the microtask queue). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
