import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { AlertService } from '../alerts/service.js';
import { redactText, redactValue } from '../audit/redact.js';
import type { AuditService } from '../audit/service.js';
import { type Pool, withTransaction } from '../db/pool.js';
import type { CallContext, Denial } from '../decisions/types.js';
import { AppError, invalid, notFound } from '../errors.js';
import type { GrantService } from '../grants/service.js';
import { canSeeProject } from '../http/auth.js';
import type { ApprovalRule, CompiledPolicy } from '../policy/types.js';
import type { RedisHandle } from '../redis/client.js';
import type { AgentPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { operatorActor } from '../tokens/service.js';
import { credentialStore } from '../tokens/store.js';
import { type ToolRegistry, toolTarget } from '../tools/service.js';
import { type ToolDefinitionRow, toolStore } from '../tools/store.js';
import { decidedAction, expiredRow, releasedRow, requestedRow, usedRow } from './audit.js';
import { ApprovalMirror, type CheckAnswer, type MirrorEntry } from './mirror.js';
import { approvalRuleFor, argumentsHash, callKey, grantKey } from './rules.js';
import { type ApprovalRow, type ApprovalState, approvalStore } from './store.js';

/** What the approval step found for a call the policy says needs a human. */
export interface ApprovalNeed {
  rule: ApprovalRule;
  argumentsHash: string;
  callKey: string;
  ttlMs: number;
}

export type CheckResult = { kind: 'deny'; denial: Denial } | { kind: 'approved'; id: string } | { kind: 'defer' };

export type QueueKind = 'call' | 'production_grant' | 'tool_definition';
export type QueueState = ApprovalState | 'superseded';

/** One entry of the operator's queue: a tool call, or a changed tool definition (src/tools). */
export interface QueueItem {
  id: string;
  kind: QueueKind;
  /** production_grant, once approved: the grant it created (GET /v1/grants). */
  grant_id: string | null;
  state: QueueState;
  server: string;
  tool: string;
  token_id: string | null;
  project_id: string | null;
  environment: string | null;
  role: string | null;
  session_id: string | null;
  gateway_id: string | null;
  capability: string | null;
  arguments: Record<string, unknown> | null;
  arguments_hash: string | null;
  tool_hash: string | null;
  definition: unknown;
  rule: string | null;
  separate_approver: boolean;
  requested_decision_id: string | null;
  created_at: Date;
  expires_at: Date | null;
  decided_at: Date | null;
  decided_by: string | null;
  decided_by_name: string | null;
  reason: string | null;
  used_at: Date | null;
  used_decision_id: string | null;
}

export interface QueueQuery {
  kind?: QueueKind | undefined;
  state?: QueueState | undefined;
  token?: string | undefined;
  server?: string | undefined;
  limit?: number | undefined;
}

export interface ApprovalStatus {
  id: string;
  state: ApprovalState;
  expires_at: Date;
  reason: string | null;
  message: string;
}

export interface ApprovalDeps {
  pool: Pool;
  redis: RedisHandle;
  audit: Pick<AuditService, 'enqueue' | 'recordAdmin'>;
  alerts: Pick<AlertService, 'raise'>;
  tools: Pick<ToolRegistry, 'decide' | 'list'>;
  /** Approving a production_grant request creates the grant here (bounded by GRANT_MAX_SECONDS), in the approval's transaction. */
  grants: Pick<GrantService, 'insert' | 'announce'>;
  /** How long a grant made by an approval lasts when the operator gives no `expires_in`. */
  grantDefaultS: number;
  policy: () => CompiledPolicy;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** The time an approval's expiry is judged by (ClockOffset.now; default the wall clock). */
  now?: () => number;
  /** APPROVAL_TTL_S: the window of rules that set none. */
  ttlS: number;
  /** APPROVAL_MAX_PENDING_PER_TOKEN (0: no cap). */
  maxPendingPerToken: number;
  /** The Redis state epoch is missing: ask the sessions module to reload (it runs our loader too). */
  onMissingEpoch: () => void;
}

const SWEEP_EVERY_MS = 60_000;
const TOOL_STATES: ReadonlySet<QueueState> = new Set(['pending', 'approved', 'rejected', 'superseded']);

const iso = (ms: number | Date): string => new Date(ms).toISOString();

/** A rejection still in force, as the approval step (and explain) answers it. */
const rejected = (what: string, a: { id: string; why: string; exp: number }): Denial => ({
  code: 'APPROVAL_REJECTED',
  message: `an operator rejected ${what} with these arguments (approval ${a.id}${a.why ? `: ${a.why}` : ''}); identical calls are refused until ${iso(a.exp)}`,
  extra: { approval_id: a.id },
});

const conflict = (message: string): AppError => new AppError('CONFLICT', message);

/** Who asks, through what, and the call (arguments masked): the same on every approval a call opens. */
function askedBy(call: CallContext) {
  const resolved = call.call!;
  return {
    token_id: call.agent.id,
    project_id: call.agent.projectId,
    environment: call.agent.environment,
    role: call.agent.role,
    session_id: call.input.session_id,
    gateway_id: call.gateway.id,
    server: resolved.server,
    tool: resolved.tool,
    capability: resolved.capability,
    arguments: redactValue(call.input.arguments) as Record<string, unknown>,
  };
}

/**
 * Human approval of single tool calls (seed 004: the AI prepares, a person approves the exact arguments;
 * the call then runs once). Postgres is the record; Redis holds what the decision path reads, so a call
 * waiting for approval costs one Redis round trip and no Postgres query. Only opening a request (a
 * denial, once per distinct call) and using an approval (once per human approval) touch Postgres, and
 * the use is a conditional UPDATE: exactly one decision on any replica can win it.
 */
export class ApprovalService {
  readonly mirror: ApprovalMirror;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<unknown> | undefined;
  /** The approval each call in flight spent, should the call be denied after all (see release). */
  private readonly spent = new WeakMap<CallContext, string>();

  constructor(private readonly deps: ApprovalDeps) {
    this.mirror = new ApprovalMirror(deps.redis);
  }

  async start(): Promise<void> {
    await this.restore().catch((err: unknown) => this.deps.log.warn({ err: (err as Error).message }, 'approvals: restoring Redis from Postgres failed; the state reload retries it'));
    this.timer = setInterval(() => {
      this.sweeping ??= this.sweep()
        .catch((err: unknown) => this.deps.log.warn({ err: (err as Error).message }, 'approvals: expiry sweep failed'))
        .finally(() => {
          this.sweeping = undefined;
        });
    }, SWEEP_EVERY_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping;
  }

  // ---- decision path ----

  /** Whether the policy asks a human to approve this call, and what identifies the exact call. */
  need(call: CallContext): ApprovalNeed | undefined {
    const resolved = call.call;
    if (!resolved) return undefined;
    const rule = approvalRuleFor(this.deps.policy(), call.agent, resolved);
    if (!rule) return undefined;
    const hash = argumentsHash(call.input.arguments);
    return {
      rule,
      argumentsHash: hash,
      callKey: callKey({ tokenId: call.agent.id, sessionId: call.input.session_id, server: resolved.server, tool: resolved.tool, argumentsHash: hash }),
      ttlMs: (rule.ttlSeconds ?? this.deps.ttlS) * 1000,
    };
  }

  /**
   * Explain: the verdict a real call would get from the approval of this exact call as it stands, without
   * opening a request or spending an approval. An approval in force lets it through (with a warning that
   * names it); the gate's dry run then says the rest.
   */
  async explain(call: CallContext, need: ApprovalNeed): Promise<Denial | undefined> {
    const what = this.what(call);
    const a = await this.mirror.peek(need.callKey);
    if ('r' in a) {
      this.deps.onMissingEpoch();
      return { code: 'DEPENDENCY_UNAVAILABLE', message: 'approval state is being reloaded from Postgres after Redis lost its data; a real call would be denied to fail closed' };
    }
    const live = a.id !== undefined && a.now < a.exp;
    if (a.id !== undefined && live && a.st === 'approved') {
      // A real call must also win Postgres's conditional update: ask the record, not only Redis's copy.
      const row = await approvalStore.get(this.deps.pool, a.id);
      if (row?.state === 'approved' && row.expires_at.getTime() > (this.deps.now ?? Date.now)()) {
        call.warnings.push(`approval ${a.id} allows this exact call once, until ${iso(a.exp)} (explaining does not spend it)`);
        return undefined;
      }
      if (row?.state === 'used') {
        return { code: 'APPROVAL_USED', message: `approval ${a.id} already allowed one call of ${what} with these arguments (decision ${row.used_decision_id}); a repeat needs a new approval`, extra: { approval_id: a.id } };
      }
      return { code: 'APPROVAL_EXPIRED', message: `approval ${a.id} of ${what} is no longer in force (${row ? row.state : 'no record'}); a real call would be refused and need a new approval`, extra: { approval_id: a.id } };
    }
    if (a.id !== undefined && !live && (a.st === 'approved' || a.st === 'pending')) {
      return { code: 'APPROVAL_EXPIRED', message: `the approval of ${what} with these arguments (${a.id}) expired at ${iso(a.exp)}; a real call would open a new request (explaining opens none)`, extra: { approval_id: a.id } };
    }
    if (a.id !== undefined && live && a.st === 'pending') {
      return { code: 'APPROVAL_REQUIRED', message: `${what} needs a human to approve these exact arguments (policy rule ${need.rule.name}): approval ${a.id} waits for an operator until ${iso(a.exp)}`, extra: { approval_id: a.id } };
    }
    if (a.id !== undefined && live && a.st === 'rejected') {
      return rejected(what, a);
    }
    if (a.id !== undefined && a.st === 'used') {
      return { code: 'APPROVAL_USED', message: `approval ${a.id} already allowed one call of ${what} with these arguments; a repeat needs a new approval (a real call would open a request; explaining opens none)`, extra: { approval_id: a.id } };
    }
    return { code: 'APPROVAL_REQUIRED', message: `${what} needs a human to approve its exact arguments first (policy rule ${need.rule.name}); explaining opens no request` };
  }

  /** The approval step: the state of this exact call's approval, opening a request when none is in force. */
  async check(call: CallContext, need: ApprovalNeed): Promise<CheckResult> {
    const answer = await this.mirror.check({
      callKey: need.callKey,
      tokenId: call.agent.id,
      sessionId: call.input.session_id,
      newId: uuidv7(),
      ttlMs: need.ttlMs,
      maxPending: this.deps.maxPendingPerToken,
    });
    return this.interpret(call, need, answer);
  }

  private async interpret(call: CallContext, need: ApprovalNeed, a: CheckAnswer): Promise<CheckResult> {
    const what = this.what(call);
    const deny = (denial: Denial): CheckResult => ({ kind: 'deny', denial });
    switch (a.r) {
      case 'NO_EPOCH':
        this.deps.onMissingEpoch();
        return deny({ code: 'DEPENDENCY_UNAVAILABLE', message: 'approval state is being reloaded from Postgres after Redis lost its data; denied to fail closed, retry in a moment' });
      case 'DEFER':
        // The gate refuses this call (session unknown, halted ...) with its own code.
        return { kind: 'defer' };
      case 'APPROVED':
        return { kind: 'approved', id: a.id };
      case 'PENDING':
        return deny({
          code: 'APPROVAL_REQUIRED',
          message: `${what} needs a human to approve these exact arguments (policy rule ${need.rule.name}): approval ${a.id} waits for an operator until ${iso(a.exp)}; repeat the identical call once it is approved`,
          extra: { approval_id: a.id },
        });
      case 'REJECTED':
        return deny(rejected(what, a));
      case 'TOO_MANY':
        if (a.prev_st === 'expired') void this.recordExpiries([a.prev_id]);
        return deny({
          code: 'RATE_LIMITED',
          message: `${what} needs a human approval, but this token already has ${a.n} approval requests waiting (APPROVAL_MAX_PENDING_PER_TOKEN); retry when one is decided or expires`,
          retryAfterS: Math.max(1, Math.ceil(a.retry / 1000)),
        });
      case 'NEW':
        return deny(await this.open(call, need, a));
    }
  }

  private async open(call: CallContext, need: ApprovalNeed, a: Extract<CheckAnswer, { r: 'NEW' }>): Promise<Denial> {
    let row: ApprovalRow;
    try {
      row = await approvalStore.insert(this.deps.pool, {
        id: a.id,
        kind: 'call',
        call_key: need.callKey,
        ...askedBy(call),
        arguments_hash: need.argumentsHash,
        rule: need.rule.name,
        separate_approver: need.rule.separateApprover,
        ttl_seconds: Math.round(need.ttlMs / 1000),
        requested_decision_id: call.decisionId,
        expires_at: new Date(a.exp),
      });
    } catch (err) {
      // No record, no request: an operator could never see it. Take the Redis entry back and fail closed.
      await this.mirror.forget({ callKey: need.callKey, id: a.id, tokenId: call.agent.id }).catch(() => {});
      throw err;
    }
    this.deps.audit.enqueue(requestedRow(call, row));
    void this.deps.alerts.raise({
      kind: 'APPROVAL_REQUESTED',
      message: `${this.what(call)} waits for a human approval of its exact arguments (approval ${row.id}, token ${call.agent.displayPrefix}…, rule ${row.rule}); decide before ${iso(row.expires_at)}`,
      token_id: call.agent.id,
      project_id: call.agent.projectId,
      session_id: call.input.session_id,
      server: row.server,
      details: { approval_id: row.id, decision_id: call.decisionId, tool: row.tool, kind: 'call' },
    });
    const waits = `approval ${row.id} waits for an operator until ${iso(row.expires_at)}; repeat the identical call once it is approved`;
    if (a.prev_st === 'expired') {
      void this.recordExpiries([a.prev_id]);
      return { code: 'APPROVAL_EXPIRED', message: `the approval of ${this.what(call)} with these arguments (${a.prev_id}) expired; a new request is open: ${waits}`, extra: { approval_id: row.id, previous_approval_id: a.prev_id } };
    }
    if (a.prev_st === 'used') {
      return { code: 'APPROVAL_USED', message: `approval ${a.prev_id} already allowed one call of ${this.what(call)} with these arguments; a repeat needs a new approval: ${waits}`, extra: { approval_id: row.id, previous_approval_id: a.prev_id } };
    }
    return { code: 'APPROVAL_REQUIRED', message: `${this.what(call)} needs a human to approve these exact arguments (policy rule ${row.rule}): ${waits}`, extra: { approval_id: row.id } };
  }

  /**
   * The policy denied with HUMAN_AUTHORIZATION_REQUIRED: open (or name the open) request for a production
   * grant of this token and session in the queue, and return the denial with its `approval_id`. Repeats
   * cost one Redis round trip; only the first asks Postgres. Anything failing keeps the plain denial.
   */
  async requestGrant(call: CallContext, denial: Denial): Promise<Denial> {
    const ttlMs = this.deps.ttlS * 1000;
    const key = grantKey(call.agent.id, call.input.session_id);
    let a: CheckAnswer;
    try {
      a = await this.mirror.check({ callKey: key, tokenId: call.agent.id, sessionId: call.input.session_id, newId: uuidv7(), ttlMs, maxPending: this.deps.maxPendingPerToken });
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'approvals: could not open a production grant request (Redis); the call is denied without one');
      return denial;
    }
    const named = (id: string, message: string): Denial => ({ ...denial, message, extra: { ...denial.extra, approval_id: id } });
    const asks = (id: string, exp: number) => `approval ${id} asks an operator for a production grant of this token and session (until ${iso(exp)}); repeat the call once it is approved`;
    switch (a.r) {
      case 'NO_EPOCH':
        this.deps.onMissingEpoch();
        return denial;
      case 'DEFER':
        return denial;
      case 'PENDING':
        return named(a.id, `${denial.message}: ${asks(a.id, a.exp)}`);
      case 'APPROVED':
        return named(a.id, `${denial.message}: approval ${a.id} was approved and its grant takes effect in a moment; repeat the call`);
      case 'REJECTED':
        return named(a.id, `${denial.message}: an operator rejected the production grant request ${a.id}${a.why ? ` (${a.why})` : ''}; refused until ${iso(a.exp)}`);
      case 'TOO_MANY':
        if (a.prev_st === 'expired') void this.recordExpiries([a.prev_id]);
        return { ...denial, message: `${denial.message}; no request was opened: this token already has ${a.n} approval requests waiting (APPROVAL_MAX_PENDING_PER_TOKEN)` };
      case 'NEW': {
        if (a.prev_st === 'expired') void this.recordExpiries([a.prev_id]);
        const row = await this.openGrant(call, key, a);
        return named(row.id, `${denial.message}: ${asks(row.id, row.expires_at.getTime())}`);
      }
    }
  }

  private async openGrant(call: CallContext, key: string, a: Extract<CheckAnswer, { r: 'NEW' }>): Promise<ApprovalRow> {
    let row: ApprovalRow;
    try {
      row = await approvalStore.insert(this.deps.pool, {
        id: a.id,
        kind: 'production_grant',
        call_key: key,
        // The call that asked: shown to the operator; the grant covers every call of the session.
        ...askedBy(call),
        arguments_hash: argumentsHash(call.input.arguments),
        rule: 'production_grant',
        separate_approver: false,
        ttl_seconds: this.deps.ttlS,
        requested_decision_id: call.decisionId,
        expires_at: new Date(a.exp),
      });
    } catch (err) {
      await this.mirror.forget({ callKey: key, id: a.id, tokenId: call.agent.id }).catch(() => {});
      throw err;
    }
    this.deps.audit.enqueue(requestedRow(call, row));
    void this.deps.alerts.raise({
      kind: 'APPROVAL_REQUESTED',
      message: `token ${call.agent.displayPrefix}… asks for a production grant for session ${call.input.session_id} (approval ${row.id}, first call ${row.server}/${row.tool}); decide before ${iso(row.expires_at)}`,
      token_id: call.agent.id,
      project_id: call.agent.projectId,
      session_id: call.input.session_id,
      server: row.server,
      details: { approval_id: row.id, decision_id: call.decisionId, tool: row.tool, kind: 'production_grant' },
    });
    return row;
  }

  /** The call that spent an approval was denied after all (no durable INTENT): the approval stands again. */
  async release(call: CallContext): Promise<void> {
    const id = this.spent.get(call);
    if (id === undefined) return;
    this.spent.delete(call);
    const row = await approvalStore.release(this.deps.pool, id, call.decisionId);
    if (!row) return;
    await this.mirror.write([this.entry(row)]).catch((err: unknown) => {
      this.deps.log.warn({ err: (err as Error).message, approval_id: id }, 'approvals: could not mark a released approval approved in Redis');
    });
    this.deps.audit.enqueue(releasedRow(call, row));
  }

  /** After every other step allowed the call: spend the approval, once, on whichever replica gets there first. */
  async use(call: CallContext, need: ApprovalNeed, id: string): Promise<Denial | undefined> {
    const row = await approvalStore.use(this.deps.pool, id, need.callKey, call.decisionId);
    if (row) {
      this.spent.set(call, id);
      await this.mirror.write([this.entry(row)]).catch((err: unknown) => {
        // Postgres already says used: a repeat reaches this step again and is refused here.
        this.deps.log.warn({ err: (err as Error).message, approval_id: id }, 'approvals: could not mark an approval used in Redis');
      });
      this.deps.audit.enqueue(usedRow(call, row));
      return undefined;
    }
    const current = await approvalStore.get(this.deps.pool, id);
    const what = this.what(call);
    const extra = { approval_id: id };
    switch (current?.state) {
      case 'used':
        return { code: 'APPROVAL_USED', message: `approval ${id} already allowed one call of ${what} (decision ${current.used_decision_id}); a repeat needs a new approval`, extra };
      case 'expired':
        void this.recordExpiries([id]);
        return { code: 'APPROVAL_EXPIRED', message: `approval ${id} of ${what} expired before this call; repeat the call to ask again`, extra };
      case 'rejected':
        return { code: 'APPROVAL_REJECTED', message: `an operator rejected ${what} with these arguments (approval ${id}: ${current.reason ?? ''})`, extra };
      default:
        return { code: 'APPROVAL_REQUIRED', message: `${what} needs a human to approve these exact arguments; approval ${id} is not approved`, extra };
    }
  }

  // ---- operators ----

  async list(op: OperatorPrincipal, q: QueueQuery): Promise<QueueItem[]> {
    const limit = q.limit ?? 100;
    const items: QueueItem[] = [];
    const callState = q.state === 'superseded' ? undefined : q.state;
    if (q.kind !== 'tool_definition' && q.state !== 'superseded') {
      const rows = await approvalStore.list(this.deps.pool, { kind: q.kind, state: callState, token: q.token, server: q.server, projects: op.projects ?? undefined, limit });
      items.push(...rows.map(callItem));
    }
    // Tool definitions belong to no project: they are decided by operators who see every project.
    if ((q.kind === undefined || q.kind === 'tool_definition') && q.token === undefined && op.projects === null && (q.state === undefined || TOOL_STATES.has(q.state))) {
      const filter: { status?: 'approved' | 'pending' | 'rejected' | 'superseded'; server?: string } = {};
      if (q.state) filter.status = q.state as 'approved' | 'pending' | 'rejected' | 'superseded';
      if (q.server) filter.server = q.server;
      items.push(...(await this.deps.tools.list(filter)).map(toolItem));
    }
    return items.sort((a, b) => b.created_at.getTime() - a.created_at.getTime() || (a.id < b.id ? 1 : -1)).slice(0, limit);
  }

  async get(op: OperatorPrincipal, id: string): Promise<QueueItem> {
    const row = await approvalStore.get(this.deps.pool, id);
    if (row) {
      if (!canSeeProject(op, row.project_id)) throw notFound('approval');
      return callItem(row);
    }
    const def = op.projects === null ? await toolStore.get(this.deps.pool, id) : undefined;
    if (!def) throw notFound('approval');
    return toolItem(def);
  }

  async decide(op: OperatorPrincipal, id: string, verb: 'approve' | 'reject', operatorReason: string, expiresIn?: number): Promise<QueueItem> {
    // Stored with the request, shown to the agent (APPROVAL_REJECTED, GET /v1/approvals/:id/status), in
    // alerts and the grant it makes: a credential pasted into it is masked as in the audit trail.
    const reason = redactText(operatorReason);
    const row = await approvalStore.get(this.deps.pool, id);
    if (!row) {
      if (expiresIn !== undefined) throw invalid('expires_in', 'only approvals of kind production_grant take expires_in');
      return this.decideToolDefinition(op, id, verb, reason);
    }
    if (!canSeeProject(op, row.project_id)) throw notFound('approval');
    if (expiresIn !== undefined && (row.kind !== 'production_grant' || verb !== 'approve')) throw invalid('expires_in', 'only approving a production_grant request takes expires_in');
    if (row.state !== 'pending') throw conflict(`approval ${id} is ${row.state}, not pending`);
    if (verb === 'approve' && row.separate_approver) {
      // Four eyes: nobody who held the token's secret approves its calls. Its creator did, and so did every
      // operator who rotated it (or a token it was rotated from): a rotation answers the new secret to the rotator.
      const token = await credentialStore.getAgentToken(this.deps.pool, row.token_id);
      const me = operatorActor(op);
      if (!token || token.created_by === me) {
        throw new AppError('FORBIDDEN', `The policy (rule ${row.rule}) requires the approver to be someone other than the operator who created this agent token; ask another operator.`);
      }
      if (token.rotated_by.includes(me)) {
        throw new AppError(
          'FORBIDDEN',
          `The policy (rule ${row.rule}) requires the approver to be someone other than an operator who held this agent token's secret: you rotated it (or a token it was rotated from) and received its secret; ask another operator.`,
        );
      }
    }
    const state = verb === 'approve' ? 'approved' : 'rejected';
    const decided = await withTransaction(this.deps.pool, async (db) => {
      let d = await approvalStore.decide(db, id, state, operatorActor(op), op.name, reason);
      if (!d) throw conflict(`approval ${id} is ${(await approvalStore.get(db, id))?.state ?? 'gone'}, not pending`);
      if (d.kind === 'production_grant' && state === 'approved') {
        // The grant in this transaction (GRANT_MAX_SECONDS is checked there): it takes effect with the
        // approval's commit, after its grant.create and approval.approved rows, so a grant nobody recorded
        // never allows a call. Anything that fails before leaves the request pending and no grant at all.
        const { grant } = await this.deps.grants.insert(
          op,
          {
            token_id: d.token_id,
            session_id: d.session_id,
            environment: 'production',
            reason: `approval ${id}: ${reason}`,
            expires_in: expiresIn ?? this.deps.grantDefaultS,
          },
          db,
        );
        d = (await approvalStore.grantCreated(db, id, grant.id, grant.expires_at)) ?? d;
        await this.deps.audit.recordAdmin({
          actor: op,
          action: 'grant.create',
          target: `agent_token:${grant.token_id}`,
          projectId: row.project_id,
          sessionId: grant.session_id,
          details: { id: grant.id, kind: grant.kind, reason: grant.reason, expires_at: grant.expires_at.toISOString(), session_id: grant.session_id, approval_id: id },
        });
      }
      return this.commitDecision(op, row, d);
    });
    // Every replica loads the grant now rather than at its next reload (within 5 s).
    if (decided.grant_id) await this.deps.grants.announce();
    void this.deps.alerts.raise({
      kind: 'APPROVAL_DECIDED',
      message:
        decided.kind === 'production_grant'
          ? `${op.name} ${state} a production grant for token ${decided.token_id}, session ${decided.session_id} (approval ${id}${decided.grant_id ? `, grant ${decided.grant_id} until ${iso(decided.expires_at)}` : ''}): ${reason}`
          : `${op.name} ${state} ${decided.server}/${decided.tool} (approval ${id}): ${reason}`,
      token_id: decided.token_id,
      project_id: decided.project_id,
      session_id: decided.session_id,
      server: decided.server,
      details: { approval_id: id, kind: decided.kind, state, decided_by: operatorActor(op), tool: decided.tool, ...(decided.grant_id ? { grant_id: decided.grant_id } : {}) },
    });
    if (decided.grant_id) {
      void this.deps.alerts.raise({
        kind: 'GRANT_ISSUED',
        message: `${op.name} granted production access to token ${decided.token_id}, session ${decided.session_id} until ${iso(decided.expires_at)} (grant ${decided.grant_id}, approval ${id}): ${reason}`,
        token_id: decided.token_id,
        project_id: decided.project_id,
        session_id: decided.session_id,
        details: { grant_id: decided.grant_id, kind: 'production', granted_by: operatorActor(op), approval_id: id },
      });
    }
    return callItem(decided);
  }

  /**
   * Redis and the audit row before the commit: a failure of either leaves the request pending (the
   * operator sees an error and retries), never an approval decisions cannot see or nobody recorded.
   */
  private async commitDecision(op: OperatorPrincipal, row: ApprovalRow, d: ApprovalRow): Promise<ApprovalRow> {
    let mirrored: string | undefined;
    try {
      [mirrored] = await this.mirror.write([this.entry(d)]);
    } catch (err) {
      this.deps.log.error({ err: (err as Error).message, approval: d.id }, 'approvals: decision not applied: Redis unavailable');
      throw new AppError('SERVICE_UNAVAILABLE', 'Redis is unavailable, so the decision was not applied (the request stays pending); try again shortly.');
    }
    if (mirrored === 'OTHER') throw conflict(`a newer request for the same call replaced approval ${d.id}`);
    try {
      await this.deps.audit.recordAdmin(decidedAction(op, d));
    } catch (err) {
      // Put the request back as it was; if even that fails, the use step still finds it pending in Postgres.
      await this.mirror.write([this.entry(row)]).catch(() => {});
      throw err;
    }
    return d;
  }

  private async decideToolDefinition(op: OperatorPrincipal, id: string, verb: 'approve' | 'reject', reason: string): Promise<QueueItem> {
    if (op.projects !== null) throw notFound('approval');
    if (!(await toolStore.get(this.deps.pool, id))) throw notFound('approval');
    const row = await this.deps.tools.decide(id, verb === 'approve' ? 'approved' : 'rejected', operatorActor(op), reason);
    // The same row POST /v1/tools/:id/approve writes: one history whichever door the operator used.
    await this.deps.audit.recordAdmin({ actor: op, action: `tool.${verb}`, target: toolTarget(row.server, row.tool), details: { id: row.id, hash: row.hash, reason } });
    void this.deps.alerts.raise({
      kind: 'APPROVAL_DECIDED',
      message: `${op.name} ${row.status} the changed definition of ${row.server}/${row.tool} (${row.id}): ${reason}`,
      server: row.server,
      details: { approval_id: id, kind: 'tool_definition', state: row.status, decided_by: operatorActor(op), tool: row.tool, hash: row.hash },
    });
    return toolItem(row);
  }

  // ---- gateways ----

  /** What a gateway waiting for an approval polls: only for the agent token that asked. */
  async status(agent: AgentPrincipal, id: string): Promise<ApprovalStatus> {
    const row = await approvalStore.get(this.deps.pool, id);
    if (!row || row.token_id !== agent.id) throw notFound('approval');
    const what = `${row.server}/${row.tool}`;
    const grant = row.kind === 'production_grant';
    const messages: Record<ApprovalState, string> = {
      pending: grant ? `waiting for an operator to grant this session production access (until ${iso(row.expires_at)})` : `waiting for an operator to approve ${what} (until ${iso(row.expires_at)})`,
      approved: grant
        ? `approved by ${row.decided_by_name ?? row.decided_by}: this session has production access until ${iso(row.expires_at)}`
        : `approved by ${row.decided_by_name ?? row.decided_by}: repeat the identical call before ${iso(row.expires_at)}; it is allowed once`,
      rejected: `rejected by ${row.decided_by_name ?? row.decided_by}: ${row.reason ?? ''}`,
      expired: 'expired; repeat the call to ask again',
      used: `used by decision ${row.used_decision_id}`,
    };
    return { id: row.id, state: row.state, expires_at: row.expires_at, reason: row.reason, message: messages[row.state] };
  }

  // ---- Redis state ----

  /** Puts every approval in force back into Redis (after a restart or flush); never overwrites newer state. */
  async restore(): Promise<number> {
    const rows = await approvalStore.live(this.deps.pool);
    const results = await this.mirror.write(rows.map((r) => this.entry(r)), true);
    return results.filter((r) => r === 'SET').length;
  }

  /** Marks expired approvals in the record and audits each expiry once. */
  async sweep(): Promise<number> {
    return this.recordExpiries();
  }

  private async recordExpiries(ids?: readonly string[]): Promise<number> {
    try {
      const rows = await approvalStore.expire(this.deps.pool, ids);
      for (const row of rows) this.deps.audit.enqueue(expiredRow(row));
      return rows.length;
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'approvals: recording expiries failed (the sweeper retries)');
      return 0;
    }
  }

  private entry(row: ApprovalRow): MirrorEntry {
    let state = row.state === 'expired' ? (row.decided_at ? 'approved' : 'pending') : row.state;
    // An approved grant request is done once its grant exists (the grants module decides from then on):
    // the next HUMAN_AUTHORIZATION_REQUIRED of the session (grant expired or revoked) opens a new request.
    if (row.kind === 'production_grant' && state === 'approved') state = 'used';
    const e: MirrorEntry = { callKey: row.call_key, id: row.id, state, expiresAt: row.expires_at.getTime(), tokenId: row.token_id, ttlMs: row.ttl_seconds * 1000 };
    if (row.reason) e.why = row.reason;
    return e;
  }

  private what(call: CallContext): string {
    return `${call.call?.server ?? call.input.server}/${call.input.tool}`;
  }
}

