import type { Pool } from '../db/pool.js';
import { invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import type { NewSessionRefusal } from '../sessions/service.js';
import type { AgentPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { credentialStore } from '../tokens/store.js';
import type { DependencyFailureReporter } from './dependency-failures.js';
import { runPipeline } from './pipeline.js';
import { newCallContext } from './service.js';
import type { CallContext, DecisionInput, Denial, HaltTrigger, PipelineStep, ResolvedCall } from './types.js';

export interface ExplainRequest {
  token_id: string;
  server: string;
  tool: string;
  arguments?: Record<string, unknown>;
  session_id?: string;
  environment?: DecisionInput['environment'];
  tool_hash?: string;
  resources?: string[];
  annotations?: DecisionInput['annotations'];
}

/**
 * The token's sessions a call can still name, most recently active first, and whether it could open a
 * new one now (the caps and window POST /v1/sessions applies; null when it could). SessionService
 * satisfies this.
 */
export interface OpenSessions {
  openSessionsOf(tokenId: string): Promise<ReadonlyArray<{ sessionId: string; lastActiveAt: number }>>;
  newSessionRefusal(tokenId: string, open: number): Promise<NewSessionRefusal | null>;
}

/** Why the token cannot open a session now: the code and cap POST /v1/sessions would answer, and until when. */
function refusalReason(r: NewSessionRefusal, now: number): string {
  return r.limit === 'max_open_sessions'
    ? `this token has ${r.open} open sessions (max_open_sessions ${r.max}), so POST /v1/sessions answers 429 TOO_MANY_SESSIONS until one is closed (POST /v1/sessions/:id/close) or idles out`
    : `this token opened ${r.opened} sessions this hour (max_new_sessions_per_hour ${r.max}), so POST /v1/sessions answers 429 TOO_MANY_SESSIONS for ${r.retryAfterS} s more (until ${new Date(now + r.retryAfterS * 1000).toISOString()})`;
}

/** The new session's entry of `sessions` when none can be opened. */
export function newSessionRefusedMessage(r: NewSessionRefusal, now = Date.now()): string {
  return `A new session cannot be opened now: ${refusalReason(r, now)}`;
}

/**
 * Without a session id, explain runs the call in at most this many of the token's open sessions (the
 * most recently active). Policies cap open sessions at 20 by default; one without a cap could make a
 * single explain run thousands of pipelines.
 */
export const EXPLAIN_OPEN_SESSIONS_MAX = 100;

/** Pipelines run at once for one explain (each is a Redis round trip, some a Postgres query). */
const CONCURRENCY = 10;

/** One dry run of the call: in an open session, or (sessionId null) as the first call of a new one. */
interface Evaluation {
  sessionId: string | null;
  lastActiveAt: number | null;
  call: CallContext;
  denial: Denial | undefined;
}

const REVOKED: Denial = { code: 'PERMISSION_DENIED', message: 'the token is revoked or expired: every call is refused with 401 before any step' };

/**
 * "Why was this denied?": runs the same steps as a decision in dry-run mode (no counters, no halts, no
 * audit row, no Unleash usage count) and returns every step's verdict.
 *
 * A real call always names a session, so without a session id there is no one answer: the agent's next
 * call comes in one of its token's open sessions, or in a new one. Explain then runs the call in every
 * open session and as the first call of a new session, and answers allow only if all of them would be
 * allowed; otherwise the first denial, the most recently active session first (docs/adr/0010-explain-without-a-session.md).
 */
export class Explainer {
  constructor(
    private readonly pool: Pool,
    private readonly steps: () => readonly PipelineStep[],
    /** Whether the policy halts the token too on this trigger (policy `halt_token_on`). */
    private readonly haltsToken: (trigger: HaltTrigger) => boolean,
    private readonly sessions: OpenSessions,
    /** Where driver errors go (the log): never into an explanation's messages. */
    private readonly failures?: DependencyFailureReporter,
    /** The time token expiry is judged by (ClockOffset.now). */
    private readonly now: () => number = Date.now,
  ) {}

  async explain(op: OperatorPrincipal, req: ExplainRequest) {
    const row = await credentialStore.getAgentToken(this.pool, req.token_id);
    if (!row || !canSeeProject(op, row.project_id)) throw notFound('token');
    const agent: AgentPrincipal = {
      kind: 'agent',
      id: row.id,
      tokenType: row.type,
      scopes: row.scopes,
      role: row.role,
      projectId: row.project_id,
      environment: row.environment,
      displayPrefix: row.display_prefix,
      expiresAt: row.expires_at ? row.expires_at.getTime() : null,
    };
    const revoked = row.revoked_at !== null || (agent.expiresAt !== null && agent.expiresAt <= this.now());
    if (revoked) return { decision: 'deny' as const, code: REVOKED.code, message: REVOKED.message, session_id: req.session_id ?? null, steps: [], flags: [] };

    if (req.session_id !== undefined) {
      const named = await this.evaluate(agent, req, req.session_id, null);
      return { ...this.verdict(named), message: this.messageOf(named), session_id: req.session_id };
    }

    let open: ReadonlyArray<{ sessionId: string; lastActiveAt: number }>;
    let refusal: NewSessionRefusal | null = null;
    try {
      open = await this.sessions.openSessionsOf(agent.id);
      refusal = await this.sessions.newSessionRefusal(agent.id, open.length);
    } catch (err) {
      this.failures?.report('Redis', err, { token_id: agent.id, during: 'explain' });
      return {
        decision: 'deny' as const,
        code: 'DEPENDENCY_UNAVAILABLE',
        message: `The token's open sessions could not be read from Redis, so what its next call would get is unknown; a real call would be denied too (fail closed). Retry shortly, or name a session with session_id; the cause is in the control plane's log.`,
        session_id: null,
        steps: [],
        flags: [],
      };
    }
    const checked = open.slice(0, EXPLAIN_OPEN_SESSIONS_MAX);
    const runs: Array<() => Promise<Evaluation>> = checked.map((s) => () => this.evaluate(agent, req, s.sessionId, s.lastActiveAt));
    runs.push(() => this.evaluate(agent, req, null, null));
    const evaluations = await inBatches(runs, CONCURRENCY);
    const fresh = evaluations.at(-1)!;
    // A new session the token cannot open now is no place the next call can come in: the verdict is the
    // open sessions' (docs/sessions-and-limits.md). With none open, no call can come at all.
    const candidates = refusal ? evaluations.slice(0, -1) : evaluations;
    if (refusal && candidates.length === 0) {
      return {
        ...this.verdict(fresh),
        decision: 'deny' as const,
        code: 'TOO_MANY_SESSIONS',
        message: `This token has no open session and cannot open one now: ${refusalReason(refusal, Date.now())}. As the first call of a new session, once one can be opened: ${this.messageOf(fresh)}`,
        session_id: null,
        open_sessions: 0,
        sessions: [this.newSessionEntry(fresh, refusal)],
      };
    }
    const shown = candidates.find((e) => e.denial) ?? candidates[0]!;
    if (!shown.denial && open.length > checked.length) {
      throw invalid(
        'session_id',
        `is needed for this token, which has ${open.length} open sessions; explain without a session_id checks only the ${checked.length} most recently active (all would allow the call), so it cannot tell that the others would; name one (GET /v1/sessions?token=${agent.id})`,
      );
    }
    return {
      ...this.verdict(shown),
      message: this.summaryMessage(shown, req, open.length, refusal),
      session_id: shown.sessionId,
      open_sessions: open.length,
      sessions: evaluations.map((e) => this.newSessionEntry(e, e === fresh ? refusal : null)),
    };
  }

  /** One entry of `sessions`; a new session that cannot be opened now says so instead of its dry run's verdict. */
  private newSessionEntry(e: Evaluation, refusal: NewSessionRefusal | null) {
    return {
      session_id: e.sessionId,
      last_active_at: e.lastActiveAt ? new Date(e.lastActiveAt).toISOString() : null,
      decision: e.denial || refusal ? ('deny' as const) : ('allow' as const),
      code: refusal ? 'TOO_MANY_SESSIONS' : e.denial ? e.denial.code : 'OK',
      message: refusal ? newSessionRefusedMessage(refusal) : this.messageOf(e),
    };
  }

  /** One dry run of the pipeline; `sessionId` null: the first call of a new session of the token. */
  private async evaluate(agent: AgentPrincipal, req: ExplainRequest, sessionId: string | null, lastActiveAt: number | null): Promise<Evaluation> {
    const input: DecisionInput = { server: req.server, tool: req.tool, arguments: req.arguments ?? {}, session_id: sessionId ?? '' };
    if (req.environment) input.environment = req.environment;
    if (req.tool_hash) input.tool_hash = req.tool_hash;
    if (req.resources) input.resources = req.resources;
    if (req.annotations) input.annotations = req.annotations;
    const call = newCallContext({ gateway: { kind: 'gateway', id: 'explain', name: 'explain', expiresAt: null }, agent, input, ip: '', dryRun: true });
    const denial = await runPipeline(this.steps(), call, this.failures);
    return { sessionId, lastActiveAt, call, denial };
  }

  /** The answer's fields that come from one evaluation, its message aside. */
  private verdict(e: Evaluation) {
    const { call, denial } = e;
    return {
      decision: denial ? ('deny' as const) : ('allow' as const),
      code: denial ? denial.code : 'OK',
      steps: call.trace,
      ...(call.call ? { call: callView(call.call) } : {}),
      flags: call.flagsEvaluated,
      // What the real call would also do: halt the session (and by policy the token). Explain halts nothing.
      ...(denial?.halt ? { halt: { trigger: denial.halt, token: this.haltsToken(denial.halt) } } : {}),
    };
  }

  private messageOf(e: Evaluation): string {
    if (e.denial) return e.denial.message;
    const { server, tool } = e.call.input;
    return `${server}/${tool} would be allowed${e.call.warnings.length > 0 ? `; ${e.call.warnings.join('; ')}` : ''}`;
  }

  /** The top message without a session id: which of the token's sessions it is about, when it has any. */
  private summaryMessage(shown: Evaluation, req: ExplainRequest, openCount: number, refusal: NewSessionRefusal | null): string {
    if (openCount === 0) return this.messageOf(shown);
    if (shown.denial) return `${shown.sessionId ? `In open session ${shown.sessionId}` : 'In a new session of this token'}: ${shown.denial.message}`;
    const sessions = `this token's ${openCount} open session${openCount === 1 ? '' : 's'}`;
    const where = refusal ? `in each of ${sessions}` : `in each of ${sessions} and in a new one`;
    const warnings = shown.call.warnings.length > 0 ? `; in session ${shown.sessionId}: ${shown.call.warnings.join('; ')}` : '';
    const fresh = refusal ? `. ${newSessionRefusedMessage(refusal)}` : '';
    return `${req.server}/${req.tool} would be allowed ${where}${warnings}${fresh}`;
  }
}

/** The resolved call as explain shows it: in the API's snake_case, not the pipeline's field names. */
function callView(c: ResolvedCall) {
  return {
    server: c.server,
    server_class: c.serverClass,
    tool: c.tool,
    required_scope: c.requiredScope,
    capability: c.capability,
    scope_source: c.scopeSource,
    extra_flags: c.extraFlags,
    resource_ids: c.resourceIds,
    network_identities: c.networkIdentities,
  };
}

/** Runs the tasks `size` at a time, keeping their order in the result. */
async function inBatches<T>(tasks: ReadonlyArray<() => Promise<T>>, size: number): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < tasks.length; i += size) out.push(...(await Promise.all(tasks.slice(i, i + size).map((task) => task()))));
  return out;
}
