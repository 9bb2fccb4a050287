import { setTimeout as sleep } from 'node:timers/promises';

/** The clock's minute (the gate's per-minute counters are fixed windows of it: src/limits/limits.ts). */
export const minuteNow = (): number => Math.floor(Date.now() / 60_000);

/**
 * Waits, when fewer than `marginMs` are left in the clock's minute, for the next one: a test that reads a
 * per-minute counter across several calls then runs them in one window (a full run on a loaded machine
 * straddled a minute's end and saw its last call counted in a new window).
 */
export async function awayFromMinuteEnd(marginMs = 10_000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < marginMs) await sleep(left + 50);
}
