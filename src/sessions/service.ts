import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { AlertService } from '../alerts/service.js';
import { auditedReason, redactText, redactValue, requireStorableText, storable } from '../audit/redact.js';
import { type Pool, REQUEST_QUERY_TIMEOUT_MS, withTransaction } from '../db/pool.js';
import type { HaltTrigger } from '../decisions/types.js';
import { AppError, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import { isUuid } from '../ids.js';
import { type CallSummary, maskedCallSummary } from '../limits/summary.js';
import { RepeatedLog } from '../log-repeats.js';
import type { CompiledPolicy } from '../policy/index.js';
import { redisFailure } from '../redis/failure.js';
import type { AgentPrincipal, GatewayPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { declaredServerWarnings, keptDeclaredServers, type ScopeWarning } from './declared-servers.js';
import { type EnsureResult, StateEpoch } from './epoch.js';
import { HaltJournal } from './halt-journal.js';
import { type MirrorHalt, type OpenSessionInRedis, SessionMirror } from './mirror.js';
import { type HaltRow, IDLE_SWEEP_ACTOR, type IdleSession, type SessionListRow, type SessionRow, type SessionState, sessionStore } from './store.js';

// Rules for sessions and halts. Postgres is the record, Redis (SessionMirror) is what decisions read;
// every change writes both, Postgres first for halts (the record must exist) and inside the Postgres
// transaction for resumes (a resume that did not reach Redis is rolled back and reported).

export interface SessionSettings {
  /** A session with no allowed call for this long closes (its Redis keys expire; Postgres follows within a minute). */
  idleTimeoutMs: number;
  /** Default caps when `capsFor` is not given (the policy's token limits). */
  maxOpenPerToken: number;
  maxNewPerHour: number;
  /** Test-only: length of the "per hour" window for newly opened sessions. */
  newSessionWindowMs?: number;
  /**
   * Where this replica journals the halts Postgres did not take (DATA_DIR) and the database they belong
   * to (names the file). Without it they are journaled in Redis only (tests building a service alone).
   */
  journalDir?: string;
  database?: string;
  /** The time a halt without one is stamped with (ClockOffset.now; default the wall clock). */
  now?: () => number;
}

export interface SessionCaps {
  maxOpen: number | null;
  maxNewPerHour: number | null;
}

export interface OpenScope {
  read_only?: boolean;
  servers?: string[];
  purpose?: string;
}

export interface OpenedSession {
  session_id: string;
  state: 'active' | 'halted';
  trigger: string | null;
  read_only: boolean;
  servers: string[] | null;
  purpose: string;
  created_at: Date;
  idle_timeout_s: number;
  message: string;
  /** Declared servers this token will be refused (declared-servers.ts); absent when there are none. */
  warnings?: ScopeWarning[];
}

export interface HaltInput {
  tokenId: string;
  /** The session whose call fired the trigger. Halted only if it belongs to tokenId. */
  sessionId?: string;
  trigger: HaltTrigger;
  /** Also halt the token: every session of it, and sessions opened later (policy `halt_token_on`). */
  haltToken: boolean;
  /** What the operator sees: counts so far, the last 3 calls, the message. */
  summary: Record<string, unknown>;
  /**
   * When the halt fired (ISO 8601), set by halt(). A journaled halt recorded later (replayed) is not
   * recorded over a resume made after it: the operator lifted it already.
   */
  at?: string;
}

export interface HaltResult {
  /** The session was this token's and is halted now (by this or an earlier trigger). */
  session_halted: boolean;
  session_id: string | null;
  token_halted: boolean;
  token_halt_id: string | null;
  /**
   * False when Postgres was unavailable (Redis enforces the halt, the record is retried every second), did
   * not answer within HALT_RECORD_WAIT_MS (the record goes on after the answer; journaled and retried if it
   * fails), or refused even the halt without its summary (logged; a resume still lifts it).
   */
  recorded: boolean;
  /** False when Redis was unavailable: decisions deny anyway; the halt is re-applied when it is back. */
  enforced: boolean;
  /**
   * Set when this call halted nothing new: the token (haltToken) or else the session was already halted,
   * by `trigger` at `since` (Postgres's record). Callers raise no second alert for it. Unset when the halt
   * is new, or when Postgres could not say (not recorded).
   */
  already_halted?: { trigger: string; since: Date };
}

/** The halt Redis is to re-apply, with the session's fields when the record found it (a session Redis lost is re-created halted). */
const withRecordFields = (mirror: MirrorHalt, record: HaltRecord | undefined): MirrorHalt => (record?.session ? { ...mirror, sessionId: record.session.id, fields: record.session } : mirror);

/** What recording a halt in Postgres found and did (see HaltResult). */
interface HaltRecord {
  session: SessionRow | undefined;
  tokenHaltId: string | null;
  earlier: { trigger: string; since: Date } | undefined;
  /** Redis written again under the lock: whether the session was found there; false when Redis failed. */
  reapplied: { bound: boolean } | false;
}

export interface HaltHistoryEntry {
  trigger: string;
  halted_at: Date;
  resumed_at: Date | null;
  resumed_by: string | null;
  resume_reason: string | null;
}

export interface SessionSummaryView {
  id: string;
  token_id: string;
  project_id: string;
  gateway_id: string | null;
  read_only: boolean;
  servers: string[] | null;
  purpose: string;
  /** Effective state: "halted" also when only the token is halted. */
  state: SessionState;
  trigger: string | null;
  /** Whose halt stops this session: its own, or its token's. */
  halted_by: 'session' | 'token' | null;
  halted_at: Date | null;
  token_halt: { trigger: string; halted_at: Date } | null;
  created_at: Date;
  closed_at: Date | null;
  /** `gateway:<id>`, `operator:<id>` or `idle-sweep`; null while open (and for sessions closed before migration 0013). */
  closed_by: string | null;
}

export interface SessionDetailView extends SessionSummaryView {
  halt_summary: Record<string, unknown> | null;
  /** Newest first; from Redis, or the snapshot taken at the halt when Redis no longer has them. */
  last_calls: CallSummary[];
  halts: HaltHistoryEntry[];
}

export interface ResumeSessionResult {
  session: SessionDetailView;
  resumed_trigger: string;
  token_still_halted: boolean;
  message: string;
}

export interface ResumeTokenResult {
  token_id: string;
  /** The token halt that was lifted (null when only sessions were halted). */
  token_halt: { trigger: string; halted_at: Date; session_id: string | null } | null;
  sessions_resumed: string[];
  message: string;
}

/** Why a token cannot open a session now: the cap POST /v1/sessions would answer 429 TOO_MANY_SESSIONS for. */
export type NewSessionRefusal =
  | { limit: 'max_open_sessions'; max: number; open: number }
  | { limit: 'max_new_sessions_per_hour'; max: number; opened: number; retryAfterS: number };

export interface CloseSessionResult {
  session: SessionSummaryView;
  /** It was closed before this request (idled out, or closed by an earlier request). */
  already_closed: boolean;
  message: string;
}

/** Who closes a session: its gateway with the session's own agent token, or an operator. */
export type SessionCloser = { agent: AgentPrincipal; gateway: GatewayPrincipal } | { operator: OperatorPrincipal };

/** What the audit module records for admin actions (ctx.audit.recordAdmin); wired by app.ts. */
export interface AdminRecord {
  /** An operator, or a named part of the system ("gateway:<id>" for a gateway closing its session). */
  actor: OperatorPrincipal | string;
  action: string;
  target: string;
  projectId: string;
  details: Record<string, unknown>;
}

const RETRY_QUEUE_MAX = 10_000;
/**
 * The longest a halting call waits for its halt's Postgres record before it is answered (its denial,
 * the halt in force in Redis, `recorded: false`). Well under a gateway's 2 s decision budget
 * (docs/gateway.md): a Postgres that hangs holds the record for REQUEST_QUERY_TIMEOUT_MS (5 s), and the
 * agent must get the denial with its code, not its gateway's timeout. The record goes on in the
 * background; if it fails, the halt is journaled and retried as any halt Postgres did not take.
 */
export const HALT_RECORD_WAIT_MS = 1_000;
/** The request path's Postgres writes (halts, session opens and closes): a Postgres that hangs fails them in seconds, not after the pool's 30 s. */
const REQUEST_TX = { queryTimeoutMs: REQUEST_QUERY_TIMEOUT_MS } as const;

export const operatorActorOf = (op: OperatorPrincipal): string => `operator:${op.id}`;

/** Postgres refused a value (SQLSTATE class 22: NUL or a bad escape in text or jsonb, bad input syntax): the same write can never succeed. */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('22');
}

/** A row names one that is not there (SQLSTATE 23503): a halt of an agent token the database does not have. */
function isForeignKeyError(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === '23503';
}

const finiteOrNull = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * What a halt stores as its summary (token_halts, session_halts, sessions.halt_summary): strings made
 * storable and credential-looking text masked, as in the audit trail, because the message quotes what
 * the agent chose (resource names, paths, reported errors) and Postgres refuses NUL and unpaired
 * surrogates in jsonb: one such path made the halt's record fail on every retry, leaving a halt in Redis
 * that no operator could see or resume. `calls_so_far` holds our own counters: limit names are kept as
 * they are and only numbers kept under them.
 */
export function storableHaltSummary(summary: unknown): Record<string, unknown> {
  if (summary === null || typeof summary !== 'object' || Array.isArray(summary)) return {};
  const { calls_so_far: counts, ...rest } = summary as Record<string, unknown>;
  const out = redactValue(rest) as Record<string, unknown>;
  if (counts !== null && typeof counts === 'object' && !Array.isArray(counts)) {
    const kept: Record<string, { used: number | null; max: number | null }> = {};
    for (const [name, use] of Object.entries(counts as Record<string, unknown>)) {
      const u = (use ?? {}) as { used?: unknown; max?: unknown };
      kept[storable(name)] = { used: finiteOrNull(u.used), max: finiteOrNull(u.max) };
    }
    out['calls_so_far'] = kept;
  }
  return out;
}

function summaryView(row: SessionListRow): SessionSummaryView {
  const tokenHalted = row.token_halt_trigger !== null && row.state === 'active';
  return {
    id: row.id,
    token_id: row.token_id,
    project_id: row.project_id,
    gateway_id: row.gateway_id,
    read_only: row.read_only,
    // Declared servers and a purpose stored in clear by an earlier version are masked here too.
    servers: row.servers?.map((name) => redactText(name)) ?? null,
    purpose: redactText(row.purpose),
    state: tokenHalted ? 'halted' : row.state,
    trigger: row.trigger ?? (tokenHalted ? row.token_halt_trigger : null),
    halted_by: row.state === 'halted' ? 'session' : tokenHalted ? 'token' : null,
    halted_at: row.halted_at ?? (tokenHalted ? row.token_halted_at : null),
    token_halt: row.token_halt_trigger && row.token_halted_at ? { trigger: row.token_halt_trigger, halted_at: row.token_halted_at } : null,
    created_at: row.created_at,
    closed_at: row.closed_at,
    closed_by: row.closed_by,
  };
}

export class SessionService {
  readonly mirror: SessionMirror;
  readonly epoch: StateEpoch;
  private recordAdmin: ((r: AdminRecord) => Promise<void> | void) | undefined;
  private alerts: Pick<AlertService, 'resolve'> | undefined;
  private capsFor: (() => SessionCaps) | undefined;
  private readonly pendingRecords: HaltInput[] = [];
  private readonly pendingMirror: MirrorHalt[] = [];
  /** Halt records still going on after their halting calls were answered (HALT_RECORD_WAIT_MS). */
  private readonly lateRecords = new Set<Promise<unknown>>();
  /** `session not opened: …`: once per request during an outage, so at most one line per cause and interval. */
  private readonly notOpenedLog = new RepeatedLog();

  /** Redis list of halts Postgres did not take yet (HaltInput JSON), drained by every replica's tick. */
  private readonly journalKey: string;
  /** This replica's disk copy of them (halt-journal.ts); opened on first use. */
  private localJournal: Promise<HaltJournal | undefined> | undefined;
  private draining: Promise<void> | undefined;
  private journalFailing = false;

  constructor(
    private readonly pool: Pool,
    redis: SessionMirror['redis'],
    private readonly log: Pick<Logger, 'info' | 'warn' | 'error'>,
    private readonly settings: SessionSettings,
  ) {
    this.mirror = new SessionMirror(redis, settings.idleTimeoutMs);
    this.journalKey = redis.key('halts', 'unrecorded');
    this.epoch = new StateEpoch(pool, this.mirror, log, { idleMs: settings.idleTimeoutMs, recordIdleClose: (s) => this.recordIdleClose(s) });
    this.epoch.onTick(() => this.retryPending());
    // Before Redis is rebuilt from Postgres, Postgres gets the halts this replica journaled on disk, and
    // a late record still waiting on Postgres has committed or been journaled: a reload that copied
    // Postgres meanwhile lifted its halt until the journal's retry recorded it.
    this.epoch.beforeReload(async () => {
      await this.settleLateRecords();
      await this.drainLocalJournal();
    });
  }

  /** Audit hook for resumes (the lead wires ctx.audit.recordAdmin). */
  setAdminRecorder(record: (r: AdminRecord) => Promise<void> | void): void {
    this.recordAdmin = record;
  }

  /** Where a resume acknowledges the SESSION_HALTED alerts of the halts it lifted (app.ts wires ctx.alerts). */
  setAlerts(alerts: Pick<AlertService, 'resolve'>): void {
    this.alerts = alerts;
  }

  /** Per-token session caps from the policy (token.maxOpenSessions, token.maxNewSessionsPerHour). */
  setCapsSource(capsFor: () => SessionCaps): void {
    this.capsFor = capsFor;
  }
  /** The caps a new session is checked against: the policy's (setCapsSource), else the configured defaults. */
  get caps(): SessionCaps {
    return this.capsFor?.() ?? { maxOpen: this.settings.maxOpenPerToken, maxNewPerHour: this.settings.maxNewPerHour };
  }

  /**
   * Why the token could not open a session now, given how many it has open (as openSessionsOf counts
   * them): the caps and window open() applies, read without opening or counting anything; null when it
   * could. For explain. Throws if Redis is unavailable.
   */
  async newSessionRefusal(tokenId: string, open: number): Promise<NewSessionRefusal | null> {
    const { maxOpen, maxNewPerHour } = this.caps;
    if (maxOpen !== null && maxOpen > 0 && open >= maxOpen) return { limit: 'max_open_sessions', max: maxOpen, open };
    if (maxNewPerHour === null || maxNewPerHour <= 0) return null;
    const w = await this.mirror.openedInWindow(tokenId, this.settings.newSessionWindowMs);
    if (w.opened < maxNewPerHour) return null;
    return { limit: 'max_new_sessions_per_hour', max: maxNewPerHour, opened: w.opened, retryAfterS: Math.max(1, Math.ceil(w.msLeft / 1000)) };
  }


  start(): void {
    this.epoch.start();
  }

  async stop(): Promise<void> {
    this.notOpenedLog.flush();
    await this.epoch.stop();
    // A late record that fails now is journaled (Redis is closed after this, the pool after that).
    await this.settleLateRecords();
    await this.draining?.catch(() => {});
    // Released, not forgotten: a halt that fails to record during shutdown is still appended, and the
    // file (then unlocked) is adopted by the next start.
    const journal = await this.localJournal?.catch(() => undefined);
    await journal?.release();
  }

  /** This replica's disk journal of unrecorded halts; undefined when none is configured or DATA_DIR is unusable (logged). */
  private journal(): Promise<HaltJournal | undefined> {
    const dir = this.settings.journalDir;
    if (!dir) return Promise.resolve(undefined);
    this.localJournal ??= HaltJournal.open(dir, this.settings.database ?? 'default').then(
      (j) => {
        this.journalFailing = false;
        if (j.size > 0) this.log.warn({ halts: j.size }, 'the halt journal in DATA_DIR holds halts Postgres never took (an earlier run, or a process that died); recording them');
        if (j.unreadable > 0) this.log.error({ lines: j.unreadable }, 'halt journal lines that do not parse were skipped (a write torn by a crash is never acknowledged)');
        return j;
      },
      (err: unknown) => {
        // Tried again on next use; said once per outage.
        this.localJournal = undefined;
        if (!this.journalFailing) this.log.error({ err: (err as Error).message, dir }, 'halt journal in DATA_DIR unavailable: halts Postgres does not take are journaled in Redis only');
        this.journalFailing = true;
        return undefined;
      },
    );
    return this.localJournal;
  }

  /** How many halts this replica's disk journal holds (its own and adopted ones) not yet recorded in Postgres. */
  async journaledHalts(): Promise<number> {
    return (await this.journal())?.size ?? 0;
  }

  /** Waits for the state epoch (reloading if needed). Tests and startup use it; decisions never wait. */
  ensureState(): Promise<EnsureResult> {
    return this.epoch.ensure();
  }

  /**
   * Opens a session bound to the agent's token. The id is ours (uuid v7). An mcp_ro_ token's session is
   * always read-only. If the token is halted the session is created halted, with the token's trigger
   * (DESIGN.md §4: reconnecting does not escape a halt), and the answer says so with 201. Its
   * `session.opened` row is durable before the session is committed: when the audit trail cannot take
   * it, nothing is opened (503), as a call whose INTENT cannot be written is denied.
   *
   * With `policy`, each declared server is checked against the token's role (seed 001 pattern 1): those
   * it will be refused are `warnings` of the answer and of the audit row. The session opens all the same
   * (declared-servers.ts says why); their calls are denied and halt as any other.
   */
  async open(agent: AgentPrincipal, gateway: GatewayPrincipal | null, scope: OpenScope, policy?: CompiledPolicy): Promise<OpenedSession> {
    requireStorableText('purpose', scope.purpose);
    const readOnly = scope.read_only === true || agent.tokenType === 'ro';
    const servers = scope.servers ? keptDeclaredServers(policy, scope.servers) : null;
    const warnings = policy ? declaredServerWarnings(policy, agent, scope.servers) : [];
    // Masked like the audit row's purpose (docs/audit.md, "Redaction"): Redis, Postgres and every view
    // of the session hold what the audit trail holds.
    const purpose = redactText(scope.purpose ?? '');
    const caps = this.caps;
    const id = uuidv7();
    let answer: Awaited<ReturnType<SessionMirror['open']>>;
    try {
      answer = await this.mirror.open({
        tokenId: agent.id,
        sessionId: id,
        readOnly,
        servers,
        purpose,
        maxOpen: caps.maxOpen ?? 0,
        maxNewPerHour: caps.maxNewPerHour ?? 0,
        ...(this.settings.newSessionWindowMs ? { hourMs: this.settings.newSessionWindowMs } : {}),
      });
    } catch (err) {
      // The driver's error names hosts and ports: for the log, not for the gateway (docs/operations.md).
      const message = (err as Error).message;
      this.notOpenedLog.note('redis', (repeat) => this.log.error({ err: message, token_id: agent.id, ...repeat }, 'session not opened: Redis unavailable'));
      const failure = redisFailure(err);
      // An error answer (OOM, READONLY ...) is named by its code: Redis answered, it is not "unavailable".
      if (failure.kind === 'error') throw new AppError('SERVICE_UNAVAILABLE', `Redis answered with an error (${failure.code}), so no session was opened (fail closed); try again shortly.`);
      throw new AppError('SERVICE_UNAVAILABLE', 'Redis is unavailable, so no session was opened (fail closed); try again shortly.');
    }
    if (answer.r === 'NO_EPOCH') {
      this.epoch.requestReload();
      throw new AppError('SERVICE_UNAVAILABLE', 'Redis lost its state and sessions are being reloaded from Postgres; retry in a few seconds.');
    }
    if (answer.r === 'TOO_MANY_OPEN') {
      throw new AppError(
        'TOO_MANY_SESSIONS',
        `This token already has ${answer.n} open sessions (limit ${caps.maxOpen}); reuse one, close one (POST /v1/sessions/:id/close: its gateway, or an operator), or wait until one idles out (${Math.round(this.settings.idleTimeoutMs / 1000)} s without an allowed call).`,
        {
          limit: 'max_open_sessions',
          max: caps.maxOpen,
        },
      );
    }
    if (answer.r === 'TOO_MANY_NEW') {
      const retryAfterS = Math.max(1, Math.ceil(answer.retry / 1000));
      throw new AppError(
        'TOO_MANY_SESSIONS',
        `This token opened ${answer.n} sessions this hour (limit ${caps.maxNewPerHour}); retry after ${retryAfterS} s.`,
        { limit: 'max_new_sessions_per_hour', max: caps.maxNewPerHour, retry_after_s: retryAfterS },
        { retryAfterS },
      );
    }
    let state = answer.st;
    let trigger = answer.trg || null;
    let row: SessionRow;
    let unrecorded = false;
    try {
      row = await withTransaction(this.pool, async (c) => {
        // Under the halt-copy lock a resume takes exclusively: a token resume that ran after Redis made
        // this session halted (its token was) and before this row lifted the session there as a halt with
        // no record; the row must then say active, or Postgres and every operator view would call halted a
        // session the gate lets through (race review). Read again under the lock, Redis is what a resume
        // left, and a resume after this commit finds the row.
        await sessionStore.lockHaltCopies(c, 'copy');
        if (state === 'halted' && !(await this.mirror.sessionHalt(id))) {
          state = 'active';
          trigger = null;
        }
        const inserted = await sessionStore.insertSession(c, { id, token_id: agent.id, gateway_id: gateway?.id ?? null, read_only: readOnly, servers, purpose, state, trigger });
        if (state === 'halted') {
          const tokenHalt = await sessionStore.activeTokenHalt(c, agent.id);
          await sessionStore.haltSession(c, {
            id: uuidv7(),
            sessionId: id,
            tokenId: agent.id,
            trigger: trigger ?? 'UNKNOWN',
            tokenHaltId: tokenHalt?.id ?? null,
            summary: { message: 'opened while its token was halted' },
          });
        }
        // Inside the transaction, durable before it commits: no session exists without its row (its
        // scope is in no other record once sessions retention deletes the row). The audit writer has its
        // own pool, so the wait holds no connection it needs.
        try {
          await this.recordAdmin?.({
            actor: gateway ? `gateway:${gateway.id}` : 'sessions',
            action: 'session.opened',
            target: `session:${id}`,
            projectId: agent.projectId,
            details: {
              token_id: agent.id,
              read_only: readOnly,
              servers,
              purpose,
              state,
              ...(trigger ? { trigger } : {}),
              gateway_id: gateway?.id ?? null,
              ...(warnings.length > 0 ? { warnings } : {}),
            },
          });
        } catch (err) {
          unrecorded = true;
          throw err;
        }
        return inserted;
      }, REQUEST_TX);
    } catch (err) {
      // Nobody has the id yet; drop the Redis half so the record and the mirror agree.
      await this.mirror.redis.redis.del(this.mirror.redis.key('s', id)).catch(() => {});
      if (unrecorded) {
        // As a decision whose INTENT cannot be written is denied: no session the audit trail does not know of.
        const message = (err as Error).message;
        this.notOpenedLog.note('audit', (repeat) => this.log.error({ err: message, token_id: agent.id, ...repeat }, 'session not opened: its audit row could not be written'));
        throw new AppError('SERVICE_UNAVAILABLE', 'The audit trail is unavailable, so no session was opened (fail closed); try again shortly.');
      }
      const message = (err as Error).message;
      this.notOpenedLog.note('postgres', (repeat) => this.log.error({ err: message, token_id: agent.id, ...repeat }, 'session not opened: Postgres unavailable'));
      throw new AppError('SERVICE_UNAVAILABLE', 'Postgres is unavailable, so no session was opened; try again shortly.');
    }
    const halted = row.state === 'halted';
    const refused = warnings.length === 0 ? '' : ` ${warnings.length === 1 ? 'One declared server' : `${warnings.length} declared servers`} will be refused to this token: see warnings.`;
    return {
      session_id: row.id,
      state: halted ? 'halted' : 'active',
      trigger: row.trigger,
      read_only: row.read_only,
      servers: row.servers,
      purpose: row.purpose,
      created_at: row.created_at,
      idle_timeout_s: Math.round(this.settings.idleTimeoutMs / 1000),
      message: halted
        ? `This token is halted (${row.trigger}); the new session is halted too. An operator must resume the token: POST /v1/keys/${agent.id}/resume.${refused}`
        : `Session open${readOnly ? ' (read-only)' : ''}${servers ? ` for ${servers.join(', ')}` : ''}; it closes after ${Math.round(this.settings.idleTimeoutMs / 1000)} s without an allowed call (denied calls do not keep it open).${refused}`,
      ...(warnings.length > 0 ? { warnings } : {}),
    };
  }

  /**
   * Halts a session (only if it belongs to tokenId: naming another token's session halts nothing of
   * it) and, with haltToken, the token. Redis first (what decisions read: the halt is in force for every
   * replica one round trip after the trigger, even while Postgres is slow), then Postgres (the record
   * that survives a Redis restart); when Redis had lost the session, a second write re-creates it from
   * the record. Idempotent: the first trigger of a halt in force is kept. Never throws for an
   * unavailable store; the result says what is pending and the service retries it. Waits for the record
   * at most HALT_RECORD_WAIT_MS: a Postgres that hangs must not hold the halting call's denial past a
   * gateway's decision budget; the record then goes on in the background (recordOrJournal).
   */
  async halt(halt: HaltInput): Promise<HaltResult> {
    // Made storable before anything keeps it (Postgres, the retry journal): see storableHaltSummary.
    const input: HaltInput = { ...halt, summary: storableHaltSummary(halt.summary), at: halt.at ?? new Date((this.settings.now ?? Date.now)()).toISOString() };
    const sessionId = input.sessionId && isUuid(input.sessionId) ? input.sessionId : null;
    // The script checks the owner: another token's session id halts nothing of it.
    const mirror: MirrorHalt = { tokenId: input.tokenId, sessionId, trigger: input.trigger, haltToken: input.haltToken };
    let enforced = true;
    let bound = false;
    try {
      [bound = false] = await this.mirror.halt([mirror]);
    } catch (err) {
      enforced = false;
      this.log.error({ err: (err as Error).message, token_id: input.tokenId }, 'halt not written to Redis; re-applied when Redis answers');
    }
    const recording = this.recordOrJournal(input);
    const outcome = await this.recordedInTime(recording);
    if (outcome === 'late') {
      // Answered unrecorded, as when Postgres fails: Redis enforces the halt (or its retry re-applies it).
      this.lateRecords.add(recording);
      void recording.then((late) => this.afterLateRecord(input, mirror, late)).finally(() => this.lateRecords.delete(recording));
    }
    const record = typeof outcome === 'object' ? outcome : undefined;
    // With the record, Redis got the halt again (with the session's fields, so a session it had lost is
    // re-created halted) under the halt-copy lock: see recordHalt.
    if (record?.reapplied) {
      enforced = true;
      bound = record.reapplied.bound;
    } else if (record?.reapplied === false) {
      enforced = false;
    }
    if (!enforced && this.pendingMirror.length < RETRY_QUEUE_MAX) this.pendingMirror.push(withRecordFields(mirror, record));
    const sessionHalted = record ? record.session !== undefined : bound;
    return {
      session_halted: sessionHalted,
      session_id: sessionHalted ? sessionId : null,
      token_halted: input.haltToken,
      token_halt_id: record?.tokenHaltId ?? null,
      recorded: record !== undefined,
      enforced,
      ...(record?.earlier ? { already_halted: record.earlier } : {}),
    };
  }

  /**
   * Records the halt in Postgres; when Postgres does not take it, journals it (Redis, where every
   * replica's retry finds it, and this replica's disk) to be retried every second. 'refused' when Postgres
   * refused even the bare halt (logged; retrying cannot help). Never throws.
   */
  private async recordOrJournal(input: HaltInput): Promise<HaltRecord | 'refused' | 'journaled'> {
    try {
      return (await this.recordHaltStorably(input)) ?? 'refused';
    } catch (err) {
      this.log.error({ err: (err as Error).message, token_id: input.tokenId, trigger: input.trigger }, 'halt not recorded in Postgres; retrying every second');
      // Kept in Redis, where every replica's retry finds it: a record kept only in this process's memory
      // was lost with a restart, leaving a halt in Redis that no resume could lift (Postgres knew nothing).
      // And on this replica's disk: the Redis copy is lost with Redis, and a Redis rebuilt from a Postgres
      // that never got the halt would lift it.
      const [journaled, onDisk] = await Promise.all([
        this.mirror.redis.redis
          .rpush(this.journalKey, JSON.stringify(input))
          .then(() => true)
          .catch(() => false),
        this.journalOnDisk(input),
      ]);
      if (!journaled && !onDisk && this.pendingRecords.length < RETRY_QUEUE_MAX) this.pendingRecords.push(input);
      return 'journaled';
    }
  }

  /** The record's outcome if it finishes within HALT_RECORD_WAIT_MS, else 'late' (it goes on). */
  private async recordedInTime(recording: Promise<HaltRecord | 'refused' | 'journaled'>): Promise<HaltRecord | 'refused' | 'journaled' | 'late'> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), HALT_RECORD_WAIT_MS);
    });
    try {
      return await Promise.race([recording, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A record that finished after its halting call was answered: logged, and Redis re-applied if its second write failed. */
  private afterLateRecord(input: HaltInput, mirror: MirrorHalt, late: HaltRecord | 'refused' | 'journaled'): void {
    if (typeof late !== 'object') return; // journaled or refused: logged already
    this.log.warn({ token_id: input.tokenId, trigger: input.trigger }, `halt recorded in Postgres after its call was answered (it took longer than ${HALT_RECORD_WAIT_MS} ms)`);
    if (late.reapplied === false && this.pendingMirror.length < RETRY_QUEUE_MAX) this.pendingMirror.push(withRecordFields(mirror, late));
  }

  /** Until the halt records still going on after their calls were answered have finished or been journaled. */
  private async settleLateRecords(): Promise<void> {
    await Promise.all([...this.lateRecords]);
  }

  /**
   * The halt's Postgres record, and Redis written again before it commits, both under the halt-copy lock
   * (shared: halts do not wait for each other) that a resume takes exclusively. A resume that ran after
   * the first Redis write and before this found a halt with no record and lifted it; committing the
   * record alone then left Postgres (and every operator view) saying halted while the gate allowed the
   * calls until the reconciler's next copy (race review). Written again here, the halt is in force
   * again and matches its record; a resume after this commit finds the record and lifts both. The lock is
   * taken first, as a resume takes it, so the two never wait for each other's rows (a deadlock did).
   */
  private async recordHalt(input: HaltInput, sessionId: string | null): Promise<HaltRecord> {
    return withTransaction(this.pool, async (c) => {
      await sessionStore.lockHaltCopies(c, 'copy');
      // A journaled halt recorded late: what an operator resumed after it fired stays resumed.
      const at = typeof input.at === 'string' ? new Date(input.at) : undefined;
      const resumed = at && !Number.isNaN(at.getTime()) ? await sessionStore.resumedSince(c, input.tokenId, sessionId, at) : { session: false, token: false };
      if (resumed.session) sessionId = null;
      const haltToken = input.haltToken && !resumed.token;
      const locked = sessionId ? await sessionStore.lockSession(c, sessionId, input.tokenId) : undefined;
      const session = locked && locked.state !== 'closed' ? locked : undefined;
      let tokenHaltId: string | null = null;
      let earlier: HaltRecord['earlier'];
      if (haltToken) {
        const { halt, created } = await sessionStore.haltToken(c, { id: uuidv7(), tokenId: input.tokenId, trigger: input.trigger, sessionId: session?.id ?? null, summary: input.summary });
        tokenHaltId = halt.id;
        if (!created) earlier = { trigger: halt.trigger, since: halt.halted_at };
      } else if (session?.state === 'halted' && session.halted_at) {
        earlier = { trigger: session.trigger ?? input.trigger, since: session.halted_at };
      }
      if (session && session.state !== 'halted') {
        await sessionStore.haltSession(c, { id: uuidv7(), sessionId: session.id, tokenId: input.tokenId, trigger: input.trigger, tokenHaltId, summary: input.summary });
      }
      const again: MirrorHalt = { tokenId: input.tokenId, sessionId: session?.id ?? sessionId, trigger: input.trigger, haltToken, ...(session ? { fields: session } : {}) };
      let reapplied: HaltRecord['reapplied'];
      try {
        const [bound = false] = await this.mirror.halt([again]);
        reapplied = { bound };
      } catch (err) {
        // The record commits all the same: the retry re-applies it (halt() queues it), and until then the
        // first write, if it reached Redis, is in force.
        reapplied = false;
        this.log.error({ err: (err as Error).message, token_id: input.tokenId }, 'halt not written to Redis again with its record; re-applied when Redis answers');
      }
      return { session, tokenHaltId, earlier, reapplied };
    }, REQUEST_TX);
  }

  /**
   * Records a halt, never failing for good on what it carries. A value Postgres refuses (SQLSTATE class
   * 22) fails the same way on every retry, and the journal is drained in order: such an entry, retried
   * forever, kept every halt behind it out of Postgres and left a halt in Redis that no resume could lift
   * (resume answered 409, Postgres knew of no halt). So: as it is; then once more with every value made
   * storable; then the halt alone, its summary replaced by a note (an operator can see and resume it;
   * the call itself is in the audit trail). Undefined when Postgres refused even that (logged: resume
   * still lifts what Redis enforces), and when the token is not in the database (a journal older than a
   * restore; logged). Throws on any other error (Postgres unavailable): the caller retries.
   */
  private async recordHaltStorably(input: HaltInput): Promise<HaltRecord | undefined> {
    const sessionId = typeof input.sessionId === 'string' && isUuid(input.sessionId) ? input.sessionId : null;
    let refusal: unknown;
    try {
      return await this.recordHalt(input, sessionId);
    } catch (err) {
      if (isForeignKeyError(err) && (await sessionStore.tokenProject(this.pool, input.tokenId)) === undefined) {
        // Only a journaled halt can name a token Postgres does not have (a live one was authenticated):
        // its DATA_DIR outlived the database, restored from a backup older than the token
        // (docs/operations.md, section 9). Retried, it failed for ever and held the reload of Redis, so
        // every decision denied; the token's credential is refused here anyway (unknown).
        this.log.error(
          { token_id: input.tokenId, session_id: sessionId, trigger: input.trigger, halted_at: input.at ?? null },
          'journaled halt not recorded: this database has no such agent token (restored from a backup older than the token?); its credential is refused here, so the halt is dropped',
        );
        return undefined;
      }
      if (!isDataError(err)) throw err;
      refusal = err;
    }
    const trigger = storable(String(input.trigger)) as HaltTrigger;
    const fields = { token_id: input.tokenId, trigger, err: (refusal as Error).message };
    try {
      const record = await this.recordHalt({ ...input, trigger, summary: storableHaltSummary(input.summary) }, sessionId);
      this.log.warn(fields, 'halt recorded in Postgres with its summary made storable (Postgres refused a value of it)');
      return record;
    } catch (err) {
      if (!isDataError(err)) throw err;
      refusal = err;
    }
    const summary = {
      message: `The summary of this halt could not be stored (Postgres refused it: ${storable((refusal as Error).message)}); the call that fired it is in the audit trail.`,
    };
    try {
      const record = await this.recordHalt({ ...input, trigger, summary }, sessionId);
      this.log.error({ ...fields, err: (refusal as Error).message }, 'halt recorded in Postgres without its summary: Postgres refused it even made storable');
      return record;
    } catch (err) {
      if (!isDataError(err)) throw err;
      this.log.error(
        { ...fields, err: (err as Error).message },
        'halt could not be recorded in Postgres at all and is not retried; Redis still enforces it: lift it with POST /v1/keys/:id/resume or POST /v1/sessions/:id/resume',
      );
      return undefined;
    }
  }

  private async retryPending(): Promise<void> {
    // Halt records any replica could not write to Postgres (see halt()), oldest first; one taken by a
    // replica that dies before recording it is lost, a window of one Postgres transaction.
    for (let i = 0; i < 100; i++) {
      const raw = await this.mirror.redis.redis.lpop(this.journalKey).catch(() => null); // Redis away: the gate denies anyway
      if (raw === null) break;
      let input: HaltInput;
      try {
        input = JSON.parse(raw) as HaltInput;
      } catch {
        this.log.error({ entry: storable(raw.slice(0, 200)) }, 'unreadable entry of the halt retry journal dropped');
        continue;
      }
      try {
        await this.recordHaltStorably(input);
      } catch (err) {
        await this.mirror.redis.redis.lpush(this.journalKey, raw);
        throw err;
      }
    }
    while (this.pendingRecords.length > 0) {
      await this.recordHaltStorably(this.pendingRecords[0]!);
      this.pendingRecords.shift();
    }
    await this.drainLocalJournal();
    if (this.pendingMirror.length > 0) {
      const batch = this.pendingMirror.splice(0);
      try {
        await this.mirror.halt(batch);
      } catch (err) {
        this.pendingMirror.unshift(...batch);
        throw err;
      }
    }
  }

  /** Appends the halt to this replica's disk journal, synced; false when there is none or the disk refused it (logged). */
  private async journalOnDisk(input: HaltInput): Promise<boolean> {
    const journal = await this.journal();
    if (!journal) return false;
    try {
      await journal.append({ id: uuidv7(), ...input });
      return true;
    } catch (err) {
      this.log.error({ err: (err as Error).message, token_id: input.tokenId }, 'halt not written to the halt journal in DATA_DIR; it is journaled in Redis only');
      return false;
    }
  }

  /**
   * Records in Postgres the halts this replica's disk journal holds (and those of dead processes it
   * adopted), oldest first, removing each once recorded. Runs on every tick, and before any reload of
   * Redis from Postgres (a halt recorded first is then copied with the rest). Throws when Postgres does
   * not take them: a reload then sets no epoch, and the gate keeps denying.
   */
  drainLocalJournal(): Promise<void> {
    this.draining ??= this.drainLocalJournalOnce().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private async drainLocalJournalOnce(): Promise<void> {
    const journal = await this.journal();
    if (!journal) return;
    const adopted = await journal.adoptOrphans().catch(() => 0);
    if (adopted > 0) this.log.warn({ halts: adopted }, 'adopted the halt journal of a process that is gone; recording its halts in Postgres');
    const entries = journal.entries;
    if (entries.length === 0) return;
    const done = new Set<string>();
    try {
      for (const entry of entries) {
        await this.recordHaltStorably(entry as unknown as HaltInput);
        done.add(entry.id);
      }
    } finally {
      if (done.size > 0) await journal.remove(done);
    }
    this.log.info({ halts: done.size }, 'halts journaled in DATA_DIR recorded in Postgres');
  }

  private async visibleSession(id: string, op?: OperatorPrincipal): Promise<SessionListRow> {
    if (!isUuid(id)) throw notFound('session');
    const row = await sessionStore.getSession(this.pool, id);
    if (!row || (op && !canSeeProject(op, row.project_id))) throw notFound('session');
    return row;
  }

  /** One session with its effective state, trigger, halt history and last 3 calls. */
  async get(id: string, op?: OperatorPrincipal): Promise<SessionDetailView> {
    const row = await this.visibleSession(id, op);
    const [lastCalls, halts] = await Promise.all([this.lastCalls(id, 3).catch(() => [] as CallSummary[]), sessionStore.sessionHalts(this.pool, id)]);
    // The halt's copy of the last calls: stored before tool names and errors were masked, masked here.
    const snapshot = Array.isArray(row.halt_summary?.['last_calls']) ? (row.halt_summary['last_calls'] as CallSummary[]).map((c) => (c && typeof c === 'object' ? maskedCallSummary(c) : c)) : undefined;
    return {
      ...summaryView(row),
      halt_summary: row.halt_summary && snapshot ? { ...row.halt_summary, last_calls: snapshot } : row.halt_summary,
      last_calls: lastCalls.length > 0 || !snapshot ? lastCalls : snapshot.slice(0, 3),
      // Resume reasons stored in clear by an earlier version are masked here too.
      halts: halts.map((h: HaltRow) => ({ trigger: h.trigger, halted_at: h.halted_at, resumed_at: h.resumed_at, resumed_by: h.resumed_by, resume_reason: h.resume_reason === null ? null : redactText(h.resume_reason) })),
    };
  }

  /** Sessions newest first; `cursor` is the last id of the previous page. Project-limited operators see their projects only. */
  async list(
    q: { state?: SessionState; token?: string; limit?: number; cursor?: string },
    op?: OperatorPrincipal,
  ): Promise<{ sessions: SessionSummaryView[]; next_cursor: string | null }> {
    const limit = Math.min(Math.max(q.limit ?? 50, 1), 500);
    const rows = await sessionStore.listSessions(this.pool, {
      ...(q.state ? { state: q.state } : {}),
      ...(q.token ? { tokenId: q.token } : {}),
      ...(q.cursor ? { before: q.cursor } : {}),
      projects: op?.projects ?? null,
      limit,
    });
    return { sessions: rows.map(summaryView), next_cursor: rows.length === limit ? rows[rows.length - 1]!.id : null };
  }

  /**
   * The token's sessions a call can still name (active or halted, as the gate sees them in Redis), the
   * most recently active first. Throws if Redis is unavailable.
   */
  async openSessionsOf(tokenId: string): Promise<OpenSessionInRedis[]> {
    const open = await this.mirror.openSessionsOf(tokenId);
    // Ids are UUID v7: among sessions equally recent (reloaded ones are all 0), the newer id first.
    return open.sort((a, b) => b.lastActiveAt - a.lastActiveAt || (a.sessionId < b.sessionId ? 1 : a.sessionId > b.sessionId ? -1 : 0));
  }

  /** The session's last n calls (newest first), as the gate recorded them. Throws if Redis is unavailable. */
  lastCalls(sessionId: string, n = 3): Promise<CallSummary[]> {
    return this.mirror.lastCalls(sessionId, n);
  }

  /** Records a call denied before the Redis step (e.g. by scope) on the session's list, if the session is this token's. */
  pushCall(tokenId: string, sessionId: string, entry: Omit<CallSummary, 'at'>): Promise<boolean> {
    return this.mirror.pushCall(tokenId, sessionId, entry);
  }

  /**
   * Lifts a session's own halt (fresh session totals, the token's cascade window cleared). A session
   * stopped only by its token's halt is a 409 naming POST /v1/keys/:id/resume. A halt Redis enforces
   * without a record in Postgres (its record never reached it) is lifted too: nothing else could.
   */
  async resumeSession(id: string, op: OperatorPrincipal, operatorReason: string): Promise<ResumeSessionResult> {
    requireStorableText('reason', operatorReason);
    // Stored in the halt rows and shown in GET /v1/sessions/:id: masked as in the audit row.
    const reason = redactText(operatorReason);
    const before = await this.visibleSession(id, op);
    const actor = operatorActorOf(op);
    let resumedTrigger = '';
    let onlyInRedis = false;
    await withTransaction(this.pool, async (c) => {
      await sessionStore.lockHaltCopies(c, 'resume');
      const s = await sessionStore.lockSession(c, id);
      if (s?.state === 'halted') {
        resumedTrigger = s.trigger ?? '';
        await sessionStore.resumeSession(c, id, actor, reason);
      } else {
        const enforced = await this.readRedis(() => this.mirror.sessionHalt(id));
        if (enforced?.tokenId !== before.token_id) {
          const hint = before.token_halt_trigger ? ` Its token is halted (${before.token_halt_trigger}): resume the token with POST /v1/keys/${before.token_id}/resume.` : '';
          throw new AppError('CONFLICT', `Session ${id} is not halted (state ${s?.state ?? before.state}).${hint}`);
        }
        resumedTrigger = enforced.trigger;
        onlyInRedis = true;
      }
      await this.applyResume(before.token_id, [id], false);
    });
    const tokenHalt = await sessionStore.activeTokenHalt(this.pool, before.token_id);
    const tokenTrigger = tokenHalt?.trigger ?? (await this.mirror.tokenHalt(before.token_id).catch(() => null));
    await this.audit({
      actor: op,
      action: 'session.resumed',
      target: `session:${id}`,
      projectId: before.project_id,
      details: { reason, trigger: resumedTrigger, token_id: before.token_id, token_still_halted: tokenTrigger !== null, ...(onlyInRedis ? { halt_recorded: false } : {}) },
    });
    // The session's own halts are over. A token halt this session fired (or one whose session Postgres does
    // not know) is not: its alert, the one with that trigger, stays open until the token is resumed.
    const tokenHaltHere = tokenTrigger !== null && (tokenHalt?.session_id ?? id) === id;
    await this.alerts?.resolve({
      kind: 'SESSION_HALTED',
      token_id: before.token_id,
      session_id: id,
      ...(tokenHaltHere ? { details_not: { trigger: tokenTrigger } } : {}),
      before: uuidv7(),
      actor: 'system:session-resume',
      note: `session resumed by ${op.name}: ${reason}`,
      audit: { resolved_by: actor, resolved_with: 'session.resumed' },
    });
    const unrecorded = onlyInRedis ? ` Redis enforced its halt (${resumedTrigger}) with no record in Postgres; lifted.` : '';
    return {
      session: await this.get(id, op),
      resumed_trigger: resumedTrigger,
      token_still_halted: tokenTrigger !== null,
      message: tokenTrigger
        ? `Session ${id} resumed, but its token is still halted (${tokenTrigger}); resume it with POST /v1/keys/${before.token_id}/resume.${unrecorded}`
        : `Session ${id} resumed; its limits start again from zero.${unrecorded}`,
    };
  }

  /**
   * Lifts the token's halt and every halted session of the token: those Postgres records, and those Redis
   * enforces without a record in Postgres (their record never reached it; nothing else could lift them).
   */
  async resumeToken(tokenId: string, op: OperatorPrincipal, operatorReason: string): Promise<ResumeTokenResult> {
    requireStorableText('reason', operatorReason);
    // Stored in the halt rows and shown in GET /v1/sessions/:id: masked as in the audit row.
    const reason = redactText(operatorReason);
    if (!isUuid(tokenId)) throw notFound('token');
    const project = await sessionStore.tokenProject(this.pool, tokenId);
    if (project === undefined || !canSeeProject(op, project)) throw notFound('token');
    const actor = operatorActorOf(op);
    const { halt, sessions, unrecorded } = await withTransaction(this.pool, async (c) => {
      await sessionStore.lockHaltCopies(c, 'resume');
      const halt = await sessionStore.resumeTokenHalt(c, tokenId, actor, reason);
      const recorded = await sessionStore.haltedSessionIdsOfToken(c, tokenId);
      const enforced = await this.readRedis(() => this.mirror.haltsOf(tokenId));
      const unrecorded = {
        token_trigger: halt ? null : enforced.tokenTrigger,
        sessions: enforced.sessions.filter((h) => !recorded.includes(h.sessionId)).map((h) => h.sessionId),
      };
      if (!halt && recorded.length === 0 && unrecorded.token_trigger === null && unrecorded.sessions.length === 0) {
        throw new AppError('CONFLICT', `Token ${tokenId} is not halted and has no halted sessions.`);
      }
      for (const sid of recorded) await sessionStore.resumeSession(c, sid, actor, reason);
      const sessions = [...recorded, ...unrecorded.sessions];
      await this.applyResume(tokenId, sessions, true);
      return { halt, sessions, unrecorded };
    });
    const anyUnrecorded = unrecorded.token_trigger !== null || unrecorded.sessions.length > 0;
    await this.audit({
      actor: op,
      action: 'agent_token.resumed',
      target: `agent_token:${tokenId}`,
      projectId: project,
      details: {
        reason,
        trigger: halt?.trigger ?? unrecorded.token_trigger,
        sessions_resumed: sessions,
        // (key names without "token": the audit trail masks values under such keys as secrets)
        ...(anyUnrecorded ? { halt_without_record: unrecorded.token_trigger !== null, sessions_without_record: unrecorded.sessions } : {}),
      },
    });
    // Nothing of the token is halted now: every SESSION_HALTED alert of it (its sessions' included) is over.
    await this.alerts?.resolve({
      kind: 'SESSION_HALTED',
      token_id: tokenId,
      before: uuidv7(),
      actor: 'system:token-resume',
      note: `token resumed by ${op.name}: ${reason}`,
      audit: { resolved_by: actor, resolved_with: 'agent_token.resumed' },
    });
    const was = halt ? ` (was halted by ${halt.trigger})` : unrecorded.token_trigger ? ` (was halted by ${unrecorded.token_trigger})` : '';
    const lifted = [unrecorded.token_trigger ? 'the token halt' : '', unrecorded.sessions.length ? `${unrecorded.sessions.length} session halt(s)` : ''].filter(Boolean);
    const note = lifted.length ? ` Redis enforced ${lifted.join(' and ')} with no record in Postgres; lifted too.` : '';
    return {
      token_id: tokenId,
      token_halt: halt ? { trigger: halt.trigger, halted_at: halt.halted_at, session_id: halt.session_id } : null,
      sessions_resumed: sessions,
      message: `Token resumed${was}; ${sessions.length} halted session(s) resumed.${note}`,
    };
  }

  /**
   * Closes a session the way idling out does (Postgres `closed`, gone from Redis: its calls answer
   * SESSION_UNKNOWN and it no longer counts against the token's open sessions), at the request of its
   * gateway (only with the session's own agent token: another token's session is not found) or an
   * operator. Never a halted session, nor one whose token is halted (409): closing must not lift or
   * hide a halt. Runs under the halt-copy lock, so an epoch reload cannot copy the session back into
   * Redis after it was closed there; Redis re-checks the halts atomically before it drops the session.
   */
  async close(id: string, closer: SessionCloser, closeReason?: string): Promise<CloseSessionResult> {
    const reason = auditedReason(closeReason);
    const op = 'operator' in closer ? closer.operator : undefined;
    const agent = 'agent' in closer ? closer.agent : undefined;
    const gatewayId = 'gateway' in closer ? closer.gateway.id : undefined;
    const closedBy = op ? operatorActorOf(op) : `gateway:${gatewayId}`;
    if (!isUuid(id)) throw notFound('session');
    // Project visibility for operators; the token binding for gateways is checked under the lock.
    if (op) await this.visibleSession(id, op);
    const halted = (state: string, trigger: string | null, tokenId: string) =>
      new AppError(
        'CONFLICT',
        state === 'token_halted'
          ? `Session ${id} cannot be closed: its token is halted (${trigger}); closing never lifts or hides a halt. An operator resumes the token with POST /v1/keys/${tokenId}/resume.`
          : state === 'both_halted'
            ? `Session ${id} cannot be closed: it is halted (${trigger}), and so is its token; closing never lifts or hides a halt. An operator resumes both with POST /v1/keys/${tokenId}/resume (resuming the session alone is not enough).`
            : `Session ${id} cannot be closed: it is halted (${trigger}); closing never lifts or hides a halt. An operator resumes it with POST /v1/sessions/${id}/resume.`,
        { state: 'halted', halted_by: state === 'token_halted' ? 'token' : state === 'both_halted' ? 'session and token' : 'session', trigger },
      );
    const outcome = await withTransaction(this.pool, async (c) => {
      await sessionStore.lockHaltCopies(c, 'resume');
      const row = await sessionStore.lockSession(c, id, agent?.id);
      if (!row) throw notFound('session');
      if (row.state === 'closed') return { row, already: true };
      const tokenHalt = await sessionStore.activeTokenHalt(c, row.token_id);
      // Both halted (a trigger in halt_token_on): resuming the session alone would not let it go on.
      if (row.state === 'halted') throw halted(tokenHalt ? 'both_halted' : 'halted', row.trigger, row.token_id);
      if (tokenHalt) throw halted('token_halted', tokenHalt.trigger, row.token_id);
      let answer: Awaited<ReturnType<SessionMirror['close']>>;
      try {
        answer = await this.mirror.close(row.token_id, id);
      } catch (err) {
        this.log.error({ err: (err as Error).message, session_id: id }, 'session not closed: Redis unavailable');
        throw new AppError('SERVICE_UNAVAILABLE', 'Redis is unavailable, so the session was not closed (nothing changed); try again shortly.');
      }
      if (answer.r === 'NO_EPOCH') {
        this.epoch.requestReload();
        throw new AppError('SERVICE_UNAVAILABLE', 'Redis lost its state and sessions are being reloaded from Postgres; the session was not closed; retry in a few seconds.');
      }
      // Postgres binds it to this token: Redis holding it for another is a disagreement; change nothing.
      if (answer.r === 'NOT_OWNER') throw notFound('session');
      // A halt Redis enforces before Postgres has its record.
      if (answer.r === 'HALTED') throw halted(answer.th ? 'both_halted' : 'halted', answer.trg, row.token_id);
      if (answer.r === 'TOKEN_HALTED') throw halted('token_halted', answer.trg, row.token_id);
      await sessionStore.closeSessions(c, [id], closedBy);
      return { row, already: false };
    }, REQUEST_TX);
    const view = await this.visibleSession(id);
    if (!outcome.already) {
      await this.audit({
        actor: op ?? closedBy,
        action: 'session.closed',
        target: `session:${id}`,
        projectId: view.project_id,
        details: { token_id: view.token_id, closed_by: op ? 'operator' : 'gateway', ...(gatewayId ? { gateway_id: gatewayId } : {}), ...reason },
      });
    }
    const when = view.closed_at ? ` at ${view.closed_at.toISOString()}` : '';
    return {
      session: summaryView(view),
      already_closed: outcome.already,
      message: outcome.already ? `Session ${id} was already closed${when}.` : `Session ${id} closed; its calls now answer SESSION_UNKNOWN and it no longer counts against the token's open sessions.`,
    };
  }

  /**
   * The `session.closed` row of a session the idle sweep closes, in the shape of a gateway's or an
   * operator's close. Unlike theirs it is written before the close and its failure is not swallowed:
   * the sweep then leaves the session active in Postgres and retries (ADR 0013). A service with no
   * recorder wired (tests building one alone) has no trail to write to.
   */
  private async recordIdleClose(s: IdleSession): Promise<void> {
    if (!this.recordAdmin) return;
    const idleS = Math.round(this.settings.idleTimeoutMs / 1000);
    await this.recordAdmin({
      actor: IDLE_SWEEP_ACTOR,
      action: 'session.closed',
      target: `session:${s.id}`,
      projectId: s.project_id,
      details: { token_id: s.token_id, closed_by: 'idle_sweep', reason: `idle for ${idleS} s (SESSION_IDLE_TIMEOUT_S): no allowed call`, idle_timeout_s: idleS },
    });
  }

  /** A Redis read a resume needs before it changes anything. */
  private async readRedis<T>(read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'resume not applied: Redis unavailable');
      throw new AppError('SERVICE_UNAVAILABLE', 'Redis is unavailable, so the resume was not applied (nothing changed); try again shortly.');
    }
  }

  /** Inside the Postgres transaction: if Redis does not take the resume, the transaction rolls back. */
  private async applyResume(tokenId: string, sessionIds: string[], liftTokenHalt: boolean): Promise<void> {
    try {
      await this.mirror.resume(tokenId, sessionIds, liftTokenHalt);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'resume not applied: Redis unavailable');
      throw new AppError('SERVICE_UNAVAILABLE', 'Redis is unavailable, so the resume was not applied (nothing changed); try again shortly.');
    }
  }

  private async audit(r: AdminRecord): Promise<void> {
    if (!this.recordAdmin) return;
    try {
      await this.recordAdmin(r);
    } catch (err) {
      this.log.error({ err: (err as Error).message, action: r.action }, 'audit of an admin action failed');
    }
  }
}
