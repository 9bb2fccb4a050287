import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// GET /v1/operator-keys/me: which key a person or script holds (the admin UI's header says it), read from
// the authenticated key itself.

const t = new TestContext();
let app: FastifyInstance;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
});
afterAll(() => t.teardown());

const me = (headers: Record<string, string>, url = '/v1/operator-keys/me') => app.inject({ method: 'GET', url, headers });

describe('GET /v1/operator-keys/me', () => {
  it('answers the key that asks: name, role, projects and expiry; a key without a limit has projects null', async () => {
    const before = Date.now();
    const limited = await app.ctx.credentials.createOperatorKey('test', { name: 'alpha night shift', role: 'viewer', projects: ['alpha', 'gamma'], expires_in: 3_600 });
    const res = await me(bearer(limited.key));
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body).toEqual({ id: limited.operator_key.id, name: 'alpha night shift', role: 'viewer', projects: ['alpha', 'gamma'], expires_at: expect.any(String) });
    expect(Date.parse(body.expires_at) - before).toBeGreaterThanOrEqual(3_599_000);
    expect(Date.parse(body.expires_at) - before).toBeLessThan(3_700_000);

    const owner = await app.ctx.credentials.createOperatorKey('test', { name: 'Dana', role: 'owner' });
    expect((await me(bearer(owner.key))).json()).toEqual({ id: owner.operator_key.id, name: 'Dana', role: 'owner', projects: null, expires_at: null });
  });

  it('refuses what is not a live operator key: none (401), a revoked one (401), an agent token or gateway key (403), a query (400)', async () => {
    expect((await me({})).statusCode).toBe(401);
    const owner = await t.operatorKey(app, 'owner');
    const gone = await app.ctx.credentials.createOperatorKey('test', { name: 'leaving', role: 'operator' });
    expect((await app.inject({ method: 'POST', url: `/v1/operator-keys/${gone.operator_key.id}/revoke`, headers: bearer(owner), payload: {} })).statusCode).toBe(204);
    expect((await me(bearer(gone.key))).statusCode).toBe(401);
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('ro');
    expect((await me(bearer(tok.raw))).json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
    expect((await me(bearer(gw.gatewayKey))).json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
    const withQuery = await me(bearer(owner), '/v1/operator-keys/me?id=x');
    expect(withQuery.statusCode).toBe(400);
    expect(withQuery.body).toContain('id');
  });
});
