/**
 * A log line that an outage repeats once per request or per batch: `session not opened: Redis
 * unavailable` (75 lines in 4 s from one gateway) or `audit rows could not be written to Postgres nor to
 * the spool` (275 in 10 s), as measured by the chaos review of 2026-12-06. The first of each key is logged
 * at once; those that follow within the interval are only counted, and when it ends one line (the last
 * one's fields) says how many there were (`repeats`). A steady flood writes one line per interval, and the
 * count of a burst that stops is still logged. Decisions count their dependency failures the same way
 * (DependencyFailureLog) and their denials by a per-second budget (DenialLogBudget).
 */
export const REPEATED_LOG_INTERVAL_MS = 30_000;

/** What a line's fields get: `at_most_every_s` always, `repeats` on a line that stands for others. */
export interface RepeatFields {
  at_most_every_s: number;
  repeats?: number;
}

interface KeyState {
  /** When the last line of this key was written. */
  at: number;
  repeats: number;
  last?: ((extra: RepeatFields) => void) | undefined;
  timer?: NodeJS.Timeout | undefined;
}

export class RepeatedLog {
  private readonly keys = new Map<string, KeyState>();

  constructor(
    private readonly intervalMs = REPEATED_LOG_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** `write` logs the line with `extra` among its fields: now, or as the count at the end of the interval. */
  note(key: string, write: (extra: RepeatFields) => void): void {
    const now = this.now();
    const every = Math.round(this.intervalMs / 1000);
    const s = this.keys.get(key);
    if (!s || (s.timer === undefined && now - s.at >= this.intervalMs)) {
      this.keys.set(key, { at: now, repeats: 0 });
      write({ at_most_every_s: every });
      return;
    }
    s.repeats++;
    s.last = write;
    if (s.timer === undefined) {
      s.timer = setTimeout(() => this.writeCount(key), Math.max(0, s.at + this.intervalMs - now));
      s.timer.unref();
    }
  }

  /** Writes every count still waiting for its interval's end (at shutdown). */
  flush(): void {
    for (const key of this.keys.keys()) this.writeCount(key);
  }

  private writeCount(key: string): void {
    const s = this.keys.get(key);
    if (!s) return;
    if (s.timer) clearTimeout(s.timer);
    s.timer = undefined;
    if (s.repeats === 0 || !s.last) return;
    const repeats = s.repeats;
    s.repeats = 0;
    s.at = this.now();
    s.last({ at_most_every_s: Math.round(this.intervalMs / 1000), repeats });
  }
}
