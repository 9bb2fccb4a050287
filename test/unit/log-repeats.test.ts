import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RepeatedLog, type RepeatFields } from '../../src/log-repeats.js';

// A line an outage repeats once per request: the first at once, the rest counted, one line with the count
// at the end of each interval.

describe('RepeatedLog', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a burst: the first line at once, then one line with the count when the interval ends', () => {
    const lines: Array<RepeatFields & { n: number }> = [];
    const log = new RepeatedLog(30_000);
    for (let n = 1; n <= 275; n++) log.note('lost', (extra) => lines.push({ ...extra, n }));
    expect(lines).toEqual([{ at_most_every_s: 30, n: 1 }]);
    vi.advanceTimersByTime(30_000);
    // The count line carries the last occurrence's fields.
    expect(lines).toEqual([
      { at_most_every_s: 30, n: 1 },
      { at_most_every_s: 30, repeats: 274, n: 275 },
    ]);
    // Quiet afterwards: nothing more.
    vi.advanceTimersByTime(120_000);
    expect(lines).toHaveLength(2);
  });

  it('a steady flood writes one line per interval; keys are counted apart; after a quiet interval the next is at once', () => {
    const lines: string[] = [];
    const log = new RepeatedLog(10_000);
    for (let s = 0; s < 35; s++) {
      log.note('redis', (e) => lines.push(`redis ${e.repeats ?? 0}`));
      if (s === 0) log.note('postgres', (e) => lines.push(`postgres ${e.repeats ?? 0}`));
      vi.advanceTimersByTime(1_000);
    }
    // Seconds 0..34: the first at once, then a count at 10, 20 and 30 s.
    expect(lines).toEqual(['redis 0', 'postgres 0', 'redis 9', 'redis 10', 'redis 10']);
    vi.advanceTimersByTime(10_000);
    expect(lines.at(-1)).toBe('redis 5');
    vi.advanceTimersByTime(10_000);
    log.note('redis', (e) => lines.push(`redis ${e.repeats ?? 0} again`));
    expect(lines.at(-1)).toBe('redis 0 again');
  });

  it('flush writes the counts still waiting (a shutdown)', () => {
    const lines: Array<number | undefined> = [];
    const log = new RepeatedLog(30_000);
    for (let n = 0; n < 5; n++) log.note('x', (e) => lines.push(e.repeats));
    log.flush();
    expect(lines).toEqual([undefined, 4]);
    vi.advanceTimersByTime(60_000);
    expect(lines).toEqual([undefined, 4]);
  });
});
