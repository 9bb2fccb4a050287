import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Security review: a revoked agent token used on POST /v1/decisions got a 401 and left no trace. A
// credential recognised as revoked or expired now leaves one AUTH_FAILURE row (at most one per credential a
// minute on each replica) and a warn line; unknown credentials are noise: a log line, no row.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  await t.teardown();
});

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });
const failures = async () => {
  await app.ctx.audit.writer.flush();
  return (await t.pool().query("SELECT * FROM audit_events WHERE kind = 'AUTH_FAILURE' ORDER BY seq")).rows;
};

describe('refused credentials leave a trace', () => {
  it('a revoked agent token on POST /v1/decisions: 401 and one AUTH_FAILURE row naming it; a second use within the minute adds none; an unknown token adds none', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    expect(await failures()).toHaveLength(0);
    await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'test' } });

    const use = () => app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...read('a.md'), session_id: s.session_id } });
    const refusedUse = await use();
    expect(refusedUse.statusCode).toBe(401);
    expect(refusedUse.json().error.message).toBe('The agent token is revoked: ask an operator for a token (docs/tokens.md).');
    const rows = await failures();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      kind: 'AUTH_FAILURE',
      actor_type: 'system',
      actor_id: 'auth',
      action: 'credential.revoked',
      target: `agent_token:${tok.id}`,
      ip: '127.0.0.1',
      details: { presented_type: 'agent_token', presented_id: tok.id, reason: 'revoked', token_type: 'rw', method: 'POST', route: '/v1/decisions' },
    });
    expect(rows[0].details.gateway_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(t.logs.lines.some((l) => l.includes('a revoked agent token was presented and refused (401)') && l.includes(tok.id))).toBe(true);

    expect((await use()).statusCode).toBe(401);
    expect(await failures()).toHaveLength(1);

    const unknown = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers('mcp_rw_AbCdEfGhIjKlMnOpQrStUv123456'), payload: { ...read('a.md'), session_id: s.session_id } });
    expect(unknown.statusCode).toBe(401);
    expect(await failures()).toHaveLength(1);
  });
});

describe('a 401 on a gateway route says which header is wrong and what it holds (gateway integrator review)', () => {
  const cases = (agent: string, viewer: string): Array<[string, Record<string, string>, string]> => [
    ['no Authorization', { 'x-agent-token': agent }, 'Missing credential: send the gateway key as "Authorization: Bearer ksgw_..." and the agent token in X-Agent-Token.'],
    ['the gateway key without Bearer', { authorization: gw.gatewayKey, 'x-agent-token': agent }, 'Authorization must be "Authorization: Bearer ksgw_...": the word Bearer, a space, then the gateway key.'],
    ['the two swapped', { authorization: `Bearer ${agent}`, 'x-agent-token': gw.gatewayKey }, 'Authorization holds an agent token: it takes the gateway key ("Authorization: Bearer ksgw_..."); the agent token goes in X-Agent-Token.'],
    ['an operator key as Bearer', { authorization: `Bearer ${viewer}`, 'x-agent-token': agent }, 'Authorization holds an operator key: gateway routes take a gateway key ("Authorization: Bearer ksgw_..."); operator keys are for the admin API.'],
    ['a mistyped gateway key', { authorization: `Bearer ${gw.gatewayKey.slice(0, -1)}`, 'x-agent-token': agent }, 'Authorization does not hold a gateway key: one starts ksgw_ and is checked by its last characters (a character missing, added or changed?).'],
    ['no X-Agent-Token', { authorization: `Bearer ${gw.gatewayKey}` }, 'Missing X-Agent-Token: send the agent token alone (mcp_ro_..., mcp_rw_... or mcp_admin_...) in it, beside the gateway key in Authorization.'],
    ['X-Agent-Token with Bearer', { ...gw.headers(`Bearer ${agent}`) }, 'X-Agent-Token holds "Bearer ...": send the agent token alone (mcp_ro_..., mcp_rw_... or mcp_admin_...), without the word Bearer.'],
    ['the gateway key in X-Agent-Token', gw.headers(gw.gatewayKey), 'X-Agent-Token holds a gateway key: it takes the agent token (mcp_...); the gateway key goes in Authorization.'],
    ['an operator key in X-Agent-Token', gw.headers(viewer), 'X-Agent-Token holds an operator key: it takes an agent token (mcp_...); operator keys are for the admin API.'],
    ['a mistyped agent token', gw.headers(`${agent}x`), 'X-Agent-Token does not hold an agent token: one starts mcp_ro_, mcp_rw_ or mcp_admin_ and is checked by its last characters (a character missing, added or changed?).'],
  ];

  it('on POST /v1/sessions and POST /v1/decisions, for each mistake an integrator makes', async () => {
    const tok = await gw.token('ro');
    const viewer = await t.operatorKey(app, 'viewer');
    for (const [what, headers, message] of cases(tok.raw, viewer)) {
      for (const [url, payload] of [
        ['/v1/sessions', {}],
        ['/v1/decisions', { ...read('a.md'), session_id: '0192f0c1-0000-7000-8000-000000000001' }],
      ] as const) {
        const res = await app.inject({ method: 'POST', url, headers, payload });
        expect(res.statusCode, `${what} on ${url}`).toBe(401);
        expect(res.json().error, `${what} on ${url}`).toMatchObject({ code: 'UNAUTHENTICATED', message });
        expect(res.headers['www-authenticate'], `${what} on ${url}`).toBe('Bearer realm="mcp-killswitch"');
      }
    }
    // The admin API's 401s carry the challenge too (RFC 9110 wants one on every 401).
    const admin = await app.inject({ method: 'GET', url: '/v1/keys' });
    expect(admin.statusCode).toBe(401);
    expect(admin.headers['www-authenticate']).toBe('Bearer realm="mcp-killswitch"');
    // A revoked gateway key: told apart from an unknown one only in the audit trail (nothing was accepted yet).
    const created = await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(gw.owner), payload: { name: 'hint test' } });
    expect(created.statusCode, created.body).toBe(201);
    await app.inject({ method: 'POST', url: `/v1/gateway-keys/${created.json().gateway_key.id}/revoke`, headers: bearer(gw.owner), payload: {} });
    const revoked = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { authorization: `Bearer ${created.json().key}`, 'x-agent-token': tok.raw }, payload: {} });
    expect(revoked.json().error.message).toBe('The gateway key is unknown, revoked or expired: an operator lists and creates gateway keys (GET and POST /v1/gateway-keys, docs/gateway.md).');
  });
});
