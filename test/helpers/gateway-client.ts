import type { FastifyInstance } from 'fastify';
import { bearer, type TestContext } from './context.js';

export type TokenType = 'ro' | 'rw' | 'admin';

/**
 * Drives a control-plane instance the way a gateway does, through HTTP only: operator key → gateway key
 * and agent tokens → sessions → decisions → results.
 */
export class GatewayDriver {
  owner = '';
  gatewayKey = '';

  constructor(
    readonly t: TestContext,
    readonly app: FastifyInstance,
  ) {}

  async init(): Promise<this> {
    this.owner = await this.t.operatorKey(this.app, 'owner');
    const gw = await this.app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(this.owner), payload: { name: 'test gateway' } });
    if (gw.statusCode !== 201) throw new Error(`gateway key: ${gw.body}`);
    this.gatewayKey = gw.json().key;
    return this;
  }

  async token(type: TokenType, opts: { role?: string; environment?: string; project?: string; scopes?: string[] } = {}): Promise<{ raw: string; id: string }> {
    const project = opts.project ?? 'alpha';
    const payload: Record<string, unknown> = { type, role: opts.role ?? 'code_agent', project_id: project, environment: opts.environment ?? 'development' };
    if (type !== 'ro') payload['acknowledge_write_risk'] = true;
    if (type === 'admin') Object.assign(payload, { confirm_admin: true, confirm_project_id: project });
    if (opts.scopes) payload['scopes'] = opts.scopes;
    const res = await this.app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(this.owner), payload });
    if (res.statusCode !== 201) throw new Error(`token: ${res.body}`);
    return { raw: res.json().token, id: res.json().key.id };
  }

  headers(agentToken: string) {
    return { ...bearer(this.gatewayKey), 'x-agent-token': agentToken };
  }

  async session(agentToken: string, scope: { read_only?: boolean; servers?: string[]; purpose?: string } = {}): Promise<{ session_id: string; state: string; trigger?: string | null }> {
    const res = await this.app.inject({ method: 'POST', url: '/v1/sessions', headers: this.headers(agentToken), payload: scope });
    if (res.statusCode !== 201) throw new Error(`session: ${res.statusCode} ${res.body}`);
    return res.json();
  }

  async decide(agentToken: string, body: Record<string, unknown>) {
    const res = await this.app.inject({ method: 'POST', url: '/v1/decisions', headers: this.headers(agentToken), payload: { arguments: {}, ...body } });
    if (res.statusCode !== 200) throw new Error(`decision: ${res.statusCode} ${res.body}`);
    return res.json();
  }

  async result(agentToken: string, decisionId: string, body: Record<string, unknown>) {
    return this.app.inject({ method: 'POST', url: `/v1/decisions/${decisionId}/result`, headers: this.headers(agentToken), payload: body });
  }
}
