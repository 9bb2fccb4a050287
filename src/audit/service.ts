import { Readable } from 'node:stream';
import { stringify } from 'csv-stringify';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { KEEPALIVE_INITIAL_DELAY_MS, type Pool, TimedClient, tolerateConnectionLoss, withQueryTimeout, withTransaction } from '../db/pool.js';
import { AUDIT_WRITER_ROLE, auditWriterRefused, readDatabaseAccess, writerNotSwitched } from '../db/privileges.js';
import { AppError, invalid } from '../errors.js';
import { isUuid } from '../ids.js';
import { applyRecordsRetention, type RecordsRetentionResult } from '../retention/service.js';
import type { OperatorPrincipal } from '../tokens/authenticator.js';
import { type ChainHead, type VerifyReport, verifyChain } from './chain.js';
import { advanceFollowCursor, decodeFollowCursor, encodeFollowCursor } from './follow-cursor.js';
import { AUDIT_COLUMN_NAMES, type AuditEvent, type AuditRecord } from './record.js';
import type { AdminAction } from './rows.js';
import { type AuditFilters, auditStore, type Keyset, type MonthlyUsageRow, type RetentionResult, type UsageCounts, type UsageGroupRow } from './store.js';
import { AuditUnavailable, AuditWriter, type SpoolSetAside } from './writer.js';

// Registers the int8 → number parser even when only this module is loaded (CLI).
import '../db/pool.js';

/** The limited role the request path writes audit rows as (migrations/0002_audit.sql). */
export { AUDIT_WRITER_ROLE };

const RETENTION_INTERVAL_MS = 60 * 60 * 1000;
const EXPORT_PAGE = 1_000;

export function databaseName(databaseUrl: string): string {
  return decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, '')) || 'postgres';
}

/**
 * Server side: a group-committed INSERT that runs this long (a lock wait, say) is cancelled by Postgres,
 * and its rows go to the spool. An allow waits for its INTENT, and the gateway's own budget is 2 s.
 */
export const AUDIT_STATEMENT_TIMEOUT_MS = 2_000;
/**
 * Client side: an INSERT with no answer this long (the server or the network hangs, where the statement
 * timeout cannot fire) is a failure too: its connection is discarded and its rows go to the spool. A bit
 * longer than the statement timeout, so a live server's own cancel arrives first.
 */
export const AUDIT_QUERY_TIMEOUT_MS = 2_500;

/** A value of a `-c name=value` connection option: backslash and white space escaped (Postgres splits options on spaces). */
function optionValue(value: string): string {
  return value.replace(/[\\\s]/g, '\\$&');
}

/**
 * The writer's own pool: every connection runs as the limited role from its first statement (a startup
 * parameter, so a missing role fails the connection instead of silently writing as the owner), and idle
 * connections are kept (idleTimeoutMillis 0) so a quiet period is not followed by a slow batch. Kept
 * forever, they get TCP keepalive, and every INSERT a client-side timeout (see the constants above).
 *
 * `schema`: where the tables are (auditSchema). The role switch changes what the default search_path's
 * `"$user"` means: with the tables in a schema named after the owner (a managed Postgres whose `public`
 * the owner may not create in), the writer would look for them in a schema named after itself and then
 * in `public`, and find nothing. Without it, the server's default search_path.
 */
export function createWriterPool(databaseUrl: string, opts: { schema?: string } = {}): pg.Pool {
  const searchPath = opts.schema === undefined ? '' : ` -c search_path=${optionValue(pg.escapeIdentifier(opts.schema))}`;
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: 2,
    idleTimeoutMillis: 0,
    connectionTimeoutMillis: 2_000,
    query_timeout: AUDIT_QUERY_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    options: `-c role=${AUDIT_WRITER_ROLE} -c statement_timeout=${AUDIT_STATEMENT_TIMEOUT_MS}${searchPath}`,
    application_name: 'killswitch-audit-writer',
    // The query timeout applied so that an INSERT answered while the event loop was held is not failed (src/db/pool.ts).
    Client: TimedClient as unknown as new () => pg.ClientBase,
  });
  tolerateConnectionLoss(pool);
  return pool;
}

