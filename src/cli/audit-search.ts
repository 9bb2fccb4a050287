import type { Config } from '../config.js';
import { DEFAULT_QUERY_TIMEOUT_MS } from '../db/query-timeout.js';
import { HALT_TRIGGERS } from '../decisions/types.js';
import { DECISION_CODES } from '../errors.js';
import { isUuid } from '../ids.js';
import { CliFailure, call, controlPlaneLine, controlPlaneUrl, parseDuration, readPages, resolveTokenId, UnreachableFailure } from './kill.js';
import { printable, printableJson, printableJsonLine } from './printable.js';

// `killswitch audit search`: the audit trail from a terminal during an incident ("what did this token or
// session do in the last hour, which calls were denied and why, what did the kill switch stop"), through
// GET /v1/audit exactly as `killswitch kills` and `status` read (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY,
// the client certificate, the same messages; each audit read may take AUDIT_READ_TIMEOUT_MS). A viewer
// key is enough. It reads the newest matching rows up to --limit, never the whole trail: what was left
// says so on stderr. Loaded only when it runs (src/cli/main.ts). `audit verify` reads Postgres directly;
// this reads the API, so a project-limited key sees only its projects' rows, as in the admin UI.

type Out = { write(s: string): unknown };

export interface AuditSearchOptions {
  token?: string;
  session?: string;
  decisionId?: string;
  decision?: 'allow' | 'deny';
  code?: string;
  server?: string;
  tool?: string;
  kind?: string;
  type?: 'ro' | 'rw' | 'admin';
  project?: string;
  actor?: string;
  /** Seconds back from now (`--since 1h`, parsed by parseDuration). */
  since?: number;
  from?: string;
  to?: string;
  limit?: string;
  json?: boolean;
  follow?: boolean;
}

/** Rows shown without --limit. */
export const AUDIT_SEARCH_DEFAULT_LIMIT = 50;
/** The most --limit takes: beyond it, the export (GET /v1/audit/export) streams every row. */
export const AUDIT_SEARCH_MAX_LIMIT = 5000;
/** GET /v1/audit's largest page. */
const AUDIT_PAGE = 1000;
/** --follow: how often it asks for the rows committed since. */
export const FOLLOW_POLL_MS = 2000;
/**
 * Each GET /v1/audit may take this long: longer than the API's own query limit, so that a read Postgres
 * takes long over (a filter without an index on a large trail) is answered by the API itself, with rows or
 * with its 503 saying to narrow the window, rather than cut by the CLI's 15 s as "cannot reach".
 */
export const AUDIT_READ_TIMEOUT_MS = DEFAULT_QUERY_TIMEOUT_MS + 5_000;
/** How many distinct tokens of one screen get their display prefix looked up (GET /v1/keys/:id each). */
const DISPLAY_LOOKUPS = 20;

/** A row of GET /v1/audit as the table reads it (the rest is printed by --json only). */
export interface ApiAuditEvent {
  id: string;
  ts: string;
  kind: string;
  actor_type: string;
  actor_id: string | null;
  token_id: string | null;
  token_type: string | null;
  session_id: string | null;
  server: string | null;
  tool: string | null;
  decision: string | null;
  code: string | null;
  message: string | null;
  action: string | null;
  target: string | null;
  result_status: string | null;
  summary: string | null;
  details: unknown;
  [column: string]: unknown;
}

/** `--limit`: a whole number from 1 to AUDIT_SEARCH_MAX_LIMIT (a usage error, before any request, otherwise). */
export function parseLimit(v: string | undefined): number {
  if (v === undefined) return AUDIT_SEARCH_DEFAULT_LIMIT;
  if (!/^\d+$/.test(v.trim()) || Number(v) < 1 || Number(v) > AUDIT_SEARCH_MAX_LIMIT) {
    throw new CliFailure(
      `--limit ${printable(v)}: expected a whole number from 1 to ${AUDIT_SEARCH_MAX_LIMIT}; for more rows, narrow the search or export them (GET /v1/audit/export, docs/audit.md)`,
      2,
    );
  }
  return Number(v);
}

const ZONED = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})$/;
const UNZONED = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$/;

/**
 * `--from` / `--to`: a moment with its time zone (2026-12-07T03:00:00Z, ...+01:00), a UTC day
 * (2026-12-07), or a duration back from now (2h, as --since). A time without a zone is refused: read as
 * the shell's local time or as UTC, one of them is hours off, and the search would silently miss the rows.
 */
