import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { AlertService } from '../alerts/service.js';
import { redactText } from '../audit/redact.js';
import type { AuditService } from '../audit/service.js';
import { type Pool, withTransaction } from '../db/pool.js';
import type { CallContext } from '../decisions/types.js';
import { AppError, invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import { RepeatedLog } from '../log-repeats.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { RedisHandle } from '../redis/client.js';
import type { OperatorPrincipal } from '../tokens/authenticator.js';
import { operatorActor } from '../tokens/service.js';
import { describeTarget, type KillTarget, killTargetKeysFor, liftedMessage, targetKey } from './keys.js';
import { KillMirror } from './mirror.js';
import type { CreateKillBody } from './schemas.js';
import { type KillRow, type KillState, killStore } from './store.js';

// Break-glass kills (DESIGN.md §5): the operator's way to stop calls on every replica at once without
// Unleash. Postgres is the record; Redis holds one key per target that the decision gate reads in its one
// round trip, so a kill is in force for every replica's next decision as soon as `create` returns.

export interface KillView extends KillRow {
  description: string;
}

export interface KillServiceDeps {
  pool: Pool;
  redis: RedisHandle;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  audit: Pick<AuditService, 'recordAdmin'>;
  alerts: Pick<AlertService, 'raise'>;
  policy: { current(): CompiledPolicy };
  /** The token a token kill names (404 when unknown or invisible to this operator). */
  findToken(op: OperatorPrincipal, id: string): Promise<{ project_id: string; revoked_at?: Date | null }>;
  /** The session a session kill names (404 when unknown or invisible to this operator). */
  findSession(op: OperatorPrincipal, id: string): Promise<{ project_id: string; token_id: string }>;
  /** A project kill's project: how many agent tokens it ever had, and how many are live now. */
  projectTokens(projectId: string): Promise<{ total: number; live: number }>;
  /** How often expiries are recorded and Redis is reconciled with Postgres. Default 5 s. */
  reconcileEveryMs?: number;
  mirror?: KillMirror;
}

// Fields each target requires; every other target field must be absent.
const FIELDS: Record<KillTarget['target'], { required: Array<keyof CreateKillBody>; optional?: Array<keyof CreateKillBody> }> = {
  everything: { required: [] },
  server: { required: ['server'] },
  capability: { required: ['capability'], optional: ['server'] },
  token: { required: ['token_id'] },
  project: { required: ['project_id'] },
  role: { required: ['role'] },
  environment: { required: ['environment'] },
  session: { required: ['session_id'] },
};
const TARGET_FIELDS: Array<keyof CreateKillBody> = ['server', 'capability', 'token_id', 'project_id', 'role', 'environment', 'session_id'];
// Targets ended this recently are re-checked by the reconciler, so a key whose lift failed halfway goes.
const RECENT_END_S = 600;
const EXPIRY_BATCH = 100;

/**
 * Reasons are operator free text, shown to every operator, in alerts and to agents in KILL_SWITCH
 * denials: a credential pasted into one is masked like in the audit trail. New kills store the masked
 * text; this also masks what kills recorded before that still hold.
 */
export function killView(k: KillRow): KillView {
  return { ...k, reason: redactText(k.reason), lift_reason: k.lift_reason === null ? null : redactText(k.lift_reason), description: describeTarget(k) };
}

/** Project-limited operators may kill and lift only inside their projects (never everything, a server, a role ...). */
function canManage(op: OperatorPrincipal, projectId: string | null): boolean {
  return op.projects === null || (projectId !== null && canSeeProject(op, projectId));
}

export class KillService {
  readonly mirror: KillMirror;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly failureLog = new RepeatedLog();

  constructor(private readonly deps: KillServiceDeps) {
    this.mirror = deps.mirror ?? new KillMirror(deps.pool, deps.redis, deps.log);
  }

  /** Full Redis key names of every kill that would stop this call (the gate step's `killKeys`). */
  keysFor(call: CallContext): string[] {
    return killTargetKeysFor(call).map((k) => this.mirror.redisKey(k));
  }

  /** Loads every kill in force into Redis (a kill created while Redis was away is applied here) and starts the reconciler. */
  async start(): Promise<void> {
    try {
      await this.mirror.loadAll();
    } catch (err) {
      // Decisions deny while Redis is away (fail closed); the reconciler applies the kills when it is back.
      this.deps.log.warn({ err: (err as Error).message }, 'kills: could not load the kills into Redis at start; retrying every few seconds');
    }
    this.timer = setInterval(() => void this.tick(), this.deps.reconcileEveryMs ?? 5_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
    this.failureLog.flush();
  }

  /** Records expiries and reconciles Redis with Postgres; concurrent callers share one run. */
  tick(): Promise<void> {
    this.running ??= (async () => {
      try {
        await this.recordExpiries();
        await this.mirror.reconcile(RECENT_END_S);
      } catch (err) {
        // Every 5 s for as long as Redis or Postgres is away: the first at once, the rest counted.
        const message = (err as Error).message;
        this.failureLog.note('reconcile', (repeat) => this.deps.log.warn({ err: message, ...repeat }, 'kills: reconciling Redis with Postgres failed; retrying'));
      }
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private validate(op: OperatorPrincipal, body: CreateKillBody): KillTarget {
    const spec = FIELDS[body.target];
    for (const f of spec.required) if (body[f] === undefined) throw invalid(f, `is required for target ${body.target}`);
    for (const f of TARGET_FIELDS) {
      if (body[f] !== undefined && !spec.required.includes(f) && !spec.optional?.includes(f)) throw invalid(f, `does not apply to target ${body.target}`);
    }
    const policy = this.deps.policy.current();
    // A typo must not look like a kill: names are checked against the policy in force.
    if (body.server !== undefined && !policy.servers.has(body.server)) {
      throw invalid('server', `${body.server} is not a server of the policy (${[...policy.servers.keys()].sort().join(', ')}); calls to it are denied anyway (UNKNOWN_SERVER)`);
    }
    if (body.role !== undefined && !policy.roles.has(body.role)) {
      throw invalid('role', `${body.role} is not a role of the policy; tokens with an unknown role are denied anyway`);
    }
    if (op.projects !== null && ['everything', 'server', 'capability', 'role', 'environment'].includes(body.target)) {
      throw new AppError('FORBIDDEN', `This operator key is limited to projects ${op.projects.join(', ')}; ${body.target === 'everything' ? 'a kill of everything stops' : `a ${body.target} kill stops`} other projects too. Kill the project, a token or a session instead.`);
    }
    return {
      target: body.target,
      server: body.server,
      capability: body.capability,
      token_id: body.token_id,
      project_id: body.project_id,
      role: body.role,
      environment: body.environment,
      session_id: body.session_id,
    };
  }

  async create(op: OperatorPrincipal, body: CreateKillBody): Promise<{ kill: KillView; enforced: boolean; active_tokens?: number; message: string }> {
    const target = this.validate(op, body);
    let projectId: string | null = null;
    let activeTokens: number | undefined;
    // Said with the answer, not refused: a second kill of a target is a second operator's record.
    const notes: string[] = [];
    if (target.target === 'project') {
      if (!canManage(op, target.project_id!)) throw new AppError('FORBIDDEN', `This operator key is limited to projects ${op.projects?.join(', ')}.`);
      projectId = target.project_id!;
      // A typo must not look like a kill (as for servers and roles): the project must be one some agent
      // token was issued to. Revoked and expired tokens count: the name is real, and the kill still stops
      // any token issued to the project later.
      const tokens = await this.deps.projectTokens(projectId);
      if (tokens.total === 0) {
        throw invalid('project_id', `no agent token has project ${projectId} (revoked ones included), so a kill of it would stop nothing; check the spelling (GET /v1/keys?project=...)`);
      }
      activeTokens = tokens.live;
    } else if (target.target === 'token') {
      const token = await this.deps.findToken(op, target.token_id!);
      projectId = token.project_id;
      if (token.revoked_at) notes.push(`The token was revoked at ${token.revoked_at.toISOString()}: its calls are refused (401) whatever the kill says.`);
    } else if (target.target === 'session') {
      projectId = (await this.deps.findSession(op, target.session_id!)).project_id;
    }
    const key = targetKey(target);
    let enforced = true;
    const row = await withTransaction(this.deps.pool, async (c) => {
      await killStore.lockTarget(c, key);
      const already = await killStore.targetState(c, key);
      if (already) notes.push(`Kill ${already.kill.id} of the same target was already in force (by ${already.kill.created_by}: ${redactText(already.kill.reason)}); both are, and lifting one leaves the other.`);
      const inserted = await killStore.insert(c, {
        id: uuidv7(),
        target: target.target,
        target_key: key,
        server: target.server ?? null,
        capability: target.capability ?? null,
        token_id: target.token_id ?? null,
        project_id: projectId,
        role: target.role ?? null,
        environment: target.environment ?? null,
        session_id: target.session_id ?? null,
        reason: redactText(body.reason),
        created_by: operatorActor(op),
        expiresInS: body.expires_in ?? null,
      });
      try {
        await this.mirror.apply(c, key);
      } catch (err) {
        // The record is kept: decisions deny while Redis is unreachable, and the reconciler (or the state
        // epoch reload after a Redis restart) applies the kill as soon as Redis answers again.
        enforced = false;
        this.deps.log.error({ err: (err as Error).message, kill: inserted.id }, 'kills: Redis did not take the kill; it is recorded and applied when Redis is back');
      }
      return inserted;
    });
    const kill = killView(row);
    await this.deps.audit
      .recordAdmin({
        actor: op,
        action: 'kill.created',
        target: `kill:${kill.id}`,
        projectId: projectId ?? undefined,
        sessionId: kill.session_id,
        tokenId: kill.token_id,
        details: { kill_id: kill.id, target: kill.target, target_key: key, description: kill.description, reason: kill.reason, expires_at: kill.expires_at?.toISOString() ?? null, enforced },
      })
      .catch((err: unknown) => this.deps.log.error({ err: (err as Error).message, kill: kill.id }, 'kills: the kill is in force but its audit row could not be written'));
    // Awaited (raise never rejects): a lift that follows at once finds the alert stored and acknowledges it.
    await this.deps.alerts.raise({
      kind: 'KILL_CREATED',
      severity: 'critical',
      message: `Operator ${op.name} killed ${kill.description}: ${kill.reason}${kill.expires_at ? ` (until ${kill.expires_at.toISOString()})` : ''}. Lift: DELETE /v1/kills/${kill.id}`,
      project_id: projectId,
      token_id: kill.token_id,
      session_id: kill.session_id,
      server: kill.server,
      details: { kill_id: kill.id, target: kill.target, target_key: key, enforced },
    });
    const covers =
      activeTokens === undefined
        ? ''
        : ` It covers ${activeTokens} active agent token(s) of the project${activeTokens === 0 ? ' (all of its tokens are revoked or expired)' : ''}, and any token issued to it while the kill is in force.`;
    const noted = notes.map((n) => ` ${n}`).join('');
    const message = enforced
      ? `Killed ${kill.description} on every replica: the next decision it matches is denied with KILL_SWITCH.${covers}${noted}`
      : `Recorded the kill of ${kill.description}, but Redis did not take it: decisions deny anyway while Redis is unreachable (fail closed), and the kill is applied as soon as it answers.${covers}${noted}`;
    return activeTokens === undefined ? { kill, enforced, message } : { kill, enforced, active_tokens: activeTokens, message };
  }

  async get(op: OperatorPrincipal, id: string): Promise<KillView> {
    const row = await killStore.get(this.deps.pool, id);
    if (!row || (row.project_id !== null && !canSeeProject(op, row.project_id))) throw notFound('kill');
    return killView(row);
  }

  async list(op: OperatorPrincipal, q: { state?: KillState | 'all' | undefined; limit?: number | undefined; before?: string | undefined }): Promise<{ kills: KillView[]; next_before: string | null }> {
    const limit = q.limit ?? 100;
    const rows = await killStore.list(this.deps.pool, {
      state: q.state ?? 'active',
      limit,
      visibleProjects: op.projects,
      ...(q.before ? { before: q.before } : {}),
    });
    return { kills: rows.map(killView), next_before: rows.length === limit ? rows[rows.length - 1]!.id : null };
  }

  /** Lifts one kill. Other kills of the same target stay in force (the key then names one of them). */
  async lift(op: OperatorPrincipal, id: string, liftReason: string): Promise<{ kill: KillView; message: string }> {
    const reason = redactText(liftReason);
    const before = await this.get(op, id);
    if (!canManage(op, before.project_id)) throw new AppError('FORBIDDEN', `This operator key is limited to projects ${op.projects?.join(', ')}; it cannot lift a kill of ${before.description}.`);
    let stillKilled = false;
    const row = await withTransaction(this.deps.pool, async (c) => {
      await killStore.lockTarget(c, before.target_key);
      const k = await killStore.lockKill(c, id);
      if (!k) throw notFound('kill');
      if (k.state === 'lifted') throw new AppError('CONFLICT', `Kill ${id} was already lifted by ${k.lifted_by} at ${k.lifted_at?.toISOString()}.`);
      if (k.state === 'expired') throw new AppError('CONFLICT', `Kill ${id} already expired at ${k.expires_at?.toISOString()}.`);
      const lifted = await killStore.lift(c, id, operatorActor(op), reason);
      try {
        await this.mirror.apply(c, before.target_key);
      } catch (err) {
        // Rolled back: a lift that Redis did not take would tell the operator calls resumed when they do not.
        this.deps.log.error({ err: (err as Error).message, kill: id }, 'kills: lift not applied: Redis unavailable');
        throw new AppError('SERVICE_UNAVAILABLE', 'Redis is unavailable, so the kill was not lifted (nothing changed); try again shortly.');
      }
      stillKilled = (await killStore.targetState(c, before.target_key)) !== undefined;
      return lifted;
    });
    const kill = killView(row);
    await this.deps.audit.recordAdmin({
      actor: op,
      action: 'kill.lifted',
      target: `kill:${kill.id}`,
      projectId: kill.project_id ?? undefined,
      sessionId: kill.session_id,
      tokenId: kill.token_id,
      details: { kill_id: kill.id, target: kill.target, target_key: kill.target_key, description: kill.description, reason, kill_reason: kill.reason, still_killed_by_another: stillKilled },
    });
    // Awaited (raise never rejects): it acknowledges the kill's KILL_CREATED alert (src/alerts, ANSWERS), so
    // when the lift answers, the alert is out of the inbox.
    await this.deps.alerts.raise({
      kind: 'KILL_LIFTED',
      message: `Operator ${op.name} lifted the kill of ${kill.description}: ${reason}${stillKilled ? ' (another kill of the same target is still in force)' : ''}`,
      project_id: kill.project_id,
      token_id: kill.token_id,
      session_id: kill.session_id,
      server: kill.server,
      details: { kill_id: kill.id, target: kill.target, target_key: kill.target_key },
    });
    const inForce = (await this.list(op, { state: 'active', limit: 100 }).catch(() => ({ kills: [] as KillView[] }))).kills;
    const others = this.othersInForce(inForce, kill.target_key);
    if (stillKilled) {
      // Which kill still holds the target (an operator at 3 a.m. lifts that one next, or leaves it), and
      // the kills of other targets, as for any lift. A key limited to projects may see neither.
      const same = inForce.filter((k) => k.target_key === kill.target_key && k.id !== kill.id);
      const holders = same.length > 0 ? `: ${same.map((k) => `kill ${k.id} (${k.reason})`).join('; ')}` : '';
      return { kill, message: `Lifted kill ${kill.id}, but another kill of ${kill.description} is still in force${holders} (killswitch kills, GET /v1/kills).${others ? ` ${others}` : ''}` };
    }
    return { kill, message: liftedMessage(kill, others) };
  }

  /**
   * The kills of other targets still in force, as a sentence to add to a lift's answer: a kill of the
   * whole project, of every call, of the server ... may still stop the calls this lift was meant to let
   * through (an operator lifting a token's kill while its project's is on was told they were back).
   */
  private othersInForce(inForce: readonly KillView[], liftedTarget: string): string {
    const others = inForce.filter((k) => k.target_key !== liftedTarget);
    if (others.length === 0) return '';
    const shown = others.slice(0, 3).map((k) => `${k.description} (kill ${k.id})`);
    const more = others.length > shown.length ? ` and ${others.length - shown.length} more` : '';
    return `${others.length === 1 ? 'Another kill is' : `${others.length} other kills are`} still in force and may stop some of them: ${shown.join('; ')}${more} (killswitch kills, GET /v1/kills).`;
  }

  /** Expired kills: Redis already dropped their keys (TTL); record each once, audit it and alert. */
  async recordExpiries(): Promise<number> {
    const due = await killStore.unrecordedExpiries(this.deps.pool, EXPIRY_BATCH);
    let recorded = 0;
    for (const d of due) {
      const row = await withTransaction(this.deps.pool, async (c) => {
        await killStore.lockTarget(c, d.target_key);
        const claimed = await killStore.recordExpiry(c, d.id);
        if (claimed) await this.mirror.apply(c, d.target_key);
        return claimed;
      });
      if (!row) continue; // another replica recorded it
      recorded++;
      const kill = killView(row);
      await this.deps.audit
        .recordAdmin({
          actor: 'kill-expiry',
          action: 'kill.expired',
          target: `kill:${kill.id}`,
          projectId: kill.project_id ?? undefined,
          sessionId: kill.session_id,
          tokenId: kill.token_id,
          details: { kill_id: kill.id, target: kill.target, target_key: kill.target_key, description: kill.description, kill_reason: kill.reason, expires_at: kill.expires_at?.toISOString() ?? null },
        })
        .catch(() => {});
      // Awaited like a lift's: it acknowledges the kill's KILL_CREATED alert.
      await this.deps.alerts.raise({
        kind: 'KILL_LIFTED',
        message: `The kill of ${kill.description} expired (${kill.reason}).`,
        project_id: kill.project_id,
        token_id: kill.token_id,
        session_id: kill.session_id,
        server: kill.server,
        details: { kill_id: kill.id, target: kill.target, target_key: kill.target_key, expired: true },
      });
    }
    return recorded;
  }
}