/** How long the start waits for each of the writer pool's checks below: a Postgres that hangs is the spool's to ride out, not the start's. */
const WRITER_CHECK_TIMEOUT_MS = 2_500;

/** SQLSTATEs of a writer connection refused for what it may do, not for a Postgres that is unreachable. */
const WRITER_REFUSALS = new Set([
  '42501', // insufficient_privilege: may not SET ROLE, no privilege on the table
  '22023', // invalid_parameter_value: `-c role=` names a role that does not exist
  '42P01', // undefined_table: audit_events not found on the writer's search_path (no USAGE on its schema)
  '3F000', // invalid_schema_name
]);

/** The schema the owner's connection finds audit_events in; undefined when it finds none (not migrated) or cannot ask. */
export async function auditSchema(pool: Pool): Promise<string | undefined> {
  try {
    const { rows } = await pool.query<{ schema: string | null }>(
      withQueryTimeout({ text: "SELECT (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('audit_events')) AS schema" }, WRITER_CHECK_TIMEOUT_MS),
    );
    return rows[0]?.schema ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * The writer pool for the database `pool` (the owner's) is connected to, pinned to the tables' schema and
 * checked: a writer that Postgres refuses for its privileges (the role missing, no right to switch to it,
 * no USAGE on the schema) throws a ConfigError saying what the DBA runs. Such a writer would otherwise
 * send every audit row to the local spool, for ever, while /readyz said ready. A Postgres that does not
 * answer is not refused: the spool rides that out, as at any time.
 */
export async function openWriterPool(databaseUrl: string, pool: Pool): Promise<pg.Pool> {
  const schema = await auditSchema(pool);
  const writerPool = createWriterPool(databaseUrl, schema === undefined ? {} : { schema });
  let who: string | undefined;
  try {
    const { rows } = await writerPool.query<{ who: string; ok: boolean }>(
      withQueryTimeout({ text: "SELECT current_user AS who, has_table_privilege('audit_events', 'INSERT') AND has_table_privilege('audit_events', 'SELECT') AS ok" }, WRITER_CHECK_TIMEOUT_MS),
    );
    who = rows[0]?.who;
    if (rows[0]?.ok !== true) throw Object.assign(new Error(`permission denied for table audit_events (the role ${AUDIT_WRITER_ROLE} needs SELECT and INSERT on it)`), { code: '42501' });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && WRITER_REFUSALS.has(code)) {
      await writerPool.end().catch(() => {});
      const access = await readDatabaseAccess((text, values) => pool.query(withQueryTimeout({ text, ...(values ? { values } : {}) }, WRITER_CHECK_TIMEOUT_MS)), schema);
      throw auditWriterRefused(access, (err as Error).message);
    }
  }
  // Postgres applied no `-c role=`: a connection pooler between us and it dropped the option (PgBouncer with
  // `options` in ignore_startup_parameters). The writer would write as the owner, which it must never do.
  if (who !== undefined && who !== AUDIT_WRITER_ROLE) {
    await writerPool.end().catch(() => {});
    throw writerNotSwitched(who);
  }
  return writerPool;
}

export interface AuditServiceOptions {
  /** Event clock for the writer (tests). */
  clock?: () => number;
  replayIntervalMs?: number;
  /** Run the hourly retention job, of the audit trail and of the operational records (default true). */
  retentionJob?: boolean;
  /** Spool directory; default config.dataDir. */
  dataDir?: string;
  /** Pool for the writer; default a new writer pool on config.databaseUrl (closed by close()). */
  writerPool?: Pool;
  /**
   * Log `audit chain head` every AUDIT_HEAD_LOG_INTERVAL_S and at close (default true; the CLI says false
   * and writes the one head of its run itself, with logChainHead).
   */
  headLog?: boolean;
}

export type SpoolingListener = (spooling: boolean, spoolRows: number) => void;

export interface ListResult {
  events: AuditRecord[];
  next: string | null;
  /** For `after`: the rows committed after this answer began to be read are the ones it has not given. */
  follow: string;
}

export interface OperationUsage extends UsageCounts {
  server: string | null;
  tool: string | null;
  capability: string | null;
}

export interface DayUsage extends UsageCounts {
  day: string;
}

export interface TokenUsage extends UsageCounts {
  token_id: string;
  token_type: string | null;
  project_id: string | null;
  success_rate: number | null;
  error_rate: number | null;
  avg_duration_ms: number | null;
  last_used: string | null;
  operations: OperationUsage[];
  per_day: DayUsage[];
}

const visible = (op: OperatorPrincipal | undefined, f: AuditFilters): AuditFilters => (op?.projects ? { ...f, projects: op.projects } : f);

export function encodeCursor(k: Keyset): string {
  return Buffer.from(JSON.stringify([k.ts.toISOString(), k.id])).toString('base64url');
}

export function decodeCursor(cursor: string): Keyset {
  try {
    const [ts, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [string, string];
    const date = new Date(ts);
    if (Number.isNaN(date.getTime()) || !isUuid(id)) throw new Error('bad cursor');
    return { ts: date, id: id.toLowerCase() };
  } catch {
    throw new AppError('INVALID_REQUEST', 'cursor: is not a cursor returned by this API', [{ field: 'cursor', problem: 'is invalid' }]);
  }
}

/** One audit row as text cells (CSV export). */
export function csvCells(r: AuditRecord): string[] {
  return AUDIT_COLUMN_NAMES.map((name) => {
    const v = r[name];
    if (v === null || v === undefined) return '';
    if (v instanceof Date) return v.toISOString();
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  });
}

const num = (v: unknown): number => Number(v ?? 0);

function toTokenUsage(rows: UsageGroupRow[]): TokenUsage[] {
  const byToken = new Map<string, TokenUsage>();
  for (const r of rows) {
    let t = byToken.get(r.token_id);
    if (!t) {
      t = {
        token_id: r.token_id,
        token_type: r.token_type,
        project_id: r.project_id,
        calls: 0,
        allowed: 0,
        denied: 0,
        results: 0,
        successes: 0,
        errors: 0,
        success_rate: null,
        error_rate: null,
        avg_duration_ms: null,
        last_used: null,
        operations: [],
        per_day: [],
      };
      byToken.set(r.token_id, t);
    }
    const counts = { calls: num(r.calls), allowed: num(r.allowed), denied: num(r.denied), results: num(r.results), successes: num(r.successes), errors: num(r.errors) };
    if (r.grp === 'token') {
      Object.assign(t, counts);
      t.token_type = r.token_type;
      t.project_id = r.project_id;
      t.success_rate = counts.results > 0 ? counts.successes / counts.results : null;
      t.error_rate = counts.results > 0 ? counts.errors / counts.results : null;
      t.avg_duration_ms = r.duration_ms_avg === null ? null : Number(r.duration_ms_avg);
      t.last_used = r.last_used ? r.last_used.toISOString() : null;
    } else if (r.grp === 'operation') {
      t.operations.push({ server: r.server, tool: r.tool, capability: r.capability, ...counts });
    } else if (r.day) {
      t.per_day.push({ day: r.day, ...counts });
    }
  }
  return [...byToken.values()].sort((a, b) => b.calls - a.calls || a.token_id.localeCompare(b.token_id));
}

/**
 * The first month audit partitions are kept ready for: last month (rows a replica writes with a clock a
 * little behind), but never a month retention would drop at once: with a short AUDIT_RETENTION_DAYS
 * that made every hourly run create last month's empty partition and drop it again (DDL on the table
 * and an audit.retention row each hour).
 */
export function partitionsFrom(now: Date, retentionDays: number): Date {
  return new Date(Math.max(now.getTime() - 31 * 86_400_000, now.getTime() - retentionDays * 86_400_000));
}

/**
 * The cut of a retention run: the start (00:00 UTC, first day) of the UTC month that holds `now` minus
 * `retentionDays`. Retention removes whole monthly partitions only (docs/adr/0018-audit-retention-by-month.md):
 * a cut that moved every hour deleted an hour of rows one by one from a live partition on every run.
 * Rows are kept at least `retentionDays` and at most about a month more.
 */
export function retentionCutoff(now: Date, retentionDays: number): Date {
  const t = new Date(now.getTime() - retentionDays * 86_400_000);
  return new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), 1));
}