export function parseMoment(flag: string, raw: string, now: number): Date {
  const v = raw.trim();
  const bad = (why: string) => new CliFailure(`${flag} ${printable(raw)}: ${why}`, 2);
  if (/^\d+[smhd]?$/.test(v)) {
    try {
      return new Date(now - parseDuration(v) * 1000);
    } catch (err) {
      throw bad((err as Error).message);
    }
  }
  if (UNZONED.test(v)) throw bad(`has no time zone: add Z for UTC (${v.replace(' ', 'T')}Z) or the offset (${v.replace(' ', 'T')}+01:00)`);
  const day = /^\d{4}-\d{2}-\d{2}$/.test(v);
  if (!day && !ZONED.test(v)) throw bad('expected a time with its zone (2026-12-07T03:00:00Z), a UTC day (2026-12-07) or a duration back from now (30m, 2h, 1d)');
  const at = new Date(day ? `${v}T00:00:00Z` : v.replace(' ', 'T'));
  if (Number.isNaN(at.getTime())) throw bad('is not a valid date');
  return at;
}

// CASCADE_WRITE is both a decision code and a halt trigger: listed once.
const KNOWN_CODES: readonly string[] = [...new Set([...Object.keys(DECISION_CODES), ...HALT_TRIGGERS])];

/**
 * The GET /v1/audit query for the options (without limit and cursor), checked before any request: a
 * typo in a code or an id would otherwise answer "no rows", which at 3 a.m. reads as "it did nothing".
 * `--token` is resolved as `kill --token` does, among revoked and expired tokens too.
 */
export async function auditQuery(cfg: Config, o: AuditSearchOptions, now = Date.now()): Promise<{ query: Record<string, string>; tokenDisplay?: string }> {
  const q: Record<string, string> = {};
  const uuid = (flag: string, v: string, where: string) => {
    if (!isUuid(v.trim())) throw new CliFailure(`${flag} ${printable(v)} is not an id (a UUID): ${where}`, 2);
    return v.trim().toLowerCase();
  };
  const text = (flag: string, v: string) => {
    if (v.trim() === '') throw new CliFailure(`${flag} is empty: give a value, or leave the option out`, 2);
    return v.trim();
  };
  if (o.session !== undefined) q['session'] = uuid('--session', o.session, '`killswitch status` lists halted sessions, and the admin UI\'s Sessions page every session');
  if (o.decisionId !== undefined) q['decision_id'] = uuid('--decision-id', o.decisionId, 'the decision_id of a decision answer or of an audit row (--json)');
  if (o.decision !== undefined) q['decision'] = o.decision;
  if (o.code !== undefined) {
    const code = o.code.trim().toUpperCase();
    if (!KNOWN_CODES.includes(code)) {
      throw new CliFailure(`--code ${printable(o.code)} is not a decision code or a halt trigger: one of ${KNOWN_CODES.join(', ')} (docs/errors.md)`, 2);
    }
    q['code'] = code;
  }
  if (o.server !== undefined) q['server'] = text('--server', o.server);
  if (o.tool !== undefined) q['tool'] = text('--tool', o.tool);
  if (o.kind !== undefined) {
    const kind = o.kind.trim().toUpperCase();
    if (!/^[A-Z][A-Z_]{0,49}$/.test(kind)) throw new CliFailure(`--kind ${printable(o.kind)} is not a row kind: INTENT, RESULT, ADMIN, APPROVAL, AUTH_FAILURE, POLICY_RELOAD ... (docs/audit.md)`, 2);
    q['kind'] = kind;
  }
  if (o.type !== undefined) q['type'] = o.type;
  if (o.project !== undefined) q['project'] = text('--project', o.project);
  if (o.actor !== undefined) q['actor'] = text('--actor', o.actor);
  const from = o.since !== undefined ? new Date(now - o.since * 1000) : o.from !== undefined ? parseMoment('--from', o.from, now) : undefined;
  const to = o.to !== undefined ? parseMoment('--to', o.to, now) : undefined;
  if (from && to && from.getTime() >= to.getTime()) {
    throw new CliFailure(`--${o.since !== undefined ? 'since' : 'from'} (${from.toISOString()}) is not before --to (${to.toISOString()}): nothing can match`, 2);
  }
  if (from) q['from'] = from.toISOString();
  if (to) q['to'] = to.toISOString();
  // Last: the only check that asks the control plane (a display prefix is looked up among the tokens).
  if (o.token === undefined) return { query: q };
  const token = (await resolveTokenId(cfg, o.token, 'search', { anyState: true })).toLowerCase();
  // The token first, in the query and in what "Searched:" says.
  const query = { token, ...q };
  return isUuid(o.token.trim()) ? { query } : { query, tokenDisplay: o.token.trim().replace(/(…|\.\.\.)$/, '') };
}

