/**
 * Which denials get their own info line. Every denial is in the audit trail; the log is for reading. At
 * a steady trickle every denial is logged (joined to its row by decision_id); in a flood (a flag off for
 * thousands of agents, a looping agent) at most `perSecond` lines a second per code are, and the next line
 * of that code says how many were left out (`not_logged`). Measured before this (soak, 2026-12-06): one
 * ~400 B line per denial, ~10 GB a day at 1,000 decisions/s. The others go to debug.
 */
export const DENIAL_LOG_PER_SECOND = 10;

export class DenialLogBudget {
  private readonly windows = new Map<string, { start: number; logged: number; skipped: number }>();

  constructor(
    private readonly perSecond = DENIAL_LOG_PER_SECOND,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether this denial gets an info line; when it does, how many of its code were left out since the last. */
  take(code: string): { log: true; notLogged: number } | { log: false } {
    const now = this.now();
    let w = this.windows.get(code);
    if (!w) {
      // Codes are a fixed set (the decision codes), so the map stays small.
      w = { start: now, logged: 0, skipped: 0 };
      this.windows.set(code, w);
    }
    if (now - w.start >= 1000) {
      w.start = now;
      w.logged = 0;
    }
    if (w.logged >= this.perSecond) {
      w.skipped++;
      return { log: false };
    }
    w.logged++;
    const notLogged = w.skipped;
    w.skipped = 0;
    return { log: true, notLogged };
  }
}