function callItem(r: ApprovalRow): QueueItem {
  return {
    id: r.id,
    kind: r.kind,
    grant_id: r.grant_id,
    state: r.state,
    server: r.server,
    tool: r.tool,
    token_id: r.token_id,
    project_id: r.project_id,
    environment: r.environment,
    role: r.role,
    session_id: r.session_id,
    gateway_id: r.gateway_id,
    capability: r.capability,
    arguments: r.arguments,
    arguments_hash: r.arguments_hash,
    tool_hash: null,
    definition: null,
    rule: r.rule,
    separate_approver: r.separate_approver,
    requested_decision_id: r.requested_decision_id,
    created_at: r.created_at,
    expires_at: r.expires_at,
    decided_at: r.decided_at,
    decided_by: r.decided_by,
    decided_by_name: r.decided_by_name,
    reason: r.reason,
    used_at: r.used_at,
    used_decision_id: r.used_decision_id,
  };
}

function toolItem(r: ToolDefinitionRow): QueueItem {
  return {
    id: r.id,
    kind: 'tool_definition',
    grant_id: null,
    state: r.status,
    server: r.server,
    tool: r.tool,
    token_id: null,
    project_id: null,
    environment: null,
    role: null,
    session_id: null,
    gateway_id: r.reported_by_gateway,
    capability: null,
    arguments: null,
    arguments_hash: null,
    tool_hash: r.hash,
    definition: r.definition,
    rule: null,
    separate_approver: false,
    requested_decision_id: null,
    created_at: r.first_seen_at,
    expires_at: null,
    decided_at: r.decided_at,
    decided_by: r.decided_by,
    decided_by_name: null,
    reason: r.decision_reason,
    used_at: null,
    used_decision_id: null,
  };
}