/** The newest rows matching `query`, up to `cap`, newest first as the API gives them; `complete` false when more match. */
async function readEvents(cfg: Config, query: Record<string, string>, cap: number): Promise<{ items: ApiAuditEvent[]; complete: boolean }> {
  const base = new URLSearchParams(query).toString();
  const path = (cursor: string | null, limit: number) => `v1/audit?${base ? `${base}&` : ''}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
  try {
    return await readPages<ApiAuditEvent>(cfg, path, 'events', 'next', cap, { pageSize: AUDIT_PAGE, timeoutMs: AUDIT_READ_TIMEOUT_MS });
  } catch (err) {
    // Past the API's own limit: the control plane answers other requests, but not this read in time.
    if (err instanceof UnreachableFailure && err.message.includes('ETIMEDOUT')) {
      throw new UnreachableFailure(`${err.message}. An audit read this slow is also a search that passes too many rows: narrow it with --since/--from/--to or an indexed filter (--token, --session, --code, --tool, --kind)`);
    }
    throw err;
  }
}

/**
 * Display prefixes (mcp_rw_XFuj) of the tokens of `events`, as the Tokens page and alerts show them:
 * GET /v1/keys/:id for each token not in `known`, up to DISPLAY_LOOKUPS. One that cannot be read is shown
 * by its id, which is what it is; a failure other than not found is returned to be said once.
 */
async function lookUpDisplayPrefixes(cfg: Config, events: ApiAuditEvent[], known: Map<string, string | null>): Promise<string | undefined> {
  const ids = [...new Set(events.map((e) => e.token_id).filter((id): id is string => typeof id === 'string' && isUuid(id) && !known.has(id)))].slice(0, DISPLAY_LOOKUPS);
  let problem: string | undefined;
  await Promise.all(
    ids.map(async (id) => {
      try {
        const k = (await call(cfg, 'GET', `v1/keys/${encodeURIComponent(id)}`, undefined, (j) => typeof j['display_prefix'] === 'string')) as { display_prefix: string };
        known.set(id, k.display_prefix);
      } catch (err) {
        if (!(err instanceof CliFailure)) throw err;
        known.set(id, null);
        if (!err.message.startsWith('404 ')) problem ??= err.message;
      }
    }),
  );
  return problem;
}

/** A column's text, escaped; '-' for none (a column the API left out too: an answer of another version must not end the table). */
const cell = (v: unknown) => printable(typeof v === 'string' ? v : v === null || v === undefined ? '-' : String(v));
const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Who: the token (display prefix, else its whole id: what `--token` and `kill --token` take), the operator
 * (its key's name) or the system part, cut to the column (--json has it whole).
 */
function who(e: ApiAuditEvent, displays: Map<string, string | null>): string {
  if (e.actor_type === 'mcp_token') {
    if (!e.token_id) return `unchecked ${cell(e.token_type)}`;
    const display = displays.get(e.token_id);
    return printable(display ? `${display}…` : e.token_id);
  }
  const details = typeof e.details === 'object' && e.details !== null ? (e.details as Record<string, unknown>) : {};
  const name = typeof details['operator_name'] === 'string' ? details['operator_name'] : undefined;
  return cut(printable(`${e.actor_type}:${name ?? e.actor_id ?? '?'}`), WHO_WIDTH);
}

function message(e: ApiAuditEvent): string {
  if (typeof e.message === 'string' && e.message) return e.message;
  if (typeof e.summary === 'string' && e.summary) return e.summary;
  const details = typeof e.details === 'object' && e.details !== null ? (e.details as Record<string, unknown>) : {};
  const reason = typeof details['reason'] === 'string' ? ` — ${details['reason']}` : '';
  return `${e.target ?? ''}${reason}`;
}

const WHO_WIDTH = 24;
const COLUMNS = [
  ['TIME (UTC)', 24],
  ['KIND', 8],
  ['DECISION', 8],
  ['CODE', 22],
  ['WHO', WHO_WIDTH],
  ['SESSION', 36],
  ['SERVER/TOOL OR ACTION', 28],
] as const;
const MESSAGE_WIDTH = 120;

export const tableHeader = () => `${COLUMNS.map(([h, w]) => h.padEnd(w)).join('  ')}  MESSAGE`;

/**
 * One row, one line: every text from the API through printable (a control character, line break or
 * bidirectional mark is shown as \uXXXX and cannot forge a line or rewrite the screen). Arguments, flags
 * and details are not printed here (--json has them, as the API masks them).
 */
export function eventLine(e: ApiAuditEvent, displays: Map<string, string | null>): string {
  const cells = [
    cell(e.ts),
    cell(e.kind),
    cell(e.decision),
    cell(e.code ?? e.result_status),
    who(e, displays),
    cell(e.session_id),
    e.server ? cell(`${e.server}/${e.tool ?? ''}`) : cell(e.action),
  ];
  return `${cells.map((c, i) => c.padEnd(COLUMNS[i]![1])).join('  ')}  ${cut(printable(message(e)), MESSAGE_WIDTH)}`.trimEnd();
}

/** What was searched, in the operator's words: it confirms the window and the filters actually sent. */
function describe(q: Record<string, string>, tokenDisplay: string | undefined): string {
  const parts = Object.entries(q)
    .filter(([k]) => k !== 'from' && k !== 'to')
    .map(([k, v]) => (k === 'token' && tokenDisplay ? `token ${v} (${tokenDisplay}…)` : `${k.replace('_', ' ')} ${v}`));
  const window = q['from'] || q['to'] ? `from ${q['from'] ?? 'the start'} to ${q['to'] ?? 'now'}` : 'any time';
  return printable(`${parts.length ? parts.join(', ') : 'every row'}, ${window}`);
}

function moreRows(shown: number, limit: number): string {
  return (
    `killswitch: audit search: the newest ${shown} matching rows are shown; older rows match too (not read). ` +
    `Narrow with --since/--from/--to, --token, --session, --code, --decision, --tool or --kind${limit < AUDIT_SEARCH_MAX_LIMIT ? `, or raise --limit (at most ${AUDIT_SEARCH_MAX_LIMIT})` : ''}; ` +
    'every matching row: the export, GET /v1/audit/export (docs/audit.md).\n'
  );
}

/**
 * `killswitch audit search`: exit 0 whether rows were found or not (none found says so), 1 unreachable or
 * refused, 2 usage (before any request). With --follow it does not return: it polls until interrupted.
 */
export async function auditSearch(cfg: Config, o: AuditSearchOptions, out: Out, err: Out): Promise<number> {
  // KILLSWITCH_URL first: a usage error in it is found before the options' lookups.
  const origin = controlPlaneUrl(cfg.killswitchUrl).origin;
  const limit = parseLimit(o.limit);
  const { query, tokenDisplay } = await auditQuery(cfg, o);
  // Before the first screen: the tail starts where that read began. Asked without the filters: a cursor
  // is one for every filter, and the newest row of the whole trail is found at once.
  const start = o.follow ? (await readCommitted(cfg, {}, null)).follow : '';
  const { items, complete } = await readEvents(cfg, query, limit);
  const displays = new Map<string, string | null>();
  if (tokenDisplay && query['token']) displays.set(query['token'], tokenDisplay);

  if (o.json && !o.follow) {
    out.write(`${printableJson({ control_plane: origin, query, count: items.length, complete, events: items })}\n`);
  } else if (o.json) {
    for (const e of [...items].reverse()) out.write(`${printableJsonLine(e)}\n`);
  } else {
    const problem = await lookUpDisplayPrefixes(cfg, items, displays);
    // A token given by id is named by its display prefix too when its rows showed it.
    out.write(`${controlPlaneLine(cfg)}\nSearched: ${describe(query, tokenDisplay ?? displays.get(query['token'] ?? '') ?? undefined)}\n`);
    if (items.length === 0) out.write(o.follow ? 'No audit rows match yet; waiting for new ones (Ctrl-C to stop).\n' : 'No audit rows match.\n');
    else {
      out.write(`${tableHeader()}\n`);
      for (const e of [...items].reverse()) out.write(`${eventLine(e, displays)}\n`);
    }
    if (problem) err.write(`killswitch: audit search: some tokens are shown by id: their display prefix could not be read (${problem})\n`);
  }
  if (!complete) err.write(moreRows(items.length, limit));
  if (!o.follow) return 0;
  return follow(cfg, o, query, start, items, displays, out, err);
}

/** A follow page of GET /v1/audit?after=: its rows (oldest commit first) and the cursor after them. */
async function readCommitted(cfg: Config, query: Record<string, string>, after: string | null): Promise<{ events: ApiAuditEvent[]; follow: string }> {
  const base = new URLSearchParams(after === null ? { ...query, limit: '1' } : { ...query, limit: String(AUDIT_PAGE), after }).toString();
  const page = (await call(cfg, 'GET', `v1/audit?${base}`, undefined, (j) => Array.isArray(j['events']), [], AUDIT_READ_TIMEOUT_MS)) as Record<string, unknown>;
  if (typeof page['follow'] !== 'string') {
    throw new CliFailure(`the control plane at ${controlPlaneUrl(cfg.killswitchUrl).origin} (KILLSWITCH_URL) cannot be followed: its GET /v1/audit answers no \`follow\` cursor (an older version); upgrade it, or search without --follow`, 1);
  }
  return { events: after === null ? [] : (page['events'] as ApiAuditEvent[]), follow: page['follow'] };
}

