import { stringify } from 'csv-stringify/sync';
import { redactText } from '../audit/redact.js';
import type { Pool } from '../db/pool.js';
import { AppError, invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import { isUuid } from '../ids.js';
import { describeTarget, keysAffecting } from '../kills/keys.js';
import { type KillEvent, type KillEventRow, killStore } from '../kills/store.js';
import type { OperatorPrincipal } from '../tokens/authenticator.js';
import { byPosition, comparePositions, decodeCursor, encodeCursor, KILL_EVENTS, type Position, positionOf, SOURCE_ORDER, type TimelineCursor, type TimelineDecisions } from './cursor.js';
import { FLAG_ALERT_KINDS, type TimelineAlertRow, type TimelineAuditRow, type TimelineMatch, timelineStore, type WindowQuery } from './store.js';

// The incident timeline (seed 002 "assess" and "review"): one ordered view of what happened in a window —
// decisions and denials (audit INTENT rows), alerts, kills (created, lifted, expired), flag changes,
// revocations, rotations, resumes and other operator actions — merged from the audit trail, the alerts
// and the kills table, oldest first.

export const TIMELINE_TYPES = [
  'decision',
  'denial',
  'alert',
  'kill',
  'kill_lifted',
  'kill_expired',
  'flag_change',
  'revocation',
  'rotation',
  'resume',
  'policy_change',
  'admin',
] as const;
export type TimelineType = (typeof TIMELINE_TYPES)[number];

export interface TimelineEvent {
  at: string;
  type: TimelineType;
  source: 'audit' | 'alert' | 'kill';
  /** Audit row id, alert id or kill id. */
  id: string;
  summary: string;
  actor: string | null;
  severity: string | null;
  decision: string | null;
  code: string | null;
  token_id: string | null;
  project_id: string | null;
  session_id: string | null;
  server: string | null;
  tool: string | null;
  kill_id: string | null;
  decision_id: string | null;
}

export interface Timeline {
  from: string;
  to: string;
  target: string | null;
  events: TimelineEvent[];
  /** True when the window holds more than `limit` events (after the cursor, if one was given). */
  truncated: boolean;
  /** When truncated: the cursor of the rest (pass it as `cursor`); null otherwise. */
  next: string | null;
  counts: Partial<Record<TimelineType, number>>;
}

export interface TimelineQuery {
  from?: string | undefined;
  to?: string | undefined;
  target?: string | undefined;
  decisions?: TimelineDecisions | undefined;
  limit?: number | undefined;
  /** The `next` of a truncated answer: continue after its last event, in the same window, target and decisions. */
  cursor?: string | undefined;
}

export interface TimelineDeps {
  pool: Pool;
  findToken(op: OperatorPrincipal, id: string): Promise<{ id: string; project_id: string; role: string; environment: string }>;
  /** The session's row, whoever may see it (the service checks the project); undefined when there is none. */
  findSession(id: string): Promise<{ id: string; project_id: string; token_id: string } | undefined>;
  /** The time a window without `to` ends at (ClockOffset.now: Postgres's while this clock is off). */
  now?: () => number;
}

export const CSV_COLUMNS: Array<keyof TimelineEvent> = [
  'at',
  'type',
  'source',
  'id',
  'summary',
  'actor',
  'severity',
  'decision',
  'code',
  'token_id',
  'project_id',
  'session_id',
  'server',
  'tool',
  'kill_id',
  'decision_id',
];

const HOUR_MS = 3_600_000;

function blank(): Omit<TimelineEvent, 'at' | 'type' | 'source' | 'id' | 'summary'> {
  return { actor: null, severity: null, decision: null, code: null, token_id: null, project_id: null, session_id: null, server: null, tool: null, kill_id: null, decision_id: null };
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

function actorOf(r: TimelineAuditRow): string | null {
  if (r.actor_type === 'operator') {
    const name = str(r.details?.['operator_name']);
    return name ? `operator:${r.actor_id} (${name})` : `operator:${r.actor_id}`;
  }
  if (r.actor_type === 'mcp_token') return r.token_id ? `token:${r.token_id}` : 'token';
  return r.actor_id ? `system:${r.actor_id}` : 'system';
}

function auditType(r: TimelineAuditRow): TimelineType {
  if (r.kind === 'INTENT') return r.decision === 'deny' ? 'denial' : 'decision';
  if (r.kind === 'POLICY_RELOAD') return 'policy_change';
  const a = r.action ?? '';
  if (a.startsWith('flag.')) return 'flag_change';
  if (a === 'key.rotated') return 'rotation';
  if (a.endsWith('.revoked') || a === 'key.bulk_revoked') return 'revocation';
  if (a.endsWith('.resumed')) return 'resume';
  return 'admin';
}

function fromAudit(r: TimelineAuditRow): TimelineEvent {
  const type = auditType(r);
  const call = `${r.server ?? '?'}/${r.tool ?? '?'}`;
  const reason = str(r.details?.['reason']);
  let summary: string;
  if (type === 'decision') summary = `allowed ${call}`;
  else if (type === 'denial') summary = `denied ${call}: ${r.code ?? ''}${r.message ? ` — ${r.message}` : ''}`;
  else if (type === 'revocation' && r.action === 'key.bulk_revoked') summary = `bulk revoke of ${String(r.details?.['count'] ?? '?')} agent token(s)${reason ? `: ${reason}` : ''}`;
  else summary = `${r.action ?? r.kind}${r.target ? ` ${r.target}` : ''}${reason ? `: ${reason}` : ''}`;
  return {
    ...blank(),
    at: r.ts.toISOString(),
    type,
    source: 'audit',
    id: r.id,
    summary,
    actor: actorOf(r),
    decision: r.decision,
    code: r.code,
    token_id: r.token_id ?? (r.target?.startsWith('agent_token:') ? r.target.slice('agent_token:'.length) : null),
    project_id: r.project_id,
    session_id: r.session_id ?? (r.target?.startsWith('session:') ? r.target.slice('session:'.length) : null),
    server: r.server,
    tool: r.tool,
    decision_id: r.decision_id,
  };
}

function fromAlert(a: TimelineAlertRow): TimelineEvent {
  return {
    ...blank(),
    at: a.created_at.toISOString(),
    type: FLAG_ALERT_KINDS.includes(a.kind) ? 'flag_change' : 'alert',
    source: 'alert',
    id: a.id,
    summary: `${a.kind}: ${a.message}`,
    actor: 'system:alerts',
    severity: a.severity,
    token_id: a.token_id,
    project_id: a.project_id,
    session_id: a.session_id,
    server: a.server,
    kill_id: str(a.details['kill_id']),
    decision_id: str(a.details['decision_id']),
  };
}

const OPERATOR_ACTOR = /^operator:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i;

/** The operator key ids of who made and lifted these kills (the kills table stores `operator:<id>`). */
function killOperatorIds(kills: readonly KillEventRow[]): string[] {
  const ids = new Set<string>();
  for (const k of kills) {
    for (const actor of [k.created_by, k.lifted_by]) {
      const m = actor ? OPERATOR_ACTOR.exec(actor) : null;
      if (m) ids.add(m[1]!.toLowerCase());
    }
  }
  return [...ids];
}

/** `operator:<id> (<name>)`, as actorOf shows an audit row's operator; other actors as stored. */
function namedActor(actor: string | null, names: ReadonlyMap<string, string>): string | null {
  const m = actor ? OPERATOR_ACTOR.exec(actor) : null;
  const name = m ? names.get(m[1]!.toLowerCase()) : undefined;
  return name ? `${actor} (${name})` : actor;
}

function fromKill(k: KillEventRow, names: ReadonlyMap<string, string>): TimelineEvent {
  const base = { ...blank(), source: 'kill' as const, id: k.id, kill_id: k.id, token_id: k.token_id, project_id: k.project_id, session_id: k.session_id, server: k.server };
  const what = describeTarget(k);
  const at = k.at.toISOString();
  const type = KILL_EVENTS[k.event];
  // Reasons are read from the kills table, where kills made before reasons were stored masked still hold
  // them in clear: masked here as GET /v1/kills does.
  if (type === 'kill') return { ...base, at, type, actor: namedActor(k.created_by, names), summary: `killed ${what}: ${redactText(k.reason)}` };
  if (type === 'kill_lifted') return { ...base, at, type, actor: namedActor(k.lifted_by, names), summary: `lifted the kill of ${what}: ${redactText(k.lift_reason ?? '')}` };
  return { ...base, at, type, actor: 'system:kill-expiry', summary: `the kill of ${what} expired` };
}

/**
 * An alert raised by a decision is listed right after that decision. Within one request the alert may be
 * stored a moment before the decision's audit row (the row is queued last), which would show the effect
 * before its cause. Only within one answer: when a page ends between the two, each is listed in its own
 * page at its place in the timeline's order (the cursor is a position in that order, so nothing repeats).
 */
function causalOrder(sorted: TimelineEvent[]): TimelineEvent[] {
  const decisions = new Set(sorted.filter((e) => (e.type === 'denial' || e.type === 'decision') && e.decision_id).map((e) => e.decision_id));
  const waiting = new Map<string, TimelineEvent[]>();
  for (const e of sorted) {
    if (e.source === 'alert' && e.decision_id && decisions.has(e.decision_id)) waiting.set(e.decision_id, [...(waiting.get(e.decision_id) ?? []), e]);
  }
  if (waiting.size === 0) return sorted;
  const out: TimelineEvent[] = [];
  for (const e of sorted) {
    if (e.source === 'alert' && e.decision_id && waiting.has(e.decision_id)) continue;
    out.push(e);
    if (e.source === 'audit' && e.decision_id) out.push(...(waiting.get(e.decision_id) ?? []));
  }
  return out;
}

const TARGET = /^(server|token|project|session|environment):(.+)$/;

// Session ids are UUIDv7 (src/sessions/service.ts): the first 48 bits are the opening time in ms. A day
// of margin covers clocks of replicas that disagree; the bound only lets Postgres skip older partitions.
const SESSION_CLOCK_MARGIN_MS = 86_400_000;
function openedAround(id: string): Date | null {
  if (id[14] !== '7') return null;
  const ms = Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
  return Number.isFinite(ms) ? new Date(Math.max(0, ms - SESSION_CLOCK_MARGIN_MS)) : null;
}

/**
 * The window, target and decisions of a query, and where it starts: from `from`, or after the position of
 * a cursor, which carries the query it continues. Parameters sent with a cursor must be the ones it carries
 * (a script may repeat its first URL with `&cursor=` added); it cannot be moved to another window.
 */
function windowOf(q: TimelineQuery, now: number): Omit<TimelineCursor, 'after'> & { after: Position | undefined } {
  if (q.cursor) {
    const c = decodeCursor(q.cursor);
    const differs = (field: string, carried: string) =>
      invalid(field, `differs from the ${field} the cursor continues (${carried}): leave ${field} out, or send the same value`);
    if (q.from !== undefined && new Date(q.from).getTime() !== c.from.getTime()) throw differs('from', c.from.toISOString());
    if (q.to !== undefined && new Date(q.to).getTime() !== c.to.getTime()) throw differs('to', c.to.toISOString());
    if (q.target !== undefined && q.target !== c.target) throw differs('target', c.target ?? 'none');
    if (q.decisions !== undefined && q.decisions !== c.decisions) throw differs('decisions', c.decisions);
    return c;
  }
  const to = q.to ? new Date(q.to) : new Date(now);
  const from = q.from ? new Date(q.from) : new Date(to.getTime() - HOUR_MS);
  if (from >= to) throw invalid('from', 'must be before `to`');
  return { from, to, target: q.target ?? null, decisions: q.decisions ?? 'all', after: undefined };
}

/** Events sorted by their position (computed once per event, not per comparison: up to 150,000 events). */
function inOrder(events: TimelineEvent[]): TimelineEvent[] {
  return events
    .map((e) => ({ e, p: positionOf(e) }))
    .sort((a, b) => comparePositions(a.p, b.p))
    .map(({ e }) => e);
}

/**
 * Where the kill events resume after a position. After a kill event: at its (time, id, event). After any
 * other event: at the next millisecond, since kill events come first in theirs (the lowest rank and source).
 */
function killsAfter(from: Date, after: Position | undefined): { from: Date; after?: { at: Date; id: string; event: KillEvent } } {
  if (!after) return { from };
  if (after.source === SOURCE_ORDER.kill) return { from, after: { at: after.at, id: after.id, event: after.sub as KillEvent } };
  return { from: new Date(Math.max(from.getTime(), after.at.getTime() + 1)) };
}

export class TimelineService {
  constructor(private readonly deps: TimelineDeps) {}

  /** Turns `target=kind:value` into what each source matches, and the kill targets that affect it. */
  private async resolveTarget(op: OperatorPrincipal, target: string | undefined): Promise<{ match: TimelineMatch; killKeys: string[] | null; project?: string }> {
    if (!target) return { match: {}, killKeys: null };
    const m = TARGET.exec(target);
    if (!m) throw invalid('target', 'expected server:<name>, token:<id>, project:<id>, session:<id> or environment:<name>');
    const [, kind, value] = m as unknown as [string, string, string];
    if ((kind === 'token' || kind === 'session') && !isUuid(value)) throw invalid('target', `${kind} ids are UUIDs, e.g. ${kind}:0190aaaa-0000-7000-8000-000000000000`);
    switch (kind) {
      case 'server':
        return { match: { server: value }, killKeys: keysAffecting({ server: value }) };
      case 'environment':
        return { match: { environment: value }, killKeys: keysAffecting({ environment: value }) };
      case 'project':
        // A typo would answer the installation-wide events alone, which read as "nothing happened there".
        // The same answer for another project's name as for an unknown one: a limited key learns nothing.
        if (!canSeeProject(op, value) || !(await timelineStore.projectNamed(this.deps.pool, value))) {
          throw new AppError('NOT_FOUND', `project ${value} not found: no agent token or kill of a project this key can see names it`);
        }
        return { match: { project: value }, killKeys: keysAffecting({ project: value }), project: value };
      case 'token': {
        const tok = await this.deps.findToken(op, value);
        return { match: { token: tok.id }, killKeys: keysAffecting({ token: tok }) };
      }
      default: {
        const s = await this.findSession(op, value);
        return { match: { session: s.id, sessionToken: s.token_id }, killKeys: keysAffecting({ session: s }) };
      }
    }
  }

  /**
   * The session of a `session:` target and the token and project it belonged to. Its row may be gone while
   * its audit rows remain (RECORDS_RETENTION_DAYS is usually shorter than AUDIT_RETENTION_DAYS): then the
   * audit trail says whose it was. Not found when neither knows it, or when its project is not the
   * operator's (the same answer, so a project-limited key learns nothing about other projects' sessions).
   */
  private async findSession(op: OperatorPrincipal, value: string): Promise<{ id: string; project_id: string; token_id: string }> {
    const id = value.toLowerCase();
    const row = await this.deps.findSession(id);
    const s = row ?? (await timelineStore.sessionOwner(this.deps.pool, id, openedAround(id)).then((o) => o && { id, ...o }));
    if (!s || !canSeeProject(op, s.project_id)) throw notFound('session');
    return s;
  }

  async timeline(op: OperatorPrincipal, q: TimelineQuery): Promise<Timeline> {
    const { from, to, target, decisions, after } = windowOf(q, (this.deps.now ?? Date.now)());
    const limit = q.limit ?? 1_000;
    const { match, killKeys, project } = await this.resolveTarget(op, target ?? undefined);
    // Each source reads at least limit+1 events in the timeline's order (or all it has), so the first
    // `limit` merged events are exact, and more than `limit` means there are more.
    const wq: WindowQuery = { from, to, match, decisions, visibleProjects: op.projects, limit: limit + 1, after };
    const [audit, alerts, kills] = await Promise.all([
      timelineStore.auditRows(this.deps.pool, wq),
      timelineStore.alerts(this.deps.pool, wq),
      killStore.eventsInWindow(this.deps.pool, { ...killsAfter(from, after), to, keys: killKeys, project, visibleProjects: op.projects, limit: limit + 1 }),
    ]);
    // Kill events name their operator as audit rows do; their audit rows are not read (the kills table is
    // their source), so the names come from operator_keys: one query, only when a kill event names one.
    const names = await timelineStore.operatorNames(this.deps.pool, killOperatorIds(kills));
    const merged = inOrder([...audit.map(fromAudit), ...alerts.map(fromAlert), ...kills.map((k) => fromKill(k, names))]);
    const truncated = merged.length > limit;
    const page = merged.slice(0, limit);
    const last = page.at(-1);
    // The cursor is the page's last event in the timeline's order, which is not always the last one listed
    // (causalOrder may list an alert after its decision).
    const next = truncated && last ? encodeCursor({ from, to, target, decisions, after: positionOf(last) }) : null;
    const events = causalOrder(page);
    const counts: Partial<Record<TimelineType, number>> = {};
    for (const e of events) counts[e.type] = (counts[e.type] ?? 0) + 1;
    return { from: from.toISOString(), to: to.toISOString(), target, events, truncated, next, counts };
  }
}

/** The most events one timeline answer holds (the `limit` query parameter's maximum). */
export const TIMELINE_MAX_LIMIT = 50_000;

/**
 * What a truncated export says in its last line (JSON Lines) or row (CSV): an export is a file sent on
 * to people and tools that never see the `truncated` field or the headers, so the file itself must say that
 * events were left out and how to get them: `next`, the cursor of the rest. `at` is the time of the last
 * event in the timeline's order.
 */
export function truncationNotice(t: Timeline, continued: boolean): { type: 'truncated'; at: string; limit: number; next: string; summary: string } | undefined {
  if (!t.truncated || !t.next || t.events.length === 0) return undefined;
  const n = t.events.length;
  const at = t.events.reduce((a, e) => (byPosition(a, e) < 0 ? e : a)).at;
  const more = n < TIMELINE_MAX_LIMIT ? `, or ask with a larger limit (at most ${TIMELINE_MAX_LIMIT})` : '';
  return {
    type: 'truncated',
    at,
    limit: n,
    next: t.next,
    summary:
      `TRUNCATED: this export holds only the ${continued ? 'next' : 'first'} ${n} events (limit=${n}) of the window ${t.from} to ${t.to}; the events that follow (from ${at} on) were left out. ` +
      `Get the rest: ask again with cursor=${t.next} (it carries the window, target and decisions; each event comes once, also when many share a millisecond)${more}, or narrow the window, target or decisions.`,
  };
}

/** JSON Lines: one event per line; a truncated export ends with a `{"type":"truncated",...}` line. */
export function timelineJsonl(t: Timeline, continued = false): string {
  const notice = truncationNotice(t, continued);
  return [...t.events, ...(notice ? [notice] : [])].map((e) => `${JSON.stringify(e)}\n`).join('');
}

/** CSV with a header row, the columns of CSV_COLUMNS; a truncated export ends with a row of type `truncated`. */
export function timelineCsv(t: Timeline, continued = false): string {
  const notice = truncationNotice(t, continued);
  const rows = t.events.map((e) => CSV_COLUMNS.map((c) => e[c] ?? ''));
  if (notice) rows.push(CSV_COLUMNS.map((c) => (c === 'at' || c === 'type' || c === 'summary' ? notice[c] : '')));
  return stringify(rows, { header: true, columns: CSV_COLUMNS, escape_formulas: true });
}
