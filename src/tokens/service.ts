import { v7 as uuidv7 } from 'uuid';
import type { AlertService } from '../alerts/service.js';
import { auditedReason, redactText } from '../audit/redact.js';
import type { AdminAction } from '../audit/rows.js';
import type { AuditService } from '../audit/service.js';
import { type Pool, withTransaction } from '../db/pool.js';
import { AppError, invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import { isUuid } from '../ids.js';
import { type Authenticator, type OperatorPrincipal, RevocationNotAnnounced } from './authenticator.js';
import { AGENT_PREFIXES, displayPrefix, GATEWAY_PREFIX, generateCredential, OPERATOR_PREFIX, type TokenType } from './format.js';
import { nameProblem } from './names.js';
import type { BulkRevokeBody, CreateAgentTokenBody } from './schemas.js';
import { DEFAULT_SCOPES, disallowedScopes, WRITE_RISK_WARNING } from './scopes.js';
import { type AgentTokenRow, type BulkTokenFilter, credentialStore, type GatewayKeyRow, type KeyRevocation, type OperatorKeyRow, type OperatorRole } from './store.js';

export type Actor = string;

export function operatorActor(op: OperatorPrincipal): Actor {
  return `operator:${op.id}`;
}

/** Whether keys limited to `projects` (null: every project) stay inside what `op` may manage. */
export function withinProjects(op: OperatorPrincipal, projects: readonly string[] | null | undefined): boolean {
  if (op.projects === null) return true;
  if (!projects || projects.length === 0) return false;
  return projects.every((p) => canSeeProject(op, p));
}

/** Key names are echoed in alerts and audit rows: one that would show as nothing, or as something else, is refused. */
function requireShowableName(name: string): void {
  const problem = nameProblem(name);
  if (problem) throw invalid('name', problem);
}

const expiry = (now: number, seconds: number | undefined): Date | null => (seconds ? new Date(now + seconds * 1000) : null);
const BULK_SAMPLE = 100;
const BULK_MAX = 10_000;

/** Credentials revoked in Postgres whose revocation Redis did not carry to the other replicas. */
export interface Unannounced {
  ids: string[];
  /** How long another replica may still accept them from its cache (TOKEN_CACHE_TTL_MS), when known. */
  staleForMs: number | null;
  error: string;
}

/** When the other replicas catch up after a missed announcement: their cache TTL. */
function catchUp(u: Unannounced): string {
  return u.staleForMs === null ? 'when their cache entry expires (TOKEN_CACHE_TTL_MS)' : `within ${u.staleForMs} ms (TOKEN_CACHE_TTL_MS)`;
}

/** One sentence for the operator: what a missed announcement means for the revoked `what` ("the token"). */
export function unannouncedNote(u: Unannounced, what: string): string {
  return `Redis did not take the announcement, so other replicas refuse ${what} ${catchUp(u)} instead of at once; this replica refuses ${what} already.`;
}

/**
 * An agent token as it is shown. Descriptions and revoke reasons are operator free text, stored with
 * credentials masked as in the audit trail; this also masks what tokens stored before that still hold.
 */
function tokenView(row: AgentTokenRow): AgentTokenRow {
  const description = redactText(row.description);
  if (row.revoke_reason === null && description === row.description) return row;
  return { ...row, description, revoke_reason: row.revoke_reason === null ? null : redactText(row.revoke_reason) };
}

/**
 * A second rotation of one token would issue a second live successor (a client retrying a rotate whose
 * answer it lost). The first successor's secret was shown once; the way on is to rotate or revoke it.
 */
function alreadyRotated(old: AgentTokenRow): AppError {
  const at = old.rotated_at!.toISOString();
  return new AppError(
    'CONFLICT',
    `Token ${old.id} was already rotated at ${at} into token ${old.rotated_to}; its secret was shown once, in that answer. If the answer was lost, rotate ${old.rotated_to} (POST /v1/keys/${old.rotated_to}/rotate) or revoke it.`,
    { rotated_to: old.rotated_to, rotated_at: at },
  );
}

/** An agent token as listed: with its halt in force, or null. */
export type ListedAgentTokenRow = AgentTokenRow & { halt: { trigger: string; halted_at: Date } | null };

/** What an operator reads when a token gets a role the policy does not define: its calls are all refused. */
export function unknownRoleWarning(role: string, policyRoles: ReadonlyMap<string, unknown>): string {
  const known = [...policyRoles.keys()].sort();
  return `Role ${role} is not defined by the policy in force (its roles: ${known.length > 0 ? known.join(', ') : 'none'}): every call of this token is refused with PERMISSION_DENIED, and the first one halts the token, until the policy file defines the role. If it is a typo, revoke this token and create another.`;
}

/** Rules for issuing and revoking credentials; the store writes, the routes translate HTTP. */
export class CredentialService {
  constructor(
    private readonly pool: Pool,
    private readonly auth: Pick<Authenticator, 'hash' | 'announceRevoked'>,
    /** Every issue and revocation is an ADMIN audit row (never the raw credential). */
    private readonly audit?: Pick<AuditService, 'recordAdmin'>,
    /** Bulk revocations and rotations raise TOKENS_REVOKED. */
    private readonly alerts?: Pick<AlertService, 'raise'>,
    /** The time expiry is set and judged by (ClockOffset.now: Postgres's while this clock is off). */
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * `policyRoles`: the roles of the policy in force on this replica. A role it does not define is issued
   * with a warning, not refused: the policy file is reloaded per replica, so during a roll-out a replica
   * may not know a role yet that the others do, and tokens are often issued before the role is deployed.
   */
  async createAgentToken(
    op: OperatorPrincipal,
    body: CreateAgentTokenBody,
    policyRoles?: ReadonlyMap<string, unknown>,
  ): Promise<{ token: string; key: AgentTokenRow; warning?: string }> {
    if (!canSeeProject(op, body.project_id)) {
      throw new AppError('FORBIDDEN', `This operator key is limited to projects ${op.projects?.join(', ')}; it cannot create tokens in ${body.project_id}.`);
    }
    const type: TokenType = body.type;
    // An admin token can write too (it holds every scope): it needs the same acknowledgement as rw, and its
    // confirmation below is the second one (DESIGN.md §6), not a replacement for it.
    if ((type === 'rw' || type === 'admin') && body.acknowledge_write_risk !== true) {
      throw new AppError('INVALID_REQUEST', WRITE_RISK_WARNING, [{ field: 'acknowledge_write_risk', problem: `must be true for ${type} tokens: ${WRITE_RISK_WARNING}` }]);
    }
    if (type === 'admin') {
      if (body.confirm_admin !== true) throw invalid('confirm_admin', 'must be true: admin tokens hold every scope, including delete, secrets:read and auth:*');
      if (body.confirm_project_id !== body.project_id) throw invalid('confirm_project_id', 'must repeat project_id exactly to confirm an admin token');
    }
    const scopes = body.scopes ?? [...DEFAULT_SCOPES[type]];
    const refused = disallowedScopes(type, scopes);
    if (refused.length > 0) {
      throw invalid('scopes', `${refused.join(', ')} cannot be held by ${AGENT_PREFIXES[type]} tokens (see GET /v1/scopes)`);
    }
    const raw = generateCredential(AGENT_PREFIXES[type]);
    const key = await credentialStore.insertAgentToken(this.pool, {
      id: uuidv7(),
      type,
      key_prefix: AGENT_PREFIXES[type],
      display_prefix: displayPrefix(raw, AGENT_PREFIXES[type]),
      key_hash: this.auth.hash(raw),
      scopes,
      role: body.role,
      project_id: body.project_id,
      environment: body.environment,
      description: redactText(body.description ?? ''),
      created_by: operatorActor(op),
      expires_at: expiry(this.now(), body.expires_in),
    });
    await this.audit?.recordAdmin({
      actor: op,
      action: 'key.created',
      target: `agent_token:${key.id}`,
      projectId: key.project_id,
      details: { type, role: key.role, scopes: key.scopes, environment: key.environment, display_prefix: key.display_prefix, expires_at: key.expires_at },
    });
    const warnings = type === 'rw' || type === 'admin' ? [WRITE_RISK_WARNING] : [];
    if (policyRoles && !policyRoles.has(key.role)) warnings.push(unknownRoleWarning(key.role, policyRoles));
    return warnings.length > 0 ? { token: raw, key, warning: warnings.join(' ') } : { token: raw, key };
  }

  async getAgentToken(op: OperatorPrincipal, id: string): Promise<AgentTokenRow> {
    const row = await credentialStore.getAgentToken(this.pool, id);
    if (!row || !canSeeProject(op, row.project_id)) throw notFound('token');
    return tokenView(row);
  }

  async listAgentTokens(op: OperatorPrincipal, q: { type?: TokenType; project?: string; revoked?: boolean; limit?: number; before?: string }): Promise<ListedAgentTokenRow[]> {
    const rows = await credentialStore.listAgentTokens(this.pool, {
      ...q,
      limit: q.limit ?? 100,
      projects: op.projects ? [...op.projects] : null,
    });
    return this.withHalts(rows.map(tokenView));
  }

  /** One agent token with its halt in force (GET /v1/keys/:id). */
  async showAgentToken(op: OperatorPrincipal, id: string): Promise<ListedAgentTokenRow> {
    const [shown] = await this.withHalts([await this.getAgentToken(op, id)]);
    return shown!;
  }

  /** Operators look for a halted token where tokens are listed, not only on the Sessions page. */
  private async withHalts(rows: AgentTokenRow[]): Promise<ListedAgentTokenRow[]> {
    const halts = new Map((await credentialStore.activeHalts(this.pool, rows.map((r) => r.id))).map((h) => [h.token_id, h]));
    return rows.map((r) => {
      const h = halts.get(r.id);
      return { ...r, halt: h ? { trigger: h.trigger, halted_at: h.halted_at } : null };
    });
  }

  /**
   * Tells every replica to drop revoked (or re-dated) credentials from its cache. It runs after the change
   * is committed, so it never throws: a Redis outage must not turn a revocation that happened into an error
   * (the operator would retry a change already made, and its audit row would be missing). Missing it only means the
   * other replicas refuse the credentials when their cache entry expires (TOKEN_CACHE_TTL_MS, seconds)
   * instead of at once. No retry queue: the TTL already closes the window before a retry could help much.
   */
  private async announce(ids: readonly string[]): Promise<Unannounced | null> {
    const results = await Promise.allSettled(ids.map((id) => this.auth.announceRevoked(id)));
    const failed: string[] = [];
    let cause: unknown;
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') return;
      failed.push(ids[i]!);
      cause ??= r.reason;
    });
    if (failed.length === 0) return null;
    return { ids: failed, staleForMs: cause instanceof RevocationNotAnnounced ? cause.staleForMs : null, error: (cause as Error)?.message ?? String(cause) };
  }

  async revokeAgentToken(op: OperatorPrincipal, id: string, operatorReason: string): Promise<{ key: AgentTokenRow; unannounced: Unannounced | null }> {
    // Stored as revoke_reason and listed with the token: masked as in the audit row.
    const reason = redactText(operatorReason);
    await this.getAgentToken(op, id);
    const revoked = await credentialStore.revokeAgentToken(this.pool, id, operatorActor(op), reason);
    if (!revoked) throw notFound('token');
    const { row, revokedNow } = revoked;
    // Announced again on a repeat too: a replica that missed the first announcement hears this one.
    const unannounced = await this.announce([id]);
    // A repeat revoked nothing: its row says so and names the first revocation, which the token keeps
    // (dates as ISO strings: the audit trail's redaction would turn a Date into {}).
    const repeat = revokedNow ? {} : { already_revoked_at: row.revoked_at?.toISOString() ?? null, already_revoked_by: row.revoked_by, kept_reason: row.revoke_reason === null ? null : redactText(row.revoke_reason) };
    await this.audit?.recordAdmin({
      actor: op,
      action: 'key.revoked',
      target: `agent_token:${id}`,
      projectId: row.project_id,
      details: { reason, display_prefix: row.display_prefix, announced: unannounced === null, ...repeat },
    });
    // A token revoked before keeps its first reason, which may predate masking.
    return { key: tokenView(row), unannounced };
  }

  /**
   * Revokes every live agent token a filter matches. A dry run only counts; the real run must repeat the
   * dry run's count (`expected_count`), so what gets revoked is exactly what the operator looked at.
   */
  async bulkRevoke(op: OperatorPrincipal, body: BulkRevokeBody): Promise<{ dry_run: boolean; count: number; tokens: AgentTokenRow[]; message: string; unannounced: Unannounced | null }> {
    // Refused, not answered "0 match": during an incident that would read as "that project has no such tokens".
    if (body.project_id !== undefined && !canSeeProject(op, body.project_id)) {
      throw new AppError('FORBIDDEN', `This operator key is limited to projects ${op.projects?.join(', ')}; it cannot revoke tokens of project ${body.project_id}.`, [
        { field: 'project_id', problem: `must be one of the key's projects (${op.projects?.join(', ')})` },
      ]);
    }
    const filter: BulkTokenFilter = {
      project: body.project_id,
      type: body.type,
      createdBy: body.created_by === undefined ? undefined : isUuid(body.created_by) ? `operator:${body.created_by}` : body.created_by,
      createdBefore: body.created_before ? new Date(body.created_before) : undefined,
      lastUsedBefore: body.last_used_before ? new Date(body.last_used_before) : undefined,
      projects: op.projects ? [...op.projects] : null,
    };
    if (!filter.project && !filter.type && !filter.createdBy && !filter.createdBefore && !filter.lastUsedBefore) {
      throw invalid('project_id', 'name at least one filter (project_id, type, created_by, created_before, last_used_before); to stop every agent use a kill (POST /v1/kills)');
    }
    if (body.dry_run) {
      const count = await credentialStore.countBulk(this.pool, filter);
      const tokens = (await credentialStore.matchBulk(this.pool, filter, { limit: BULK_SAMPLE })).map(tokenView);
      return { dry_run: true, count, tokens, message: `${count} live agent token(s) match; repeat with dry_run false, a reason and expected_count ${count} to revoke them.`, unannounced: null };
    }
    if (!body.reason) throw invalid('reason', 'is required to revoke (dry_run false)');
    if (body.expected_count === undefined) throw invalid('expected_count', 'is required to revoke: run with dry_run true first and pass the count it answered');
    // Stored as each token's revoke_reason: masked as in the audit row.
    const reason = redactText(body.reason);
    const expected = body.expected_count;
    const revoked = await withTransaction(this.pool, async (c) => {
      const matched = await credentialStore.matchBulk(c, filter, { limit: BULK_MAX + 1, forUpdate: true });
      if (matched.length > BULK_MAX) throw invalid('project_id', `more than ${BULK_MAX} tokens match; narrow the filter and revoke in several steps`);
      if (matched.length !== expected) {
        throw new AppError('CONFLICT', `The filter now matches ${matched.length} token(s), not the ${expected} of the dry run; nothing was revoked. Run the dry run again.`, { count: matched.length, expected_count: expected });
      }
      return credentialStore.revokeAgentTokens(c, matched.map((t) => t.id), operatorActor(op), reason);
    });
    const ids = revoked.map((t) => t.id);
    const unannounced = await this.announce(ids);
    // One audit row and one alert per project: each project's operators see their tokens, and nobody
    // another project's token ids (a row or alert with no project is visible to every limited key).
    const byProject = new Map<string, string[]>();
    for (const t of revoked) byProject.set(t.project_id, [...(byProject.get(t.project_id) ?? []), t.id]);
    const filterShown = { project_id: body.project_id, type: body.type, created_by: filter.createdBy, created_before: body.created_before, last_used_before: body.last_used_before };
    // Awaited (raise never rejects): when the answer comes, GET /v1/alerts already lists them.
    const raised: Promise<unknown>[] = [];
    for (const [projectId, projectIds] of byProject) {
      await this.audit?.recordAdmin({
        actor: op,
        action: 'key.bulk_revoked',
        target: 'agent_tokens',
        projectId,
        details: { reason, count: projectIds.length, ids: projectIds, total_count: ids.length, filter: filterShown, announced: unannounced === null },
      });
      if (this.alerts) raised.push(this.alerts.raise({
        kind: 'TOKENS_REVOKED',
        message: `Operator ${op.name} revoked ${projectIds.length} agent token(s) of project ${projectId} in bulk: ${reason}`,
        project_id: projectId,
        numbers: { count: projectIds.length },
        details: { ids: projectIds.slice(0, 100) },
      }));
    }
    await Promise.all(raised);
    if (ids.length === 0) {
      await this.audit?.recordAdmin({ actor: op, action: 'key.bulk_revoked', target: 'agent_tokens', details: { reason, count: 0, ids: [], filter: filterShown, announced: true } });
    }
    const message = unannounced ? `Revoked ${ids.length} agent token(s). ${unannouncedNote(unannounced, 'them')}` : `Revoked ${ids.length} agent token(s) on every replica.`;
    return { dry_run: false, count: ids.length, tokens: revoked.slice(0, BULK_SAMPLE).map(tokenView), message, unannounced };
  }

  /**
   * Issues a new token with the same settings (type, scopes, role, project, environment, description and
   * lifetime) and lets the old one work for `graceSeconds` more, so agents can switch without an outage.
   * Halts and kills of the old token do not carry over to the new one.
   */
  async rotateAgentToken(
    op: OperatorPrincipal,
    id: string,
    graceSeconds: number,
    reason?: string,
  ): Promise<{ token: string; key: AgentTokenRow; previous: AgentTokenRow; grace_until: Date; warning?: string; message: string; unannounced: Unannounced | null }> {
    await this.getAgentToken(op, id);
    const raw = { value: '' };
    const { key, previous } = await withTransaction(this.pool, async (c) => {
      const old = await credentialStore.lockAgentToken(c, id);
      if (!old) throw notFound('token');
      if (old.revoked_at) throw new AppError('CONFLICT', `Token ${id} is revoked; create a new token instead (POST /v1/keys).`);
      if (old.rotated_to) throw alreadyRotated(old);
      if (old.expires_at && old.expires_at.getTime() <= this.now()) throw new AppError('CONFLICT', `Token ${id} has expired; create a new token instead (POST /v1/keys).`);
      raw.value = generateCredential(AGENT_PREFIXES[old.type]);
      const lifetimeMs = old.expires_at ? old.expires_at.getTime() - old.created_at.getTime() : null;
      const key = await credentialStore.insertAgentToken(c, {
        id: uuidv7(),
        type: old.type,
        key_prefix: old.key_prefix,
        display_prefix: displayPrefix(raw.value, AGENT_PREFIXES[old.type]),
        key_hash: this.auth.hash(raw.value),
        scopes: old.scopes,
        role: old.role,
        project_id: old.project_id,
        environment: old.environment,
        // Masked: a token created before descriptions were masked kept one in clear.
        description: redactText(old.description),
        // The same agent under a new secret: it keeps its creator (a bulk revoke by creator goes by it).
        // The rotator receives the new secret, so it joins the secret holders that `separate_approver`
        // keeps from approving the token's calls, with everyone who rotated an earlier token of the chain.
        created_by: old.created_by,
        rotated_by: old.rotated_by.includes(operatorActor(op)) ? old.rotated_by : [...old.rotated_by, operatorActor(op)],
        expires_at: lifetimeMs === null ? null : new Date(this.now() + lifetimeMs),
      });
      const previous = await credentialStore.markRotated(c, id, key.id, new Date(this.now() + graceSeconds * 1000));
      return { key, previous };
    });
    // Cached principals carry the old expiry: drop them everywhere so the grace period holds on every replica.
    const unannounced = await this.announce([id]);
    const graceUntil = previous.expires_at!;
    await this.audit?.recordAdmin({
      actor: op,
      action: 'key.rotated',
      target: `agent_token:${id}`,
      projectId: previous.project_id,
      details: {
        reason: reason ?? null,
        new_token_id: key.id,
        grace_seconds: graceSeconds,
        valid_until: graceUntil.toISOString(),
        display_prefix: previous.display_prefix,
        announced: unannounced === null,
      },
    });
    await this.audit?.recordAdmin({
      actor: op,
      action: 'key.created',
      target: `agent_token:${key.id}`,
      projectId: key.project_id,
      details: { rotated_from: id, type: key.type, role: key.role, scopes: key.scopes, environment: key.environment, display_prefix: key.display_prefix, expires_at: key.expires_at },
    });
    await this.alerts?.raise({
      kind: 'TOKENS_REVOKED',
      severity: 'info',
      message: `Operator ${op.name} rotated token ${previous.display_prefix}… (${id}); the old token stops working at ${graceUntil.toISOString()}.${reason ? ` ${reason}` : ''}`,
      token_id: id,
      project_id: previous.project_id,
      numbers: { grace_seconds: graceSeconds },
      details: { new_token_id: key.id },
    });
    const message = `New token issued; the old one works until ${graceUntil.toISOString()}. Halts and kills of the old token do not apply to the new one.${
      unannounced ? ` Redis did not take the announcement: other replicas learn the old token's new expiry ${catchUp(unannounced)} instead of at once.` : ''
    }`;
    return key.type === 'rw' || key.type === 'admin'
      ? { token: raw.value, key: tokenView(key), previous: tokenView(previous), grace_until: graceUntil, warning: WRITE_RISK_WARNING, message, unannounced }
      : { token: raw.value, key: tokenView(key), previous: tokenView(previous), grace_until: graceUntil, message, unannounced };
  }

  async createGatewayKey(op: OperatorPrincipal, name: string, expiresIn?: number): Promise<{ key: string; gateway_key: GatewayKeyRow }> {
    requireShowableName(name);
    const raw = generateCredential(GATEWAY_PREFIX);
    const row = await credentialStore.insertGatewayKey(this.pool, {
      id: uuidv7(),
      name,
      display_prefix: displayPrefix(raw, GATEWAY_PREFIX),
      key_hash: this.auth.hash(raw),
      created_by: operatorActor(op),
      expires_at: expiry(this.now(), expiresIn),
    });
    await this.audit?.recordAdmin({ actor: op, action: 'gateway_key.created', target: `gateway_key:${row.id}`, details: { name, display_prefix: row.display_prefix, expires_at: row.expires_at } });
    return { key: raw, gateway_key: row };
  }

  /** `createdBy`: the operator (its ADMIN row then carries name and role), or a system part (cli, bootstrap). */
  async createOperatorKey(
    createdBy: OperatorPrincipal | Actor,
    k: { name: string; role: OperatorRole; projects?: string[] | undefined; expires_in?: number | undefined },
    raw = generateCredential(OPERATOR_PREFIX),
  ): Promise<{ key: string; operator_key: OperatorKeyRow }> {
    requireShowableName(k.name);
    const row = await credentialStore.insertOperatorKey(this.pool, this.operatorKeyRow(createdBy, k, raw));
    await this.recordOperatorKeyCreated(createdBy, row);
    return { key: raw, operator_key: row };
  }

  /**
   * The first start's owner key, made only on a database without operator keys; undefined when one
   * exists. Count and insert hold one advisory lock: replicas (or WORKERS) starting together on an empty
   * database would otherwise each see none and each make an owner key (and leave its file).
   */
  async createFirstOwnerKey(raw = generateCredential(OPERATOR_PREFIX)): Promise<{ key: string; operator_key: OperatorKeyRow } | undefined> {
    const k = { name: 'bootstrap owner', role: 'owner' as const };
    const row = await withTransaction(this.pool, async (c) => {
      await credentialStore.lockFirstOwner(c);
      if ((await credentialStore.countOperatorKeys(c)) > 0) return undefined;
      return credentialStore.insertOperatorKey(c, this.operatorKeyRow('bootstrap', k, raw));
    });
    if (!row) return undefined;
    await this.recordOperatorKeyCreated('bootstrap', row);
    return { key: raw, operator_key: row };
  }

  private operatorKeyRow(createdBy: OperatorPrincipal | Actor, k: { name: string; role: OperatorRole; projects?: string[] | undefined; expires_in?: number | undefined }, raw: string) {
    return {
      id: uuidv7(),
      name: k.name,
      role: k.role,
      projects: k.projects ?? null,
      display_prefix: displayPrefix(raw, OPERATOR_PREFIX),
      key_hash: this.auth.hash(raw),
      created_by: typeof createdBy === 'string' ? createdBy : operatorActor(createdBy),
      expires_at: expiry(this.now(), k.expires_in),
    };
  }

  private async recordOperatorKeyCreated(createdBy: OperatorPrincipal | Actor, row: OperatorKeyRow): Promise<void> {
    await this.recordOperatorKeyAction(row.projects, {
      actor: createdBy,
      action: 'operator_key.created',
      target: `operator_key:${row.id}`,
      details: { name: row.name, role: row.role, projects: row.projects, display_prefix: row.display_prefix, expires_at: row.expires_at },
    });
  }

  /**
   * The row of an action on an operator key: under its project when the key is limited to exactly one, so
   * the owner limited to that project, who can list and revoke the key, finds what was done to it; else
   * under no project. Never one row per project: a key limited to projects A and B is not listed to an
   * owner of A alone, and a row under A would show it to anyone who reads A's audit trail.
   */
  private async recordOperatorKeyAction(projects: readonly string[] | null, action: Omit<AdminAction, 'projectId'>): Promise<void> {
    await this.audit?.recordAdmin(projects?.length === 1 ? { ...action, projectId: projects[0] } : action);
  }

  async listKeys<T extends 'gateway_keys' | 'operator_keys'>(table: T) {
    return credentialStore.listKeys(this.pool, table);
  }

  /** Operator keys an owner may see and revoke: all of them, or for a project-limited owner only keys limited to its projects. */
  async listOperatorKeys(op: OperatorPrincipal): Promise<OperatorKeyRow[]> {
    const rows = await credentialStore.listKeys(this.pool, 'operator_keys');
    return op.projects === null ? rows : rows.filter((r) => withinProjects(op, r.projects));
  }

  async revokeKey(table: 'gateway_keys' | 'operator_keys', id: string, by: OperatorPrincipal | Actor = 'unknown', operatorReason?: string): Promise<{ unannounced: Unannounced | null }> {
    const reason = auditedReason(operatorReason);
    // A project-limited owner cannot tell other keys exist, let alone revoke them.
    const operatorKey = table === 'operator_keys' ? (typeof by !== 'string' && by.projects !== null ? await this.listOperatorKeys(by) : await this.listKeys('operator_keys')).find((r) => r.id === id) : undefined;
    if (table === 'operator_keys' && typeof by !== 'string' && by.projects !== null && !operatorKey) throw notFound('operator key');
    let revoked: KeyRevocation;
    if (table === 'operator_keys') {
      const outcome = await withTransaction(this.pool, (c) => credentialStore.revokeOperatorKey(c, id));
      if (outcome === 'not_found') throw notFound('operator key');
      if (outcome === 'last_owner') {
        throw new AppError(
          'CONFLICT',
          `Operator key ${id} is the last owner key for every project, or every other one expires before it: revoking it would leave nobody able to create or revoke operator keys (at once, or once they expire). Create another owner key first (POST /v1/operator-keys with role owner, with no expires_in or one lasting longer than this key), then revoke this one.`,
          { reason: 'last_owner_key' },
        );
      }
      revoked = outcome;
    } else {
      const outcome = await credentialStore.revokeKey(this.pool, table, id);
      if (!outcome) throw notFound('gateway key');
      revoked = outcome;
    }
    const unannounced = await this.announce([id]);
    const kind = table === 'gateway_keys' ? 'gateway_key' : 'operator_key';
    const repeat = revoked.revokedNow ? {} : { already_revoked_at: revoked.revokedAt.toISOString() };
    await this.recordOperatorKeyAction(operatorKey?.projects ?? null, { actor: by, action: `${kind}.revoked`, target: `${kind}:${id}`, details: { ...reason, announced: unannounced === null, ...repeat } });
    return { unannounced };
  }
}
