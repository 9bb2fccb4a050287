import type { Logger } from 'pino';
import type { OperatorPrincipal } from '../tokens/authenticator.js';

// Who read the audit trail page by page (GET /v1/audit). An export writes an audit row of its own before
// its first byte (ADR 0035); a page does not: the admin UI's live tail asks every 2 s, and a row per page
// would bury the trail. But a key can still take the trail out 1,000 rows at a time, so the reads are
// told in the log: one line per operator key per interval that read anything (rows and requests summed).

/** How often the reads are told: one line per key that read in this long (at most). */
export const AUDIT_READ_LOG_INTERVAL_MS = 60_000;

interface Tally {
  op: OperatorPrincipal;
  rows: number;
  requests: number;
  since: number;
}

export class AuditReadTally {
  private readonly byKey = new Map<string, Tally>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Pick<Logger, 'info'>,
    private readonly intervalMs = AUDIT_READ_LOG_INTERVAL_MS,
  ) {}

  /** A page of `rows` rows answered to `op`. */
  add(op: OperatorPrincipal, rows: number): void {
    const t = this.byKey.get(op.id);
    if (t) {
      t.rows += rows;
      t.requests++;
    } else this.byKey.set(op.id, { op, rows, requests: 1, since: Date.now() });
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** One line per key that read since the last one (also at close: nothing read is left untold). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    for (const t of this.byKey.values()) {
      this.log.info(
        { operator_id: t.op.id, operator_name: t.op.name, operator_role: t.op.role, projects: t.op.projects, rows: t.rows, requests: t.requests, over_s: Math.round((now - t.since) / 1000) },
        'audit rows read',
      );
    }
    this.byKey.clear();
  }
}
