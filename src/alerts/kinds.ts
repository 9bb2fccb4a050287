// The one list of alert kinds. The database column is an open string so a new kind needs no migration;
// this table is what validates `raise()` at compile time and the `kind` filter of GET /v1/alerts at run
// time, and docs/alerts.md lists the same kinds. Add a line here when a module needs a new kind.

export const ALERT_SEVERITIES = ['info', 'warning', 'critical'] as const;
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number];

export const ALERT_KINDS = {
  RATE_LIMIT_WARNING: { severity: 'warning', doc: 'A limit reached its pause_at_percent (80% by default); the call was still allowed. One open alert per token and limit (and server, for a server\'s limit), counting the windows that reached it in place.' },
  RATE_LIMITED: { severity: 'warning', doc: 'A per-minute or per-day limit denied a call (RATE_LIMITED); it does not halt.' },
  SESSION_HALTED: { severity: 'critical', doc: 'A kill-switch trigger halted a session (and by policy every session of its token) until a human resumes it.' },
  TOKEN_HALTED: { severity: 'critical', doc: 'Every session of a token was halted.' },
  SESSION_RESUMED: { severity: 'info', doc: 'An operator resumed a halted session or token.' },
  CASCADE_WRITE: { severity: 'critical', doc: 'Several writes to different resources without a pause: the token was halted.' },
  KILL_SWITCH: { severity: 'warning', doc: 'Decisions were denied by an Unleash flag or an operator kill: one open alert per flag or kill and project, counted up in place.' },
  KILL_CREATED: { severity: 'critical', doc: 'An operator created a break-glass kill.' },
  KILL_LIFTED: { severity: 'info', doc: 'An operator lifted a break-glass kill (or it expired).' },
  FLAG_DISABLED: { severity: 'warning', doc: 'The Unleash webhook reported a flag turned off; applied at once as a local override.' },
  FLAG_ENABLED: { severity: 'info', doc: 'The Unleash webhook reported a flag turned back on; the open FLAG_DISABLED and KILL_SWITCH alerts of that flag are acknowledged by the system.' },
  FLAGS_STALE: { severity: 'critical', doc: 'No successful Unleash fetch for UNLEASH_STALE_AFTER_S: the last fetched flags stay in force.' },
  FLAGS_RECOVERED: { severity: 'info', doc: 'Unleash fetches succeed again after a staleness alert.' },
  TOOL_CHANGED: { severity: 'warning', doc: 'A tool definition differs from the approved (pinned) one; calls deny until an operator approves it.' },
  TOOL_ADDED: { severity: 'warning', doc: 'A server that already had pinned tools reported a new tool name: pinned on first sight and callable at once. Once per server and tool.' },
  UPSTREAM_MISMATCH: { severity: 'warning', doc: "A gateway reported running a server against hosts or databases that the policy's identity of that server does not name: the policy describes another upstream. Once per gateway, server and identities." },
  UNKNOWN_SERVER: { severity: 'critical', doc: 'A call named a server that is not in the policy or not allowed for the role.' },
  ENVIRONMENT_FORBIDDEN: { severity: 'critical', doc: 'A call targeted another environment, or production without a human grant.' },
  LARGE_RESULT: { severity: 'critical', doc: 'A result was larger than allowed (or had too many rows, or ran too long) and was withheld.' },
  APPROVAL_REQUESTED: { severity: 'info', doc: 'A call, production grant or changed tool definition waits for a human approval.' },
  APPROVAL_DECIDED: { severity: 'info', doc: 'An operator approved or rejected a request.' },
  GRANT_ISSUED: { severity: 'warning', doc: 'An operator issued a production access grant.' },
  TOKENS_REVOKED: { severity: 'warning', doc: 'Agent tokens were revoked in bulk or rotated.' },
  DEPENDENCY_UNAVAILABLE: { severity: 'critical', doc: 'Redis, Postgres or Unleash is unreachable: decisions fail closed.' },
  AUDIT_PARTITION_MISSING: {
    severity: 'warning',
    doc: 'Audit rows were written for a month that had no partition and sit in the default partition (checked at start and hourly; once a day): that month cannot get its partition while they are there. docs/audit.md, "Partitions".',
  },
  AUDIT_SPOOLING: { severity: 'critical', doc: 'Postgres is down for the audit writer: audit rows go to the local spool until it is back.' },
  AUDIT_SPOOL_SET_ASIDE: {
    severity: 'critical',
    doc: 'A replica\'s audit spool holds rows that continue no hash chain of this database (restored from a backup older than the spool?): set aside on its disk, not replayed. docs/audit.md, "A spool that continues nothing".',
  },
  DATABASE_RESTORED: {
    severity: 'critical',
    doc: 'A start found that its database is a copy of the one the installation last ran on (a restored backup): kills and halts made after the copy was taken are not in force, revocations since are undone. Raised once per copy, by the first replica that starts on it. docs/operations.md, section 9.',
  },
  CLOCK_SKEW: {
    severity: 'warning',
    doc: "A replica's clock is more than 1 s off Postgres's: until its time sync is fixed it judges token, key and grant expiry and stamps audit rows with Postgres's time (measured every 30 s). Once per host an hour. docs/operations.md, \"Clocks\".",
  },
  POLICY_REJECTED: { severity: 'warning', doc: 'The policy file on disk was rejected (broken or unreadable): the last good policy stays in force. Raised once per rejected file.' },
  POLICY_DIVERGED: { severity: 'warning', doc: 'Live replicas decide with different policy files (a rollout still spreading, or a stale mount): a call is decided by whichever replica it reaches. Raised once per divergence episode.' },
} as const satisfies Record<string, { severity: AlertSeverity; doc: string }>;

export type AlertKind = keyof typeof ALERT_KINDS;
export const ALERT_KIND_NAMES = Object.keys(ALERT_KINDS) as AlertKind[];

export function isAlertKind(kind: string): kind is AlertKind {
  return Object.hasOwn(ALERT_KINDS, kind);
}

const RANK: Record<AlertSeverity, number> = { info: 1, warning: 2, critical: 3 };

export function severityAtLeast(severity: AlertSeverity, min: AlertSeverity): boolean {
  return RANK[severity] >= RANK[min];
}