/** The `audit chain head` log line: the witness `audit verify --witnesses` reads (parseWitnessFile). */
export function logChainHead(log: Logger, h: ChainHead): void {
  log.info({ audit_head: `${h.replica_id}:${h.seq}:${h.hash}`, replica_id: h.replica_id, seq: h.seq, ts: h.ts }, 'audit chain head');
}

/**
 * The audit trail of one control-plane instance: the group-commit writer (request path), the read side
 * (operators) and the retention job, which also runs the retention of alerts, approvals and sessions
 * (src/retention). Registered as ctx.audit.
 */
export class AuditService {
  private retentionTimer: NodeJS.Timeout | undefined;
  private retentionStart: NodeJS.Timeout | undefined;
  private recordsRun: Promise<unknown> | undefined;
  private closing = false;
  private headTimer: NodeJS.Timeout | undefined;
  private headLogged: string | undefined;
  private headLogEnabled = false;

  private constructor(
    private readonly pool: Pool,
    private readonly writerPool: Pool,
    private readonly ownsWriterPool: boolean,
    readonly writer: AuditWriter,
    private readonly config: Pick<Config, 'auditRetentionDays' | 'recordsRetentionDays' | 'auditHeadLogIntervalS'>,
    private readonly log: Logger,
    /** The same array the writer's callback reads. */
    private readonly spoolingListeners: SpoolingListener[],
    /** Spools set aside so far, and who is told of the next ones (the writer's callback fills both). */
    private readonly spoolsSetAside: SpoolSetAside[] = [],
    private readonly setAsideListeners: Array<(info: SpoolSetAside) => void> = [],
  ) {}

