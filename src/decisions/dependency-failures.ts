import { redisFailure, redisFailureWords } from '../redis/failure.js';

/**
 * Where a driver error met on the decision path goes: the log, never a decision's message or its audit
 * row. Agents read the message and the audit trail keeps it for good, so neither may carry what a
 * driver says (`connect ECONNREFUSED 10.0.3.4:5432`, ioredis's "Stream isn't writeable ..."): hosts,
 * ports and internals are for operators (docs/operations.md). The message says in product words what
 * was unavailable and what to do; the log line, found by the decision id the message names, says why.
 *
 * During an outage every decision meets the same error: one line per dependency at the first failure,
 * then at most one per interval, counting the failures it did not log (`repeats`).
 */
export interface DependencyFailureReporter {
  /** `dependency` in product words ("Redis", "the audit trail"); `fields` name the decision (decision_id). */
  report(dependency: string, err: unknown, fields: Record<string, unknown>): void;
}

interface FailureLogger {
  error(obj: object, msg: string): void;
}

export const DEPENDENCY_FAILURE_LOG_INTERVAL_MS = 30_000;

export class DependencyFailureLog implements DependencyFailureReporter {
  private readonly last = new Map<string, { at: number; repeats: number }>();
  /** The latest failure of each dependency, logged or not: what GET /readyz warns about. */
  private readonly latest = new Map<string, { at: number; what: string }>();

  constructor(
    private readonly log: FailureLogger,
    private readonly intervalMs = DEPENDENCY_FAILURE_LOG_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  report(dependency: string, err: unknown, fields: Record<string, unknown>): void {
    const now = this.now();
    this.latest.set(dependency, { at: now, what: dependency === 'Redis' ? `Redis ${redisFailureWords(redisFailure(err))}` : `${dependency} failed` });
    const seen = this.last.get(dependency);
    if (seen && now - seen.at < this.intervalMs) {
      seen.repeats++;
      return;
    }
    this.last.set(dependency, { at: now, repeats: 0 });
    this.log.error(
      { ...fields, dependency, err: errorText(err), ...(seen ? { repeats: seen.repeats } : {}) },
      `decision denied (DEPENDENCY_UNAVAILABLE): ${dependency} failed; further failures of it are logged at most every ${Math.round(this.intervalMs / 1000)} s (repeats: how many were not)`,
    );
  }

  /** The dependencies that failed a decision within `withinMs` before `now`, each as `what` it was. */
  recent(withinMs: number, now = this.now()): string[] {
    return [...this.latest.values()].filter((f) => now - f.at <= withinMs).map((f) => f.what);
  }
}

/** The driver's own words, for the log only (with its cause, as AuditUnavailable wraps one). */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `; cause: ${err.cause.message}` : '';
  return `${err.name}: ${err.message}${cause}`;
}

/** The sentence every DEPENDENCY_UNAVAILABLE message ends with: where the operator finds the cause. */
export const seeLog = (decisionId: string): string => `Retry shortly; if it persists, an operator finds the cause in the control plane's log under decision ${decisionId}.`;