/**
 * --follow: every FOLLOW_POLL_MS, the matching rows committed since the last poll (GET /v1/audit?after=,
 * docs/adr/0034-audit-follow-cursor.md), oldest commit first, each once, whatever their ts: a row replayed
 * from a spool after a Postgres outage, or written by a replica whose clock is behind, is shown when it
 * is committed, with its own (older) time. --since/--from bound the rows shown first, not the tail. A
 * failed poll is said on stderr (once until one answers again) and retried: the tail never goes quiet
 * without saying why.
 */
async function follow(
  cfg: Config,
  o: AuditSearchOptions,
  query: Record<string, string>,
  start: string,
  initial: ApiAuditEvent[],
  displays: Map<string, string | null>,
  out: Out,
  err: Out,
): Promise<never> {
  // The cursor was taken before the first screen was read: a row committed in between is on that screen
  // and comes again in the first polls.
  const shown = new Set(initial.map((e) => e.id));
  const { from: _from, to: _to, ...filters } = query;
  let after = start;
  let failing: string | undefined;
  let full = false;
  for (;;) {
    // A full page: the rest is read at once.
    if (!full) await new Promise((resolve) => setTimeout(resolve, FOLLOW_POLL_MS));
    let page: { events: ApiAuditEvent[]; follow: string };
    try {
      page = await readCommitted(cfg, filters, after);
    } catch (e) {
      if (!(e instanceof CliFailure)) throw e;
      full = false;
      if (/^400 INVALID_REQUEST: after: /.test(e.message)) {
        // The control plane's database is not the one the cursor is of (restored, or another behind the URL).
        err.write(`killswitch: audit search --follow: the control plane no longer knows this tail's place (${e.message}); following from now: rows committed meanwhile are not shown (search for them)\n`);
        try {
          after = (await readCommitted(cfg, {}, null)).follow;
        } catch {}
        continue;
      }
      if (failing !== e.message) err.write(`killswitch: audit search --follow: could not read (${e.message}); trying again every ${FOLLOW_POLL_MS / 1000} s\n`);
      failing = e.message;
      continue;
    }
    if (failing !== undefined) err.write('killswitch: audit search --follow: reading again\n');
    failing = undefined;
    after = page.follow;
    full = page.events.length >= AUDIT_PAGE;
    const fresh = page.events.filter((e) => !shown.has(e.id));
    if (!o.json) {
      const problem = await lookUpDisplayPrefixes(cfg, fresh, displays);
      if (problem) err.write(`killswitch: audit search: some tokens are shown by id: their display prefix could not be read (${problem})\n`);
    }
    for (const e of fresh) out.write(o.json ? `${printableJsonLine(e)}\n` : `${eventLine(e, displays)}\n`);
    // Only the first screen's rows can come again.
    if (shown.size > 0) for (const e of page.events) shown.delete(e.id);
  }
}