  /** Called for each spool set aside instead of replayed (docs/audit.md), also those set aside before the call. */
  onSpoolSetAside(listener: (info: SpoolSetAside) => void): void {
    for (const info of this.spoolsSetAside) listener(info);
    this.setAsideListeners.push(listener);
  }

  /** Creates the writer (own pool, limited role), makes sure partitions exist ahead, starts retention. */
  static async start(config: Config, pool: Pool, log: Logger, opts: AuditServiceOptions = {}): Promise<AuditService> {
    await auditStore.ensurePartitions(pool, partitionsFrom(new Date(), config.auditRetentionDays), 4).catch((err) => log.warn({ err: (err as Error).message }, 'could not create audit partitions ahead'));
    const writerPool = opts.writerPool ?? (await openWriterPool(config.databaseUrl, pool));
    const listeners: SpoolingListener[] = [];
    // A spool is set aside by the start's first replay, before the app listens: kept to be told later.
    const setAside: SpoolSetAside[] = [];
    const setAsideListeners: Array<(info: SpoolSetAside) => void> = [];
    let service: AuditService | undefined;
    const writer = await AuditWriter.open({
      pool: writerPool,
      database: databaseName(config.databaseUrl),
      dataDir: opts.dataDir ?? config.dataDir,
      batchMax: config.auditBatchMax,
      log,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.replayIntervalMs ? { replayIntervalMs: opts.replayIntervalMs } : {}),
      onSpoolingChange: (spooling, rows) => {
        for (const l of listeners) l(spooling, rows);
      },
      onSpoolSetAside: (info) => {
        setAside.push(info);
        for (const l of setAsideListeners) l(info);
      },
      // A chain's first durable row is witnessed at once, not an interval later: a chain that no head
      // line names is one `audit verify --witnesses` reports as planted (UNWITNESSED).
      onNewDurableChain: () => {
        if (service?.headLogEnabled) service.logHead();
      },
    });
    service = new AuditService(pool, writerPool, !opts.writerPool, writer, config, log, listeners, setAside, setAsideListeners);
    if (opts.retentionJob !== false) service.startRetentionJob();
    if (opts.headLog !== false && config.auditHeadLogIntervalS > 0) {
      service.headLogEnabled = true;
      service.headTimer = setInterval(() => service.logHead(), config.auditHeadLogIntervalS * 1000);
      service.headTimer.unref();
    }
    return service;
  }

  /**
   * Logs this replica's chain head (its last row known to be in Postgres) when it moved since the last
   * line: shipped with the logs, outside the database, it is what `audit verify --expect` checks a chain
   * against, so rows removed from a chain's end (which leave what remains verifying) are found.
   */
  logHead(): void {
    const h = this.writer.durableHead;
    if (!h) return;
    const witness = `${h.replica_id}:${h.seq}:${h.hash}`;
    if (witness === this.headLogged) return;
    this.headLogged = witness;
    logChainHead(this.log, h);
  }

  get queueDepth(): number {
    return this.writer.queueDepth;
  }

  /**
   * GET /readyz's audit check. Spooling is degraded but safe (rows are durable locally); not ready is a
   * trail that takes nothing, or rows that wait and become durable nowhere (a hang no timeout caught).
   */
  readiness(): true | string {
    if (this.writer.failing) return 'audit rows can be written neither to Postgres nor to the local spool (allows deny)';
    if (this.writer.stalled) return 'audit rows stalled: not durable after 5 s (allows wait)';
    return true;
  }

  /** Rows in audit_events_default at the last check (start, then hourly): 0 normally. */
  defaultPartitionRows = 0;
  private readonly defaultPartitionListeners: Array<(found: { rows: number; oldest: Date | null; newest: Date | null }) => void> = [];

  /** Called when a check finds rows in the default partition (for an alert). */
  onDefaultPartitionRows(listener: (found: { rows: number; oldest: Date | null; newest: Date | null }) => void): void {
    this.defaultPartitionListeners.push(listener);
  }

  /**
   * Rows for a month without its partition land in audit_events_default (data-growth review: silently, and
   * one such row keeps that month's partition from ever being created, so the whole month goes there and
   * retention deletes it row by row). Logged and told to the listeners when there are any. Never rejects:
   * a count that fails is logged and the last one stands.
   */
  async checkDefaultPartition(): Promise<number> {
    let found: Awaited<ReturnType<typeof auditStore.defaultPartitionRows>>;
    try {
      found = await auditStore.defaultPartitionRows(this.pool);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not count the audit rows in the default partition');
      return this.defaultPartitionRows;
    }
    this.defaultPartitionRows = found.rows;
    if (found.rows > 0) {
      this.log.warn(
        { rows: found.rows, oldest: found.oldest?.toISOString() ?? null, newest: found.newest?.toISOString() ?? null },
        'audit rows are in the default partition (audit_events_default): their month had no partition when they were written; docs/audit.md, "Partitions"',
      );
      for (const l of this.defaultPartitionListeners) l(found);
    }
    return found.rows;
  }

  /** Called when audit rows start going to the local spool and when it has been replayed (for alerts). */
  onSpoolingChange(listener: SpoolingListener): void {
    this.spoolingListeners.push(listener);
  }

  get spoolSize(): number {
    return this.writer.spoolSize;
  }

  /** Resolves when the row is durable (Postgres or spool); rejects AuditUnavailable → deny DEPENDENCY_UNAVAILABLE. */
  recordIntent(event: AuditEvent): Promise<void> {
    return this.writer.recordIntent(event);
  }

  /** Denials and RESULT rows: queued, same order and chain, nobody waits. */
  enqueue(event: AuditEvent): void {
    this.writer.enqueue(event);
  }

  /**
   * An operator or system action, durable like an INTENT. Rejects with 503 SERVICE_UNAVAILABLE when the
   * trail cannot take it; a caller that does not await is safe (the rejection is logged, not unhandled).
   */
  recordAdmin(action: AdminAction): Promise<void> {
    const p = this.writer.recordAdmin(action).catch((err: unknown) => {
      this.log.error({ err: (err as Error).message, action: action.action }, 'audit row for an admin action could not be written');
      throw err instanceof AuditUnavailable ? new AppError('SERVICE_UNAVAILABLE', `The audit trail is unavailable; the action "${action.action}" was not recorded.`) : err;
    });
    p.catch(() => {});
    return p;
  }

  /** The stored INTENT of a decision (for POST /v1/decisions/:id/result), or undefined. */
  findIntent(decisionId: string): Promise<AuditRecord | undefined> {
    return auditStore.findIntent(this.pool, decisionId);
  }

  async list(op: OperatorPrincipal | undefined, filters: AuditFilters, limit: number, cursor?: string): Promise<ListResult> {
    const before = cursor ? decodeCursor(cursor) : undefined;
    // Read before the rows: a row committed in between is in this page and after `follow` too (a follower
    // drops the repeat by id); one read after the rows could miss a row committed in between.
    const follow = encodeFollowCursor({ ...(await auditStore.snapshotBounds(this.pool)), partial: undefined });
    const rows = await auditStore.list(this.pool, visible(op, filters), limit + 1, before);
    const events = rows.slice(0, limit);
    const last = events[events.length - 1];
    return { events, next: rows.length > limit && last ? encodeCursor({ ts: last.ts, id: last.id }) : null, follow };
  }

  /**
   * The rows matching `filters` committed after the answer whose `follow` is `after`, oldest commit
   * first, up to `limit`, and the cursor that continues from them (docs/adr/0034-audit-follow-cursor.md).
   * Read in one REPEATABLE READ transaction: the rows and the snapshot bounds that advance the cursor are
   * those of one snapshot.
   */
  async listCommittedAfter(op: OperatorPrincipal | undefined, filters: AuditFilters, limit: number, after: string): Promise<ListResult> {
    const c = decodeFollowCursor(after);
    return withTransaction(this.pool, async (db) => {
      await db.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const now = await auditStore.snapshotBounds(db);
      // Transaction ids only grow: a cursor ahead of this database's is not of it (another database, or one
      // restored from a backup), and what it has given cannot be told.
      if (c.xmax > now.xmax) throw invalid('after', 'is ahead of this database (a cursor of another database, or of one restored from a backup): start again without it');
      const rows = await auditStore.followPage(db, visible(op, filters), c, now.xmax, limit + 1);
      const page = rows.slice(0, limit);
      const last = rows.length > limit ? page[page.length - 1] : undefined;
      const next = advanceFollowCursor(c, now, last && { xid: BigInt(last.ingest_xid), id: last.id, partial: last.from_partial });
      const events = page.map(({ ingest_xid: _x, from_partial: _p, ...r }) => r as AuditRecord);
      return { events, next: null, follow: encodeFollowCursor(next) };
    });
  }

  /**
   * A streamed export, CSV with a header row or JSON Lines, opened: the first page is read before this
   * resolves, so a filter Postgres refuses or a database that is down rejects here, before the route
   * commits a status and headers, and is answered like any other error (400, 503). The rest is read
   * page by page as the client takes it (memory stays flat); a page that fails later errors the stream,
   * which Fastify answers by cutting the response (docs/audit.md, "Export").
   */
  /**
   * The export's stream, its first page already read (nothing is sent yet: the route writes its
   * `audit.exported` row first). `onRow` is called for each row as it is read into the stream.
   */
  async openExport(op: OperatorPrincipal | undefined, filters: AuditFilters, format: 'csv' | 'jsonl', onRow: () => void = () => {}): Promise<Readable> {
    const f = visible(op, filters);
    const first = await auditStore.exportPage(this.pool, f, EXPORT_PAGE);
    const source = this.rowsFrom(f, first, onRow);
    if (format === 'jsonl') {
      return Readable.from(
        (async function* () {
          for await (const r of source) yield `${JSON.stringify(r)}\n`;
        })(),
      );
    }
    const csv = stringify({ header: true, columns: [...AUDIT_COLUMN_NAMES], escape_formulas: true });
    const cells = Readable.from(
      (async function* () {
        for await (const r of source) yield csvCells(r);
      })(),
    );
    cells.on('error', (err) => csv.destroy(err));
    // An export refused (its row not written) or cut ends the CSV stream: the rows feeding it stop too.
    csv.once('close', () => cells.destroy());
    return cells.pipe(csv);
  }

  /** The rows of `page` and of every page after it, oldest first. */
  private async *rowsFrom(f: AuditFilters, page: AuditRecord[], onRow: () => void): AsyncGenerator<AuditRecord> {
    for (;;) {
      for (const r of page) {
        onRow();
        yield r;
      }
      const last = page[page.length - 1];
      if (!last || page.length < EXPORT_PAGE) return;
      page = await auditStore.exportPage(this.pool, f, EXPORT_PAGE, { ts: last.ts, id: last.id });
    }
  }

  async usage(op: OperatorPrincipal | undefined, filters: AuditFilters): Promise<TokenUsage[]> {
    return toTokenUsage(await auditStore.usage(this.pool, visible(op, filters)));
  }

  async monthlyUsage(op: OperatorPrincipal | undefined, filters: AuditFilters): Promise<MonthlyUsageRow[]> {
    return auditStore.monthlyUsage(this.pool, visible(op, filters));
  }

  /** Walks every hash chain (killswitch audit verify). */
  verify(): Promise<VerifyReport> {
    return verifyChain(this.pool, { retentionDays: this.config.auditRetentionDays });
  }

  /**
   * Removes the monthly partitions wholly older than AUDIT_RETENTION_DAYS and the default partition's rows
   * before the same cut (rolled up monthly, chains anchored), and creates the coming months' partitions.
   * Records an ADMIN row when something was removed: about once a month.
   */
  async applyRetention(now: Date = new Date(), actor = 'retention'): Promise<RetentionResult> {
    await auditStore.ensurePartitions(this.pool, partitionsFrom(now, this.config.auditRetentionDays), 4);
    await this.checkDefaultPartition();
    const cutoff = retentionCutoff(now, this.config.auditRetentionDays);
    const result = await auditStore.applyRetention(this.pool, cutoff);
    if (result.rows_removed > 0 || result.partitions_dropped.length > 0) {
      this.log.info({ ...result }, 'audit retention removed old rows');
      await this.recordAdmin({ actor, action: 'audit.retention', target: 'audit_events', details: { ...result, retention_days: this.config.auditRetentionDays } }).catch(() => {});
    }
    return result;
  }

  /**
   * Removes alerts, settled approval requests and closed sessions older than RECORDS_RETENTION_DAYS
   * (src/retention) and records an ADMIN row `records.retention` when something was removed. Undefined
   * when RECORDS_RETENTION_DAYS is 0 or another replica is running it.
   */
  applyRecordsRetention(now: Date = new Date(), actor = 'retention'): Promise<RecordsRetentionResult | undefined> {
    return applyRecordsRetention(
      { pool: this.pool, log: this.log, recordAdmin: (a) => this.recordAdmin(a), retentionDays: this.config.recordsRetentionDays, stopping: () => this.closing },
      now,
      actor,
    );
  }

  private startRetentionJob(): void {
    const runOnce = () => {
      void this.applyRetention().catch((err) => this.log.warn({ err: (err as Error).message }, 'audit retention failed; retrying in an hour'));
      // Separate from the audit's own, so a failure of one never skips the other; never two at once here.
      this.recordsRun ??= this.applyRecordsRetention()
        .catch((err) => this.log.warn({ err: (err as Error).message }, 'retention of alerts, approvals, halts and sessions failed; retrying in an hour'))
        .finally(() => {
          this.recordsRun = undefined;
        });
    };
    this.retentionStart = setTimeout(runOnce, 60_000);
    this.retentionStart.unref();
    this.retentionTimer = setInterval(runOnce, RETENTION_INTERVAL_MS);
    this.retentionTimer.unref();
  }

  /** Flushes every queued row (to Postgres or the spool) and closes the writer's pool. */
  async close(): Promise<void> {
    if (this.retentionStart) clearTimeout(this.retentionStart);
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    // A records retention run stops after its current batch and still audits what it removed.
    this.closing = true;
    await this.recordsRun;
    if (this.headTimer) clearInterval(this.headTimer);
    await this.writer.close();
    if (this.headLogEnabled) this.logHead();
    if (this.ownsWriterPool) await this.writerPool.end().catch(() => {});
  }
}

export { AuditUnavailable };
