import { v7 as uuidv7 } from 'uuid';
import type { AuditService } from '../audit/service.js';
import type { Pool } from '../db/pool.js';
import { AppError, invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import type { Authenticator, OperatorPrincipal } from './authenticator.js';
import { AGENT_PREFIXES, displayPrefix, GATEWAY_PREFIX, generateCredential, OPERATOR_PREFIX, type TokenType } from './format.js';
import type { CreateAgentTokenBody } from './schemas.js';
import { DEFAULT_SCOPES, disallowedScopes, WRITE_RISK_WARNING } from './scopes.js';
import { type AgentTokenRow, credentialStore, type GatewayKeyRow, type OperatorKeyRow, type OperatorRole } from './store.js';

export type Actor = string;

export function operatorActor(op: OperatorPrincipal): Actor {
  return `operator:${op.id}`;
}

const expiry = (seconds: number | undefined): Date | null => (seconds ? new Date(Date.now() + seconds * 1000) : null);

/** Rules for issuing and revoking credentials; the store writes, the routes translate HTTP. */
export class CredentialService {
  constructor(
    private readonly pool: Pool,
    private readonly auth: Pick<Authenticator, 'hash' | 'announceRevoked'>,
    /** Every issue and revocation is an ADMIN audit row (never the raw credential). */
    private readonly audit?: Pick<AuditService, 'recordAdmin'>,
  ) {}

  async createAgentToken(op: OperatorPrincipal, body: CreateAgentTokenBody): Promise<{ token: string; key: AgentTokenRow; warning?: string }> {
    if (!canSeeProject(op, body.project_id)) {
      throw new AppError('FORBIDDEN', `This operator key is limited to projects ${op.projects?.join(', ')}; it cannot create tokens in ${body.project_id}.`);
    }
    const type: TokenType = body.type;
    if (type === 'rw' && body.acknowledge_write_risk !== true) {
      throw new AppError('INVALID_REQUEST', WRITE_RISK_WARNING, [{ field: 'acknowledge_write_risk', problem: `must be true for rw tokens: ${WRITE_RISK_WARNING}` }]);
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
      description: body.description ?? '',
      created_by: operatorActor(op),
      expires_at: expiry(body.expires_in),
    });
    await this.audit?.recordAdmin({
      actor: op,
      action: 'key.created',
      target: `agent_token:${key.id}`,
      projectId: key.project_id,
      details: { type, role: key.role, scopes: key.scopes, environment: key.environment, display_prefix: key.display_prefix, expires_at: key.expires_at },
    });
    return type === 'rw' || type === 'admin' ? { token: raw, key, warning: WRITE_RISK_WARNING } : { token: raw, key };
  }

  async getAgentToken(op: OperatorPrincipal, id: string): Promise<AgentTokenRow> {
    const row = await credentialStore.getAgentToken(this.pool, id);
    if (!row || !canSeeProject(op, row.project_id)) throw notFound('token');
    return row;
  }

  async listAgentTokens(op: OperatorPrincipal, q: { type?: TokenType; project?: string; revoked?: boolean; limit?: number; before?: string }): Promise<AgentTokenRow[]> {
    return credentialStore.listAgentTokens(this.pool, {
      ...q,
      limit: q.limit ?? 100,
      projects: op.projects ? [...op.projects] : null,
    });
  }

  async revokeAgentToken(op: OperatorPrincipal, id: string, reason: string): Promise<AgentTokenRow> {
    await this.getAgentToken(op, id);
    const row = await credentialStore.revokeAgentToken(this.pool, id, operatorActor(op), reason);
    if (!row) throw notFound('token');
    await this.auth.announceRevoked(id);
    await this.audit?.recordAdmin({ actor: op, action: 'key.revoked', target: `agent_token:${id}`, projectId: row.project_id, details: { reason, display_prefix: row.display_prefix } });
    return row;
  }

  async createGatewayKey(op: OperatorPrincipal, name: string, expiresIn?: number): Promise<{ key: string; gateway_key: GatewayKeyRow }> {
    const raw = generateCredential(GATEWAY_PREFIX);
    const row = await credentialStore.insertGatewayKey(this.pool, {
      id: uuidv7(),
      name,
      display_prefix: displayPrefix(raw, GATEWAY_PREFIX),
      key_hash: this.auth.hash(raw),
      created_by: operatorActor(op),
      expires_at: expiry(expiresIn),
    });
    await this.audit?.recordAdmin({ actor: op, action: 'gateway_key.created', target: `gateway_key:${row.id}`, details: { name, display_prefix: row.display_prefix, expires_at: row.expires_at } });
    return { key: raw, gateway_key: row };
  }

  async createOperatorKey(
    createdBy: Actor,
    k: { name: string; role: OperatorRole; projects?: string[] | undefined; expires_in?: number | undefined },
    raw = generateCredential(OPERATOR_PREFIX),
  ): Promise<{ key: string; operator_key: OperatorKeyRow }> {
    const row = await credentialStore.insertOperatorKey(this.pool, {
      id: uuidv7(),
      name: k.name,
      role: k.role,
      projects: k.projects ?? null,
      display_prefix: displayPrefix(raw, OPERATOR_PREFIX),
      key_hash: this.auth.hash(raw),
      created_by: createdBy,
      expires_at: expiry(k.expires_in),
    });
    await this.audit?.recordAdmin({
      actor: createdBy,
      action: 'operator_key.created',
      target: `operator_key:${row.id}`,
      details: { name: row.name, role: row.role, projects: row.projects, display_prefix: row.display_prefix, expires_at: row.expires_at },
    });
    return { key: raw, operator_key: row };
  }

  async listKeys<T extends 'gateway_keys' | 'operator_keys'>(table: T) {
    return credentialStore.listKeys(this.pool, table);
  }

  async revokeKey(table: 'gateway_keys' | 'operator_keys', id: string, by: OperatorPrincipal | Actor = 'unknown'): Promise<void> {
    if (!(await credentialStore.revokeKey(this.pool, table, id))) throw notFound(table === 'gateway_keys' ? 'gateway key' : 'operator key');
    await this.auth.announceRevoked(id);
    const kind = table === 'gateway_keys' ? 'gateway_key' : 'operator_key';
    await this.audit?.recordAdmin({ actor: by, action: `${kind}.revoked`, target: `${kind}:${id}` });
  }
}
